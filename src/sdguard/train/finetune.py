"""``sdguard train``: fine-tune any model spec on any dataset sdguard reads.

The latent-diffusion objective of Rombach et al. 2022 ("High-Resolution Image Synthesis with
Latent Diffusion Models"), as diffusers' ``examples/text_to_image/train_text_to_image.py`` and
``train_text_to_image_lora.py`` train it: VAE latents of the training images (sampled from the
posterior, times the scaling factor), ``t`` uniform over the training schedule, the scheduler's
``add_noise``, the MSE of the UNet's prediction against the scheduler's target (epsilon or v,
:meth:`~sdguard.models.DiffusionModel.prediction_target`), conditioned on the text encoder's
states; AdamW, a linear warm-up then a cosine decay, optional EMA of the trained weights, caption
dropout (the empty prompt, for classifier-free guidance), gradient accumulation and global-norm
gradient clipping (:mod:`.clipping`). Trainable subsets and LoRA: :mod:`.trainable`. ``--dp``:
DP-SGD through Opacus, with images or groups of records as the privacy unit (:mod:`.private`).

Deviations from the diffusers scripts, each for a reason:
- Every random draw of a record in a step (its latent sample, ``t``, noise, caption dropout) comes
  from its own generator seeded by (seed, step, position in the global batch), and the data order
  by (seed, epoch). A resumed run is therefore bit-identical to an uninterrupted one, and a run on
  ``P`` processes x ``K`` accumulation steps draws exactly what one process draws for the same
  global batch (``--batch-size`` is the global batch; diffusers' is per device).
- Latent posteriors are computed once before training (see :mod:`.data`), not per step.
- The learning-rate schedule decays to 10% of ``--lr``, not to zero (:func:`.loop.cosine_lr`).

Many GPUs or nodes: ``accelerate launch -m sdguard train ...``. Accelerate makes the process
group, wraps the trained modules in DDP (gradients averaged) and runs fp16/bf16 autocast with
fp32 master weights (``--mixed-precision``); each process takes its slice of every global batch.
Only the main process writes; the others read a checkpoint from the same staging folder, which
must be on a file system they share.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import model_validator

from ..core.config import ResumableConfig, build, option, output_for
from ..core.errors import InputError, require
from ..core.io import staging_dir_of
from ..models.commands import MODEL_HELP
from ..models.lora import DEFAULT_TARGETS
from ..report import Report
from .private.options import DPOptions
from .trainable import Group

CHECKPOINT = "finetune_state"


class TrainConfig(ResumableConfig, DPOptions):
    """Fine-tune a model on a dataset: a trainable subset or LoRA, clipping or DP-SGD, a members manifest."""

    python_positional = ("model", "dataset", "out")
    #: the checkpoint interval and the report's samples change no weight: a resume may change them
    presentation_fields = ResumableConfig.presentation_fields | {"checkpoint_every", "samples", "sample_steps"}

    model: str = option(positional=True, help=MODEL_HELP)
    dataset: str = option(help="the training data: an imagefolder, webdataset shards or a parquet/CSV table")
    out: str = option(help="output folder (a diffusers pipeline, or a LoRA folder with --trainable lora)")
    trainable: list[Group] = option(["unet"], min_length=1, help="what trains: unet, attention, cross_attn, "
                                    "text_encoder or lora (repeat to combine)")
    steps: int = option(500, ge=1, le=10_000_000, help="optimizer steps")
    batch_size: int = option(8, ge=1, le=65_536, help="records per optimizer step, over all processes")
    grad_accum: int = option(1, ge=1, le=4096, help="micro-batches per optimizer step (gradient accumulation)")
    lr: float | None = option(None, gt=0, le=1, help="peak learning rate (default: 1e-4 for lora, 1e-5 otherwise)")
    warmup_steps: int | None = option(None, ge=0, help="linear warm-up steps (default: 5% of --steps)")
    weight_decay: float = option(1e-2, ge=0, le=1, help="AdamW weight decay")
    caption_dropout: float = option(0.1, ge=0, lt=1, help="share of captions replaced by the empty prompt")
    ema_decay: float = option(0.0, ge=0, lt=1, help="EMA of the trained weights (0: none)")
    clip_norm: float = option(1.0, ge=0, help="global gradient-norm threshold (0: measure the norms, clip nothing)")
    per_layer_clip: bool = option(False, help="clip each parameter tensor at clip-norm/sqrt(L) (an extension)")
    lora_rank: int = option(4, ge=1, le=4096, help="LoRA rank")
    lora_alpha: float | None = option(None, gt=0, help="LoRA alpha (default: the rank, a scale of 1)")
    lora_targets: list[str] = option(list(DEFAULT_TARGETS), min_length=1, help="UNet modules LoRA adapts")
    gradient_checkpointing: bool = option(False, help="recompute the UNet's activations in the backward pass "
                                          "(less memory, about a third slower)")
    holdout: float = option(0.0, ge=0, lt=1, help="share of records kept out of training (non-members)")
    resolution: int | None = option(None, ge=8, le=4096, help="training image size (default: the model's)")
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = option("auto", help="auto (fp16 on a GPU), no, fp16 "
                                                                    "or bf16")
    seed: int = option(0, ge=0, le=2**63 - 1, help="seed of the data order, the noise and the holdout")
    checkpoint_every: int = option(100, ge=1, help="steps between checkpoints")
    samples: int = option(4, ge=0, le=64, help="training captions sampled before and after, in the report")
    sample_steps: int = option(25, ge=1, le=1000, help="denoising steps of the report's samples")

    @model_validator(mode="after")
    def _batches(self):
        if self.batch_size % self.grad_accum:
            raise InputError.bad("--grad-accum", self.grad_accum, f"must divide --batch-size ({self.batch_size})")
        return self

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else (1e-4 if "lora" in self.trainable else 1e-5)

    @property
    def warmup(self) -> int:
        return self.warmup_steps if self.warmup_steps is not None else max(1, round(0.05 * self.steps))

    @property
    def threshold(self) -> float | None:
        return self.clip_norm or None


def draw_seed(seed: int, step: int, position: int) -> int:
    """The seed of the generator of the record at ``position`` of the global batch of ``step``."""
    return (((seed * 1_000_003) ^ (step * 9_176_867)) * 31 + position * 7919 + 12345) % (2**63 - 1)


@functools.lru_cache(maxsize=4)  # every step of an epoch asks for its order
def record_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order of the ``n`` members in ``epoch``: a permutation fixed by ``seed`` and ``epoch``."""
    order = np.random.default_rng([seed, epoch, 0x7A1]).permutation(n)
    order.setflags(write=False)  # cached and shared
    return order


def batch_positions(seed: int, step: int, batch: int, n: int) -> list[int]:
    """The members (positions) of the global batch of ``step``: a stream of epochs, each a new order."""
    return [int(record_order(seed, q // n, n)[q % n]) for q in range(step * batch, (step + 1) * batch)]


def make_accelerator(mixed_precision: str = "auto", cpu: bool | None = None):
    """An ``accelerate.Accelerator`` for this process: ``auto`` is fp16 on a CUDA GPU, no autocast
    elsewhere. Without a GPU it is told it runs on the CPU (only then does Accelerate form a gloo
    process group under ``accelerate launch``). Accelerate keeps one state per process and refuses
    a second Accelerator of another precision; a Python session that trains again with another
    precision has that state reset first (``AcceleratorState._reset_state``, as Accelerate's own
    tests do), the process group kept. ``cpu=True`` forces the CPU."""
    accelerate = require("accelerate", "train", "fine-tuning")
    from accelerate.state import AcceleratorState, GradientState

    mp = mixed_precision if mixed_precision != "auto" else ("fp16" if torch.cuda.is_available() else "no")
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if cpu is None:
        cpu = not (torch.cuda.is_available() or mps)
    if AcceleratorState._shared_state:
        state = AcceleratorState()
        if state.mixed_precision != mp or (cpu and state.device.type != "cpu"):
            AcceleratorState._reset_state(reset_partial_state=False)
            GradientState._reset_state()
    return accelerate.Accelerator(mixed_precision=mp, cpu=cpu)


def train(*args: Any, progress: bool | None = None, **values: Any) -> Report:
    """Fine-tune ``model`` on ``dataset`` into ``out`` (``train(model, dataset, out, steps=...)`` or
    ``train(TrainConfig(...))``); see the module's docstring. Returns the report; ``out`` holds the
    weights (a diffusers folder, or a LoRA folder), ``members.jsonl`` (every record trained on),
    ``nonmembers.jsonl`` (the holdout), ``training_log.jsonl``, ``report.json`` and ``report.html``."""
    from .finetune_run import FineTuneRun

    cfg = build(TrainConfig, args, values)
    accelerator = make_accelerator("no" if cfg.dp and cfg.mixed_precision == "auto" else cfg.mixed_precision)
    run = FineTuneRun(cfg, accelerator, progress=progress)
    run.prepare()  # every input checked and every image read before anything is written
    main = accelerator.is_main_process
    with output_for(cfg, "train", "dataset", "model") if main else contextlib.nullcontext(staging_dir_of(cfg.out)) as stage:
        accelerator.wait_for_everyone()  # the staging folder exists (and a stale one is gone)
        run.stage = Path(stage)
        if cfg.resume:
            run.restore()
        run.fit()
        accelerator.wait_for_everyone()
        report = run.finish()
        accelerator.wait_for_everyone()
    return report


__all__ = ["CHECKPOINT", "TrainConfig", "train", "make_accelerator", "draw_seed", "record_order", "batch_positions"]
