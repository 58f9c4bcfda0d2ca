"""`sdguard demo`: the whole loop on the embedded default, on a CPU: audit, harden, re-audit, report.

1. make the synthetic world ``builtin:tiny`` was trained on (``OUT/world``);
2. audit: ``sdguard scan`` of builtin:tiny on it (``OUT/scan-before``): near-duplicate clusters,
   replication over many seeds on the most duplicated clusters, memorization of their captions,
   with a replication gate and the model card's section (``OUT/model-card.md``);
3. harden the model: erase its most replicated concept with UCE (``OUT/erased``);
   harden the data: deduplicate the world (``sdguard desensitize --dedup keep-one``, ``OUT/deduplicated``);
4. re-audit: the same scan of the erased model (``OUT/scan-after``, the card's section replaced)
   and the dataset audit of the deduplicated world (``OUT/audit-deduplicated``);
5. ``OUT/report.html``: every figure before and after, side by side, with image grids, and the run time.

Training a model on the deduplicated world is the other half of data hardening; the tiny recipe
takes about 30 minutes on 2 CPU cores (``sdguard model train-tiny``), so the demo stops at the data.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

from .core.config import OutputConfig, build, option, output_for
from .models.builtin import tiny_available
from .report import Report

GATE = 0.05


class DemoConfig(OutputConfig):
    """The main job on the embedded default (builtin model and synthetic world), on a CPU."""

    python_positional = ("out",)

    out: str = option("demo-out", help="output folder")
    n: int = option(32, flag="--n", ge=1, le=100_000, help="generations per prompt")
    top_clusters: int = option(4, ge=1, le=100, help="most duplicated clusters generated from")


def demo(*args: Any, progress: bool | None = None, **values: Any) -> Report:
    """Run the demo into ``out`` and return its report (see the module docstring);
    ``demo(DemoConfig(...))`` or ``demo("demo-out", n=32)``."""
    from .audit.dataset_replication import audit_data
    from .audit.scan import scan
    from .data.world import WORLD_DEFAULTS, make_world
    from .harden.desensitize import desensitize
    from .harden.erasure.base import VocabularyWarning
    from .harden.erasure.commands import erase

    cfg = build(DemoConfig, args, values)
    model = "builtin:tiny" if tiny_available() else "builtin:tiny-random"
    report = Report("demo", {"model": model, **cfg.model_dump(), "world": dict(WORLD_DEFAULTS)})
    t0 = time.perf_counter()
    with output_for(cfg, "demo") as stage:
        world, card = stage / "world", stage / "model-card.md"
        # memorization at timestep 100: Wen et al.'s extension; the published first sampler step sees no
        # signal on builtin:tiny, a zero-terminal-SNR model (README: fast memorization detection)
        settings = dict(dataset=str(world), n=cfg.n, top_clusters=cfg.top_clusters, batch_size=64,
                        memorization_timestep=100, fail_above={"replication": GATE}, model_card=str(card),
                        progress=progress)
        with report.timer("world"):
            truth = make_world(world, **WORLD_DEFAULTS)
        with report.timer("scan_before"):
            before = scan(model, out=stage / "scan-before", **settings)
        concept = _most_replicated(before)
        with report.timer("erase"), warnings.catch_warnings():
            # the preserved world captions hold words the tiny tokenizer splits: listed in the erase report
            warnings.simplefilter("ignore", VocabularyWarning)
            # no preview: the scans below generate the before and after (the erase preview would draw every
            # preserved prompt too, 100 for builtin:tiny's default preserve set: over a minute here)
            erase(model, concepts=[concept], method="uce", out=stage / "erased", preview=0, progress=progress)
        with report.timer("deduplicate"):
            dedup = desensitize(str(world), out=stage / "deduplicated", dedup="keep-one", pii=["off"],
                                face_action="off", dedup_from=str(stage / "scan-before" / "data"), progress=progress)
        with report.timer("scan_after"):
            after = scan(str(stage / "erased"), out=stage / "scan-after", **settings)
        with report.timer("audit_deduplicated"):
            data_after = audit_data(stage / "deduplicated" / "dataset", out=stage / "audit-deduplicated",
                                    progress=progress)
        report.models = {"before": before.models["model"], "after": {**after.models["model"], "spec": "erased/"}}
        _write(report, stage, truth, concept, before, after, dedup, data_after, time.perf_counter() - t0)
        report.write(stage)
    return report


def _most_replicated(scan_report: Report) -> str:
    rows = [f for f in scan_report.results["findings"] if f["metric"] == "replication"]
    if not rows:
        return "van gogh starry night"  # a model that replicates nothing: the world's largest artwork
    return max(rows, key=lambda f: f["value"])["subject"]


def _finding(scan_report: Report, metric: str, subject: str) -> dict | None:
    return next((f for f in scan_report.results["findings"] if f["metric"] == metric and f["subject"] == subject),
                None)


def _grid(scan_report: Report, subject: str) -> bytes | None:
    from .audit.scan.figures import replication_grid
    from .audit.scan.gates import Finding
    from .audit.scan.steps import Context, generation_config

    f = _finding(scan_report, "replication", subject)
    if f is None:
        return None
    ctx = Context(scan_report.config, Path(scan_report.config.out), None)
    return replication_grid(generation_config(ctx), Finding(**{**f, "ci": None}), scan_report.config.dataset)


def _write(report, stage, truth, concept, before, after, dedup, data_after, seconds) -> None:
    def value(r, metric, subject):
        f = _finding(r, metric, subject)
        return None if f is None else f["value"]

    subjects = [f["subject"] for f in before.results["findings"] if f["metric"] == "replication"]
    rows = [{"cluster": s, "erased": s == concept, "replication before": value(before, "replication", s),
             "replication after": value(after, "replication", s)} for s in subjects]
    dup_before = value(before, "dataset_duplicates", "training images")
    clustering = data_after.results["clustering"]
    dup_after = clustering["clustered_entries"] / max(1, data_after.results["images"]["embedded"])
    kept = next((r["replication after"] for r in rows if not r["erased"] and r["replication before"]), None)
    report.summary = [
        f"the loop ran in {seconds:.0f} s on this machine: audit, harden (UCE erasure, deduplication), re-audit",
        f"model {before.models['model']['spec']}; world of {truth['size']} images with planted artworks",
        f"most replicated concept: {concept!r}, replication {value(before, 'replication', concept):.2f} -> "
        f"{value(after, 'replication', concept):.2f} after UCE"
        + (f" (an artwork left alone: {kept:.2f} after)" if kept is not None else ""),
        f"release gate replication <= {GATE:g}: before "
        f"{'passed' if before.results['passed'] else 'failed'}, after {'passed' if after.results['passed'] else 'failed'}",
        f"training images in near-duplicate clusters: {dup_before:.3f} -> {dup_after:.3f} after deduplication "
        f"({dedup.results['records']['in']} -> {dedup.results['records']['out']} images)",
    ]
    figures = [(g, f"{label}: generations of the prompt (top) and the cluster's training images (bottom)")
               for g, label in ((_grid(before, concept), "before"), (_grid(after, concept), "after")) if g]
    report.section(f"Erasure of {concept!r} with UCE: replication before and after", table=rows, figures=figures)
    report.section("Deduplication of the training data: before and after",
                   table=[{"": "before", "clustered share": dup_before,
                           "clusters": _clusters(stage / "scan-before" / "data")},
                          {"": "after", "clustered share": dup_after, "clusters": clustering["clusters"]}])
    flagged = {name: set(_finding(r, "memorized_prompts", "training captions")["detail"]["prompts"])
               for name, r in (("before", before), ("after", after))}
    report.section("Memorization of the clusters' captions: before and after (Wen et al.'s detector at timestep "
                   "100, an extension)",
                   table=[{"": name, "captions flagged": value(r, "memorized_prompts", "training captions"),
                           f"of them naming {concept!r}": sum(set(concept.split()) <= set(p.split()) for p in flagged[name])}
                          for name, r in (("before", before), ("after", after))])
    report.summary.insert(3, f"captions flagged as memorized: {value(before, 'memorized_prompts', 'training captions'):g}"
                          f" -> {value(after, 'memorized_prompts', 'training captions'):g} after UCE")
    gates = [{"model": name, **g, "failing": ", ".join(x["subject"] for x in g["failing"])}
             for name, r in (("before", before), ("after", after)) for g in r.results["gates"]]
    report.section("Release gates", table=gates)
    report.links = {"scan before hardening": "scan-before/report.html",
                    "scan after hardening": "scan-after/report.html", "erasure (UCE)": "erased/report.html",
                    "deduplication": "deduplicated/report.html",
                    "dataset audit after deduplication": "audit-deduplicated/report.html",
                    "model card (Markdown)": "model-card.md"}
    report.results = {"concept": concept, "replication": rows, "dataset_duplicates": {"before": dup_before,
                      "after": dup_after}, "gates": gates, "seconds": round(seconds, 1),
                      "world": {"size": truth["size"], "artworks": [d["name"] for d in truth["duplicates"]]}}


def _clusters(data_folder: Path) -> int:
    import json

    return json.loads((data_folder / "report.json").read_text(encoding="utf-8"))["results"]["clustering"]["clusters"]
