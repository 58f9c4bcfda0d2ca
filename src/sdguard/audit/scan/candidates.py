"""Which training clusters the scan generates from: the most duplicated, as Carlini et al. chose.

Carlini et al. 2023 ("Extracting Training Data from Diffusion Models", USENIX Security, section
4.2) generate from the captions of the training images with the most near-identical copies, since
those are the ones a model memorizes. The scan ranks the clusters of its dataset audit the same
way: by how many of a cluster's images have a near-identical copy in the cluster (cosine
similarity at least :func:`copy_similarity` of the embedder), larger clusters first on a tie. A
cluster of images that merely look alike (simple scenes of one palette) has few such copies; a
duplicated artwork has them all. Deviation: the published selection counts copies over the whole
training set in CLIP space; here within each near-duplicate cluster of the scan's embedder, which
is where copies are (a copy is always in its original's cluster at the clustering threshold).
"""

from __future__ import annotations

import numpy as np


def copy_similarity(default_threshold: float) -> float:
    """The similarity of near-identical copies for an embedder whose clustering threshold is
    ``default_threshold``: a tenth of the way from it to 1 (0.99 for pixels' 0.9, 0.995 for CLIP's 0.95)."""
    return round(1.0 - (1.0 - float(default_threshold)) / 10.0, 6)


def copies_per_cluster(vectors: np.ndarray, ok: np.ndarray, labels: np.ndarray, similarity: float) -> dict[int, int]:
    """Per cluster (label >= 0): how many of its images have another of its images at ``similarity`` or more."""
    out = {}
    for c in np.unique(labels[labels >= 0]):
        members = np.flatnonzero((labels == c) & ok)
        if len(members) < 2:
            out[int(c)] = 0
            continue
        m = vectors[members]
        best = np.full(len(members), -2.0, np.float32)
        for s in range(0, len(members), 4096):  # blocks: a cluster of many thousands fits in memory
            sims = m[s:s + 4096] @ m.T
            sims[np.arange(len(sims)), np.arange(s, s + len(sims))] = -2.0
            best[s:s + 4096] = sims.max(1)
        out[int(c)] = int((best >= similarity).sum())
    return out


def most_duplicated(vectors: np.ndarray, ok: np.ndarray, labels: np.ndarray, similarity: float, k: int,
                    words: dict[int, list[str]]) -> list[dict]:
    """The ``k`` clusters with the most near-identical copies (captioned clusters with at least two
    copies), each ``{"cluster", "size", "copies"}``, most first."""
    copies = copies_per_cluster(vectors, ok, labels, similarity)
    sizes = np.bincount(labels[labels >= 0]) if (labels >= 0).any() else np.zeros(0, int)
    order = sorted((c for c, n in copies.items() if n >= 2 and words.get(c)), key=lambda c: (-copies[c], -sizes[c], c))
    return [{"cluster": c, "size": int(sizes[c]), "copies": copies[c]} for c in order[:k]]


__all__ = ["copy_similarity", "copies_per_cluster", "most_duplicated"]
