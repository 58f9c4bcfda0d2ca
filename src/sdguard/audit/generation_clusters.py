"""What the replicated generations of a prompt replicate, cluster by cluster, and how far apart
the copies of a training cluster lie (``sdguard audit generations``).

A replication rate alone does not say what is replicated: after an erasure the edited model may
draw plain scenes that match a world's many near-identical plain scenes, and a prompt of the
erased artwork keeps a high rate although no generation is the artwork any more. Each
generation's nearest training image (any image of the training set) places it in that image's
near-duplicate cluster when it reaches the cluster's replication threshold;
:func:`replicated_clusters` gives, per prompt, the share of generations in each cluster with the
cluster's top caption words and an example training image, and for a prompt built from a cluster
the share that replicates that very cluster (:func:`own_cluster_share`).
"""

from __future__ import annotations

import numpy as np

from ..core.images import resize
from .extraction import copy_spread

SPREAD_MEMBERS = 64  # training members compared to measure a cluster's spread
TOP_WORDS = 5


def replicated_clusters(hits: np.ndarray, nearest: np.ndarray, similarity: np.ndarray, labels: np.ndarray,
                        words: dict[int, list[str]], entries) -> list[dict]:
    """Per training cluster (``None``: images outside every cluster), the share of the prompt's
    generations that replicate it, most first, with the cluster's top words and, as example, the
    training image nearest to its most similar generation.

    ``hits``: per generation, whether it replicates its nearest training image (entry index
    ``nearest``, cosine ``similarity``); ``labels``: cluster per entry (-1: none)."""
    n = len(hits)
    landing = np.where(hits, labels[nearest], -2)
    out = []
    for c in np.unique(landing[landing > -2]):
        idx = np.flatnonzero(landing == c)
        best = int(nearest[idx[np.argmax(similarity[idx])]])
        cluster = int(c) if c >= 0 else None
        out.append({"cluster": cluster, "share": round(len(idx) / n, 4), "generations": int(len(idx)),
                    "words": list(words.get(cluster, [])[:TOP_WORDS]) if cluster is not None else [],
                    "example": {"file_name": entries.file_names[best], "caption": entries.texts[best],
                                "row": int(entries.rows[best])}})
    out.sort(key=lambda r: (-r["generations"], r["cluster"] is None, r["cluster"] or 0))
    return out


def own_cluster_share(clusters: list[dict], own: int | None, n: int) -> float | None:
    """The share of a prompt's ``n`` generations that replicate the cluster it was built from."""
    if own is None:
        return None
    return next((r["generations"] / n for r in clusters if r["cluster"] == own), 0.0)


def describe_clusters(clusters: list[dict], limit: int = 3) -> str:
    """``cluster 3 'van gogh starry' 0.94; outside clusters 0.03`` (the first ``limit``)."""
    parts = []
    for r in clusters[:limit]:
        name = f"cluster {r['cluster']} '{' '.join(r['words'][:3])}'" if r["cluster"] is not None else "outside clusters"
        parts.append(f"{name} {r['share']:.2f}")
    if len(clusters) > limit:
        parts.append(f"{len(clusters) - limit} more")
    return "; ".join(parts) or "nothing"


class CopySpreads:
    """:func:`~sdguard.audit.extraction.copy_spread` of each training cluster, measured on up to
    SPREAD_MEMBERS of its members resized to the generations' ``size``, when first asked."""

    def __init__(self, ds, entries, labels: np.ndarray, ok: np.ndarray, size: int):
        self.ds, self.entries, self.labels, self.ok, self.size = ds, entries, labels, ok, size
        self.values: dict[int, float | None] = {}

    def __call__(self, c: int) -> float | None:
        if c not in self.values:
            members = np.flatnonzero((self.labels == c) & self.ok)
            if len(members) > SPREAD_MEMBERS:
                members = members[np.unique(np.linspace(0, len(members) - 1, SPREAD_MEMBERS).round().astype(int))]
            images = [resize(im, self.size) for im in self.ds.load(self.entries.rows[members], max_side=self.size)
                      if im is not None]
            self.values[c] = copy_spread(np.stack(images)) if len(images) >= 2 else None
        return self.values[c]


__all__ = ["replicated_clusters", "own_cluster_share", "describe_clusters", "CopySpreads"]
