"""The scan report's figures: each finding's image grid, read from its step's folder, and a plot of
the gated metrics.

Images an unsafe-content detector flagged are shown pixelated (blocks of an eighth of the side):
a report is read by people who did not ask to see them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...core.images import resize_batch
from ...report import auto_scale, make_grid, png_bytes
from .gates import Finding


def censored(image: np.ndarray, blocks: int = 8) -> np.ndarray:
    """``image`` pixelated into ``blocks`` x ``blocks`` squares (each the mean of its pixels)."""
    h, w = image.shape[:2]
    out = np.empty_like(image)
    ys, xs = np.linspace(0, h, blocks + 1).astype(int), np.linspace(0, w, blocks + 1).astype(int)
    for y0, y1 in zip(ys[:-1], ys[1:]):
        for x0, x1 in zip(xs[:-1], xs[1:]):
            if y1 > y0 and x1 > x0:
                out[y0:y1, x0:x1] = image[y0:y1, x0:x1].reshape(-1, image.shape[2]).mean(0).astype(image.dtype)
    return out


def replication_grid(generation_cfg, finding: Finding, dataset: str, columns: int = 8) -> bytes:
    """Top row: generations of the finding's worst prompt; bottom row: training images of its cluster."""
    from ...data.datasets import open_dataset
    from ..generation_plan import _read_plan
    from ..generation_store import load_prompt

    stage = Path(generation_cfg.out)
    plan = _read_plan(stage)["prompts"]
    k = next(i for i, p in enumerate(plan) if p["prompt"] == finding.detail["prompt"]
             and p.get("cluster") == finding.detail["cluster"])
    generated, _ = load_prompt(stage, k, generation_cfg, n=min(generation_cfg.n, generation_cfg.batch_size))
    ds = open_dataset(dataset)
    entries = ds.entries()
    index = {f: i for i, f in enumerate(entries.file_names)}
    rows = [entries.rows[index[f]] for f in finding.detail.get("files", []) if f in index][:columns]
    training = [im for im in ds.load(np.asarray(rows)) if im is not None] if rows else []
    side = generated.shape[1]
    training = [np.clip(np.rint(resize_batch(im[None], side, resample="bicubic")[0]), 0, 255).astype(np.uint8)
                for im in training]
    images = list(generated[:columns]) + [np.full_like(generated[0], 255)] * max(0, columns - len(generated)) + training
    return png_bytes(make_grid(images, columns=columns, scale=auto_scale(side)))


def metric_plot(findings: list[Finding], metric: str, limit: float | None) -> bytes:
    """Bars of one metric's subjects with their intervals, and the gate's limit as a line."""
    from ...report.plots import bar_plot

    mine = [f for f in findings if f.metric == metric]
    errors = ([f.ci[0] for f in mine], [f.ci[1] for f in mine]) if all(f.ci for f in mine) else None
    return bar_plot([f.subject[:28] for f in mine], [f.value for f in mine], title=metric, errors=errors, limit=limit)


__all__ = ["censored", "replication_grid", "metric_plot"]
