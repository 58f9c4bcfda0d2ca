"""``sdguard scan``: the audits a model's inputs allow, in one resumable job, one report, release gates.

The steps (:mod:`.steps`) run in order into folders of the scan's output, each through its own
sdguard audit, with one copy of the model's weights (:func:`~sdguard.models.adapter.sharing_models`)
and the training set embedded once (the embedding cache the dataset and replication steps share);
the replication step reads the data step's clusters. ``steps.json`` records each finished step, so
a scan killed at any point and run again with ``--resume`` continues at the first unfinished step
(the replication step also keeps its finished generation chunks), and refuses a changed model,
dataset or setting (``scan.json``). Gates, the JUnit file and the model card change no
measurement: a resumed scan may change them.

The report starts with what a person reads first: the verdict of each gate, then the worst
findings, each with its image grid; then each metric against its gate, each step's figures and a
link to its own report, and the model-card section as the Hub would render it.
"""

from __future__ import annotations

import json
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from ...core.config import build, output_for
from ...core.errors import InputError
from ...core.io import atomic_write_json, check_writable_folder
from ...report import Report
from ..generation_plan import check_identity, run_identity
from .card import (
    check_card,
    hardening_records,
    render_section,
    section_html,
    update_card,
)
from .config import ScanConfig
from .gates import METRICS, judge, resolve_gates, write_junit
from .steps import STEP_FUNCTIONS, Context, choose_candidates, generation_config

IDENTITY = "scan.json"
DONE = "steps.json"


def _check(cfg: ScanConfig) -> dict[str, tuple[float, str]]:
    """Every option checked before anything is loaded: gates name measurable metrics, the files
    written beside the output can be written."""
    gates = resolve_gates(cfg.fail_above, cfg.gates)
    for metric in gates:
        m = METRICS[metric]
        if not cfg.runs(m.step):
            why = f"--skip {m.step}" if m.step in cfg.skip else f"needs {m.needs}"
            raise InputError.bad("--fail-above" if metric in cfg.fail_above else "--gates", metric,
                                 f"is measured by the {m.step} step, which does not run ({why})")
    for argument, path in (("--junit", cfg.junit), ("--model-card", cfg.model_card)):
        if path is not None:
            if Path(path).is_dir():
                raise InputError.bad(argument, path, "is a folder; give a file")
            check_writable_folder(Path(path).parent if str(Path(path).parent) else ".", argument)
    if cfg.model_card is not None:
        check_card(cfg.model_card)
    if cfg.runs("watermark"):
        from ...harden.watermark.keys import load_key

        load_key(cfg.key)  # a missing or malformed key is refused now, not after the other steps
    if not cfg.planned():
        raise InputError("nothing to scan: give --dataset, --members or --prompts (and skip fewer steps).")
    return gates


def scan(*args: Any, progress: bool | None = None, **values: Any) -> Report:
    """Scan a model (see the module docstring): ``scan(ScanConfig(...))`` or ``scan(model, dataset=...,
    out=..., fail_above={"replication": 0.05})``.

    ``results.findings``: every measured value (metric, subject, value, ci, detail);
    ``results.gates``: each gate's verdict and ``results.passed``. The caller decides what a failed
    gate means (the command line exits 1); :func:`gate_failures` gives the sentences.
    """
    from ...data.datasets import open_dataset
    from ...models import DiffusionModel
    from ...models.adapter import sharing_models

    cfg = build(ScanConfig, args, values)
    gates = _check(cfg)
    report = Report("scan", cfg)
    t0 = time.perf_counter()
    with sharing_models(), output_for(cfg, "scan", "model", "dataset", "members", "nonmembers", "prompts") as stage:
        with report.timer("load"):
            model = DiffusionModel.load(cfg.model, device=cfg.device)
        report.add_model("model", model)
        identity = run_identity(cfg, report.models["model"]["fingerprint"],
                                open_dataset(cfg.dataset).fingerprint() if cfg.dataset else "")
        check_identity(stage, cfg, identity, IDENTITY)
        atomic_write_json(stage / IDENTITY, identity)
        ctx = Context(cfg, stage, progress)
        done = _run_steps(ctx, report)
        findings = [f for step in cfg.planned() for f in STEP_FUNCTIONS[step][1](ctx)]
        verdicts = judge(gates, findings)
        hardening = hardening_records(cfg.model)
        section = render_section(model=cfg.model, fingerprint=report.models["model"]["fingerprint"],
                                 dataset=cfg.dataset, settings=cfg.model_dump(), steps=cfg.planned(),
                                 findings=findings, verdicts=verdicts, hardening=hardening,
                                 version=_version(), created=report.created[:10])
        report.results = {"steps": done, "findings": [f.to_dict() for f in findings],
                          "gates": [v.to_dict() for v in verdicts], "passed": all(v.passed for v in verdicts),
                          "hardening": hardening, "model_card_section": section,
                          "candidates": _candidates_summary(ctx)}
        from .sections import write_sections

        write_sections(report, ctx, findings, verdicts, section_html(section))
        report.write(stage)
    if cfg.junit:
        write_junit(cfg.junit, verdicts, findings, time.perf_counter() - t0)
    if cfg.model_card:
        update_card(cfg.model_card, section)
    return report


def _run_steps(ctx: Context, report: Report) -> dict[str, dict]:
    """Run the planned steps not finished before; ``steps.json`` after each (what a resume skips)."""
    path = ctx.stage / DONE
    done = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    for step in ctx.cfg.planned():
        if step in done:
            done[step]["reused"] = True
            report.timings[step] = done[step]["seconds"]
            continue
        start = time.perf_counter()
        with report.timer(step):
            # a step whose audit finished before the kill that came ahead of steps.json: its folder is complete
            if not (ctx.folder(step) / "report.json").is_file():
                STEP_FUNCTIONS[step][0](ctx)
            if step == "data":
                choose_candidates(ctx)
        done[step] = {"seconds": round(time.perf_counter() - start, 3), "reused": False}
        atomic_write_json(path, {k: {"seconds": v["seconds"]} for k, v in done.items()})
    return done


def _candidates_summary(ctx: Context) -> list[dict] | None:
    if ctx.candidate_file() is None:
        return None
    return [{k: c[k] for k in ("cluster", "size", "copies", "words")} for c in ctx.candidates()]


def _version() -> str:
    try:
        return metadata.version("sdguard")
    except metadata.PackageNotFoundError:  # pragma: no cover - a source checkout
        return "?"


def gate_failures(report: Report) -> list[str]:
    """One sentence per failed gate of a scan's report (empty when every gate passed)."""
    return [v["sentence"] for v in report.results.get("gates", []) if not v["passed"]]


__all__ = ["scan", "gate_failures", "generation_config"]
