"""Embedding a dataset on Ray: Ray Data streams chunks of records through a pool of actors, each
holding the embedder and the opened dataset (imagefolder, webdataset shards, parquet: the same
reader as the local backend, with its path checks and skip counting).

A chunk is a block of record rows; an actor reads the chunk's images (downscaled to ``max_side``),
embeds them and returns the vectors with each record's read status. The driver stores each chunk
in the embedding cache as it arrives (:func:`~sdguard.embed.cache.embed_dataset`), so an interrupted
run resumes at the chunks not yet cached, on either backend, and the vectors are the same.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np


@dataclass(frozen=True)
class RayEmbedding:
    """How a command's embedder is rebuilt on a Ray worker, and where the workers are."""

    options: Any  # a BackendOptions
    embedder: str
    embedder_options: dict = field(default_factory=dict)
    dataset_format: str | None = None


def ray_embedding(cfg, embedder: str, embedder_options: dict | None = None,
                  dataset_format: str | None = None) -> RayEmbedding | None:
    """The :class:`RayEmbedding` of a command's config, or None for ``--backend local``."""
    if getattr(cfg, "backend", "local") != "ray":
        return None
    return RayEmbedding(cfg, embedder, dict(embedder_options or {}), dataset_format)


class EmbedChunks:
    """What a Ray Data actor holds: the dataset, opened once, and the embedder."""

    def __init__(self, dataset: str, dataset_format: str | None, fingerprint: str, embedder: str,
                 embedder_options: dict, max_side: int | None, threads: int | None):
        import torch

        from ..data.datasets import open_dataset
        from ..embed import create_embedder

        if threads:
            torch.set_num_threads(threads)
        self.ds = open_dataset(dataset, dataset_format)
        self.same = self.ds.fingerprint() == fingerprint  # checked at the first chunk: a refused chunk is an error
        self.emb = create_embedder(embedder, **embedder_options)
        self.max_side = max_side

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not self.same:
            raise ValueError(f"the dataset {str(self.ds.path)!r} on this Ray node is not the one the command opened "
                             "(another copy, or changed): give a path every node reads the same")
        out_chunks, payloads = [], []
        for chunk, rows in zip(batch["chunk"], batch["rows"]):
            rows = np.frombuffer(rows, np.int64)
            images, ok, errors = [], [], []
            for item in self.ds.images(rows, max_side=self.max_side):
                ok.append(item.image is not None)
                errors.append(None if item.image is not None else [item.error or "unreadable", item.detail])
                if item.image is not None:
                    images.append(item.image)
            vectors = self.emb.embed(images) if images else np.zeros((0, self.emb.dim), np.float32)
            buf = io.BytesIO()
            np.savez(buf, vectors=vectors, ok=np.asarray(ok, bool))
            out_chunks.append(int(chunk))
            payloads.append(json.dumps(errors).encode("utf-8") + b"\n" + buf.getvalue())
        return {"chunk": np.asarray(out_chunks, np.int64), "payload": np.asarray(payloads, dtype=object)}


def ray_embed(dataset, chunks: list[np.ndarray], how: RayEmbedding, max_side: int | None
              ) -> Iterator[tuple[int, np.ndarray, np.ndarray, list]]:
    """``(chunk index, vectors of its readable images, readable mask, errors)`` as chunks finish."""
    from ..core.errors import InputError, reason, require
    from .cluster import connect, worker_count

    if not chunks:
        return
    opts = how.options
    ray = connect(opts.ray_address)
    require("ray.data", "ray", "streaming a dataset through Ray workers")  # ray[data]: pandas, pyarrow

    workers, gpus = worker_count(ray, opts.workers, opts.worker_gpus)
    workers = min(workers, len(chunks))
    threads = None if gpus else max(1, int(ray.cluster_resources().get("CPU", 2) // workers))
    items = [{"chunk": i, "rows": np.asarray(r, np.int64).tobytes()} for i, r in enumerate(chunks)]
    import logging

    for name in ("ray.data", "ray"):  # Ray Data's execution plans and statistics: not for the command's output
        logging.getLogger(name).setLevel(logging.ERROR)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.verbose_stats_logs = False
    data = ray.data.from_items(items, override_num_blocks=len(items))
    embedded = data.map_batches(
        EmbedChunks, batch_size=1, batch_format="numpy", concurrency=workers, num_cpus=float(threads or 1),
        num_gpus=gpus,  # Ray Data restarts a lost actor and retries its blocks by default
        fn_constructor_kwargs=dict(dataset=str(dataset.path), dataset_format=how.dataset_format,
                                   fingerprint=dataset.fingerprint(), embedder=how.embedder,
                                   embedder_options=dict(how.embedder_options), max_side=max_side, threads=threads))
    try:
        for row in embedded.iter_rows():
            head, _, body = bytes(row["payload"]).partition(b"\n")
            with np.load(io.BytesIO(body)) as z:
                yield int(row["chunk"]), z["vectors"], z["ok"], json.loads(head)
    except ray.exceptions.RayTaskError as exc:  # a worker's own error (its dataset, its embedder): one sentence
        cause = getattr(exc, "cause", None) or exc
        raise InputError.bad("DATASET", str(dataset.path), f"could not be embedded on the Ray workers: "
                             f"{reason(cause)}") from None


__all__ = ["RayEmbedding", "EmbedChunks", "ray_embed", "ray_embedding"]
