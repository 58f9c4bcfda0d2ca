"""The scan report's figures: each finding's image grid, read from its step's folder, and a plot of
the gated metrics.

Images an unsafe-content detector flagged are shown pixelated (blocks of an eighth of the side):
a report is read by people who did not ask to see them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

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
    from ..generation_store import load_prompt

    stage = Path(generation_cfg.out)
    plan = _plan(stage)
    k = next(i for i, p in enumerate(plan) if p["prompt"] == finding.detail["prompt"]
             and p.get("cluster") == finding.detail["cluster"])
    generated, _ = load_prompt(stage, k, generation_cfg, n=min(generation_cfg.n, generation_cfg.batch_size))
    ds = open_dataset(dataset)
    entries = ds.entries()
    index = {f: i for i, f in enumerate(entries.file_names)}
    rows = [entries.rows[index[f]] for f in finding.detail.get("files", []) if f in index][:columns]
    training = [im for im in ds.load(np.asarray(rows)) if im is not None] if rows else []
    side = generated.shape[1]
    training = [_resize(im, side) for im in training]
    images = list(generated[:columns]) + [np.full_like(generated[0], 255)] * max(0, columns - len(generated)) + training
    return png_bytes(make_grid(images, columns=columns, scale=auto_scale(side)))


def _plan(stage: Path) -> list[dict]:
    import json

    data = json.loads((stage / "prompts.json").read_text(encoding="utf-8"))
    return data["prompts"] if isinstance(data, dict) else data


def _resize(image: np.ndarray, side: int) -> np.ndarray:
    from PIL import Image

    if image.shape[0] == side and image.shape[1] == side:
        return image
    return np.asarray(Image.fromarray(np.asarray(image, np.uint8)).convert("RGB").resize((side, side), Image.BICUBIC))


def metric_plot(findings: list[Finding], metric: str, limit: float | None) -> bytes:
    """Bars of one metric's subjects with their intervals, and the gate's limit as a line."""
    import matplotlib.pyplot as plt

    from ...report.plots import _png

    mine = [f for f in findings if f.metric == metric]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.6 * len(mine) + 2), 3.0))
    values = [f.value for f in mine]
    err = None
    if all(f.ci for f in mine):
        err = [[max(0.0, f.value - f.ci[0]) for f in mine], [max(0.0, f.ci[1] - f.value) for f in mine]]
    colors = ["#c44e52" if limit is not None and v > limit else "#4c72b0" for v in values]
    ax.bar(range(len(mine)), values, yerr=err, capsize=3, color=colors)
    if limit is not None:
        ax.axhline(limit, color="#c44e52", ls="--", lw=1, label=f"gate {limit:g}")
        ax.legend(fontsize=8)
    ax.set_xticks(range(len(mine)))
    ax.set_xticklabels([f.subject[:28] for f in mine], rotation=30, ha="right", fontsize=8)
    ax.set_title(metric)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


__all__ = ["censored", "replication_grid", "metric_plot"]
