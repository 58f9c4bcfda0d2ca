"""The builtin tiny model's training recipe: a real Stable Diffusion trained on a CPU, on any dataset.

Latent diffusion as in Rombach et al. 2022 ("High-Resolution Image Synthesis with Latent
Diffusion Models"), scaled down, on any dataset sdguard reads (an imagefolder such as a world made
by ``sdguard data make-world``, webdataset shards, a parquet/CSV table): images resized and
centre-cropped to ``--image-size`` (:func:`.data.prepare_image`), unreadable ones skipped and
counted. (0) A word-level CLIP tokenizer whose words are the captions' own
(:func:`sdguard.data.captions.caption_vocabulary`). (1) An AutoencoderKL trained from scratch for
reconstruction with a small KL term (this recipe's own loop); its latent scaling factor set to
1/std of the training latents, as Stable Diffusion's 0.18215 was. (2) A new UNet2DConditionModel
with cross-attention at every resolution and a new CLIP text encoder trained jointly on the
diffusion loss through the shared fine-tuning loop (:class:`.finetune_run.FineTuneRun`, the loop of
``sdguard train``): Stable Diffusion's scaled-linear schedule, 10% caption dropout for
classifier-free guidance (Ho & Salimans 2022), AdamW with warm-up and cosine decay, global-norm
clipping at 1 and an exponential moving average of the trained weights (UNet and text encoder).
Deterministic for a seed (on a given thread count); both stages checkpoint into the staging folder
(:mod:`sdguard.core.state`: safetensors and JSON) and ``--resume`` continues either.

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

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F

from ..core.config import ResumableConfig, build, option, output_for
from ..core.errors import InputError, require
from ..core.io import output_dir
from ..core.progress import progress_bar
from ..core.state import remove_checkpoint, restoring
from ..data.captions import caption_vocabulary
from ..models.adapter import DiffusionModel
from ..models.components import TinyConfig, build_pipeline, build_tokenizer
from ..models.loading import quiet_hub_bars
from ..report import Report, auto_scale, make_grid, png_bytes
from ..report.plots import line_plot
from . import finetune
from .data import MEMBERS, EncodedSet, posteriors, readable, write_manifest
from .loop import (
    LOG_FILE,
    cosine_lr,
    load_train_state,
    log_row,
    save_train_state,
    set_lr,
    write_log,
)

#: the VAE stage's checkpoint in the staging folder (``train_state.safetensors`` and ``.json``);
#: the UNet stage's is the fine-tuning loop's (:data:`.finetune.CHECKPOINT`)
CHECKPOINT = "train_state"
#: what the UNet stage's run key calls its model (it is built here, not loaded from a spec)
STAGE2_MODEL = "model train-tiny: the trained VAE with a new UNet and text encoder"


class TrainTinyConfig(ResumableConfig):
    """Train a tiny Stable Diffusion (VAE, CLIP text encoder, UNet) on a dataset, on the CPU."""

    python_positional = ("dataset", "out")
    #: the checkpoint interval changes no weight: a resume may use another one
    presentation_fields = ResumableConfig.presentation_fields | {"checkpoint_every"}

    dataset: str = option(flag="--dataset --world", help="the training data: an imagefolder (a world made by "
                          "`sdguard data make-world` or any other), webdataset shards or a parquet/CSV table")
    out: str = option(help="output diffusers folder")
    seed: int = option(0, ge=0, le=2**63 - 1, help="seed of the weights, the data order and the noise")
    image_size: int = option(32, ge=8, le=1024, help="training image size (images resized and centre-cropped)")
    vae_steps: int = option(400, ge=1, le=1_000_000, help="autoencoder training steps")
    unet_steps: int = option(2400, ge=1, le=1_000_000, help="UNet and text-encoder training steps")
    batch_size: int = option(64, ge=1, le=4096, help="images per step")
    vae_lr: float = option(2e-3, gt=0, le=1, help="learning rate of the autoencoder")
    unet_lr: float = option(1e-3, gt=0, le=1, help="learning rate of the UNet and text encoder")
    caption_dropout: float = option(0.1, ge=0, lt=1, help="share of captions replaced by the empty prompt "
                                    "(classifier-free guidance)")
    ema_decay: float = option(0.995, ge=0, lt=1, help="decay of the weights' exponential moving average")
    max_tokens: int = option(32, ge=8, le=77, help="the text encoder's context length")
    vocabulary_size: int = option(4096, ge=1, le=1_000_000, help="caption words that become single tokens (the "
                                  "most frequent; others are spelled in characters)")
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
    """Train a tiny Stable Diffusion on ``dataset`` into ``out`` (``train_tiny(dataset, out,
    unet_steps=..., ...)`` or ``train_tiny(TrainTinyConfig(...))``); see the module's docstring.

    ``out`` becomes a diffusers folder (loadable with ``load_pipeline``) plus ``members.jsonl``
    (every record trained on), ``report.json``, ``report.html`` and ``training_log.jsonl``. With
    ``resume=True`` an interrupted run continues from its last checkpoint (of either stage); a
    checkpoint that is corrupt or was written with other settings or another dataset is refused
    (:class:`~sdguard.core.errors.StateError`, exit code 2).
    """
    from ..data.datasets import open_dataset

    cfg = build(TrainTinyConfig, args, values)
    require("accelerate", "train", "training the tiny model")  # before any work: stage 2 runs through it
    torch.set_num_threads(cfg.threads)
    dataset = open_dataset(cfg.dataset)
    run = TinyRun(cfg, dataset)  # every image read (and checked) before anything is written
    report = Report("model train-tiny", cfg)
    with output_for(cfg, "model train-tiny", "dataset") as stage:
        run.stage = Path(stage)
        if cfg.resume:
            run.restore()
        run.train_vae(progress)
        loop = run.unet_loop(finetune.make_accelerator("no", cpu=True), progress)
        if cfg.resume:
            loop.restore()
        loop.fit()
        model = run.finish(loop)
        tiny_report(report, run, loop, model)
        report.write(stage)
    return report


class TinyRun:
    """One run of the recipe: the images, the tokenizer, the pipeline, the VAE stage's state."""

    def __init__(self, cfg: TrainTinyConfig, dataset):
        self.cfg, self.dataset, self.stage = cfg, dataset, None
        entries = dataset.entries()
        if not len(entries):
            raise InputError.bad("--dataset", cfg.dataset, "has no records to train on")
        tensors: list[torch.Tensor] = []
        ok, self.skipped = readable(dataset, entries, cfg.image_size, lambda _pos, t: tensors.append(t))
        self.entries, self.images = entries.take(ok), torch.stack(tensors)
        self.vocabulary = caption_vocabulary(self.entries.texts, cfg.vocabulary_size)
        tokenizer = build_tokenizer(self.vocabulary, max_length=cfg.max_tokens)
        self.tiny = TinyConfig(image_size=cfg.image_size, text_hidden=cfg.text_hidden,
                               vae_channels=tuple(cfg.vae_channels), unet_channels=tuple(cfg.unet_channels),
                               prediction_type=cfg.prediction_type, zero_terminal_snr=cfg.zero_terminal_snr)
        self.pipe = build_pipeline(tokenizer, self.tiny, seed=cfg.seed)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.vae_opt = torch.optim.AdamW(self.pipe.vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
        self.state = {"step": 0, "log": [], "scaling": None, "elapsed": 0.0}
        # the same run: every setting that changes the weights, and the dataset
        self.key = {"recipe": "model train-tiny", **cfg.run_key(), "dataset_fingerprint": dataset.fingerprint()}

    def _parts(self) -> dict:
        return {"modules": {"vae": self.pipe.vae}, "optimizers": {"vae_opt": self.vae_opt}, "gen": self.gen}

    def save(self) -> None:
        save_train_state(self.stage, CHECKPOINT, self.key, state=self.state, **self._parts())

    def restore(self) -> None:
        state = load_train_state(self.stage, CHECKPOINT, self.key, **self._parts())
        if state is not None:
            with restoring(self.stage, CHECKPOINT):  # the loop's own entries, as it reads them
                scaling = state["scaling"]
                self.state = {"step": int(state["step"]), "log": [dict(r) for r in state["log"]],
                              "scaling": None if scaling is None else float(scaling),
                              "elapsed": float(state["elapsed"])}

    def train_vae(self, progress: bool | None) -> None:
        """Stage 1: the autoencoder, on reconstruction with a small KL term; checkpointed every
        ``checkpoint_every`` steps and when done (a resume in stage 2 starts from that one)."""
        cfg, vae, gen, state = self.cfg, self.pipe.vae, self.gen, self.state
        t_start = time.perf_counter() - state["elapsed"]
        vae.train()
        with progress_bar("training the autoencoder", cfg.vae_steps, enabled=progress,
                          completed=min(state["step"], cfg.vae_steps)) as bar:
            while state["step"] < cfg.vae_steps:
                set_lr(self.vae_opt, cfg.vae_lr * cosine_lr(state["step"], cfg.vae_steps))
                x = self.images[torch.randint(0, len(self.images), (cfg.batch_size,), generator=gen)]
                post = vae.encode(x).latent_dist
                z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen)
                rec = vae.decode(z).sample
                kl = post.kl().mean() / z[0].numel()
                loss = F.mse_loss(rec, x) + 0.5 * F.l1_loss(rec, x) + 1e-4 * kl
                self.vae_opt.zero_grad(set_to_none=True)
                loss.backward()
                self.vae_opt.step()
                state["step"] += 1
                if state["step"] % 25 == 0:
                    log_row(state, self.stage, {"step": state["step"], "stage": "vae", "loss": loss.item()}, t_start)
                done = state["step"] == cfg.vae_steps
                if done:
                    state["scaling"] = float(1.0 / self.latent_means().std())
                if done or state["step"] % cfg.checkpoint_every == 0:
                    state["elapsed"] = time.perf_counter() - t_start
                    self.save()
                bar.advance()
        vae.eval().requires_grad_(False)
        vae.register_to_config(scaling_factor=state["scaling"])

    def latent_means(self) -> torch.Tensor:
        """The posterior means of every training image under the current autoencoder."""
        return posteriors(DiffusionModel(self.pipe), self.images, 256)[0]

    def unet_loop(self, accelerator, progress: bool | None):
        """Stage 2's run of the shared fine-tuning loop: the UNet and the text encoder on every
        readable record, the recipe's settings as a :class:`~.finetune.TrainConfig`."""
        from .finetune_run import FineTuneRun

        cfg = self.cfg
        tcfg = finetune.TrainConfig(
            model=STAGE2_MODEL, dataset=cfg.dataset, out=cfg.out, trainable=["unet", "text_encoder"],
            steps=cfg.unet_steps, batch_size=cfg.batch_size, lr=cfg.unet_lr, warmup_steps=100, weight_decay=1e-2,
            caption_dropout=cfg.caption_dropout, ema_decay=cfg.ema_decay, clip_norm=1.0, resolution=cfg.image_size,
            mixed_precision="no", seed=cfg.seed, checkpoint_every=cfg.checkpoint_every, samples=0)
        loop = FineTuneRun(tcfg, accelerator, progress=progress)
        model = DiffusionModel(self.pipe, spec=STAGE2_MODEL)
        # the images are in memory already: encoded from there, not read from the dataset again
        encoded = EncodedSet(self.entries, *posteriors(model, self.images), self.skipped)
        loop.setup(model, self.dataset, self.entries, self.entries.take([]), key=self.key, encoded=encoded)
        loop.stage = self.stage
        return loop

    def finish(self, loop) -> DiffusionModel:
        """The EMA into the weights, the pipeline, the members and the log saved, the checkpoints removed."""
        loop.apply_ema()
        pipe, stage = self.pipe, self.stage
        pipe.unet.eval()
        pipe.text_encoder.eval()
        with quiet_hub_bars():
            pipe.save_pretrained(str(stage), safe_serialization=True)
        write_manifest(stage / MEMBERS, loop.encoded.entries)
        unet_rows = [{"step": self.cfg.vae_steps + r["step"], "stage": "unet", **{k: v for k, v in r.items()
                      if k != "step"}} for r in loop.state["log"]]
        write_log(stage, self.state["log"] + unet_rows)
        for name in (CHECKPOINT, finetune.CHECKPOINT):
            remove_checkpoint(stage, name)
        self.elapsed = self.state["elapsed"] + loop.state["elapsed"]
        return DiffusionModel(pipe, spec=str(self.cfg.out))


def tiny_report(report: Report, run: TinyRun, loop, model: DiffusionModel) -> None:
    """The recipe's report: the data (skipped images, vocabulary), both stages' losses, samples."""
    texts, n, elapsed = run.entries.texts, len(run.entries), run.elapsed
    report.timings["train"] = round(elapsed, 1)
    report.add_model("trained", model)
    with torch.no_grad():
        x = run.images[:512]
        rec = run.pipe.vae.decode(run.pipe.vae.encode(x).latent_dist.mean).sample
    recon_mse = float(F.mse_loss(rec, x))
    unet_log = loop.state["log"]
    report.results = {"dataset": run.dataset.describe(), "images": n, "skipped": run.skipped.to_dict(),
                      "vocabulary": len(run.vocabulary), "vae_reconstruction_mse": recon_mse,
                      "scaling_factor": run.state["scaling"],
                      "final_loss": unet_log[-1]["loss"] if unet_log else None,
                      "clipping": loop.clipper.summary(), "parameters": model.parameter_counts(),
                      "train_seconds": round(elapsed, 1), "tiny_config": asdict(run.tiny)}
    report.artifacts = ["model_index.json", "unet/", "vae/", "text_encoder/", "tokenizer/", "scheduler/", MEMBERS,
                        LOG_FILE]
    curves = {"vae": [(r["step"], r["loss"]) for r in run.state["log"]],
              "unet": [(run.cfg.vae_steps + r["step"], r["loss"]) for r in unet_log]}
    for stage_name, rows in curves.items():
        if rows:
            report.section(f"{stage_name} loss", figures=[(line_plot(
                {stage_name: ([s for s, _ in rows], [v for _, v in rows])},
                title=f"{stage_name} training loss", xlabel="step", ylabel="loss"), "training loss")])
    sample_prompts = list(dict.fromkeys(texts[i] for i in range(0, n, max(1, n // 8))))[:8]
    samples = model.generate(sample_prompts, seeds=0, steps=25, guidance=3.0)
    report.section("Samples of training captions (seed 0)", "; ".join(sample_prompts),
                   figures=[(png_bytes(make_grid(samples.images, 8, auto_scale(run.cfg.image_size))), "generated")])
    report.summary = [f"trained on {n} images in {elapsed / 60:.1f} min ({len(run.vocabulary)} caption words as tokens)",
                      f"VAE reconstruction MSE {recon_mse:.4f}"]
    if run.skipped.total:
        report.summary.append(f"{run.skipped.total} image(s) skipped: {run.skipped.missing} missing, "
                              f"{run.skipped.unreadable} unreadable")


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


__all__ = ["CHECKPOINT", "TrainTinyConfig", "TinyRun", "train_tiny", "tiny_report", "export_builtin"]
