"""Generation on Ray: one actor per GPU (or per 2 CPUs) holding the model and the embedder.

A chunk is ``(prompt index, first seed offset, count)``, the unit the generation store keeps
(:mod:`sdguard.audit.generation_store`). An actor generates the chunk's images, image ``i`` from its
own generator seeded ``seed + start + i`` (the seed contract: an image does not depend on where it
was made), embeds them and returns the arrays; the driver writes the chunk's files, so a chunk is
on disk once, in the files the local backend writes, and an interrupted run resumes at the first
chunk not on disk, on either backend.
"""

from __future__ import annotations

import os
from typing import Any, Iterator

import numpy as np


class GenerationWorker:
    """What a Ray actor holds: the model and the embedder, loaded once."""

    def __init__(self, model: str, device: str | None, embedder: str, rule: str, threads: int | None):
        import torch

        from ..audit.somepalli import somepalli_embedder
        from ..embed import create_embedder
        from ..models import DiffusionModel

        if threads:
            torch.set_num_threads(threads)
        self.model = DiffusionModel.load(model, device=device)
        self.embedder = somepalli_embedder(embedder) if rule == "somepalli" else create_embedder(embedder)

    def pid(self) -> int:
        return os.getpid()

    def fingerprint(self) -> str:
        return self.model.fingerprint()

    def make(self, prompt: str, seeds: list[int], steps: int, guidance: float, batch_size: int):
        gen = self.model.generate([prompt] * len(seeds), seeds, steps=steps, guidance=guidance, batch_size=batch_size)
        images = np.asarray(gen.images)
        return images, self.embedder.embed(list(images)), np.asarray(gen.seeds, np.int64), {}


def ray_generations(cfg, specs, chunks: list[tuple[int, int, int]], fingerprint: str) -> Iterator[tuple[tuple, Any]]:
    """``((k, start, count), (images, embeddings, seeds))`` for each chunk, as Ray workers finish them.
    Every worker is checked to hold the weights the run was planned with (``fingerprint``)."""
    from ..core.errors import InputError
    from .cluster import ChunkPool, connect, worker_count

    if not chunks:
        return
    ray = connect(cfg.ray_address)
    workers, gpus = worker_count(ray, cfg.workers, cfg.worker_gpus)
    workers = min(workers, len(chunks))
    threads = None if gpus else max(1, int(ray.cluster_resources().get("CPU", 2) // workers))
    pool = ChunkPool(ray, ray.remote(GenerationWorker), (cfg.model, cfg.device, cfg.embedder, cfg.rule, threads),
                     workers=workers, gpus=gpus, cpus=1.0 if gpus else float(threads))
    try:
        theirs = set(ray.get([a.fingerprint.remote() for a in pool.actors]))
        if theirs != {fingerprint}:
            raise InputError.bad("MODEL", cfg.model, "loads other weights on the Ray workers than here; give a path "
                                 "every node reads the same, or a hub id")
        yield from pool.map("make", chunks, lambda c: (specs[c[0]].prompt, list(range(cfg.seed + c[1], cfg.seed + c[1]
                                                                                       + c[2])),
                                                       cfg.steps, cfg.guidance, cfg.batch_size))
    finally:
        pool.close()


__all__ = ["GenerationWorker", "ray_generations"]
