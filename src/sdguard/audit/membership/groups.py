"""Duplicated and single-copy members, and the non-members that copy a member.

Memorization, and so membership leakage, grows with the number of copies of a record in the
training set (Carlini et al. 2023, "Extracting Training Data from Diffusion Models"; Somepalli et al.
2023). The members are clustered by the cosine similarity of their image embeddings
(:func:`sdguard.audit.clustering.cluster_embeddings`, single linkage, the threshold given or read
from the histogram of nearest-neighbour similarities, falling back to the embedder's default): a
member in a cluster of two or more is **duplicated**, the others are **single-copy**. A non-member
whose nearest member is at least as similar as that threshold **copies a member** (its image was
trained on under another file): it is kept out of the non-members the groups are scored against,
and reported as its own row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DUPLICATED, SINGLE, COPY, CLEAN = "duplicated", "single-copy", "copies a member", "clean"


@dataclass
class Groups:
    """Per member: duplicated or single-copy; per non-member: copies a member or clean."""

    members: np.ndarray  # str, DUPLICATED or SINGLE
    nonmembers: np.ndarray  # str, COPY or CLEAN
    threshold: dict
    embedder: dict
    nearest_member: np.ndarray  # per non-member: cosine similarity to its nearest member

    def describe(self) -> dict:
        return {"embedder": self.embedder, "threshold": self.threshold,
                "members": {g: int((self.members == g).sum()) for g in (DUPLICATED, SINGLE)},
                "nonmembers": {g: int((self.nonmembers == g).sum()) for g in (COPY, CLEAN)}}


def duplicate_groups(member_images: np.ndarray, non_images: np.ndarray, embedder_spec: str = "pixels",
                     threshold: float | None = None, seed: int = 0, identical: np.ndarray | None = None) -> Groups:
    """The groups of ``member_images`` and ``non_images`` (uint8 N x H x W x 3); ``identical``
    (per non-member) marks non-members equal to a member, which copy it whatever the embedding says."""
    from ...embed import create_embedder
    from ..clustering import cluster_embeddings, normalize_rows

    emb = create_embedder(embedder_spec)
    xm = normalize_rows(emb.embed(list(member_images)).astype(np.float32))
    xn = normalize_rows(emb.embed(list(non_images)).astype(np.float32))
    clusters = cluster_embeddings(xm, threshold, default_threshold=emb.default_threshold, seed=seed, threads=1)
    members = np.where(clusters.labels >= 0, DUPLICATED, SINGLE)
    nearest = np.zeros(len(xn), np.float32)
    for i in range(0, len(xn), 1024):
        nearest[i:i + 1024] = (xn[i:i + 1024] @ xm.T).max(1)
    copies = nearest >= clusters.threshold.value
    if identical is not None:
        copies |= identical
    return Groups(members, np.where(copies, COPY, CLEAN), clusters.threshold.to_dict() | {"histogram": None},
                  emb.config(), nearest)


__all__ = ["DUPLICATED", "SINGLE", "COPY", "CLEAN", "Groups", "duplicate_groups"]
