"""Near-duplicate clustering of embeddings by cosine similarity, from a few images to LAION scale.

Two images are linked when the cosine similarity of their embeddings is at least a threshold;
clusters are the connected components of that graph (single linkage), ranked by size. This is
the clustering of the dataset study of Somepalli et al. 2023 ("Understanding and Mitigating
Copying in Diffusion Models"), and the duplicate search Webster 2023 ("A Reproducible
Extraction of Training Images from Diffusion Models") ran over LAION-2B with faiss.

Finding every pair above the threshold:

- ``exact`` (small sets; the default up to 10,000 vectors): faiss ``IndexFlatIP`` range search of
  every vector against all, in blocks.
- ``hnsw`` and ``sharded`` (the k nearest of each vector: an HNSW graph, or flat shards merged,
  past one machine's memory and on GPUs; :mod:`sdguard.audit.sharded_search`).
- ``ivf`` (large sets): an inverted-file partition. The vectors are reduced by PCA to 32
  dimensions, faiss k-means splits them into ``nlist`` cells (``4 * sqrt(n)``), each vector is
  stored in its nearest cell and compared, at full dimension, with the members of its ``nprobe``
  (8) nearest cells. A near-duplicate pair is missed only when neither vector probes the other's
  cell. The comparisons of a cell are one matrix product of its probing vectors by its members
  (BLAS, one thread per cell, cells in parallel): on this project's 2-core machines that ran
  about 20 times faster than faiss ``IndexIVFFlat`` range search (which scans lists vector by
  vector), and faiss still does the k-means and the cell assignment. ``benchmarks/cluster_scale.py``
  measures time, memory and recall against the exact reference.

Edges are merged with a union-find (``scipy.sparse.csgraph.connected_components``); a block with
many edges (a huge cluster of copies) is first reduced to a spanning forest, so memory stays
linear in the number of vectors whatever the cluster sizes.

The threshold is the user's, or read from the histogram of nearest-neighbour similarities:
copies have a nearest neighbour at similarity near 1, other images lower, and when an empty gap
separates the two (above what random pairs of images score) the threshold is its middle. When
there is no such gap (no copies, nothing but copies, or overlapping groups) the embedder's
calibrated default is used, and the report says which.
"""

from __future__ import annotations

import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from ..core.errors import InputError, require

EXACT_LIMIT = 10_000
NN_SAMPLE = 10_000
METHODS = ("auto", "exact", "ivf", "hnsw", "sharded")


def _faiss():
    return require("faiss", "scale", "near-duplicate search")


def _threads(threads: int | None) -> int:
    if threads:
        return max(1, int(threads))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """Float32, C-contiguous, unit rows (a copy only when needed)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1)
    if len(x) and np.allclose(norms[norms > 0], 1.0, atol=1e-4):
        return x
    return np.ascontiguousarray(x / np.maximum(norms, 1e-12)[:, None], dtype=np.float32)


# --------------------------------------------------------------------------------------------
# edges -> components
# --------------------------------------------------------------------------------------------


def _spanning(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edges with the same connected components as ``(a, b)``: a star per component."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    nodes, inv = np.unique(np.concatenate([a, b]), return_inverse=True)
    k = len(nodes)
    g = coo_matrix((np.ones(len(a), np.int8), (inv[: len(a)], inv[len(a):])), shape=(k, k))
    _, lab = connected_components(g, directed=False)
    root = np.empty(lab.max() + 1, np.int64)
    root[lab[::-1]] = np.arange(k)[::-1]  # first node of each component
    keep = root[lab] != np.arange(k)
    return nodes[keep], nodes[root[lab]][keep]


class EdgeSet:
    """Accumulates edges; keeps memory linear in the vertices by reducing to spanning forests."""

    def __init__(self, n: int):
        self.n = n
        self.found = 0
        self._a: list[np.ndarray] = []
        self._b: list[np.ndarray] = []
        self._held = 0

    def add(self, a: np.ndarray, b: np.ndarray, block_nodes: int | None = None) -> None:
        if len(a) == 0:
            return
        self.found += len(a)
        a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
        if block_nodes is not None and len(a) > 4 * block_nodes:
            a, b = _spanning(a, b)
        self._a.append(a)
        self._b.append(b)
        self._held += len(a)
        if self._held > max(8 * self.n, 1_000_000):
            a, b = _spanning(np.concatenate(self._a), np.concatenate(self._b))
            self._a, self._b, self._held = [a], [b], len(a)

    def components(self) -> np.ndarray:
        """Component label of every vertex (arbitrary numbering)."""
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        a = np.concatenate(self._a) if self._a else np.zeros(0, np.int64)
        b = np.concatenate(self._b) if self._b else np.zeros(0, np.int64)
        g = coo_matrix((np.ones(len(a), np.int8), (a, b)), shape=(self.n, self.n))
        return connected_components(g, directed=False)[1]


def rank_components(components: np.ndarray, min_size: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """``(labels, sizes)``: clusters of at least ``min_size`` numbered 0, 1, ... by decreasing size
    (ties: the cluster holding the earliest vector first); the others get -1."""
    n = len(components)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    counts = np.bincount(components)
    first = np.full(len(counts), n, np.int64)
    np.minimum.at(first, components, np.arange(n))
    big = np.flatnonzero(counts >= min_size)
    order = big[np.lexsort((first[big], -counts[big]))]
    remap = np.full(len(counts), -1, np.int64)
    remap[order] = np.arange(len(order))
    return remap[components], counts[order].astype(np.int64)


# --------------------------------------------------------------------------------------------
# indexes
# --------------------------------------------------------------------------------------------


class ExactIndex:
    """Brute force with faiss ``IndexFlatIP``: every pair is compared."""

    method = "exact"

    def __init__(self, x: np.ndarray, threads: int | None = None, block: int = 1024):
        faiss = _faiss()
        self.x, self.block = x, block
        faiss.omp_set_num_threads(_threads(threads))
        self.index = faiss.IndexFlatIP(x.shape[1])
        self.index.add(x)
        self.info: dict = {}

    def pairs(self, threshold: float) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
        """Blocks of pairs ``(i, j)``, ``i < j``, with similarity >= ``threshold``."""
        radius = float(np.nextafter(np.float32(threshold), np.float32(-2)))  # faiss keeps sim > radius
        for start in range(0, len(self.x), self.block):
            q = self.x[start : start + self.block]
            lims, _, ids = self.index.range_search(q, radius)
            qi = np.repeat(np.arange(start, start + len(q), dtype=np.int64), np.diff(lims.astype(np.int64)))
            keep = ids > qi
            yield qi[keep], ids[keep].astype(np.int64), len(q) + self.index.ntotal

    def nearest(self, rows: np.ndarray) -> np.ndarray:
        """Similarity of each of ``rows`` to its nearest other vector."""
        out = np.empty(len(rows), np.float32)
        for start in range(0, len(rows), 4096):
            r = rows[start : start + 4096]
            d, i = self.index.search(self.x[r], 2)
            out[start : start + len(r)] = np.where(i[:, 0] == r, d[:, 1], d[:, 0])
        return out


def _single_blas():
    """numpy's BLAS on one thread: the callers parallelize over blocks themselves (many threads of
    BLAS and of faiss' OpenMP on 2 cores slowed small products and ``eigh`` tenfold)."""
    try:
        from threadpoolctl import threadpool_limits  # installed with scikit-learn
    except ImportError:  # pragma: no cover - then BLAS keeps its own thread count
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _map(fn, items, threads: int):
    """``map`` over a thread pool (numpy releases the GIL in products and comparisons)."""
    if threads <= 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(threads) as pool:
        yield from pool.map(fn, items)


def _pca_project(x: np.ndarray, dim: int, rng: np.random.Generator, threads: int = 1,
                 sample: int = 50_000) -> np.ndarray:
    """``x`` projected on its ``dim`` leading principal axes (fitted on a sample), float32."""
    n = len(x)
    s = x[np.sort(rng.choice(n, size=sample, replace=False))] if n > sample else x
    with _single_blas():
        mean = s.mean(axis=0, dtype=np.float64).astype(np.float32)
        c = s - mean
        cov = (c.T @ c).astype(np.float64)
        _, vecs = np.linalg.eigh(cov)
        axes = np.ascontiguousarray(vecs[:, ::-1][:, :dim], dtype=np.float32)
        out = np.empty((n, dim), np.float32)
        step = 32768

        def project(start: int) -> None:
            out[start : start + step] = (x[start : start + step] - mean) @ axes

        for _ in _map(project, range(0, n, step), threads):
            pass
    return out


class IVFIndex:
    """An inverted-file partition (PCA + faiss k-means) with a blocked matrix-product join.

    ``nlist`` cells (default ``4 * sqrt(n)``), each vector probing its ``nprobe`` nearest cells; the
    partition is computed on the ``pca_dim`` leading principal components.
    """

    method = "ivf"

    def __init__(self, x: np.ndarray, nlist: int | None = None, nprobe: int = 8, pca_dim: int = 32,
                 threads: int | None = None, seed: int = 0, train_size: int | None = None, block: int = 4096):
        faiss = _faiss()
        n, d = x.shape
        self.x, self.block = x, block
        self.threads = _threads(threads)
        faiss.omp_set_num_threads(self.threads)
        rng = np.random.default_rng(seed)
        t0 = time.perf_counter()
        nlist = int(nlist or max(1, round(4 * math.sqrt(n))))
        nlist = max(1, min(nlist, n // 8 if n >= 16 else 1))
        self.nlist, self.nprobe = nlist, max(1, min(int(nprobe), nlist))
        # the coarse partition is computed on a PCA projection (cheap k-means and assignment)
        if d > pca_dim:
            xr = _pca_project(x, pca_dim, rng, self.threads)
        else:
            xr = x
        t1 = time.perf_counter()
        train_size = int(train_size or min(n, 16 * nlist))
        train = xr[rng.choice(n, size=train_size, replace=False)] if train_size < n else xr
        km = faiss.Kmeans(xr.shape[1], nlist, niter=10, seed=seed, verbose=False, spherical=False,
                          max_points_per_centroid=max(32, train_size // max(1, nlist) + 1))
        km.train(np.ascontiguousarray(train))
        t2 = time.perf_counter()
        _, assign = km.index.search(np.ascontiguousarray(xr), self.nprobe)
        del xr
        t3 = time.perf_counter()
        self.assign = assign.astype(np.int64)
        home = self.assign[:, 0]
        self.members_order = np.argsort(home, kind="stable")
        self.members_start = np.searchsorted(home[self.members_order], np.arange(nlist + 1))
        self.info = {"nlist": nlist, "nprobe": self.nprobe, "pca_dim": min(pca_dim, d), "train_size": train_size,
                     "timings": {"pca": round(t1 - t0, 3), "kmeans": round(t2 - t1, 3), "assign": round(t3 - t2, 3)}}

    def _queries(self, rows: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """For each cell, the vectors (of ``rows``, default all) that probe it."""
        a = self.assign if rows is None else self.assign[rows]
        qid = np.repeat(np.arange(len(a)) if rows is None else rows, a.shape[1])
        cells = a.reshape(-1)
        order = np.argsort(cells, kind="stable")
        return qid[order], np.searchsorted(cells[order], np.arange(self.nlist + 1))

    def _run(self, fn, rows: np.ndarray | None):
        qids, qstart = self._queries(rows)

        def work(c: int):
            m = self.members_order[self.members_start[c] : self.members_start[c + 1]]
            q = qids[qstart[c] : qstart[c + 1]]
            if len(m) == 0 or len(q) == 0:
                return None
            return fn(q, m)

        with _single_blas():
            yield from (r for r in _map(work, range(self.nlist), self.threads) if r is not None)

    def pairs(self, threshold: float, compress: bool = True) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
        """Blocks of pairs ``(i, j)`` with similarity >= ``threshold`` (a pair may come twice).
        With ``compress``, a block with many pairs is reduced to a spanning forest of them."""
        x, t, blk = self.x, np.float32(threshold), self.block

        def join(q, m):
            out_a, out_b = [], []
            for ms in range(0, len(m), blk):
                mm = m[ms : ms + blk]
                xm = x[mm]
                for qs in range(0, len(q), blk):
                    qq = q[qs : qs + blk]
                    hit_q, hit_m = np.nonzero(x[qq] @ xm.T >= t)
                    a, b = qq[hit_q], mm[hit_m]
                    keep = a != b
                    out_a.append(a[keep])
                    out_b.append(b[keep])
            a, b = np.concatenate(out_a), np.concatenate(out_b)
            if compress and len(a) > 4 * (len(q) + len(m)):
                a, b = _spanning(a, b)
            return a, b, len(q) + len(m)

        yield from self._run(join, None)

    def nearest(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, np.int64)
        best = np.full(len(self.x), -2.0, np.float32)
        x, blk = self.x, self.block

        def top(q, m):
            res = np.full(len(q), -2.0, np.float32)
            for ms in range(0, len(m), blk):
                mm = m[ms : ms + blk]
                s = x[q] @ x[mm].T
                s[q[:, None] == mm[None, :]] = -2.0
                res = np.maximum(res, s.max(axis=1))
            return q, res

        for q, res in self._run(top, rows):
            np.maximum.at(best, q, res)
        return best[rows]


def build_index(x: np.ndarray, method: str = "auto", *, exact_limit: int = EXACT_LIMIT, threads: int | None = None,
                seed: int = 0, **ivf_options):
    """An :class:`ExactIndex` or an :class:`IVFIndex` over unit rows ``x``."""
    if method not in METHODS:
        raise InputError.bad("--method", method, f"is not a search method; choose one of {', '.join(METHODS)}")
    if method == "exact" or (method == "auto" and len(x) <= exact_limit):
        return ExactIndex(x, threads=threads)
    knn = {k: ivf_options.pop(k) for k in ("shard_size", "k") if k in ivf_options}
    if method in ("hnsw", "sharded"):  # sharded_search.py: k nearest per vector, shard by shard
        from .sharded_search import ShardedIndex

        return ShardedIndex(x, kind="hnsw" if method == "hnsw" else "flat", threads=threads, **knn)
    return IVFIndex(x, threads=threads, seed=seed, **ivf_options)


# --------------------------------------------------------------------------------------------
# threshold suggestion
# --------------------------------------------------------------------------------------------


@dataclass
class ThresholdChoice:
    """The threshold used, where it came from and the histogram it was read from."""

    value: float
    source: str  # "given", "histogram" or "default"
    reason: str
    histogram: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"value": self.value, "source": self.source, "reason": self.reason, "histogram": self.histogram}


def nn_histogram(nn: np.ndarray, bins: int = 100) -> dict:
    nn = np.asarray(nn, np.float64)
    nn = nn[np.isfinite(nn) & (nn > -1.5)]
    lo = float(np.floor(min(nn.min(), 0.0) * 10) / 10) if len(nn) else 0.0
    counts, edges = np.histogram(np.clip(nn, lo, 1.0), bins=bins, range=(lo, 1.0))
    return {"edges": [round(float(e), 5) for e in edges], "counts": counts.tolist(), "n": int(len(nn))}


def random_pair_similarities(x: np.ndarray, pairs: int = 100_000, seed: int = 0) -> np.ndarray:
    """Similarities of ``pairs`` random pairs of distinct rows: what unrelated images score."""
    n = len(x)
    if n < 2:
        return np.zeros(0, np.float32)
    rng = np.random.default_rng(seed + 1)
    m = int(min(pairs, n * (n - 1) // 2))
    i = rng.integers(0, n, m)
    j = (i + rng.integers(1, n, m)) % n
    out = np.empty(m, np.float32)
    for s in range(0, m, 65536):
        out[s : s + 65536] = np.einsum("ij,ij->i", x[i[s : s + 65536]], x[j[s : s + 65536]])
    return out


def suggest_threshold(nn: np.ndarray, default: float, *, null: np.ndarray | None = None, min_gap: float = 0.1,
                      null_quantile: float = 0.99, min_upper: int = 2, ceiling: float = 0.99) -> ThresholdChoice:
    """A threshold read from the nearest-neighbour similarities ``nn``, or ``default``.

    Copies have a nearest neighbour near similarity 1, other images lower; when the two groups
    are separated by an empty gap of at least ``min_gap`` in the histogram, the threshold is the
    middle of the widest such gap. Only gaps above the ``null_quantile`` of the similarities of
    random pairs (``null``: what unrelated images score) count, so a sparse tail of outliers can
    never pull the threshold down to where unrelated images link up, and at least ``min_upper``
    images must lie above the gap. Otherwise (no copies, nothing but copies, or groups that
    overlap) the embedder's calibrated ``default`` is used.
    """
    nn = np.asarray(nn, np.float64)
    nn = nn[np.isfinite(nn) & (nn > -1.5)]
    hist = nn_histogram(nn)
    if len(nn) < 10:
        return ThresholdChoice(float(default), "default", f"too few images ({len(nn)}) to read a histogram", hist)
    floor = float(np.quantile(null, null_quantile)) if null is not None and len(null) else -1.0
    hist["random_pair_quantile"] = {"q": null_quantile, "value": round(floor, 5)}
    vals = np.sort(nn[nn >= floor])
    best = None
    if len(vals) >= 2:
        gaps = np.diff(vals)
        above = len(vals) - 1 - np.arange(len(gaps))  # values above each gap
        ok = (gaps >= min_gap) & (above >= min_upper) & ((vals[:-1] + vals[1:]) / 2 <= ceiling)
        if ok.any():
            k = int(np.flatnonzero(ok)[np.argmax(gaps[ok])])
            best = (float(vals[k]), float(vals[k + 1]), int(above[k]))
    if best is None:
        return ThresholdChoice(float(default), "default",
                               f"no empty gap of {min_gap} between copies and other images in the nearest-neighbour "
                               f"similarities above the random-pair {null_quantile:.0%} quantile ({floor:.3f})", hist)
    lo, hi, n_above = best
    t = round((lo + hi) / 2, 4)
    return ThresholdChoice(t, "histogram", f"middle of the empty gap {lo:.3f}-{hi:.3f} of the nearest-neighbour "
                           f"similarities ({n_above} of {len(nn)} images above)", hist)


# --------------------------------------------------------------------------------------------
# the clustering
# --------------------------------------------------------------------------------------------


@dataclass
class Clustering:
    """Result of :func:`cluster_embeddings`."""

    labels: np.ndarray  # per vector: cluster rank (0 = largest) or -1
    sizes: np.ndarray  # size of cluster k at index k
    threshold: ThresholdChoice
    method: str
    pairs_found: int
    nn_similarity: np.ndarray  # nearest-neighbour similarity of the sampled vectors
    nn_rows: np.ndarray  # which vectors were sampled
    info: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)

    @property
    def n_clusters(self) -> int:
        return len(self.sizes)

    def members(self, k: int) -> np.ndarray:
        return np.flatnonzero(self.labels == k)


def cluster_embeddings(x: np.ndarray, threshold: float | None = None, *, default_threshold: float = 0.9,
                       method: str = "auto", min_size: int = 2, exact_limit: int = EXACT_LIMIT,
                       nn_sample: int = NN_SAMPLE, threads: int | None = None, seed: int = 0,
                       **ivf_options) -> Clustering:
    """Near-duplicate clusters of the rows of ``x`` (cosine similarity >= threshold, single linkage).

    ``threshold`` None: suggested from the nearest-neighbour similarity histogram
    (:func:`suggest_threshold`), falling back to ``default_threshold``. ``method``: ``exact``,
    ``ivf`` or ``auto`` (exact up to ``exact_limit`` vectors). ``ivf_options``: ``nlist``,
    ``nprobe``, ``pca_dim``, ``train_size``.
    """
    if threshold is not None and not (0.0 < float(threshold) <= 1.0):
        raise InputError.bad("--threshold", threshold, "must be in (0, 1]")
    x = normalize_rows(x)
    n = len(x)
    timings: dict[str, float] = {}
    if n < 2:
        choice = ThresholdChoice(float(threshold if threshold is not None else default_threshold),
                                 "given" if threshold is not None else "default", "fewer than two images",
                                 nn_histogram(np.zeros(0)))
        labels, sizes = rank_components(np.arange(n), min_size)
        return Clustering(labels, sizes, choice, "none", 0, np.zeros(0, np.float32), np.zeros(0, np.int64))
    t0 = time.perf_counter()
    index = build_index(x, method, exact_limit=exact_limit, threads=threads, seed=seed, **ivf_options)
    timings["index"] = round(time.perf_counter() - t0, 3)
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    rows = np.arange(n) if n <= nn_sample else np.sort(rng.choice(n, size=nn_sample, replace=False))
    nn = index.nearest(rows)
    timings["nearest"] = round(time.perf_counter() - t0, 3)
    if threshold is not None:
        choice = ThresholdChoice(float(threshold), "given", "set by the user", nn_histogram(nn))
    else:
        choice = suggest_threshold(nn, default_threshold, null=random_pair_similarities(x, seed=seed))
    t0 = time.perf_counter()
    edges = EdgeSet(n)
    for a, b, nodes in index.pairs(choice.value):
        edges.add(a, b, nodes)
    timings["pairs"] = round(time.perf_counter() - t0, 3)
    t0 = time.perf_counter()
    labels, sizes = rank_components(edges.components(), min_size)
    timings["components"] = round(time.perf_counter() - t0, 3)
    return Clustering(labels, sizes, choice, index.method, edges.found, nn, rows, dict(index.info), timings)
