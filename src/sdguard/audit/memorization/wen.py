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
- ``timestep`` (extension, off by default, named in the report): score the pure starting noise at
  one timestep of the training schedule instead of the sampler's first step. A model trained with
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
        steps = 1 if settings.timestep is not None else settings.scored_steps
        return 2 * steps * settings.generations

    @staticmethod
    def extensions(settings: DetectionSettings) -> list[str]:
        return [f"timestep {settings.timestep}: pure noise scored at one timestep instead of the sampler's first "
                "step(s)"] if settings.timestep is not None else []

    @staticmethod
    def describe(model, settings: DetectionSettings) -> dict:
        """Where the score is read: the timesteps and the parameterization."""
        sched = sampler(model, settings.steps)
        ts = [int(settings.timestep)] if settings.timestep is not None else \
            [int(t) for t in sched.timesteps[: settings.scored_steps]]
        return {"timesteps": ts, "parameterization": getattr(model.scheduler.config, "prediction_type", "epsilon"),
                "generations": settings.generations}

    def score(self, model, embeddings, settings: DetectionSettings) -> dict[str, np.ndarray]:
        n = len(embeddings)
        sched = sampler(model, settings.steps)
        per_gen = []
        for g in range(settings.generations):
            x = start_latents(model, settings, g, n) * sched.init_noise_sigma
            if settings.timestep is not None:
                u, c = guidance_pair(model, sched, x, int(settings.timestep), embeddings)
                per_gen.append(flat_norm(c - u))
                continue
            norms = []
            for i, t in enumerate(sched.timesteps[: settings.scored_steps]):
                u, c = guidance_pair(model, sched, x, t, embeddings)
                norms.append(flat_norm(c - u))
                if i + 1 < settings.scored_steps:
                    x = sched.step((u + settings.guidance * (c - u)).to(x.dtype), t, x).prev_sample
            per_gen.append(np.mean(norms, axis=0))
        return {"score": np.mean(per_gen, axis=0)}
