"""Wen et al., "Detecting, Explaining, and Mitigating Memorization in Diffusion Models", ICLR 2024.

The score of a prompt is the magnitude of its text-conditional noise prediction,
``|| eps(x_t, c) - eps(x_t, "") ||_2``, averaged over the first ``scored_steps`` steps of the
sampler and over ``generations`` starting noises (published: one generation and the first step
give AUC 0.960 and TPR@1%FPR 0.76 on the 500 memorized SD v1.4 prompts; more generations and
steps up to 0.999 / 0.99). Official code: ``detect_mem.py`` and ``local_sd_pipeline.py``
(``track_noise_norm``: ``noise_pred_text - noise_pred_uncond``, its ``.norm(p=2)`` per image, per
step) of github.com/YuxinWenRick/diffusion_memorization.

Deviations:
- The difference is taken in the model's own parameterization, as the official code does with the
  UNet's raw output: epsilon for SD 1.x, ``v`` for v-prediction models (SD 2, builtin:tiny). At one
  timestep ``||Δv|| = ||Δeps|| / sqrt(alpha_bar_t)``: the same ranking; at a zero-terminal-SNR first
  step (``alpha_bar = 0``) ``Δeps`` vanishes for every prompt and only ``Δv`` is defined.
- Every prompt's generation ``g`` starts from the noise seeded ``seed + g`` (the official code seeds
  ``gen_seed + prompt index``): a score does not depend on where the prompt is in the file.
- A trajectory over several scored steps is sampled with the model's own scheduler (the official
  code swaps in DDIM), guided with ``guidance``.
- ``timestep`` (extension, off by default, named in the report): the pure starting noise is scored
  at this timestep of the training schedule instead of the sampler's first step (and, with
  ``scored_steps > 1``, the trajectory goes on by deterministic DDIM through the sampler's
  timesteps below it). A model trained with
  zero terminal SNR (builtin:tiny) predicts at its first step the mean image of a caption, which
  is as specific for a fully described ordinary scene as for a memorized painting; at a low-noise
  timestep only a memorized prompt still pulls pure noise towards its image (the low-noise regime
  of Asthana & Belagiannis 2026).
"""

from __future__ import annotations

import numpy as np

from .base import DetectionSettings, flat_norm, guidance_pair, sampler, start_latents


class NoiseNormDetector:
    """``score(model, embeddings, settings)`` -> ``{"score": per prompt}`` (see the module docstring)."""

    name = "wen"
    citation = "Wen et al. ICLR 2024 (github.com/YuxinWenRick/diffusion_memorization, local_sd_pipeline.py)"

    @staticmethod
    def evaluations(settings: DetectionSettings) -> int:
        """UNet evaluations per prompt: conditional + unconditional, per scored step, per generation."""
        return 2 * settings.scored_steps * settings.generations

    @staticmethod
    def extensions(settings: DetectionSettings) -> list[str]:
        return [f"timestep {settings.timestep}: pure noise scored from this timestep instead of the sampler's "
                "first step(s)"] if settings.timestep is not None else []

    @staticmethod
    def describe(model, settings: DetectionSettings) -> dict:
        """Where the score is read: the timesteps and the parameterization."""
        return {"timesteps": scored_timesteps(sampler(model, settings.steps), settings), "parameterization": getattr(model.scheduler.config, "prediction_type", "epsilon"),
                "generations": settings.generations}

    def score(self, model, embeddings, settings: DetectionSettings) -> dict[str, np.ndarray]:
        n = len(embeddings)
        sched = sampler(model, settings.steps)
        times = scored_timesteps(sched, settings)
        per_gen = []
        for g in range(settings.generations):
            x = start_latents(model, settings, g, n) * sched.init_noise_sigma
            norms = []
            for i, t in enumerate(times):
                u, c = guidance_pair(model, sched, x, t, embeddings)
                norms.append(flat_norm(c - u))
                if i + 1 < len(times):
                    guided = (u + settings.guidance * (c - u)).to(x.dtype)
                    if settings.timestep is None:  # the model's own sampler
                        x = sched.step(guided, t, x).prev_sample
                    else:  # from a timestep off the sampler's grid: the deterministic DDIM update
                        x = model.ddim_move(x, model.to_epsilon(guided, x, t), t, times[i + 1],
                                            x0=model.to_x0(guided, x, t)).to(x.dtype)
            per_gen.append(np.mean(norms, axis=0))
        return {"score": np.mean(per_gen, axis=0)}


def scored_timesteps(sched, settings: DetectionSettings) -> list[int]:
    """The sampler's first ``scored_steps`` timesteps; with ``timestep``, that timestep (pure noise
    there) followed by the sampler's timesteps below it."""
    grid = [int(t) for t in sched.timesteps]
    if settings.timestep is None:
        return grid[: settings.scored_steps]
    return ([int(settings.timestep)] + [t for t in grid if t < settings.timestep])[: settings.scored_steps]
