"""The builtin tiny model's training recipe: a real Stable Diffusion trained on a CPU.

Latent diffusion as in Rombach et al. 2022 ("High-Resolution Image Synthesis with Latent
Diffusion Models"), scaled down: (1) an AutoencoderKL trained for reconstruction with a small KL
term; its latent scaling factor set to 1/std of the training latents, as Stable Diffusion's
0.18215 was; (2) a UNet2DConditionModel with cross-attention at every resolution and a CLIP text
encoder trained jointly on the DDPM loss (Ho et al. 2020) over Stable Diffusion's scaled-linear
schedule, 10% caption dropout for classifier-free guidance (Ho & Salimans 2022) and an
exponential moving average of the weights. Deterministic for a seed (on a given thread count);
checkpoints every few hundred steps and resumes.

By default the UNet predicts v (Salimans & Ho 2022, as Stable Diffusion 2 does) on a schedule
rescaled to zero terminal SNR with trailing DDIM steps (Lin et al. 2024). The reason is
measured: with SD 1's epsilon prediction, a model trained for 2000 steps drew the shape wherever
the seed's noise put it, whatever position word the prompt held (the same seed gave the same
position for "on the left" and "on the right"): the epsilon loss gives almost no weight to the
highest noise levels, where the layout is decided, and a schedule that never reaches pure noise
teaches the model to read the layout from the noise. ``prediction_type="epsilon"`` and
``zero_terminal_snr=False`` give SD 1's recipe.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from ..core.config import RunConfig, validate
from ..core.io import atomic_write_text, output_dir
from ..core.progress import progress_bar
from ..report import Report, auto_scale, make_grid, png_bytes
from ..report.plots import line_plot
from .adapter import DiffusionModel
from .components import TinyConfig, build_pipeline, build_tokenizer

CHECKPOINT = "train_state.pt"


class TrainTinyConfig(RunConfig):
    cli_names = {"world": "--world"}

    world: str
    out: str
    seed: int = Field(0, ge=0)
    vae_steps: int = Field(400, ge=1)
    unet_steps: int = Field(2400, ge=1)
    batch_size: int = Field(64, ge=1, le=4096)
    vae_lr: float = Field(2e-3, gt=0, le=1)
    unet_lr: float = Field(1e-3, gt=0, le=1)
    caption_dropout: float = Field(0.1, ge=0, lt=1)
    ema_decay: float = Field(0.995, ge=0, lt=1)
    max_tokens: int = Field(32, ge=8, le=77)
    unet_channels: tuple[int, ...] = (64, 128)
    vae_channels: tuple[int, ...] = (16, 32, 32)
    text_hidden: int = Field(128, ge=16)
    prediction_type: Literal["epsilon", "v_prediction"] = "v_prediction"
    zero_terminal_snr: bool = True
    checkpoint_every: int = Field(250, ge=1)
    threads: int = Field(2, ge=1)


def _cosine_lr(step: int, total: int, warmup: int = 100) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup))) * 0.9 + 0.1


def _log(state: dict, stage: Path, row: dict, t_start: float) -> None:
    """Keep the loss curve; append it to a live log that a person can follow (``tail -f``)."""
    row["seconds"] = round(time.perf_counter() - t_start, 1)
    state["log"].append(row)
    with open(stage / "training_log.jsonl", "a") as fh:
        fh.write(json.dumps(row) + "\n")


def train_tiny(world: str, out: str, *, seed: int = 0, vae_steps: int = 400, unet_steps: int = 2400,
               batch_size: int = 64, overwrite: bool = False, resume: bool = False, progress: bool | None = None,
               **options) -> Report:
    """Train a tiny Stable Diffusion on a world made by ``sdguard data make-world`` into ``out``.

    ``out`` becomes a diffusers folder (loadable with ``load_pipeline``) plus ``report.json``,
    ``report.html`` and ``training_log.jsonl``. With ``resume=True`` an interrupted run continues
    from its last checkpoint.
    """
    from ..data.world import load_world

    cfg = validate(TrainTinyConfig, world=str(world), out=str(out), seed=seed, vae_steps=vae_steps,
                   unet_steps=unet_steps, batch_size=batch_size, **options)
    torch.set_num_threads(cfg.threads)
    w = load_world(cfg.world)
    report = Report("model train-tiny", cfg)
    with output_dir(cfg.out, overwrite=overwrite, resume=resume) as stage:
        images = torch.from_numpy(w.load_images()).permute(0, 3, 1, 2).contiguous() * 2 - 1
        texts = w.texts
        tokenizer = build_tokenizer(w.ground_truth["vocabulary"], max_length=cfg.max_tokens)
        tiny = TinyConfig(image_size=w.image_size, text_hidden=cfg.text_hidden, vae_channels=tuple(cfg.vae_channels),
                          unet_channels=tuple(cfg.unet_channels), prediction_type=cfg.prediction_type,
                          zero_terminal_snr=cfg.zero_terminal_snr)
        pipe = build_pipeline(tokenizer, tiny, seed=cfg.seed)
        ids = tokenizer(texts, padding="max_length", max_length=cfg.max_tokens, truncation=True, return_tensors="pt").input_ids
        empty_ids = tokenizer([""], padding="max_length", max_length=cfg.max_tokens, return_tensors="pt").input_ids
        gen = torch.Generator().manual_seed(cfg.seed)
        ema = copy.deepcopy(pipe.unet).requires_grad_(False)
        vae_opt = torch.optim.AdamW(pipe.vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
        unet_params = list(pipe.unet.parameters()) + list(pipe.text_encoder.parameters())
        unet_opt = torch.optim.AdamW(unet_params, lr=cfg.unet_lr, weight_decay=1e-2)
        state = {"step": 0, "log": [], "scaling": None, "elapsed": 0.0}
        ckpt = stage / CHECKPOINT
        if resume and ckpt.is_file():
            saved = torch.load(ckpt, weights_only=False)
            pipe.vae.load_state_dict(saved["vae"])
            pipe.unet.load_state_dict(saved["unet"])
            pipe.text_encoder.load_state_dict(saved["text_encoder"])
            ema.load_state_dict(saved["ema"])
            vae_opt.load_state_dict(saved["vae_opt"])
            unet_opt.load_state_dict(saved["unet_opt"])
            gen.set_state(saved["rng"])
            state = saved["state"]

        def save_checkpoint() -> None:
            tmp = stage / (CHECKPOINT + ".tmp")
            torch.save({"vae": pipe.vae.state_dict(), "unet": pipe.unet.state_dict(),
                        "text_encoder": pipe.text_encoder.state_dict(), "ema": ema.state_dict(),
                        "vae_opt": vae_opt.state_dict(), "unet_opt": unet_opt.state_dict(),
                        "rng": gen.get_state(), "state": state}, tmp)
            tmp.replace(ckpt)

        def end_step(stage_name: str, loss: torch.Tensor) -> None:
            """Count the step; log the loss every 25 steps, checkpoint every ``checkpoint_every``."""
            state["step"] += 1
            if state["step"] % 25 == 0:
                _log(state, stage, {"step": state["step"], "stage": stage_name, "loss": loss.item()}, t_start)
            if state["step"] % cfg.checkpoint_every == 0:
                state["elapsed"] = time.perf_counter() - t_start
                save_checkpoint()
            bar.advance()

        total = cfg.vae_steps + cfg.unet_steps
        n = len(texts)
        alphas = torch.as_tensor(pipe.scheduler.alphas_cumprod, dtype=torch.float32)
        t_start = time.perf_counter() - state["elapsed"]
        with progress_bar("training tiny SD", total, enabled=progress, completed=state["step"]) as bar:
            # stage 1: the autoencoder
            pipe.vae.train()
            while state["step"] < cfg.vae_steps:
                step = state["step"]
                for g in vae_opt.param_groups:
                    g["lr"] = cfg.vae_lr * _cosine_lr(step, cfg.vae_steps)
                x = images[torch.randint(0, n, (cfg.batch_size,), generator=gen)]
                post = pipe.vae.encode(x).latent_dist
                z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen)
                rec = pipe.vae.decode(z).sample
                kl = post.kl().mean() / z[0].numel()
                loss = F.mse_loss(rec, x) + 0.5 * F.l1_loss(rec, x) + 1e-4 * kl
                vae_opt.zero_grad(set_to_none=True)
                loss.backward()
                vae_opt.step()
                end_step("vae", loss)
            pipe.vae.eval().requires_grad_(False)
            # latents of the whole world (posterior mean and std), and the scaling factor
            with torch.no_grad():
                means, stds = [], []
                for i in range(0, n, 256):
                    post = pipe.vae.encode(images[i:i + 256]).latent_dist
                    means.append(post.mean)
                    stds.append(post.std)
                means, stds = torch.cat(means), torch.cat(stds)
            if state["scaling"] is None:
                state["scaling"] = float(1.0 / means.std())
            scaling = state["scaling"]
            # stage 2: UNet and text encoder, epsilon prediction
            pipe.unet.train()
            pipe.text_encoder.train()
            while state["step"] < total:
                step = state["step"] - cfg.vae_steps
                for g in unet_opt.param_groups:
                    g["lr"] = cfg.unet_lr * _cosine_lr(step, cfg.unet_steps)
                idx = torch.randint(0, n, (cfg.batch_size,), generator=gen)
                z0 = (means[idx] + stds[idx] * torch.randn(means[idx].shape, generator=gen)) * scaling
                b_ids = ids[idx].clone()
                drop = torch.rand(cfg.batch_size, generator=gen) < cfg.caption_dropout
                b_ids[drop] = empty_ids[0]
                t = torch.randint(0, alphas.numel(), (cfg.batch_size,), generator=gen)
                noise = torch.randn(z0.shape, generator=gen)
                a = alphas[t].view(-1, 1, 1, 1)
                zt = a.sqrt() * z0 + (1 - a).sqrt() * noise
                emb = pipe.text_encoder(b_ids)[0]
                pred = pipe.unet(zt, t, encoder_hidden_states=emb).sample
                # v = sqrt(a) eps - sqrt(1 - a) z0 (Salimans & Ho 2022): unlike eps, its loss keeps its
                # weight at the highest noise levels, where the layout (position words) is decided
                target = noise if cfg.prediction_type == "epsilon" else a.sqrt() * noise - (1 - a).sqrt() * z0
                loss = F.mse_loss(pred, target)
                unet_opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(unet_params, 1.0)
                unet_opt.step()
                with torch.no_grad():
                    decay = min(cfg.ema_decay, (1 + step) / (10 + step))
                    for pe, p in zip(ema.parameters(), pipe.unet.parameters()):
                        pe.lerp_(p, 1 - decay)
                end_step("unet", loss)
        elapsed = time.perf_counter() - t_start
        pipe.unet.load_state_dict(ema.state_dict())
        pipe.unet.eval()
        pipe.text_encoder.eval()
        pipe.vae.register_to_config(scaling_factor=scaling)
        pipe.save_pretrained(str(stage), safe_serialization=True)
        if ckpt.exists():
            ckpt.unlink()
        atomic_write_text(stage / "training_log.jsonl", "".join(json.dumps(r) + "\n" for r in state["log"]))
        model = DiffusionModel(pipe, spec=str(cfg.out))
        report.timings["train"] = round(elapsed, 1)
        report.add_model("trained", model)
        with torch.no_grad():
            rec = pipe.vae.decode(means[:512]).sample
        recon_mse = float(F.mse_loss(rec, images[:512]))
        report.results = {"images": n, "vae_reconstruction_mse": recon_mse, "scaling_factor": scaling,
                          "final_loss": state["log"][-1]["loss"] if state["log"] else None,
                          "parameters": model.parameter_counts(), "train_seconds": round(elapsed, 1),
                          "tiny_config": asdict(tiny)}
        report.artifacts = ["model_index.json", "unet/", "vae/", "text_encoder/", "tokenizer/", "scheduler/", "training_log.jsonl"]
        for stage_name in ("vae", "unet"):
            rows = [r for r in state["log"] if r["stage"] == stage_name]
            if rows:
                report.section(f"{stage_name} loss", figures=[(line_plot(
                    {stage_name: ([r["step"] for r in rows], [r["loss"] for r in rows])},
                    title=f"{stage_name} training loss", xlabel="step", ylabel="loss"), "training loss")])
        sample_prompts = [texts[i] for i in range(0, n, max(1, n // 8))][:8]
        samples = model.generate(sample_prompts, seeds=0, steps=25, guidance=3.0)
        report.section("Samples of training captions (seed 0)", "; ".join(sample_prompts),
                       figures=[(png_bytes(make_grid(samples.images, 8, auto_scale(w.image_size))), "generated")])
        report.summary = [f"trained on {n} images in {elapsed / 60:.1f} min", f"VAE reconstruction MSE {recon_mse:.4f}"]
        report.write(stage)
    return report


def export_builtin(trained: str | Path, name: str = "tiny") -> Path:
    """Copy a model trained by :func:`train_tiny` into the package as ``builtin:NAME``.

    Weights are stored in fp16 (half the size; the package ships at most 20 MB) and loaded back
    in fp32. The training report goes along as ``training_report.json``.
    """
    import shutil

    from diffusers import StableDiffusionPipeline

    from ..core.io import output_dir
    from .builtin import package_weights_dir

    from .loading import pretrained_options

    pipe = StableDiffusionPipeline.from_pretrained(str(trained), local_files_only=True, **pretrained_options())
    dst = package_weights_dir(name)
    with output_dir(dst, overwrite=True, argument="name") as stage:
        pipe.to(torch.float16).save_pretrained(str(stage), safe_serialization=True)
        if (Path(trained) / "report.json").is_file():
            shutil.copy(Path(trained) / "report.json", stage / "training_report.json")
    return dst
