"""The builtin tiny model's training recipe: a real Stable Diffusion trained on a CPU.

Latent diffusion as in Rombach et al. 2022 ("High-Resolution Image Synthesis with Latent
Diffusion Models"), scaled down: (1) an AutoencoderKL trained for reconstruction with a small KL
term; its latent scaling factor set to 1/std of the training latents, as Stable Diffusion's
0.18215 was; (2) a UNet2DConditionModel with cross-attention at every resolution and a CLIP text
encoder trained jointly on the DDPM loss (Ho et al. 2020) over Stable Diffusion's scaled-linear
schedule, 10% caption dropout for classifier-free guidance (Ho & Salimans 2022) and an
exponential moving average of the weights. Deterministic for a seed (on a given thread count);
checkpoints every few hundred steps (:mod:`sdguard.core.state`: safetensors and JSON) and resumes.

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
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F

from ..core.config import ResumableConfig, build, option, output_for
from ..core.io import output_dir
from ..core.progress import progress_bar
from ..core.state import remove_checkpoint, restoring
from ..models.adapter import DiffusionModel
from ..models.components import TinyConfig, build_pipeline, build_tokenizer
from ..report import Report, auto_scale, make_grid, png_bytes
from ..report.plots import line_plot
from .loop import (
    LOG_FILE,
    cosine_lr,
    diffusion_loss,
    ema_decay,
    ema_update,
    file_sha256,
    load_train_state,
    log_row,
    save_train_state,
    set_lr,
    write_log,
)

#: the checkpoint's name in the staging folder (``train_state.safetensors`` and ``train_state.json``)
CHECKPOINT = "train_state"


class TrainTinyConfig(ResumableConfig):
    """Train a tiny Stable Diffusion (VAE, CLIP text encoder, UNet) on a world, on the CPU."""

    python_positional = ("world", "out")
    #: the checkpoint interval changes no weight: a resume may use another one
    presentation_fields = ResumableConfig.presentation_fields | {"checkpoint_every"}

    world: str = option(help="a world made by `sdguard data make-world`")
    out: str = option(help="output diffusers folder")
    seed: int = option(0, ge=0, le=2**63 - 1, help="seed of the weights, the data order and the noise")
    vae_steps: int = option(400, ge=1, le=1_000_000, help="autoencoder training steps")
    unet_steps: int = option(2400, ge=1, le=1_000_000, help="UNet and text-encoder training steps")
    batch_size: int = option(64, ge=1, le=4096, help="images per step")
    vae_lr: float = option(2e-3, gt=0, le=1, help="learning rate of the autoencoder")
    unet_lr: float = option(1e-3, gt=0, le=1, help="learning rate of the UNet and text encoder")
    caption_dropout: float = option(0.1, ge=0, lt=1, help="share of captions replaced by the empty prompt "
                                    "(classifier-free guidance)")
    ema_decay: float = option(0.995, ge=0, lt=1, help="decay of the weights' exponential moving average")
    max_tokens: int = option(32, ge=8, le=77, help="the text encoder's context length")
    unet_channels: tuple[int, ...] = option((64, 128), min_length=1, help="UNet channels per resolution (repeat)")
    vae_channels: tuple[int, ...] = option((16, 32, 32), min_length=1, help="autoencoder channels per resolution "
                                           "(repeat)")
    text_hidden: int = option(128, ge=16, le=4096, help="width of the CLIP text encoder")
    prediction_type: Literal["epsilon", "v_prediction"] = option("v_prediction", help="v_prediction or epsilon "
                                                                 "(SD 1)")
    zero_terminal_snr: bool = option(True, help="rescale the schedule to zero terminal SNR (Lin et al. 2024)")
    checkpoint_every: int = option(250, ge=1, help="steps between checkpoints")
    threads: int = option(2, ge=1, le=1024, help="CPU threads (results are deterministic for a thread count)")


def train_tiny(*args: Any, progress: bool | None = None, **values: Any) -> Report:
    """Train a tiny Stable Diffusion on a world made by ``sdguard data make-world`` into ``out``
    (``train_tiny(world, out, unet_steps=..., ...)`` or ``train_tiny(TrainTinyConfig(...))``).

    ``out`` becomes a diffusers folder (loadable with ``load_pipeline``) plus ``report.json``,
    ``report.html`` and ``training_log.jsonl``. With ``resume=True`` an interrupted run continues
    from its last checkpoint; a checkpoint that is corrupt or was written with other settings or
    another world is refused (:class:`~sdguard.core.errors.StateError`, exit code 2).
    """
    from ..data.world import load_world

    cfg = build(TrainTinyConfig, args, values)
    torch.set_num_threads(cfg.threads)
    w = load_world(cfg.world, argument="--world")
    w.load_images()  # every image read (and checked) before anything is written
    report = Report("model train-tiny", cfg)
    with output_for(cfg, "model train-tiny", "world") as stage:
        run = _TinyRun(cfg, w, stage)
        if cfg.resume:
            run.restore()
        run.t_start = time.perf_counter() - run.state["elapsed"]
        with progress_bar("training tiny SD", run.total, enabled=progress, completed=run.state["step"]) as bar:
            run.bar = bar
            run.train_vae()
            means, stds = run.encode_world()
            run.train_unet(means, stds)
        elapsed = time.perf_counter() - run.t_start
        model = run.finish()
        _report(report, run, model, means, elapsed, w.image_size)
        report.write(stage)
    return report


class _TinyRun:
    """One run of the recipe: the pipeline, its EMA, the optimizers, the generator, the state."""

    def __init__(self, cfg: TrainTinyConfig, w, stage: Path):
        self.cfg, self.stage, self.bar, self.t_start = cfg, stage, None, 0.0
        self.images = torch.from_numpy(w.load_images()).permute(0, 3, 1, 2).contiguous() * 2 - 1
        self.texts = w.texts
        tokenizer = build_tokenizer(w.ground_truth["vocabulary"], max_length=cfg.max_tokens)
        self.tiny = TinyConfig(image_size=w.image_size, text_hidden=cfg.text_hidden,
                               vae_channels=tuple(cfg.vae_channels), unet_channels=tuple(cfg.unet_channels),
                               prediction_type=cfg.prediction_type, zero_terminal_snr=cfg.zero_terminal_snr)
        self.pipe = pipe = build_pipeline(tokenizer, self.tiny, seed=cfg.seed)
        self.ids = tokenizer(self.texts, padding="max_length", max_length=cfg.max_tokens, truncation=True,
                             return_tensors="pt").input_ids
        self.empty_ids = tokenizer([""], padding="max_length", max_length=cfg.max_tokens, return_tensors="pt").input_ids
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.ema = copy.deepcopy(pipe.unet).requires_grad_(False)
        self.vae_opt = torch.optim.AdamW(pipe.vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
        self.unet_params = list(pipe.unet.parameters()) + list(pipe.text_encoder.parameters())
        self.unet_opt = torch.optim.AdamW(self.unet_params, lr=cfg.unet_lr, weight_decay=1e-2)
        self.state = {"step": 0, "log": [], "scaling": None, "elapsed": 0.0}
        self.total = cfg.vae_steps + cfg.unet_steps
        # the same run: every setting that changes the weights, and the world's captions and files
        self.key = {"recipe": "model train-tiny", **cfg.run_key(),
                    "world_metadata_sha256": file_sha256(Path(w.root) / "metadata.jsonl")}

    def _parts(self) -> dict:
        pipe = self.pipe
        return {"modules": {"vae": pipe.vae, "unet": pipe.unet, "text_encoder": pipe.text_encoder, "ema": self.ema},
                "optimizers": {"vae_opt": self.vae_opt, "unet_opt": self.unet_opt}, "gen": self.gen}

    def restore(self) -> None:
        state = load_train_state(self.stage, CHECKPOINT, self.key, **self._parts())
        if state is not None:
            with restoring(self.stage, CHECKPOINT):  # the loop's own entries, as it reads them
                scaling = state["scaling"]
                self.state = {"step": int(state["step"]), "log": [dict(r) for r in state["log"]],
                              "scaling": None if scaling is None else float(scaling),
                              "elapsed": float(state["elapsed"])}

    def end_step(self, stage_name: str, loss: torch.Tensor) -> None:
        """Count the step; log the loss every 25 steps, checkpoint every ``checkpoint_every``."""
        state = self.state
        state["step"] += 1
        if state["step"] % 25 == 0:
            log_row(state, self.stage, {"step": state["step"], "stage": stage_name, "loss": loss.item()}, self.t_start)
        if state["step"] % self.cfg.checkpoint_every == 0:
            state["elapsed"] = time.perf_counter() - self.t_start
            save_train_state(self.stage, CHECKPOINT, self.key, state=state, **self._parts())
        self.bar.advance()

    def train_vae(self) -> None:
        """Stage 1: the autoencoder, on reconstruction with a small KL term."""
        cfg, vae, gen, n = self.cfg, self.pipe.vae, self.gen, len(self.texts)
        vae.train()
        while self.state["step"] < cfg.vae_steps:
            set_lr(self.vae_opt, cfg.vae_lr * cosine_lr(self.state["step"], cfg.vae_steps))
            x = self.images[torch.randint(0, n, (cfg.batch_size,), generator=gen)]
            post = vae.encode(x).latent_dist
            z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen)
            rec = vae.decode(z).sample
            kl = post.kl().mean() / z[0].numel()
            loss = F.mse_loss(rec, x) + 0.5 * F.l1_loss(rec, x) + 1e-4 * kl
            self.vae_opt.zero_grad(set_to_none=True)
            loss.backward()
            self.vae_opt.step()
            self.end_step("vae", loss)
        vae.eval().requires_grad_(False)

    @torch.no_grad()
    def encode_world(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The latents of the whole world (posterior means and stds); sets the scaling factor."""
        means, stds = [], []
        for i in range(0, len(self.images), 256):
            post = self.pipe.vae.encode(self.images[i:i + 256]).latent_dist
            means.append(post.mean)
            stds.append(post.std)
        mean, std = torch.cat(means), torch.cat(stds)
        if self.state["scaling"] is None:
            self.state["scaling"] = float(1.0 / mean.std())
        return mean, std

    def train_unet(self, means: torch.Tensor, stds: torch.Tensor) -> None:
        """Stage 2: the UNet and the text encoder on the diffusion loss, with caption dropout and EMA."""
        cfg, pipe, gen, n = self.cfg, self.pipe, self.gen, len(self.texts)
        alphas = torch.as_tensor(pipe.scheduler.alphas_cumprod, dtype=torch.float32)
        scaling = self.state["scaling"]
        pipe.unet.train()
        pipe.text_encoder.train()
        while self.state["step"] < self.total:
            step = self.state["step"] - cfg.vae_steps
            set_lr(self.unet_opt, cfg.unet_lr * cosine_lr(step, cfg.unet_steps))
            idx = torch.randint(0, n, (cfg.batch_size,), generator=gen)
            z0 = (means[idx] + stds[idx] * torch.randn(means[idx].shape, generator=gen)) * scaling
            b_ids = self.ids[idx].clone()
            drop = torch.rand(cfg.batch_size, generator=gen) < cfg.caption_dropout
            b_ids[drop] = self.empty_ids[0]
            loss = diffusion_loss(pipe.unet, pipe.text_encoder, z0, b_ids, alphas, gen, cfg.prediction_type)
            self.unet_opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.unet_params, 1.0)
            self.unet_opt.step()
            ema_update(self.ema, pipe.unet, ema_decay(step, cfg.ema_decay))
            self.end_step("unet", loss)

    def finish(self) -> DiffusionModel:
        """The EMA weights into the UNet, the pipeline saved, the checkpoint removed."""
        pipe = self.pipe
        pipe.unet.load_state_dict(self.ema.state_dict())
        pipe.unet.eval()
        pipe.text_encoder.eval()
        pipe.vae.register_to_config(scaling_factor=self.state["scaling"])
        pipe.save_pretrained(str(self.stage), safe_serialization=True)
        remove_checkpoint(self.stage, CHECKPOINT)
        write_log(self.stage, self.state["log"])
        return DiffusionModel(pipe, spec=str(self.cfg.out))


def _report(report: Report, run: _TinyRun, model: DiffusionModel, means: torch.Tensor, elapsed: float,
            image_size: int) -> None:
    state, texts, n = run.state, run.texts, len(run.texts)
    report.timings["train"] = round(elapsed, 1)
    report.add_model("trained", model)
    with torch.no_grad():
        rec = run.pipe.vae.decode(means[:512]).sample
    recon_mse = float(F.mse_loss(rec, run.images[:512]))
    report.results = {"images": n, "vae_reconstruction_mse": recon_mse, "scaling_factor": state["scaling"],
                      "final_loss": state["log"][-1]["loss"] if state["log"] else None,
                      "parameters": model.parameter_counts(), "train_seconds": round(elapsed, 1),
                      "tiny_config": asdict(run.tiny)}
    report.artifacts = ["model_index.json", "unet/", "vae/", "text_encoder/", "tokenizer/", "scheduler/", LOG_FILE]
    for stage_name in ("vae", "unet"):
        rows = [r for r in state["log"] if r["stage"] == stage_name]
        if rows:
            report.section(f"{stage_name} loss", figures=[(line_plot(
                {stage_name: ([r["step"] for r in rows], [r["loss"] for r in rows])},
                title=f"{stage_name} training loss", xlabel="step", ylabel="loss"), "training loss")])
    sample_prompts = [texts[i] for i in range(0, n, max(1, n // 8))][:8]
    samples = model.generate(sample_prompts, seeds=0, steps=25, guidance=3.0)
    report.section("Samples of training captions (seed 0)", "; ".join(sample_prompts),
                   figures=[(png_bytes(make_grid(samples.images, 8, auto_scale(image_size))), "generated")])
    report.summary = [f"trained on {n} images in {elapsed / 60:.1f} min", f"VAE reconstruction MSE {recon_mse:.4f}"]


def export_builtin(trained: str | Path, name: str = "tiny") -> Path:
    """Copy a model trained by :func:`train_tiny` into the package as ``builtin:NAME``.

    Weights are stored in fp16 (half the size; the package ships at most 20 MB) and loaded back
    in fp32. The training report goes along as ``training_report.json``.
    """
    import shutil

    from diffusers import StableDiffusionPipeline

    from ..models.builtin import package_weights_dir
    from ..models.loading import pretrained_options

    pipe = StableDiffusionPipeline.from_pretrained(str(trained), local_files_only=True, **pretrained_options())
    dst = package_weights_dir(name)
    with output_dir(dst, command="export_builtin", overwrite=True, inputs=[("trained", trained)],
                    argument="name") as stage:
        pipe.to(torch.float16).save_pretrained(str(stage), safe_serialization=True)
        if (Path(trained) / "report.json").is_file():
            shutil.copy(Path(trained) / "report.json", stage / "training_report.json")
    return dst


__all__ = ["CHECKPOINT", "TrainTinyConfig", "train_tiny", "export_builtin"]
