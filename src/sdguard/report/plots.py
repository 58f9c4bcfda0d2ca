"""Plots for reports (matplotlib, Agg backend), returned as PNG bytes."""

from __future__ import annotations

import io
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def bar_plot(labels: Sequence[str], values: Sequence[float], *, title: str = "", ylabel: str = "",
             errors: tuple[Sequence[float], Sequence[float]] | None = None, rotate: bool = True,
             limit: float | None = None) -> bytes:
    """Bars with optional asymmetric error bars ``(low, high)`` given as absolute bounds; ``limit``
    draws a gate as a dashed line and the bars above it in red."""
    fig, ax = plt.subplots(figsize=(max(4.0, 0.45 * len(labels) + 2), 3.2))
    yerr = None
    if errors is not None:
        low, high = errors
        yerr = [[max(0.0, v - lo) for v, lo in zip(values, low)], [max(0.0, hi - v) for v, hi in zip(values, high)]]
    colors = ["#c44e52" if limit is not None and v > limit else "#4c72b0" for v in values]
    ax.bar(range(len(values)), values, yerr=yerr, capsize=3, color=colors)
    if limit is not None:
        ax.axhline(limit, color="#c44e52", ls="--", lw=1, label=f"gate {limit:g}")
        ax.legend(fontsize=8)
    ax.set_xticks(range(len(values)))
    ax.set_xticklabels(labels, rotation=45 if rotate else 0, ha="right" if rotate else "center", fontsize=8)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def histogram(values: Sequence[float], *, bins: int = 50, title: str = "", xlabel: str = "",
              vlines: dict[str, float] | None = None, log: bool = False) -> bytes:
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    ax.hist(values, bins=bins, color="#55a868", log=log)
    for name, x in (vlines or {}).items():
        ax.axvline(x, color="#c44e52", linestyle="--")
        ax.text(x, ax.get_ylim()[1] * 0.9, f" {name}", color="#c44e52", fontsize=8)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    return _png(fig)


def line_plot(series: dict[str, tuple[Sequence[float], Sequence[float]]], *, title: str = "", xlabel: str = "",
              ylabel: str = "", diagonal: bool = False, logx: bool = False) -> bytes:
    """Several (x, y) curves, e.g. ROC curves (``diagonal`` draws chance)."""
    fig, ax = plt.subplots(figsize=(4.8, 3.6))
    for name, (x, y) in series.items():
        ax.plot(x, y, label=name)
    if diagonal:
        ax.plot([0, 1], [0, 1], color="gray", linestyle=":")
    if logx:
        ax.set_xscale("log")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if series:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig)


def overlaid_histograms(series: dict[str, Sequence[float]], *, bins: int = 40, title: str = "", xlabel: str = "",
                        vlines: dict[str, float] | None = None) -> bytes:
    """Several distributions on shared bins, semi-transparent (e.g. member vs non-member scores)."""
    import numpy as np

    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    values = [np.asarray(v, float) for v in series.values()]
    finite = np.concatenate([v[np.isfinite(v)] for v in values]) if values else np.zeros(0)
    edges = np.histogram_bin_edges(finite, bins=bins) if len(finite) else bins
    for (name, _), v in zip(series.items(), values):
        ax.hist(v[np.isfinite(v)], bins=edges, alpha=0.55, label=f"{name} ({len(v)})")
    for name, x in (vlines or {}).items():
        ax.axvline(x, color="#c44e52", linestyle="--")
        ax.text(x, ax.get_ylim()[1] * 0.9, f" {name}", color="#c44e52", fontsize=8)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    if series:
        ax.legend(fontsize=8)
    return _png(fig)
