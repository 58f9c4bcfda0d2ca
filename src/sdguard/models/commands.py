"""Library twins of the model commands: ``sdguard generate`` and ``sdguard info``."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import Field, field_validator

from ..core.config import RunConfig, validate
from ..core.io import atomic_write_bytes, atomic_write_text, output_dir
from ..core.progress import progress_bar
from ..report import Report, auto_scale, make_grid, png_bytes
from .adapter import DiffusionModel


class GenerateConfig(RunConfig):
    cli_names = {"model": "MODEL", "prompts": "PROMPT", "batch_size": "--batch-size"}

    model: str
    prompts: list[str] = Field(min_length=1)
    n: int = Field(4, ge=1, le=100_000)
    seed: int = Field(0, ge=0)
    steps: int = Field(25, ge=1, le=1000)
    guidance: float = Field(7.5, ge=0.0, le=100.0)
    height: int | None = Field(None, ge=8, le=4096)
    width: int | None = Field(None, ge=8, le=4096)
    batch_size: int = Field(8, ge=1, le=1024)
    negative_prompt: str | None = None
    device: str | None = None
    out: str

    @field_validator("prompts")
    @classmethod
    def _non_empty(cls, prompts: list[str]) -> list[str]:
        for p in prompts:
            if not p.strip():
                raise ValueError("every prompt needs at least one word")
        return prompts


def generate(model: str, prompts: list[str] | str, *, out: str, n: int = 4, seed: int = 0, steps: int = 25,
             guidance: float = 7.5, height: int | None = None, width: int | None = None, batch_size: int = 8,
             negative_prompt: str | None = None, device: str | None = None, overwrite: bool = False,
             progress: bool | None = None) -> Report:
    """Generate ``n`` images per prompt (image j of every prompt from seed ``seed + j``) into ``out``.

    Writes ``images/*.png``, ``images.jsonl`` (file, prompt, seed) and the report.
    """
    if isinstance(prompts, str):
        prompts = [prompts]
    cfg = validate(GenerateConfig, model=model, prompts=list(prompts), n=n, seed=seed, steps=steps,
                   guidance=guidance, height=height, width=width, batch_size=batch_size,
                   negative_prompt=negative_prompt, device=device, out=str(out))
    report = Report("generate", cfg)
    with output_dir(cfg.out, overwrite=overwrite) as stage:
        with report.timer("load"):
            m = DiffusionModel.load(cfg.model, device=cfg.device)
        report.add_model("model", m)
        all_prompts = [p for p in cfg.prompts for _ in range(cfg.n)]
        all_seeds = [cfg.seed + j for _ in cfg.prompts for j in range(cfg.n)]
        with report.timer("generate"), progress_bar("generating", len(all_prompts), enabled=progress) as bar:
            gen = m.generate(all_prompts, all_seeds, steps=cfg.steps, guidance=cfg.guidance, height=cfg.height,
                             width=cfg.width, batch_size=cfg.batch_size, negative_prompt=cfg.negative_prompt,
                             on_batch=bar.advance)
        rows = []
        for k, (prompt, s, img) in enumerate(zip(gen.prompts, gen.seeds, gen.images)):
            name = f"images/p{k // cfg.n:03d}_s{s}.png"
            atomic_write_bytes(stage / name, png_bytes(img))
            rows.append({"file": name, "prompt": prompt, "seed": s})
        atomic_write_text(stage / "images.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
        report.artifacts = ["images/", "images.jsonl"]
        report.results = {"images": len(rows), "settings": gen.settings,
                          "images_per_second": round(len(rows) / max(report.timings["generate"], 1e-9), 3)}
        scale = auto_scale(gen.images.shape[1])
        for i, prompt in enumerate(cfg.prompts):
            grid = make_grid(gen.images[i * cfg.n:(i + 1) * cfg.n], columns=8, scale=scale)
            report.section(f"Prompt {i}: {prompt}", f"{cfg.n} images, seeds {cfg.seed}..{cfg.seed + cfg.n - 1}",
                           figures=[(png_bytes(grid), prompt)])
        report.summary = [f"{len(rows)} images of {len(cfg.prompts)} prompt(s) from {cfg.model}",
                          f"{report.results['images_per_second']} images/s"]
        report.write(stage)
    return report


def info(model: str, device: str | None = None) -> dict:
    """Components, parameter counts per group, default size and weight fingerprint of ``model``."""
    return DiffusionModel.load(model, device=device).describe()
