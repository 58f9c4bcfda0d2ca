"""``sdguard audit memorization``: score prompts for memorization from one or two UNet passes,
flag them at a threshold calibrated on ordinary prompts, and measure the detectors when labels are
known (AUC, TPR at 1% and 0.1% FPR with bootstrap intervals, cost per prompt).

The threshold is never chosen on the prompts it is scored on: it comes from ``--ordinary`` prompts,
from a suite's own calibration captions, or, for a labelled file without either, from a seeded half
of its ordinary prompts (that half is then left out of the figures).
"""

from __future__ import annotations

import time
from typing import Any, Literal

import numpy as np
from pydantic import model_validator

from ...core.config import OutputConfig, build, option, output_for
from ...core.errors import InputError
from ...core.progress import progress_bar
from ...models.commands import DEVICE_HELP, MODEL_HELP
from ...report import Report
from ..stats import detection_summary, threshold_at_fpr
from .base import DETECTORS, DetectionSettings
from .prompts import SUITES, PromptSet, read_prompt_set, sdv1_500, world_suite


class MemorizationConfig(OutputConfig):
    """Fast memorization detection: a score per prompt from one or two UNet passes."""

    python_positional = ("model",)

    model: str = option(positional=True, help=MODEL_HELP)
    prompts: str | None = option(None, help="prompts to score (with --suite: added to its prompts): .txt "
                                 "(memorized|ordinary<TAB>PROMPT labels), .jsonl or .csv (prompt/caption/text, "
                                 "optional memorized)")
    suite: Literal[SUITES] | None = option(None, help="a public protocol instead of --prompts: sdv1-500 (the 500 "  # type: ignore[valid-type]
                                           "memorized SD v1 captions vs COCO) or world (a world's planted artworks "
                                           "vs its scene captions)")
    dataset: str | None = option(None, help="with --suite world: the world folder (default: the default world)")
    ordinary: str | None = option(None, help="ordinary prompts to calibrate the threshold on (default: the suite's "
                                  "own, or half of the ordinary prompts of --prompts)")
    detector: list[str] = option(["wen", "anisotropy"], help="detector (repeatable): wen, anisotropy")
    generations: int = option(1, ge=1, le=64, help="starting noises per prompt")
    steps: int = option(50, ge=3, le=1000, help="sampler steps whose timesteps the detectors read")
    scored_steps: int = option(1, ge=1, le=1000, help="wen: first sampler steps scored")
    guidance: float = option(7.5, ge=0.0, le=100.0, help="wen with --scored-steps > 1: guidance of the trajectory")
    timestep: int | None = option(None, ge=0, le=100_000, help="wen extension: score pure noise from this training "
                                  "timestep instead of the sampler's first step(s)")
    anisotropy_weight: float | None = option(None, ge=-100.0, le=100.0, help="anisotropy: weight of the alignment "
                                             "term (default: the published 2.0 for epsilon models, 0.1 for v)")
    fpr: float = option(0.01, gt=0.0, lt=1.0, help="false-positive rate of the threshold on ordinary prompts")
    limit: int | None = option(None, ge=1, le=1_000_000, help="score at most this many prompts of each label")
    seed: int = option(0, ge=0, le=2**63 - 1, help="seed of the starting noises and of any split")
    batch_size: int = option(32, ge=1, le=4096, help="prompts per UNet pass")
    device: str | None = option(None, help=DEVICE_HELP)

    @model_validator(mode="after")
    def _source(self) -> "MemorizationConfig":
        if self.prompts is None and self.suite is None:
            raise InputError("--prompts FILE or --suite NAME is needed (the prompts to score).")
        if self.dataset is not None and self.suite != "world":
            raise InputError.bad("--dataset", self.dataset, "is used only with --suite world")
        if self.scored_steps > self.steps:
            raise InputError.bad("--scored-steps", self.scored_steps, f"is more than --steps ({self.steps})")
        if len(set(self.detector)) != len(self.detector):
            raise InputError.bad("--detector", self.detector, "names a detector twice")
        for name in self.detector:
            DETECTORS.entry(name)
        return self

    def settings(self) -> DetectionSettings:
        return DetectionSettings(generations=self.generations, steps=self.steps, scored_steps=self.scored_steps,
                                 guidance=self.guidance, timestep=self.timestep,
                                 anisotropy_weight=self.anisotropy_weight, seed=self.seed)


def _cap(ps: PromptSet, limit: int | None) -> PromptSet:
    if limit is None:
        return ps
    seen: dict[Any, int] = {}
    keep = []
    for i, lab in enumerate(ps.labels):
        seen[lab] = seen.get(lab, 0) + 1
        if seen[lab] <= limit:
            keep.append(i)
    return PromptSet([ps.prompts[i] for i in keep], [ps.labels[i] for i in keep], ps.source, ps.extra)


def plan_prompts(cfg: MemorizationConfig) -> tuple[PromptSet, list[str], str]:
    """``(scored prompts, calibration prompts, where the calibration came from)``."""
    if cfg.suite == "sdv1-500":
        scored, calibration = sdv1_500(seed=cfg.seed)
        source = "500 COCO captions other than the scored ones"
    elif cfg.suite == "world":
        from ...data.world import load_world
        from ..erasure.concepts import load_or_make_default_world

        world = load_world(cfg.dataset, "--dataset") if cfg.dataset else load_or_make_default_world()
        scored, calibration = world_suite(world, seed=cfg.seed)
        source = "scene captions of the world other than the scored ones"
    else:
        scored, calibration, source = PromptSet([], [], ""), [], ""
    if cfg.prompts:
        mine = read_prompt_set(cfg.prompts, "--prompts")
        scored = PromptSet(scored.prompts + mine.prompts, scored.labels + mine.labels,
                           " + ".join(filter(None, [scored.source, mine.source])), scored.extra)
    scored = _cap(scored, cfg.limit)
    if cfg.ordinary:
        calibration = read_prompt_set(cfg.ordinary, "--ordinary").prompts
        source = f"--ordinary {cfg.ordinary}"
    elif not calibration and scored.with_label(False):
        ordinary = scored.with_label(False)
        if len(ordinary) >= 4:
            pick = set(np.random.default_rng([cfg.seed, 0xCA1]).permutation(len(ordinary))[: len(ordinary) // 2].tolist())
            calibration = [p for i, p in enumerate(ordinary) if i in pick]
            held = set(calibration)
            keep = [i for i, p in enumerate(scored.prompts) if not (scored.labels[i] is False and p in held)]
            scored = PromptSet([scored.prompts[i] for i in keep], [scored.labels[i] for i in keep], scored.source,
                               scored.extra)
            source = "a seeded half of the ordinary prompts of --prompts (left out of the figures)"
    if cfg.limit is not None:
        calibration = calibration[: max(cfg.limit, 1)]
    return scored, calibration, source


def _score(model, detector, prompts: list[str], settings: DetectionSettings, batch_size: int,
           bar) -> dict[str, np.ndarray]:
    parts: dict[str, list[np.ndarray]] = {}
    for s in range(0, len(prompts), batch_size):
        emb = model.encode_prompts(prompts[s:s + batch_size])
        for k, v in detector.score(model, emb, settings).items():
            parts.setdefault(k, []).append(np.asarray(v, dtype=np.float64))
        bar.advance(len(prompts[s:s + batch_size]))
    return {k: np.concatenate(v) for k, v in parts.items()}


def run_detector(model, name: str, scored: PromptSet, calibration: list[str], cfg: MemorizationConfig,
                 progress: bool | None = None) -> dict[str, Any]:
    """One detector over the scored and calibration prompts: scores, threshold, figures, cost."""
    det = DETECTORS.get(name)()
    settings = cfg.settings()
    with progress_bar(f"{name}: scoring prompts", len(scored) + len(calibration), enabled=progress) as bar:
        start = time.perf_counter()
        scores = _score(model, det, scored.prompts, settings, cfg.batch_size, bar)
        seconds = time.perf_counter() - start
        cal = _score(model, det, calibration, settings, cfg.batch_size, bar)["score"] if calibration else None
    out: dict[str, Any] = {"citation": det.citation, "unet_evaluations_per_prompt": det.evaluations(settings),
                           "seconds_per_prompt": seconds / max(1, len(scored)), "extensions": det.extensions(settings),
                           **det.describe(model, settings), "scores": scores}
    if cal is not None and len(cal):
        t = threshold_at_fpr(cal, cfg.fpr)
        out["threshold"] = {"value": t, "fpr_target": cfg.fpr, "calibration_prompts": len(cal),
                            "calibration_fpr": float(np.mean(cal >= t)), "ordinary_median": float(np.median(cal)),
                            "resolvable": bool(cfg.fpr * len(cal) >= 1)}
        out["flagged"] = scores["score"] >= t
    labels = np.array([v for v in scored.labels if v is not None], bool)
    if len(labels) and labels.any() and not labels.all():
        known = np.array([v is not None for v in scored.labels])
        out["metrics"] = detection_summary(scores["score"][known], labels, seed=cfg.seed)
        if "flagged" in out:
            f = out["flagged"][known]
            out["metrics"]["at_threshold"] = {"tpr": float(f[labels].mean()), "fpr": float(f[~labels].mean())}
    return out


def audit_memorization(*args: Any, progress: bool | None = None, **values: Any) -> Report:
    """Score prompts for memorization (see the module docstring); ``audit_memorization(model,
    prompts=FILE | suite="sdv1-500" | suite="world", out=DIR, ...)`` or a :class:`MemorizationConfig`.

    ``results.detectors[name]``: threshold, ``metrics`` (``auc``, ``auc_ci``, ``tpr_at_0_01_fpr`` ...,
    when the prompts are labelled), ``unet_evaluations_per_prompt``, ``seconds_per_prompt``;
    ``results.prompts``: each prompt with its label, scores and flags."""
    from ...models import DiffusionModel
    from .sections import write_sections

    cfg = build(MemorizationConfig, args, values)
    scored, calibration, source = plan_prompts(cfg)
    report = Report("audit memorization", cfg)
    with output_for(cfg, "audit memorization", "model", "prompts", "ordinary", "dataset") as stage:
        with report.timer("load"):
            model = DiffusionModel.load(cfg.model, device=cfg.device)
        report.add_model("model", model)
        if cfg.timestep is not None and cfg.timestep >= model.num_train_timesteps:
            raise InputError.bad("--timestep", cfg.timestep, f"is past the model's {model.num_train_timesteps} "
                                 "training timesteps")
        model.prompt_lengths(scored.prompts)
        with report.timer("score"):
            detectors = {name: run_detector(model, name, scored, calibration, cfg, progress) for name in cfg.detector}
        write_sections(report, cfg, scored, detectors, source)
        report.write(stage)
    return report


__all__ = ["MemorizationConfig", "audit_memorization", "plan_prompts", "run_detector"]
