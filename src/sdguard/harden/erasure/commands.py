"""``sdguard erase``: the library twin of the command."""

from __future__ import annotations

import warnings
from typing import Any

from ...core.config import ResumableConfig, build, option, output_for
from ...core.errors import InputError
from ...core.progress import progress_enabled
from ...core.state import remove_checkpoint
from ...models.commands import MODEL_HELP
from ...report import Report, auto_scale, make_grid, png_bytes
from .base import check_concepts, get_method, vocabulary_warnings
from .delta import DELTA_FILE, changed_tensors, save_delta, snapshot
from .esd import CHECKPOINT


class EraseConfig(ResumableConfig):
    """Erase concepts from a model: ESD fine-tuning or the closed-form UCE edit.

    ``options`` holds the method's own options (its ``Options`` class, e.g.
    :class:`~sdguard.harden.erasure.esd.ESDOptions`), validated by the method; on the command
    line they are options of their own (``--lr``, ``--lamb``, ...), derived from those classes.
    """

    python_positional = ("model", "concepts", "method", "preserve")

    model: str = option(positional=True, help=MODEL_HELP)
    concepts: list[str] = option(flag="--concept", min_length=1, help="a concept to erase (repeat for several)")
    method: str = option(help="the erasure method (esd-x, esd-u, esd-all, uce)")
    preserve: list[str] = option(default_factory=list, help="a concept to keep (uce: preserve term; esd: sdguard's "
                                 "retain term, with --preserve-weight); default: built from --dataset (or, for "
                                 "builtin:tiny, its world)")
    dataset: str | None = option(None, help="the model's training data (any dataset format): without --preserve, "
                                 "its frequent concepts and a sample of its captions are preserved")
    anchor: str | None = option(None, help="uce: what erased concepts map to (default: the empty prompt)")
    options: dict[str, Any] = option(default_factory=dict, cli=False, help="the method's own options")
    seed: int = option(0, ge=0, le=2**63 - 1, help="seed of the random draws (esd) and of the preview images")
    preview: int = option(4, ge=0, le=64, help="preview images per concept before and after (0: none)")
    device: str | None = option(None, help="cpu, cuda, mps (default: best available)")
    out: str = option(help="output folder: the erased model, its delta file, the report")


def erase(*args: Any, progress: bool | None = None, **values: Any) -> Report:
    """Erase concepts from a model with a registered method (``esd-x``, ``esd-u``, ``esd-all``, ``uce``).

    ``erase(EraseConfig(...))`` or ``erase(model, concepts=[...], method="uce", out=..., lamb=0.5)``:
    the fields of :class:`EraseConfig`, and any other keyword is one of the method's own options
    (ESD: ``eta``, ``iterations``, ``lr``, ``start_guidance``, ``ddim_steps``, ``batch_size``,
    ``checkpoint_every``, ``paper_timesteps``, ``preserve_weight``, ...; UCE: ``lamb``,
    ``erase_scale``, ``preserve_scale``, ``edit_keys``, ...). ``out`` receives the erased model
    as a diffusers folder (``load_pipeline(out)`` loads it), ``erasure_delta.safetensors`` (only
    the changed tensors, applicable to the original model with
    :func:`~sdguard.harden.erasure.delta.apply_delta`) and the report. ``preview`` images per
    concept are generated before and after for the report (0: none). ESD checkpoints into the
    staging folder of ``out``; ``resume=True`` continues an interrupted run.

    Words outside the tokenizer's vocabulary raise a :class:`~.base.VocabularyWarning` (the
    concept still works through sub-words) and are listed under ``results.warnings``.
    """
    own = {k: values.pop(k) for k in list(values) if k not in EraseConfig.model_fields}
    cfg = build(EraseConfig, args, values)
    concepts = check_concepts(cfg.concepts)
    preserve = [" ".join(p.split()) for p in cfg.preserve]
    for p in preserve:
        if not p:
            raise InputError.bad("--preserve", p, "is empty: every preserved concept needs at least one word")
    meth = get_method(cfg.method, **{**cfg.options, **own})
    cfg = cfg.model_copy(update={"concepts": concepts, "preserve": preserve, "options": meth.options.model_dump()})
    method, anchor = cfg.method, cfg.anchor
    notes: list[str] = []
    source = "--preserve" if preserve else None
    if not preserve and meth.uses_preserve:
        preserve, source = _default_preserve(cfg, concepts, notes)
    elif preserve and not meth.uses_preserve:
        why = " (ESD has no preserve term; --preserve-weight > 0 switches on sdguard's retain term)" \
            if method.startswith("esd") else ""
        notes.append(f"--preserve {preserve!r} is not used by --method {method!r}{why}")
    if cfg.dataset is not None and (cfg.preserve or not meth.uses_preserve):
        notes.append(f"--dataset {cfg.dataset!r} is not used: it builds the default preserve set, and "
                     + ("--preserve was given" if cfg.preserve else f"--method {method!r} preserves nothing here"))
    if anchor is not None and not meth.uses_anchor:
        notes.append(f"--anchor {anchor!r} is not used by --method {method!r} (ESD erases towards the empty prompt)")
    for n in notes:
        warnings.warn(n, UserWarning, stacklevel=2)

    report = Report("erase", cfg)
    # a resumable method keeps its staging folder (with its checkpoint) when a run fails or is
    # interrupted, so that ``resume=True`` can continue it
    with output_for(cfg, "erase", "model", resumable=meth.resumable) as stage:
        _run(report, cfg, meth, concepts, preserve, source, notes, stage, progress)
    return report


def _default_preserve(cfg: EraseConfig, concepts: list[str], notes: list[str]) -> tuple[list[str], str | None]:
    """The default preserve set (:mod:`.preserve`) and where it comes from; a loud note when the
    command knows nothing to build it from."""
    from .preserve import NOTHING_KNOWN, default_preserve, known_texts

    known = known_texts(cfg.model, cfg.dataset)
    if known is None:
        notes.append(NOTHING_KNOWN)
        return [], None
    texts, where = known
    chosen = default_preserve(concepts, texts, seed=cfg.seed)
    return chosen["concepts"] + chosen["captions"], (f"default: {len(chosen['concepts'])} frequent concepts and "
                                                     f"{len(chosen['captions'])} captions of {where}")


def _run(report: Report, cfg: EraseConfig, meth, concepts: list[str], preserve: list[str], source: str | None,
         notes: list[str], stage, progress: bool | None) -> None:
    from ...models import DiffusionModel

    method, anchor, resume = cfg.method, cfg.anchor, cfg.resume
    with report.timer("load"):
        m = DiffusionModel.load(cfg.model, device=cfg.device)
    report.add_model("original", m)
    base_fp = report.models["original"]["fingerprint"]
    if resume:  # another run's checkpoint is refused before the previews and the training
        meth.check_resume(base_fp, concepts, preserve=preserve, seed=cfg.seed, workdir=stage)
    notes += vocabulary_warnings(m.tokenizer, concepts, "--concept")
    notes += vocabulary_warnings(m.tokenizer, preserve, "--preserve")
    before_images = _preview(m, concepts + preserve, cfg) if cfg.preview else None
    touched = meth.touched(m)
    before = snapshot(touched, "unet")
    with report.timer("erase"):
        result = meth.run(m, concepts, preserve=preserve, anchor=anchor if anchor is not None else "", seed=cfg.seed,
                          progress=progress_enabled(progress), workdir=stage, resume=resume,
                          model_fingerprint=base_fp)
    delta = changed_tensors(m, before)
    with report.timer("save"):
        m.pipeline.save_pretrained(str(stage), safe_serialization=True)
        info = {"method": method, "concepts": concepts, "preserve": preserve, "anchor": anchor,
                "options": cfg.options}
        save_delta(stage / DELTA_FILE, delta, base_fingerprint=base_fp, metadata=info)
    remove_checkpoint(stage, CHECKPOINT)
    m.spec = str(cfg.out)
    report.add_model("erased", m)
    delta_bytes = (stage / DELTA_FILE).stat().st_size
    total = sum(p.numel() for p in m.unet.parameters())
    changed = sum(v.numel() for v in delta.values())
    report.results = {
        "method": method, "concepts": concepts, "preserve": preserve, "anchor": anchor,
        "options": cfg.options, "preserve_source": source, "extensions": meth.extensions(), "stats": result.stats,
        "delta": {"file": DELTA_FILE, "tensors": len(delta), "parameters": changed, "bytes": delta_bytes,
                  "share_of_unet": changed / max(1, total), "base_fingerprint": base_fp},
        "erase_seconds": report.timings["erase"], "warnings": notes,
    }
    if result.losses:
        report.results["loss"] = {"first": result.losses[0], "last": result.losses[-1],
                                  "curve": _downsample(result.losses, 200)}
    report.artifacts = ["model_index.json", "unet/", "text_encoder/", "tokenizer/", "vae/", "scheduler/", DELTA_FILE]
    report.summary = [f"erased {', '.join(repr(c) for c in concepts)} with {method} in {report.timings['erase']:.2f}s",
                      f"changed {len(delta)} tensors ({changed:,} parameters, {changed / max(1, total):.1%} of the UNet); "
                      f"delta file {delta_bytes / 1e6:.2f} MB"]
    if source and source != "--preserve":
        report.summary.append(f"preserved {len(preserve)} prompts: {source}")
    if notes:
        report.section("Warnings", "", table=[{"warning": n} for n in notes])
    extensions = meth.extensions()
    report.section("Extensions", "sdguard's additions to the published method, switched on in this run"
                   if extensions else f"none: {method} as published", table=[{"extension": e} for e in extensions])
    if result.losses:
        from ...report.plots import line_plot

        curve = _smooth(result.losses)
        png = line_plot({"loss": (list(range(1, len(curve) + 1)), curve)}, title=f"{method} loss (smoothed)",
                        xlabel="iteration", ylabel="MSE")
        report.section("Training loss", f"{len(result.losses)} iterations", figures=[(png, "ESD loss")])
    report.section("Method", meth.description, table=[{"option": k, "value": v} for k, v in cfg.options.items()])
    if before_images is not None:
        after_images = _preview(m, concepts + preserve, cfg)
        scale = auto_scale(before_images.shape[1])
        figs = []
        k = cfg.preview
        for i, prompt in enumerate(concepts + preserve):
            grid = make_grid(list(before_images[i * k:(i + 1) * k]) + list(after_images[i * k:(i + 1) * k]),
                             columns=k, scale=scale)
            role = "erased" if i < len(concepts) else "preserved"
            figs.append((png_bytes(grid), f"{role}: {prompt!r}: before (top) and after (bottom), seeds {cfg.seed}.."))
        report.section("Before and after", "Same seeds before and after the edit.", figures=figs)
    report.write(stage)


def _preview(m, prompts: list[str], cfg: EraseConfig):
    prompts_rep = [p for p in prompts for _ in range(cfg.preview)]
    seeds = [cfg.seed + j for _ in prompts for j in range(cfg.preview)]
    return m.generate(prompts_rep, seeds, steps=25).images


def _downsample(values: list[float], n: int) -> list[float]:
    if len(values) <= n:
        return [round(v, 6) for v in values]
    step = len(values) / n
    return [round(values[int(i * step)], 6) for i in range(n)]


def _smooth(values: list[float], window: int | None = None) -> list[float]:
    window = window or max(1, len(values) // 50)
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out
