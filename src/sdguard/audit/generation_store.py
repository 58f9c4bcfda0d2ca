"""The generations of ``sdguard audit generations``, stored chunk by chunk in the staging folder
as they are made (so ``--resume`` continues a killed run without redoing finished images).

Each chunk ``generations/pKKKK_sSSSSSS.npz`` holds the thumbnails (at most THUMB pixels: grids,
detectors), the embeddings and the seeds; generations larger than THUMB are also kept at their own
resolution in ``pKKKK_sSSSSSS.full.npy`` (written first: a chunk counts as done once its ``.npz``
exists), read back as memory maps for the tiled distances of the extraction rules, which are
taken at the generated resolution (:mod:`sdguard.audit.extraction`).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from ..core.images import resize_batch
from ..core.io import atomic_write_bytes
from ..core.progress import progress_bar
from .prompt_suites import PromptSpec

THUMB = 64  # thumbnails are at most THUMB x THUMB pixels


def _thumb(images: np.ndarray) -> np.ndarray:
    if images.shape[1] <= THUMB:
        return images
    return resize_batch(images, THUMB)


def _chunk_path(stage: Path, k: int, start: int) -> Path:
    return stage / "generations" / f"p{k:04d}_s{start:06d}.npz"


def _full_path(stage: Path, k: int, start: int) -> Path:
    """The chunk's generations at their own resolution, when larger than the thumbnails (read
    back as a memory map, one tile at a time, by :func:`~sdguard.audit.extraction.tiled_l2`)."""
    return stage / "generations" / f"p{k:04d}_s{start:06d}.full.npy"


REFERENCE_SEEDS = 64  # generations per reference prompt (at most n): enough for a distance quantile


def seeds_of(spec: PromptSpec, cfg) -> int:
    return min(cfg.n, REFERENCE_SEEDS) if spec.kind == "reference" else cfg.n


def generate_all(model, specs: list[PromptSpec], cfg, emb, stage: Path, progress, mitigator=None) -> dict:
    """Generate, embed and store every prompt's images chunk by chunk; returns counters. With a
    ``mitigator`` (:mod:`sdguard.audit.memorization.mitigation`) every image is generated from its
    mitigated embedding and the chunk keeps each image's score before/after and iterations. With
    ``cfg.backend == "ray"`` Ray workers make the chunks (:mod:`sdguard.distributed.generation`);
    the files written are the same."""
    chunks = [(k, s, min(cfg.batch_size, seeds_of(spec, cfg) - s))
              for k, spec in enumerate(specs) for s in range(0, seeds_of(spec, cfg), cfg.batch_size)]
    done = [c for c in chunks if _chunk_path(stage, c[0], c[1]).is_file()]
    todo = [c for c in chunks if not _chunk_path(stage, c[0], c[1]).is_file()]
    if getattr(cfg, "backend", "local") == "ray":
        from ..distributed.generation import ray_generations

        made = ray_generations(cfg, specs, todo, model.fingerprint())
    else:
        made = _local_chunks(model, specs, cfg, emb, todo, mitigator)
    count_now = 0
    with progress_bar("generating", sum(c[2] for c in chunks), enabled=progress,
                      completed=sum(c[2] for c in done)) as bar:
        for (k, start, count), (images, embeddings, seeds, extra) in made:
            if images.shape[1] > THUMB:  # written before the chunk counts as done
                atomic_write_bytes(_full_path(stage, k, start), _npy(images))
            atomic_write_bytes(_chunk_path(stage, k, start), _npz(images=_thumb(images), embeddings=embeddings,
                                                                   seeds=seeds, **extra))
            count_now += count
            bar.advance(count)
    return {"generated_now": count_now, "reused": sum(c[2] for c in done)}


def _local_chunks(model, specs, cfg, emb, todo, mitigator):
    """The chunks made in this process: ``(chunk, (images, embeddings, seeds, extra arrays))``."""
    from .memorization.mitigation import generate_with

    for k, start, count in todo:
        gen, stats = generate_with(model, mitigator, [specs[k].prompt] * count,
                                   list(range(cfg.seed + start, cfg.seed + start + count)), steps=cfg.steps,
                                   guidance=cfg.guidance, batch_size=cfg.batch_size)
        images = np.asarray(gen.images)
        yield (k, start, count), (images, emb.embed(list(images)), np.asarray(gen.seeds, np.int64),
                                  {} if stats is None else {"mitigation": stats})


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array))
    return buf.getvalue()


def full_chunks(stage: Path, k: int, cfg, n: int | None = None) -> list[np.ndarray]:
    """Prompt ``k``'s generations at full resolution, chunk by chunk (memory maps of the stored
    files; the thumbnails when the generations are no larger)."""
    out = []
    for start in range(0, cfg.n if n is None else n, cfg.batch_size):
        full = _full_path(stage, k, start)
        if full.is_file():
            out.append(np.load(full, mmap_mode="r"))
        else:
            with np.load(_chunk_path(stage, k, start)) as z:
                out.append(z["images"])
    return out


def load_prompt(stage: Path, k: int, cfg, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    images, embs = [], []
    for start in range(0, cfg.n if n is None else n, cfg.batch_size):
        with np.load(_chunk_path(stage, k, start)) as z:
            images.append(z["images"])
            embs.append(z["embeddings"])
    return np.concatenate(images), np.concatenate(embs)


def mitigation_stats(stage: Path, specs: list[PromptSpec], cfg) -> dict[int, np.ndarray]:
    """Per prompt index, the stored ``(score before, score after, iterations)`` of its images."""
    out = {}
    for k, spec in enumerate(specs):
        parts = []
        for start in range(0, seeds_of(spec, cfg), cfg.batch_size):
            with np.load(_chunk_path(stage, k, start)) as z:
                if "mitigation" in z.files:
                    parts.append(z["mitigation"])
        if parts:
            out[k] = np.concatenate(parts)
    return out


__all__ = ["mitigation_stats", "THUMB", "REFERENCE_SEEDS", "generate_all", "load_prompt", "full_chunks", "seeds_of"]
