"""Library twins of the model commands: ``sdguard generate`` and ``sdguard info``."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from pydantic import field_validator, model_validator

from ..audit.memorization.mitigation import MitigationOptions
from ..core.config import OutputConfig, RunConfig, build, option, output_for
from ..core.errors import InputError
from ..core.io import atomic_write_bytes, atomic_write_text
from ..core.progress import progress_bar
from ..distributed.options import BackendOptions
from ..harden.watermark.options import WatermarkOptions
from ..report import Report, auto_scale, make_grid, png_bytes

MODEL_HELP = "builtin:NAME, a diffusers folder, a .safetensors file, a hub id, or any of them +lora:FOLDER"
DEVICE_HELP = "cpu, cuda, mps (default: best available)"


class GenerateConfig(OutputConfig, MitigationOptions, WatermarkOptions, BackendOptions):
    """Generate images: N per prompt, each from its own seed."""

    model: str = option(positional=True, help=MODEL_HELP)
    prompts: list[str] = option(positional=True, metavar="PROMPT", min_length=1, help="one or more prompts")
    n: int = option(4, flag="--n", ge=1, le=100_000, help="images per prompt")
    seed: int = option(0, ge=0, le=2**63 - 1, help="image j of each prompt uses seed + j")
    steps: int = option(25, ge=1, le=1000, help="denoising steps")
    guidance: float = option(7.5, ge=0.0, le=100.0, help="classifier-free guidance scale")
    height: int | None = option(None, ge=8, le=4096, help="image height (default: the model's size)")
    width: int | None = option(None, ge=8, le=4096, help="image width (default: the model's size)")
    batch_size: int = option(8, ge=1, le=1024, help="images per forward pass")
    negative_prompt: str | None = option(None, help="what the guidance steers away from")
    device: str | None = option(None, help=DEVICE_HELP)

    @model_validator(mode="after")
    def _ray_runs_plain_generation(self) -> "GenerateConfig":
        if self.backend == "ray" and self.mitigate != "none":
            raise InputError.bad("--mitigate", self.mitigate, "runs with --backend local only (the mitigation "
                                 "optimizes each prompt's embedding in this process)")
        return self

    @field_validator("prompts")
    @classmethod
    def _non_empty(cls, prompts: list[str]) -> list[str]:
        for p in prompts:
            if not p.strip():
                raise ValueError("every prompt needs at least one word")
        return prompts


class InfoConfig(RunConfig):
    """Components, parameter counts per group and the weight fingerprint of a model."""

    model: str = option(positional=True, help=MODEL_HELP)
    device: str | None = option(None, help=DEVICE_HELP)


def generate(*args: Any, progress: bool | None = None, **values: Any) -> Report:
    """Generate ``n`` images per prompt (image j of every prompt from seed ``seed + j``) into ``out``.

    ``generate(GenerateConfig(...))`` or ``generate(model, prompts, out=..., n=..., ...)`` (the
    fields of :class:`GenerateConfig`). Writes ``images/*.png``, ``images.jsonl`` (file, prompt,
    seed) and the report (``results.prompts``: each prompt's ``tokens`` and whether the text
    encoder ``truncated`` it, with a :class:`~sdguard.models.PromptTruncatedWarning` when it did).
    """
    from ..audit.memorization.mitigation import generate_with, mitigator_for, summarize
    from .adapter import DiffusionModel

    cfg = build(GenerateConfig, args, values)
    report = Report("generate", cfg)
    with output_for(cfg, "generate", "model") as stage:
        with report.timer("load"):
            m = DiffusionModel.load(cfg.model, device=cfg.device)
        report.add_model("model", m)
        lengths = m.prompt_lengths(cfg.prompts)  # a warning for each prompt the text encoder truncates
        all_prompts = [p for p in cfg.prompts for _ in range(cfg.n)]
        all_seeds = [cfg.seed + j for _ in cfg.prompts for j in range(cfg.n)]
        mitigator = mitigator_for(cfg, m, report.models["model"]["fingerprint"])
        marker = _watermark(cfg, m)
        latents = None
        if marker is not None and marker[0].in_generation:
            latents = marker[0].initial_latents(marker[2], marker[1], all_seeds)
        options = dict(steps=cfg.steps, guidance=cfg.guidance, height=cfg.height, width=cfg.width,
                       batch_size=cfg.batch_size, negative_prompt=cfg.negative_prompt)
        with report.timer("generate"), progress_bar("generating", len(all_prompts), enabled=progress) as bar:
            if cfg.backend == "ray":  # chunks of batch_size images on Ray workers, the same images
                from ..distributed.generation import ray_generate

                gen, stats = ray_generate(cfg, report.models["model"]["fingerprint"], all_prompts, all_seeds,
                                          latents=latents, on_batch=bar.advance, **options), None
            else:
                gen, stats = generate_with(m, mitigator, all_prompts, all_seeds, on_batch=bar.advance, latents=latents,
                                           **options)
        if marker is not None and not marker[0].in_generation:
            with report.timer("watermark"):
                gen.images = np.stack([marker[0].embed(im, marker[2], marker[1]) for im in gen.images])
        rows = []
        for k, (prompt, s, img) in enumerate(zip(gen.prompts, gen.seeds, gen.images)):
            name = f"images/p{k // cfg.n:03d}_s{s}.png"
            atomic_write_bytes(stage / name, png_bytes(img))
            rows.append({"file": name, "prompt": prompt, "seed": s})
        atomic_write_text(stage / "images.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
        report.artifacts = ["images/", "images.jsonl"]
        report.results = {"images": len(rows), "settings": gen.settings,
                          "prompts": [{"prompt": p, **n} for p, n in zip(cfg.prompts, lengths)],
                          "images_per_second": round(len(rows) / max(report.timings["generate"], 1e-9), 3)}
        if mitigator is not None:
            report.results["mitigation"] = summarize(stats, mitigator)
        if marker is not None:  # the scheme and the key's fingerprint, never the key
            report.results["watermark"] = {"scheme": marker[0].config(), "key_fingerprint": marker[1].fingerprint,
                                           "payload_bits": int(marker[2].size)}
        scale = auto_scale(gen.images.shape[1])
        for i, prompt in enumerate(cfg.prompts):
            grid = make_grid(gen.images[i * cfg.n:(i + 1) * cfg.n], columns=8, scale=scale)
            report.section(f"Prompt {i}: {prompt}", f"{cfg.n} images, seeds {cfg.seed}..{cfg.seed + cfg.n - 1}",
                           figures=[(png_bytes(grid), prompt)])
        report.summary = [f"{len(rows)} images of {len(cfg.prompts)} prompt(s) from {cfg.model}",
                          f"{report.results['images_per_second']} images/s"]
        report.write(stage)
    return report


def _watermark(cfg: GenerateConfig, model):
    """(scheme, key, payload) of ``--watermark``, or None; a post-hoc scheme's size limit is checked
    before anything is generated."""
    from ..harden.watermark import WATERMARKS
    from ..harden.watermark.options import scheme_for

    if cfg.watermark is None:
        return None
    if WATERMARKS.get(cfg.watermark).in_generation:
        if (cfg.height or model.default_size) != (cfg.width or model.default_size):
            raise InputError.bad("--width", cfg.width, f"must equal --height with {cfg.watermark}")
        marker = scheme_for(cfg, model=model, size=cfg.height or model.default_size, inversion_steps=cfg.steps)
    else:
        marker = scheme_for(cfg)
        side = min(cfg.height or model.default_size, cfg.width or model.default_size)
        if side < marker[0].min_side:
            raise InputError.bad("--watermark", cfg.watermark, f"needs images of at least {marker[0].min_side} pixels "
                                 f"a side; these are {side} (set --height and --width)")
    return marker


def info(*args: Any, **values: Any) -> dict:
    """Components, parameter counts per group, default size and weight fingerprint of a model, and
    the privacy record of a DP-trained one (``info(model, device=None)`` or ``info(InfoConfig(...))``)."""
    from ..train.private.record import read_privacy
    from .adapter import DiffusionModel

    cfg = build(InfoConfig, args, values)
    described = DiffusionModel.load(cfg.model, device=cfg.device).describe()
    privacy = read_privacy(cfg.model)
    if privacy is not None:  # trained by `sdguard train --dp`: its (epsilon, delta) guarantee
        described["privacy"] = privacy
    return described
