"""An on-disk cache of embeddings per dataset and embedder, and the loop that fills it.

Embedding a LAION-size selection takes hours on a GPU, so every chunk of embeddings is written
to disk as soon as it is computed (one ``part-*.npz`` file, written atomically) and a later run —
after an interruption, or with other keywords over the same dataset — embeds only what is not
there yet. The cache folder is keyed by the dataset's fingerprint (format, location, size and
time of its index files) and the embedder's configuration, and entries by ``file_name``.

The cache lives in ``$SDGUARD_CACHE/embeddings`` (default ``~/.cache/sdguard/embeddings``).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from ..core.cache import cache_dir
from ..core.errors import InputError
from ..core.io import atomic_write_bytes, atomic_write_text
from ..core.progress import progress_bar


def default_cache_dir() -> Path:
    """``embeddings`` under the one cache root (:func:`sdguard.core.cache.cache_root`)."""
    return cache_dir("embeddings")


class EmbeddingCache:
    """Embeddings of one dataset by one embedder, stored in ``part-*.npz`` files under ``folder``."""

    def __init__(self, folder: str | Path, dim: int, info: dict | None = None):
        self.folder = Path(folder)
        self.dim = int(dim)
        self.folder.mkdir(parents=True, exist_ok=True)
        info_path = self.folder / "info.json"
        if info is not None and not info_path.exists():
            atomic_write_text(info_path, json.dumps({**info, "dim": self.dim}, indent=2, default=str))
        self._index: dict[str, tuple[int, int]] = {}
        self._parts: list[Path] = []
        self._loaded: dict[int, np.ndarray] = {}
        self.reload()

    @classmethod
    def for_dataset(cls, dataset, embedder, root: str | Path | None = None) -> "EmbeddingCache":
        """The cache of ``dataset`` (a :class:`~sdguard.data.datasets.Dataset`) by ``embedder``."""
        econf = embedder.config()
        key = hashlib.sha256(json.dumps([dataset.fingerprint(), econf], sort_keys=True, default=str).encode()).hexdigest()
        folder = Path(root) if root is not None else default_cache_dir()
        info = {"dataset": dataset.describe(), "dataset_fingerprint": dataset.fingerprint(), "embedder": econf}
        return cls(folder / key[:32], embedder.dim, info)

    def reload(self) -> None:
        """Index the parts on disk (parts written by another process appear)."""
        self._index.clear()
        self._loaded.clear()
        self._parts = sorted(self.folder.glob("part-*.npz"))
        for p, path in enumerate(self._parts):
            try:
                with np.load(path) as z:
                    keys = z["keys"]
            except Exception:  # noqa: BLE001 - a damaged part is ignored (its entries are recomputed)
                continue
            for row, key in enumerate(keys.tolist()):
                self._index[key] = (p, row)

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: str) -> bool:
        return key in self._index

    def _vectors(self, p: int) -> np.ndarray:
        v = self._loaded.get(p)
        if v is None:
            with np.load(self._parts[p]) as z:
                v = self._loaded[p] = z["vectors"].astype(np.float32, copy=False)
        return v

    def get(self, keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(vectors, found)``: cached vectors of ``keys`` (zeros where ``found`` is False)."""
        out = np.zeros((len(keys), self.dim), np.float32)
        found = np.zeros(len(keys), bool)
        by_part: dict[int, list[tuple[int, int]]] = {}
        for i, key in enumerate(keys):
            loc = self._index.get(key)
            if loc is not None:
                by_part.setdefault(loc[0], []).append((i, loc[1]))
        for p, items in by_part.items():
            vec = self._vectors(p)
            idx = np.asarray([i for i, _ in items])
            out[idx] = vec[np.asarray([r for _, r in items])]
            found[idx] = True
        return out, found

    def put(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        """Store a chunk (one atomic part file)."""
        if len(keys) == 0:
            return
        vectors = np.asarray(vectors, np.float32)
        if vectors.shape != (len(keys), self.dim):
            raise ValueError(f"expected vectors of shape {(len(keys), self.dim)}, got {vectors.shape}")
        buf = io.BytesIO()
        np.savez(buf, keys=np.asarray(list(keys), dtype=str), vectors=vectors)
        path = self.folder / f"part-{time.time_ns():020d}-{os.getpid()}.npz"
        atomic_write_bytes(path, buf.getvalue())
        p = len(self._parts)
        self._parts.append(path)
        self._loaded[p] = vectors
        for row, key in enumerate(keys):
            self._index[key] = (p, row)


#: per-entry status codes of :func:`embed_dataset`
OK, MISSING, UNREADABLE = 0, 1, 2
STATUS_NAMES = ("ok", "missing", "unreadable")


def embed_dataset(dataset, entries, embedder, *, cache: EmbeddingCache | None = None, chunk_size: int = 1024,
                  max_side: int | None = 512, skipped=None, progress: bool | None = None,
                  ray=None) -> tuple[np.ndarray, np.ndarray]:
    """Embed the images of ``entries`` (a :class:`~sdguard.data.datasets.Entries`) of ``dataset``.

    Returns ``(vectors, status)``: ``(len(entries), dim)`` float32 unit rows, and per entry
    :data:`OK`, :data:`MISSING` or :data:`UNREADABLE` (rows of unread entries are zero). Unread
    images are also counted in ``skipped`` (a :class:`~sdguard.data.datasets.SkipCounter`). With
    ``cache``, cached entries are not recomputed and each computed chunk is stored as soon as it is
    made, so an interrupted run resumes where it stopped. ``ray`` (a
    :class:`~sdguard.distributed.embedding.RayEmbedding`) makes the chunks on Ray workers instead
    of here; the vectors and the cache are the same. Entries of which not one image could
    be read are an :class:`~sdguard.core.errors.InputError` (DESIGN.md: input that is all
    unreadable is an error, not an empty success).
    """
    from ..data.datasets import SkipCounter

    skipped = skipped if skipped is not None else SkipCounter()
    n = len(entries)
    vectors = np.zeros((n, embedder.dim), np.float32)
    status = np.full(n, OK, np.int8)
    found = np.zeros(n, bool)
    if cache is not None and n:
        vectors, found = cache.get(entries.file_names)
    todo = np.flatnonzero(~found)
    chunks = [todo[s : s + chunk_size] for s in range(0, len(todo), chunk_size)]
    with progress_bar(f"embedding ({embedder.name})", n, enabled=progress, completed=n - len(todo)) as bar:
        for chunk, emb, ok, errors in _chunks(dataset, entries, embedder, chunks, max_side, ray):
            for pos, error in zip(chunk[~ok], (e for e in errors if e is not None)):
                status[pos] = MISSING if error[0] == "missing" else UNREADABLE
                skipped.add(entries.file_names[pos], error[0], error[1])
            where = chunk[ok]
            if len(where):
                vectors[where] = emb
                if cache is not None:
                    cache.put([entries.file_names[i] for i in where], emb)
            bar.advance(len(chunk))
    if n and not (status == OK).any():
        raise nothing_readable(dataset, n, status, skipped)
    return vectors, status


def _chunks(dataset, entries, embedder, chunks, max_side, ray):
    """``(entry positions, vectors of the readable ones, readable mask, errors)`` per chunk: made here,
    or on Ray workers."""
    if ray is not None:
        from ..distributed.embedding import ray_embed

        for i, emb, ok, errors in ray_embed(dataset, [entries.rows[c] for c in chunks], ray, max_side):
            yield chunks[i], emb, ok, errors
        return
    for chunk in chunks:
        images, ok, errors = [], [], []
        for item in dataset.images(entries.rows[chunk], max_side=max_side):
            ok.append(item.image is not None)
            errors.append(None if item.image is not None else (item.error or "unreadable", item.detail))
            if item.image is not None:
                images.append(item.image)
        yield chunk, embedder.embed(images) if images else None, np.asarray(ok, bool), errors


def nothing_readable(dataset, n: int, status: np.ndarray, skipped, purpose: str = "to embed") -> InputError:
    """The sentence for entries of which no image could be read (with the first failure);
    ``purpose`` says what the images were for."""
    first = skipped.examples[0] if skipped.examples else None
    example = f"; the first, {first['file_name']!r}: {first['detail'] or first['error']}" if first else ""
    return InputError(f"DATASET {str(dataset.path)!r}: none of the {n} images {purpose} could be read "
                      f"({int((status == MISSING).sum())} missing, {int((status == UNREADABLE).sum())} unreadable"
                      f"{example.rstrip('.')}).")
