"""The command ``audit_erasure``: check the inputs, measure both models, write the report."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ...core.config import build, output_for
from ...core.errors import InputError, require
from ...core.progress import progress_bar
from ...embed import parse_spec
from ...report import Report
from .attack import NO_ATTACK, attack_concept, check_attack
from .captioned import CaptionedDataset
from .concepts import NUDITY_WORDS, Concept, load_or_make_default_world, resolve_concept
from .config import AuditErasureConfig
from .fid import fid_backend, fid_score
from .measure import attribute_accuracy, measure, scene_prompts
from .presence import PresenceDetector
from .probes import WorldProbes
from .result import UTILITY_NEEDS_WORLD, Attack, ConceptPresence, ErasureAudit, Utility
from .sections import write_sections


def audit_erasure(*args: Any, progress: bool | None = None, **values: Any) -> Report:
    """Measure an erasure before (``original``) vs after (``erased``): efficacy, retention,
    utility and robustness (see :mod:`sdguard.audit.erasure`).

    ``audit_erasure(AuditErasureConfig(...))`` or ``audit_erasure(original, erased, concepts, keep,
    out=..., ...)`` with the fields of :class:`AuditErasureConfig`: ``dataset`` is the world the
    models were trained on (default: the default world, made once into the cache);
    ``prompts`` an I2P-format file for nudity."""
    cfg = build(AuditErasureConfig, args, values)
    plan = plan_audit(cfg)
    report = Report("audit erasure", cfg)
    with output_for(cfg, "audit erasure", "original", "erased", "dataset", "prompts") as stage:
        audit = compute_audit(cfg, plan, report, progress=progress)
        write_sections(report, audit)
        if plan.nudity_prompts is not None:  # the I2P file: what was used, what was skipped and why
            f = plan.nudity_prompts
            report.results["prompt_file"] = {"path": f.path, "prompts": len(f), "skipped": f.skipped,
                                             "skipped_reasons": f.skipped_reasons()}
        report.write(stage)
    return report


@dataclass
class AuditPlan:
    """What a run needs, checked before any model is loaded."""

    nudity_prompts: Any  # the I2P file's prompts (``--prompts``), or None
    fid_backend: str | None  # with ``--fid``: the FID package that is installed
    needs_world: bool  # a concept other than nudity, or ``--dataset``, is given


def plan_audit(cfg: AuditErasureConfig) -> AuditPlan:
    """Refuse contradictory or unusable inputs (exit 2; 3 for a missing FID or NudeNet package) before any work."""
    from ..nudity import load_i2p_prompts

    check_attack(cfg.attack)
    for arg, values in (("--concept", cfg.concepts), ("--keep", cfg.keep)):
        for v in values:
            if not v.strip():
                raise InputError.bad(arg, v, "is empty: every concept needs at least one word")
    overlap = sorted({" ".join(c.lower().split()) for c in cfg.concepts} & {" ".join(k.lower().split()) for k in cfg.keep})
    if overlap:
        raise InputError.bad("--keep", overlap[0], "is also given as --concept; a concept is either erased or kept")
    nudity_file = load_i2p_prompts(cfg.prompts) if cfg.prompts else None
    if nudity_file is not None and not nudity_file.prompts:
        raise InputError.bad("--prompts", cfg.prompts, "holds no usable prompt" + (
            f" ({nudity_file.skipped_summary()})" if nudity_file.skipped else ""))
    if nudity_file is not None and nudity_file.skipped:
        warnings.warn(f"--prompts {nudity_file.skipped_summary()}; they are not generated and are counted in "
                      "the report (results.prompt_file)", UserWarning, stacklevel=2)
    on_world = cfg.dataset is None or is_world(cfg.dataset)
    if on_world and cfg.embedder is not None:
        raise InputError.bad("--embedder", cfg.embedder, "is used only on a dataset that make-world did not write "
                             "(a world's concepts are measured by its probes)")
    if cfg.fid and not on_world:
        raise InputError.bad("--fid", True, f"needs a synthetic world as --dataset, and {cfg.dataset!r} is not one "
                             "(FID is drawn on the world's scene prompts)")
    if cfg.embedder is not None:
        parse_spec(cfg.embedder)  # an unknown embedder is refused before any work
    fid_with = fid_backend() if cfg.fid else None
    nudity = [" ".join(c.lower().split()) in NUDITY_WORDS for c in cfg.concepts + cfg.keep]
    if any(nudity):  # the detector of nudity is an optional dependency (exit 3 now, not after generating)
        require("nudenet", "nudity", "nudity detection")
    needs_world = cfg.dataset is not None or not all(nudity)
    if cfg.fid and (not needs_world or not cfg.utility_prompts):
        raise InputError.bad("--fid", True, "needs unrelated prompts and reference images: pass --dataset (a world) "
                             "and --utility-prompts above 0")
    return AuditPlan(nudity_file, fid_with, needs_world)


def is_world(dataset: str) -> bool:
    """Did ``make-world`` write ``dataset`` (its ground truth is there)?"""
    return (Path(dataset) / "ground_truth.json").is_file()


def audit_world(cfg: AuditErasureConfig, plan: AuditPlan, progress: bool | None = None):
    """The world of ``--dataset`` (a folder ``make-world`` wrote), a :class:`CaptionedDataset` for
    any other dataset, else the default world where a concept needs one, else None."""
    if cfg.dataset is None:
        return load_or_make_default_world() if plan.needs_world else None
    if is_world(cfg.dataset):
        from ...data.world import load_world

        try:
            return load_world(cfg.dataset)
        except InputError as exc:
            raise InputError.bad("--dataset", cfg.dataset, f"is not a synthetic world folder ({exc})") from None
    from ...data.datasets import open_dataset
    from ...embed import create_embedder

    return CaptionedDataset(open_dataset(cfg.dataset), create_embedder(cfg.embedder or "pixels"), seed=cfg.seed,
                            progress=progress)


def compute_audit(cfg: AuditErasureConfig, plan: AuditPlan, report: Report, *,
                  progress: bool | None = None) -> ErasureAudit:
    """Load both models and measure presence, retention, utility (and FID) and the attack, timing
    each phase and recording the models in ``report``."""
    from ...models import DiffusionModel

    with report.timer("world"):
        world = audit_world(cfg, plan, progress)
    on_world = world is not None and not isinstance(world, CaptionedDataset)
    resolve = dict(prompts_per_concept=cfg.prompts_per_concept, seed=cfg.seed, n=cfg.n,
                   nudity_prompts=plan.nudity_prompts)
    specs = [resolve_concept(c, world, **resolve) for c in cfg.concepts]
    kept = [resolve_concept(c, world, argument="--keep", **resolve) for c in cfg.keep]
    with report.timer("load"):
        m0 = DiffusionModel.load(cfg.original, device=cfg.device)
        m1 = DiffusionModel.load(cfg.erased, device=cfg.device)
    report.add_model("original", m0)
    report.add_model("erased", m1)
    probes = WorldProbes(world, cfg.probe_images, cfg.seed, render=m0) if on_world else None
    detector = PresenceDetector(world, probes, cfg.replication_threshold, cfg.nudity_threshold)
    with report.timer("probes"):
        if any(c.kind == "style" for c in specs + kept):
            probes.style()
        if on_world and cfg.utility_prompts:
            probes.attributes()
    with report.timer("measure"):
        audit = ErasureAudit(measure_presence(m0, m1, specs, kept, detector, cfg, progress=progress))
    if on_world and cfg.utility_prompts:
        with report.timer("utility"):
            audit.utility = measure_utility(m0, m1, world, probes, cfg, plan.fid_backend)
    elif isinstance(world, CaptionedDataset):
        audit.utility_skipped = UTILITY_NEEDS_WORLD
    if cfg.attack != NO_ATTACK:  # the attack on the erased model (UnlearnDiffAtk by default)
        with report.timer("attack"):
            audit.attacks = [Attack(p.concept, *attack_concept(m1, p.concept, p.before, p.after, detector, cfg))
                             for p in audit.presence if p.role == "efficacy"]
    return audit


def measure_presence(m0, m1, specs: Sequence[Concept], kept: Sequence[Concept], detector: PresenceDetector,
                     cfg: AuditErasureConfig, *, progress: bool | None = None) -> list[ConceptPresence]:
    """Each erased (efficacy) and kept (retention) concept in the original ``m0`` and the erased ``m1``."""
    gen = dict(steps=cfg.steps, guidance=cfg.guidance, batch_size=cfg.batch_size)
    out = []
    total_images = 2 * sum(sum(len(s) for s in c.seeds) for c in [*specs, *kept])
    with progress_bar("generating", total_images, enabled=progress) as bar:
        for role, items in (("efficacy", specs), ("retention", kept)):
            for c in items:
                before = measure(m0, c, detector, on_batch=bar.advance, **gen)
                after = measure(m1, c, detector, on_batch=bar.advance, **gen)
                nudenet = None
                if c.kind == "nudity":
                    nudenet = {"original": detector.nudity_counts(before.images),
                               "erased": detector.nudity_counts(after.images)}
                out.append(ConceptPresence(role, c, before, after, nudenet, detector.rule(c)))
    return out


def measure_utility(m0, m1, world, probes: WorldProbes, cfg: AuditErasureConfig, fid_with: str | None) -> Utility:
    """Attribute accuracy of both models on unrelated scene prompts of ``world``; FID with ``--fid``."""
    items = scene_prompts(world, cfg.utility_prompts, cfg.seed)
    per = max(1, cfg.n // 2)
    up = [p for p, _ in items for _ in range(per)]
    truth = [t for _, t in items for _ in range(per)]
    us = [cfg.seed + j for _ in items for j in range(per)]
    g0 = m0.generate(up, us, steps=cfg.steps, guidance=cfg.guidance, batch_size=cfg.batch_size)
    g1 = m1.generate(up, us, steps=cfg.steps, guidance=cfg.guidance, batch_size=cfg.batch_size)
    utility = Utility([p for p, _ in items], len(up), attribute_accuracy(probes, g0.images, truth),
                      attribute_accuracy(probes, g1.images, truth))
    if cfg.fid:
        scenes = [i for i, lab in enumerate(world.labels) if lab.get("kind") == "scene"]
        real = (world.load_images(scenes[: max(len(up), 256)]) * 255).round().astype(np.uint8)
        utility.fid = {"original": fid_score(real, g0.images, fid_with), "erased": fid_score(real, g1.images, fid_with),
                       "real_images": len(real), "backend": fid_with}
    return utility
