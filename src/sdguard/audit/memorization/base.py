"""What every memorization detector shares: the registry, the settings, the pure-noise starts and
the one batched classifier-free-guidance forward pass a score is made of.

A detector scores prompts from their text embeddings alone (no image, no training data): a prompt
the model has memorized pulls its noise prediction towards one image from any starting noise, and
the detectors read that pull from one or two UNet passes. Every score is "higher = more likely
memorized"; the command turns scores into a flag with a threshold calibrated on ordinary prompts.

Starting noises: generation ``g`` of every prompt starts from the Gaussian latents seeded
``seed + g`` (:meth:`DiffusionModel.initial_latents`), the same for all prompts, so a prompt's
score depends neither on its position in the file nor on the batch it is scored in.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch

from ...core.registry import Registry

DETECTORS: Registry = Registry("memorization detector", argument="--detector")
DETECTORS.register("wen", "sdguard.audit.memorization.wen:NoiseNormDetector",
                   description="Wen et al. ICLR 2024: magnitude of the text-conditional noise prediction")
DETECTORS.register("anisotropy", "sdguard.audit.memorization.anisotropy:AnisotropyDetector",
                   description="Asthana & Belagiannis ICLR 2026: norm at the first step + alignment at low noise")


@dataclass(frozen=True)
class DetectionSettings:
    """How a detector is run (the fields of the command's config of the same names)."""

    generations: int = 1  # starting noises per prompt
    steps: int = 50  # the sampler's steps (whose timesteps the detectors read)
    scored_steps: int = 1  # wen: the first k sampler steps are scored
    guidance: float = 7.5  # wen with scored_steps > 1: the guidance the trajectory is sampled with
    timestep: int | None = None  # wen extension: score pure noise at this timestep instead
    anisotropy_weight: float | None = None  # anisotropy's weight of the alignment term (None: published)
    seed: int = 0
    size: int | None = None  # image side (default: the model's)


def start_latents(model, settings: DetectionSettings, g: int, n: int) -> torch.Tensor:
    """The starting noise of generation ``g`` for ``n`` prompts (the same noise for each)."""
    size = settings.size or model.default_size
    one = model.initial_latents([settings.seed + g], size, size)
    return one.expand(n, *one.shape[1:]).contiguous()


def sampler(model, steps: int):
    """A private copy of the model's scheduler set to ``steps`` steps (detectors never change the
    pipeline's own scheduler state)."""
    sched = copy.deepcopy(model.scheduler)
    sched.set_timesteps(steps, device=model.device)
    return sched


@torch.no_grad()
def guidance_pair(model, sched, latents: torch.Tensor, t, embeddings) -> tuple[torch.Tensor, torch.Tensor]:
    """``(pred_uncond, pred_cond)`` in float32 at ``x_t = latents``: one UNet pass over the batch of
    both (two UNet evaluations per latent), inputs scaled by the scheduler as the pipeline does."""
    x = sched.scale_model_input(latents, t)
    both = model.predict_noise(torch.cat([x, x]), t, torch.cat([embeddings.uncond, embeddings.cond]))
    u, c = both.float().chunk(2)
    return u, c


def flat_norm(x: torch.Tensor) -> np.ndarray:
    """The L2 norm of each sample of a batch (over all its elements)."""
    return x.flatten(1).norm(dim=1).cpu().numpy()


__all__ = ["DETECTORS", "DetectionSettings", "start_latents", "sampler", "guidance_pair", "flat_norm"]
