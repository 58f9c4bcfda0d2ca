"""The summary and sections of ``report.html`` for ``sdguard audit generations``, drawn from a
:class:`~sdguard.audit.generation_result.GenerationAuditResult` (computed by
:mod:`sdguard.audit.generation_replication`)."""

from __future__ import annotations

import numpy as np

from ..core.images import resize
from ..data.datasets import issues_sentence
from ..report import Report, auto_scale, make_grid, png_bytes
from .extraction import CLIQUE_FLAG
from .generation_clusters import describe_clusters
from .generation_result import GenerationAuditResult
from .somepalli import rule_sentence

GRID_PROMPTS = 4  # prompts with the highest replication rates shown as image grids
GRID_IMAGES = 8  # generations per grid


def render_generation_audit(report: Report, result: GenerationAuditResult, cfg, ds) -> None:
    """Write ``report.summary`` and the sections of ``result``; ``ds`` (the training data) gives
    the nearest training images shown under the generations."""
    _replicated_section(report, result, ds)
    _rate_sections(report, result, cfg)
    if result.object is not None:
        _object_section(report, result.object)
    _grids(report, result, ds)
    report.summary = generation_summary(result, cfg)
    issues = issues_sentence(ds.describe().get("issues", {}))
    if issues:
        report.summary.append(issues)


def generation_summary(result: GenerationAuditResult, cfg) -> list[str]:
    """The summary lines of a generation audit."""
    flagged = [p for p in result.prompts if p.extraction_flagged]
    summary = [
        f"{len(result.prompts)} prompts x {cfg.n} seeds on {cfg.model}",
        rule_sentence(result.rule),
        *[_replicated_line(p) for p in sorted(result.prompts, key=lambda p: -p.replication_rate)[:GRID_PROMPTS]
          if p.replication_rate > 0],
        *[f"{k}: mean replication {v['mean_replication']:.2f} over {v['prompts']} prompt(s)"
          for k, v in result.kinds.items()],
        f"{len(flagged)} prompt(s) flagged by a clique of >= {CLIQUE_FLAG} near-identical generations: "
        + (", ".join(f"{r} {sum(r in p.flagged_by for p in flagged)}" for r in _rules(result)) or "none")
        + f" (calibrated: tiled l2 < {result.clique['value']}, {result.clique['source']}; copies: at the spread of "
        f"the replicated cluster's copies); the published 0.15 rule would flag "
        f"{sum(bool(p.extraction.get('published', {}).get('flagged')) for p in result.prompts)}",
    ]
    if result.object is not None:
        o = result.object
        summary.append(f"object '{o['object']}': {o['keyword_share']:.2f} of keyword generations vs "
                       f"{o['control_share']:.2f} of controls (Fisher p = {o['fisher_p']:.2g})")
    mit = result.generation.get("mitigation")
    if mit:
        summary.append(f"mitigation wen (target {mit['target']:.4g}, {mit.get('target_source', '')}): "
                       f"{mit.get('optimized', 0)} of {mit['images']} images' embeddings optimized, score "
                       f"{mit.get('score_before_mean', 0):.3g} -> {mit.get('score_after_mean', 0):.3g} on average")
    return summary


def _rules(result: GenerationAuditResult) -> list[str]:
    return [r for r in ("given", "calibrated", "copies") if any(r in p.extraction for p in result.prompts)]


def _replicated_line(p) -> str:
    own = f", {p.own_cluster_share:.2f} its own cluster {p.cluster}" if p.own_cluster_share is not None else ""
    return f"'{p.prompt}': replication {p.replication_rate:.2f}{own}; replicated: {describe_clusters(p.replicated_clusters)}"


def _replicated_section(report: Report, result: GenerationAuditResult, ds) -> None:
    """What the replicated generations replicate, per prompt: the clusters, with an example each."""
    rows, examples, names = [], [], []
    for i, p in enumerate(result.prompts):
        rows.append({"prompt": p.prompt, "kind": p.kind, "replication_rate": p.replication_rate,
                     "own_cluster": p.cluster, "own_cluster_share": p.own_cluster_share,
                     "replicated": describe_clusters(p.replicated_clusters),
                     "extraction_flagged_by": ", ".join(p.flagged_by) or "-"})
        for r in p.replicated_clusters[:2]:
            if r["cluster"] is not None and r["cluster"] not in names and len(names) < GRID_IMAGES:
                names.append(r["cluster"])
                examples.append(r["example"]["row"])
    figures = []
    if examples:
        size = result.prompts[0].images.shape[1] if result.prompts[0].images is not None else 32
        loaded = ds.load(np.asarray(examples), max_side=size)
        grid = make_grid([_fit(t, size) if t is not None else np.zeros((size, size, 3), np.uint8) for t in loaded],
                         columns=len(loaded), scale=auto_scale(size))
        figures.append((png_bytes(grid), "an example training image of each replicated cluster: "
                        + ", ".join(f"cluster {c}" for c in names)))
    report.section("What is replicated",
                   "For each prompt, the training clusters its replicated generations fall in (each generation "
                   "against its nearest training image, at that image's cluster threshold), with the share of "
                   "generations in each, the cluster's top caption words, and for a prompt built from a cluster the "
                   "share that replicates that very cluster. The extraction rules that flag the prompt are named.",
                   table=rows, figures=figures)


def _rate_sections(report: Report, result: GenerationAuditResult, cfg) -> None:
    """Replication per prompt and per prompt kind, as tables and bar plots."""
    from ..report.plots import bar_plot  # matplotlib loads only when a report is drawn

    rows = result.prompts
    labels = [f"{i}:{r.kind}" for i, r in enumerate(rows)]
    columns = ("prompt", "kind", "n", "replication_rate", "rule", "ci_low", "ci_high", "threshold", "clique_size",
               "caption_similarity")
    report.section("Replication per prompt",
                   f"Share of {cfg.n} generations (seeds {cfg.seed}..{cfg.seed + cfg.n - 1}) whose {cfg.embedder} "
                   f"embedding reaches the replication threshold, with Wilson 95% intervals; "
                   f"{rule_sentence(result.rule)}.",
                   table=[{k: getattr(r, k) for k in columns} for r in rows],
                   figures=[(bar_plot(labels, [r.replication_rate for r in rows], title="replication rate per prompt",
                                      ylabel="share of generations", errors=([r.ci_low for r in rows],
                                                                             [r.ci_high for r in rows])),
                             "replication rate per prompt (index:kind)")])
    kinds = result.kinds
    report.section("Replication per prompt kind", "Mean replication rate of the prompts of each kind "
                   "(Somepalli et al. 2023's prompt kinds, object prompts and controls).",
                   figures=[(bar_plot(list(kinds), [v["mean_replication"] for v in kinds.values()],
                                      title="mean replication rate per prompt kind", ylabel="share"), "per kind")])


def _object_section(report: Report, o: dict) -> None:
    from ..report.plots import bar_plot

    report.section(f"Object-level replication: '{o['object']}' behind '{o['keyword']}'",
                   f"Fisher's exact test, keyword vs control prompts: p = {o['fisher_p']}",
                   table=[{"where": "keyword prompts", "share": o["keyword_share"], "n": o["keyword_n"]},
                          {"where": "control prompts", "share": o["control_share"], "n": o["control_n"]},
                          {"where": "keyword's training images", "share": o["training_share"], "n": o["training_n"]}],
                   figures=[(bar_plot(["keyword prompts", "control prompts", "training images"],
                                      [o["keyword_share"], o["control_share"], o["training_share"]],
                                      title=f"share of images showing '{o['object']}'", rotate=False), "object share")])


def _grids(report: Report, result: GenerationAuditResult, ds) -> None:
    """The prompts that replicate most: their generations most similar to a training image, over it."""
    rows = result.prompts
    top = sorted(range(len(rows)), key=lambda i: -rows[i].replication_rate)[:GRID_PROMPTS]
    for i in top:
        r = rows[i]
        images = r.images
        order = np.argsort(-r.similarity)[:GRID_IMAGES]
        train = ds.load(r.nearest_rows[order], max_side=images.shape[1])
        train = [t if t is not None else np.zeros_like(images[0]) for t in train]
        train = [_fit(t, images.shape[1]) for t in train]
        grid = make_grid(list(images[order]) + train, columns=len(order), scale=auto_scale(images.shape[1]))
        report.section(f"Prompt {i}: {r.prompt}",
                       f"Top row: the generations most similar to a training image; bottom row: that training image "
                       f"(replication rate {r.replication_rate:.2f}, largest clique {r.clique_size}).",
                       figures=[(png_bytes(grid), "generations (top) and their nearest training images (bottom)")])


def _fit(image: np.ndarray, size: int) -> np.ndarray:
    return resize(image, size)


__all__ = ["render_generation_audit", "generation_summary"]
