"""``sdguard audit watermark``: a scheme through the robustness suite.

Post-hoc schemes mark the images given (``builtin:photos`` by default: scikit-image's photos at
``--size``); the unmarked originals are the null images. An in-generation scheme
(gaussian-shading) generates ``--n`` images per prompt with the model, watermarked, and as many
without, from the same seeds: those are the null images. Every image meets every attack; the
report gives bit accuracy, TPR at each ``--fpr``, the detections among the null images, PSNR and
SSIM (post-hoc), embed and detect time per image, a plot per attack and example grids. The key
appears only as its fingerprint.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from pydantic import field_validator

from ...core.config import OutputConfig, build, option, output_for
from ...core.errors import InputError
from ...core.progress import progress_bar
from ...harden.watermark.base import WATERMARKS
from ...harden.watermark.options import (
    WatermarkOptions,
    image_paths,
    photos,
    read_image,
    scheme_for,
)
from ...report import Report, make_grid, png_bytes
from ...report.images import difference_image
from .attacks import DEFAULT_SUITE, needs_model, parse_attack
from .robustness import attacked, quality, run_suite


class AuditWatermarkConfig(OutputConfig, WatermarkOptions):
    """Measure a watermark's robustness: bit accuracy and detection after each attack, against null images."""

    images: list[str] = option(default_factory=lambda: ["builtin:photos"], flag="--images",
                               help="images or folders to mark (post-hoc schemes); builtin:photos is scikit-image's "
                               "sample photos")
    size: int | None = option(None, ge=8, le=4096, help="the side builtin:photos are resized to (default 512); the "
                              "side an in-generation scheme generates at (default: the model's)")
    attacks: list[str] = option(default_factory=list, flag="--attack",
                                help="an attack of the suite, NAME:VALUE chained with + (repeat; default the whole "
                                "suite, plus regen:0.3 when --model is given)")
    fprs: list[float] = option(default_factory=lambda: [1e-3, 1e-6], flag="--fpr", help="a false-positive rate the "
                               "TPR is read at (repeat)")
    model: str | None = option(None, help="the model: needed by gaussian-shading, and for the regeneration attack")
    prompts: list[str] = option(default_factory=lambda: ["a red circle on the left", "a blue square at the top",
                                                         "a green triangle on the right", "a yellow star"],
                                flag="--prompt", help="prompts an in-generation scheme generates from (repeat)")
    n: int = option(16, ge=1, le=100_000, help="images per prompt (in-generation schemes)")
    steps: int = option(25, ge=1, le=1000, help="denoising steps (in-generation schemes)")
    guidance: float = option(5.0, ge=0.0, le=100.0, help="classifier-free guidance (in-generation schemes)")
    seed: int = option(0, ge=0, le=2**31, help="seeds the generations, crops and noise")
    device: str | None = option(None, help="cpu, cuda, mps (default: best available)")

    @field_validator("attacks")
    @classmethod
    def _attacks(cls, value):
        for spec in value:
            parse_attack(spec)
        return value

    @field_validator("fprs")
    @classmethod
    def _fprs(cls, value):
        for f in value:
            if not 0 < f < 1:
                raise InputError.bad("--fpr", f, "is not a false-positive rate in (0, 1)")
        return value


def _images(cfg: AuditWatermarkConfig) -> tuple[list[str], list[np.ndarray]]:
    names, out = [], []
    for given in cfg.images:
        if given == "builtin:photos":
            for name, im in photos(cfg.size or 512).items():
                names.append(f"builtin:photos/{name}")
                out.append(im)
        else:
            for path in image_paths([given], "--images"):
                names.append(str(path))
                out.append(read_image(path, "--images"))
    return names, out


def _generated(cfg, scheme, key, payload, model):
    prompts = [p for p in cfg.prompts for _ in range(cfg.n)]
    seeds = [cfg.seed + j for _ in cfg.prompts for j in range(cfg.n)]
    t0 = time.perf_counter()
    marked = model.generate(prompts, seeds=seeds, steps=cfg.steps, guidance=cfg.guidance, height=scheme.size,
                            width=scheme.size, latents=scheme.initial_latents(payload, key, seeds)).images
    embed_s = (time.perf_counter() - t0) / len(prompts)
    null = model.generate(prompts, seeds=seeds, steps=cfg.steps, guidance=cfg.guidance, height=scheme.size,
                          width=scheme.size).images
    return list(marked), list(null), embed_s


def audit_watermark(*args: Any, progress: bool | None = None, **values: Any) -> Report:
    """Run the robustness suite (``audit_watermark(watermark=..., out=..., ...)``, the fields of
    :class:`AuditWatermarkConfig`)."""
    cfg = build(AuditWatermarkConfig, args, values)
    model = None
    if cfg.model is not None:
        from ...models.adapter import DiffusionModel

        model = DiffusionModel.load(cfg.model, device=cfg.device)
    in_generation = cfg.watermark in WATERMARKS and getattr(WATERMARKS.get(cfg.watermark), "in_generation", False)
    options = {"size": cfg.size, "inversion_steps": cfg.steps} if in_generation else {}
    scheme, key, payload = scheme_for(cfg, model=model, **options)
    attacks = list(cfg.attacks) or list(DEFAULT_SUITE) + (["regen:0.3"] if model is not None else [])
    for spec in attacks:
        if needs_model(spec) and model is None:
            raise InputError.bad("--attack", spec, "regenerates through a model's img2img: give --model")
    report = Report("audit watermark", cfg)
    if model is not None:
        report.add_model("model", model)
    with output_for(cfg, "audit watermark", "images") as stage:
        if scheme.in_generation:
            with report.timer("generate"):
                marked, null, embed_s = _generated(cfg, scheme, key, payload, model)
            names, originals, qual = [], null, None
        else:
            names, originals = _images(cfg)
            for im in originals:
                scheme.check_image(im, "--images")
            t0 = time.perf_counter()
            marked = [scheme.embed(im, payload, key) for im in originals]
            embed_s = (time.perf_counter() - t0) / len(originals)
            null, qual = originals, quality(originals, marked)
        with report.timer("attacks"), progress_bar("attacks", len(attacks), enabled=progress) as bar:
            rows = run_suite(scheme, key, payload, marked, null, attacks, cfg.fprs, cfg.seed, model, bar.advance)
        _write(report, cfg, scheme, key, payload, rows, qual, embed_s, names, originals, marked)
        report.write(stage)
    return report


def _write(report, cfg, scheme, key, payload, rows, qual, embed_s, names, originals, marked) -> None:
    from ...report.plots import bar_plot

    first = f"tpr@{cfg.fprs[0]:g}"
    report.results = {"scheme": scheme.config(), "key_fingerprint": key.fingerprint, "payload_bits": int(payload.size),
                      "images": len(marked), "sources": names, "fprs": cfg.fprs, "quality": qual,
                      "embed_seconds_per_image": round(embed_s, 4), "attacks": rows}
    report.section("Robustness", f"{len(marked)} watermarked and {rows[0]['null_images']} null images through each "
                   "attack; TPR with the binomial threshold at each FPR; null detections count the unwatermarked "
                   "images the same threshold calls watermarked.", table=rows,
                   figures=[(bar_plot([r["attack"] for r in rows], [r["bit_accuracy_median"] for r in rows],
                                      title=f"{scheme.name}: median bit accuracy", ylabel="bit accuracy"),
                             "bit accuracy"),
                            (bar_plot([r["attack"] for r in rows], [r[first] for r in rows],
                                      title=f"{scheme.name}: TPR at FPR {cfg.fprs[0]:g}", ylabel="TPR"), "TPR")])
    shown = list(range(min(4, len(marked))))
    if qual is not None:
        grid = make_grid([x for i in shown for x in (originals[i], marked[i], difference_image(originals[i], marked[i]))],
                         columns=3)
        report.section("Original, watermarked, difference (x16)", f"PSNR median {qual['psnr_median']:.2f} dB "
                       f"(min {qual['psnr_min']:.2f}), SSIM median {qual['ssim_median']:.4f}",
                       figures=[(png_bytes(grid), "examples")])
    else:
        grid = make_grid([marked[i] for i in shown] + [originals[i] for i in shown], columns=len(shown),
                         scale=max(1, 96 // marked[0].shape[0]))
        report.section("Watermarked (top) and unwatermarked generations of the same seeds (bottom)",
                       figures=[(png_bytes(grid), "generations")])
    shown_attacks = [r["attack"] for r in rows if not needs_model(r["attack"])][:8]  # regeneration: not redone
    examples = [a for spec in shown_attacks for a in attacked(scheme, marked[:1], spec, cfg.seed)]
    report.section("The first image through the first attacks", ", ".join(shown_attacks),
                   figures=[(png_bytes(make_grid(examples, columns=4, background=255)), "attacked")])
    worst = min(rows, key=lambda r: r[first])
    report.summary = [f"{scheme.name} (key {key.fingerprint}), {len(marked)} images, {len(rows)} attacks",
                      f"lowest TPR at FPR {cfg.fprs[0]:g}: {worst[first]:.2f} after {worst['attack']}"]
    if qual is not None:
        report.summary.append(f"PSNR median {qual['psnr_median']:.2f} dB, SSIM {qual['ssim_median']:.4f}")
