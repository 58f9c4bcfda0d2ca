"""Generation on Ray: one actor per GPU (or per 2 CPUs) holding the model and the embedder.

A chunk is ``(prompt index, first seed offset, count)``, the unit the generation store keeps
(:mod:`sdguard.audit.generation_store`). An actor generates the chunk's images, image ``i`` from its
own generator seeded ``seed + start + i`` (the seed contract: an image does not depend on where it
was made), embeds them and returns the arrays; the driver writes the chunk's files, so a chunk is
on disk once, in the files the local backend writes, and an interrupted run resumes at the first
chunk not on disk, on either backend.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np


class GenerationWorker:
    """What a Ray actor holds: the model and the embedder, loaded once."""

    def __init__(self, model: str, device: str | None, embedder: str | None, rule: str, threads: int | None):
        import torch

        from ..audit.somepalli import somepalli_embedder
        from ..embed import create_embedder
        from ..models import DiffusionModel

        if threads:
            torch.set_num_threads(threads)
        self.model = DiffusionModel.load(model, device=device)
        self.embedder = None if embedder is None else (somepalli_embedder(embedder) if rule == "somepalli"
                                                       else create_embedder(embedder))

    def fingerprint(self) -> str:
        return self.model.fingerprint()

    def make(self, prompt: str, seeds: list[int], steps: int, guidance: float, batch_size: int):
        gen = self.model.generate([prompt] * len(seeds), seeds, steps=steps, guidance=guidance, batch_size=batch_size)
        images = np.asarray(gen.images)
        return images, self.embedder.embed(list(images)), np.asarray(gen.seeds, np.int64), {}

    def generate(self, prompts: list[str], seeds: list[int], options: dict, latents: np.ndarray | None):
        """``model.generate`` of one chunk: images, final latents (as arrays) and the settings."""
        import torch

        start = None if latents is None else torch.from_numpy(latents)
        gen = self.model.generate(prompts, seeds, latents=start, **options)
        return np.asarray(gen.images), gen.latents.numpy(), gen.settings


def _pool(cfg, chunks: int, embedder: str | None, rule: str, fingerprint: str):
    """A :class:`~.cluster.ChunkPool` of generation workers for ``cfg``, each checked to hold the
    weights the command loaded (``fingerprint``)."""
    from ..core.errors import InputError
    from .cluster import ChunkPool, connect, worker_count

    ray = connect(cfg.ray_address)
    workers, gpus = worker_count(ray, cfg.workers, cfg.worker_gpus)
    workers = min(workers, chunks)
    threads = None if gpus else max(1, int(ray.cluster_resources().get("CPU", 2) // workers))
    pool = ChunkPool(ray, ray.remote(GenerationWorker), (cfg.model, cfg.device, embedder, rule, threads),
                     workers=workers, gpus=gpus, cpus=1.0 if gpus else float(threads))
    if set(ray.get([a.fingerprint.remote() for a in pool.actors])) != {fingerprint}:
        pool.close()
        raise InputError.bad("MODEL", cfg.model, "loads other weights on the Ray workers than here; give a path "
                             "every node reads the same, or a hub id")
    return pool


def ray_generate(cfg, fingerprint: str, prompts: list[str], seeds: list[int], *, latents=None, on_batch=None,
                 **options):
    """``model.generate(prompts, seeds, **options)`` made by Ray workers, ``batch_size`` images a chunk;
    the :class:`~sdguard.models.adapter.Generation` it returns is in the order of ``prompts``."""
    import torch

    from ..models.adapter import Generation

    size = options["batch_size"]
    chunks = [(s, min(size, len(prompts) - s)) for s in range(0, len(prompts), size)]
    pool = _pool(cfg, len(chunks), None, "calibrated", fingerprint)
    images, finals, settings = [None] * len(chunks), [None] * len(chunks), {}
    try:
        lat = None if latents is None else latents.detach().float().cpu().numpy()
        for (s, n), (ims, fin, settings) in pool.map(
                "generate", chunks, lambda c: (prompts[c[0]:c[0] + c[1]], seeds[c[0]:c[0] + c[1]], options,
                                               None if lat is None else lat[c[0]:c[0] + c[1]])):
            images[s // size], finals[s // size] = ims, torch.from_numpy(fin)
            if on_batch is not None:
                on_batch(n)
    finally:
        pool.close()
    return Generation(np.concatenate(images), torch.cat(finals), list(prompts), list(seeds), settings)


def ray_generations(cfg, specs, chunks: list[tuple[int, int, int]], fingerprint: str) -> Iterator[tuple[tuple, Any]]:
    """``((k, start, count), (images, embeddings, seeds, {}))`` for each chunk of the generation
    store, as Ray workers finish them."""
    if not chunks:
        return
    pool = _pool(cfg, len(chunks), cfg.embedder, cfg.rule, fingerprint)
    try:
        yield from pool.map("make", chunks, lambda c: (specs[c[0]].prompt, list(range(cfg.seed + c[1], cfg.seed + c[1]
                                                                                       + c[2])),
                                                       cfg.steps, cfg.guidance, cfg.batch_size))
    finally:
        pool.close()


__all__ = ["GenerationWorker", "ray_generate", "ray_generations"]
