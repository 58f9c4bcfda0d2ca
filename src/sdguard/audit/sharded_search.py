"""Near-duplicate search past one index in memory: the vectors in shards, each searched for every
query's ``k`` nearest, the shards' candidates merged into one top-``k`` per query.

``sharded`` (tens of millions of vectors): the rows (an array or a memory map of a ``.npy`` file,
so they need not fit in memory) are cut into shards of ``shard_size``; one shard at a time is put
in a faiss ``IndexFlatIP`` -- on every GPU faiss sees, where it sees one -- and every query block is
searched against it; a running top-``k`` per query (``n x k`` similarities and ids) is merged with
each shard's result. ``hnsw``: one faiss ``IndexHNSWFlat`` graph (inner product), searched for each
vector's ``k`` nearest; approximate, with ``ef_search`` candidates per query.

A pair of images is linked when one is among the other's ``k`` nearest and their similarity
reaches the threshold: a group of more than ``k`` copies stays one cluster, each copy linked to
``k`` others (single linkage needs a path, not every edge). What the exact search finds and this
misses is measured by ``benchmarks/distributed.py`` (recall of the exact pairs, cluster agreement).

Memory: a shard of a million ``d``-dimensional float32 rows is ``4 d`` MB (2 GB at CLIP's 512, 0.8
GB at 192), plus the running top-``k``: 12 ``k`` bytes per vector (384 MB per million at k = 32).
"""

from __future__ import annotations

import time
from typing import Iterator

import numpy as np

SHARD_SIZE = 1_000_000
K = 32
QUERY_BLOCK = 16_384


def _faiss():
    from .clustering import (
        _faiss as faiss_module,  # the one import of faiss, with its extra named
    )

    return faiss_module()


def _merge(best_s: np.ndarray, best_i: np.ndarray, s: np.ndarray, i: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The top ``k`` of two candidate lists per row (similarities descending)."""
    s_all, i_all = np.concatenate([best_s, s], 1), np.concatenate([best_i, i], 1)
    top = np.argpartition(-s_all, k - 1, axis=1)[:, :k] if s_all.shape[1] > k else np.argsort(-s_all, 1)
    s_top, i_top = np.take_along_axis(s_all, top, 1), np.take_along_axis(i_all, top, 1)
    order = np.argsort(-s_top, 1, kind="stable")
    return np.take_along_axis(s_top, order, 1), np.take_along_axis(i_top, order, 1)


class ShardedIndex:
    """The ``k`` nearest of every vector, shard by shard (see the module docstring)."""

    method = "sharded"

    def __init__(self, x: np.ndarray, *, shard_size: int = SHARD_SIZE, k: int = K, kind: str = "flat",
                 threads: int | None = None, ef_search: int = 128, hnsw_m: int = 32, gpu: bool | None = None):
        faiss = _faiss()
        if threads:
            faiss.omp_set_num_threads(int(threads))
        self.x, self.kind = x, kind
        self.k = max(2, min(int(k), len(x)))
        self.shard_size = len(x) if kind == "hnsw" else max(1, int(shard_size))
        self.ef_search, self.hnsw_m = int(ef_search), int(hnsw_m)
        self.gpus = faiss.get_num_gpus() if gpu is None or gpu else 0
        self.method = "hnsw" if kind == "hnsw" else "sharded"
        self._knn: tuple[np.ndarray, np.ndarray] | None = None
        self.info = {"k": self.k, "shard_size": self.shard_size, "shards": -(-len(x) // self.shard_size),
                     "gpus": self.gpus, "timings": {}}
        if kind == "hnsw":
            self.info.update(ef_search=self.ef_search, hnsw_m=self.hnsw_m)

    def _shard_index(self, rows: np.ndarray):
        faiss = _faiss()
        d = rows.shape[1]
        if self.kind == "hnsw":
            index = faiss.IndexHNSWFlat(d, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = max(self.ef_search, 40)
            index.add(rows)
            index.hnsw.efSearch = max(self.ef_search, self.k)
            return index
        index = faiss.IndexFlatIP(d)
        if self.gpus:
            index = faiss.index_cpu_to_all_gpus(index)
        index.add(rows)
        return index

    def knn(self) -> tuple[np.ndarray, np.ndarray]:
        """``(similarities, ids)``: each vector's ``k`` nearest vectors (itself among them), once."""
        if self._knn is not None:
            return self._knn
        n, k = len(self.x), self.k
        best_s = np.full((n, 0), -2.0, np.float32)
        best_i = np.full((n, 0), -1, np.int64)
        t_build = t_search = 0.0
        for s0 in range(0, n, self.shard_size):
            t0 = time.perf_counter()
            shard = np.ascontiguousarray(self.x[s0 : s0 + self.shard_size], np.float32)
            index = self._shard_index(shard)
            t1 = time.perf_counter()
            kk = min(k, len(shard))
            s_parts, i_parts = [], []
            for q0 in range(0, n, QUERY_BLOCK):
                s, i = index.search(np.ascontiguousarray(self.x[q0 : q0 + QUERY_BLOCK], np.float32), kk)
                s_parts.append(s)
                i_parts.append(np.where(i >= 0, i + s0, -1))
            s, i = np.concatenate(s_parts), np.concatenate(i_parts)
            best_s, best_i = (s, i) if best_s.shape[1] == 0 else _merge(best_s, best_i, s, i, k)
            t_search += time.perf_counter() - t1
            t_build += t1 - t0
            del index, shard
        self.info["timings"] = {"build": round(t_build, 3), "search": round(t_search, 3)}
        self._knn = (best_s, best_i)
        return self._knn

    def pairs(self, threshold: float) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
        """Blocks of pairs ``(i, j)`` with similarity >= ``threshold``, ``j`` among ``i``'s ``k`` nearest
        (a pair may come twice)."""
        s, ids = self.knn()
        for q0 in range(0, len(s), QUERY_BLOCK):
            blk_s, blk_i = s[q0 : q0 + QUERY_BLOCK], ids[q0 : q0 + QUERY_BLOCK]
            qi = np.arange(q0, q0 + len(blk_s), dtype=np.int64)[:, None].repeat(blk_s.shape[1], 1)
            keep = (blk_s >= np.float32(threshold)) & (blk_i != qi) & (blk_i >= 0)
            yield qi[keep], blk_i[keep], len(blk_s) * 2

    def nearest(self, rows: np.ndarray) -> np.ndarray:
        """Similarity of each of ``rows`` to its nearest other vector (of its ``k`` nearest)."""
        s, ids = self.knn()
        rows = np.asarray(rows, np.int64)
        other = np.where(ids[rows] == rows[:, None], -2.0, s[rows])
        return other.max(1).astype(np.float32)


__all__ = ["ShardedIndex", "SHARD_SIZE", "K"]
