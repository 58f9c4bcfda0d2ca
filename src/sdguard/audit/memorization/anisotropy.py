"""Asthana & Belagiannis, "Detecting and Mitigating Memorization in Diffusion Models through
Anisotropy of the Log-Probability", ICLR 2026.

Two passes on the same pure starting noise ``x_T``, each conditional + unconditional:
- the *norm* term at the sampler's first timestep: ``|| eps(x_T, c) - eps(x_T, "") ||`` (epsilon
  models; for v-prediction the official code takes the difference of the scores
  ``(sqrt(a) v - x) / (1 - a)``, i.e. ``sqrt(a) ||Δv|| / (1 - a)``);
- the *alignment* term at a low-noise timestep, ``timesteps[-3]`` of the sampler (the anisotropic
  regime, where norm-based scores fail): the cosine between the unconditional prediction and the
  guidance direction ``pred_c - pred_u`` along the channels, averaged over the latent's pixels
  (mode ``"x,c|x"``), in the model's own parameterization;
- score = ``g1 * norm + g2 * alignment`` with the published weights: ``g1 = 1`` and ``g2 = 2``
  (SD 1.4, epsilon) or ``0.1`` (SD 2, v-prediction).
Published: AUC 0.992-0.999, TPR@1%FPR 0.93-0.98 on SD v1.4 / v2. Official code:
``local_model/pipe.py`` (the ``exp_type == 'det'`` branch) and ``detect_eval.py`` (the weights) of
github.com/rohanasthana/memorization-anisotropy.

Deviations: both passes use the noise seeded ``seed + g`` for every prompt (the official code seeds
every prompt alike too); the model's own scheduler gives the timesteps (the official code swaps in
DDIM: the same timesteps for DDIM-spaced schedulers); for a v-prediction model whose first timestep
has ``alpha_bar = 0`` (zero terminal SNR, builtin:tiny) the official norm term is 0 for every
prompt, so ``||Δv||`` is used there (``results.detectors.anisotropy.norm_term`` says which);
``anisotropy_weight`` replaces ``g2`` when given (e.g. a negative weight for a model whose
memorized prompts point the guidance *against* the unconditional prediction).
"""

from __future__ import annotations

import numpy as np
import torch

from .base import DetectionSettings, flat_norm, guidance_pair, sampler, start_latents


def published_weight(model) -> float:
    """The official alignment weight: 2.0 for epsilon models (SD 1.4), 0.1 otherwise (SD 2)."""
    return 2.0 if getattr(model.scheduler.config, "prediction_type", "epsilon") == "epsilon" else 0.1


class AnisotropyDetector:
    name = "anisotropy"
    citation = "Asthana & Belagiannis ICLR 2026 (github.com/rohanasthana/memorization-anisotropy, local_model/pipe.py)"

    @staticmethod
    def evaluations(settings: DetectionSettings) -> int:
        return 4 * settings.generations  # two passes, each conditional + unconditional

    @staticmethod
    def extensions(settings: DetectionSettings) -> list[str]:
        return [f"alignment weight {settings.anisotropy_weight} instead of the published one"] \
            if settings.anisotropy_weight is not None else []

    @staticmethod
    def _plan(model, settings: DetectionSettings):
        sched = sampler(model, settings.steps)
        t_first, t_low = sched.timesteps[0], sched.timesteps[-3]
        kind = getattr(model.scheduler.config, "prediction_type", "epsilon")
        a = float(model.alpha_bar(int(t_first)))
        weight = published_weight(model) if settings.anisotropy_weight is None else float(settings.anisotropy_weight)
        official = kind != "v_prediction" or a > 1e-8
        scale = (a ** 0.5) / (1 - a) if kind == "v_prediction" and official else 1.0
        return sched, t_first, t_low, weight, scale, official

    def describe(self, model, settings: DetectionSettings) -> dict:
        _, t_first, t_low, weight, _, official = self._plan(model, settings)
        return {"timesteps": [int(t_first), int(t_low)], "alignment_weight": weight, "generations": settings.generations,
                "norm_term": "official" if official else "||delta v|| (alpha_bar is 0 at the first timestep: the "
                "official score difference is 0 for every prompt)"}

    def score(self, model, embeddings, settings: DetectionSettings) -> dict[str, np.ndarray]:
        n = len(embeddings)
        sched, t_first, t_low, weight, scale, _ = self._plan(model, settings)
        norms, aligns = [], []
        for g in range(settings.generations):
            x = start_latents(model, settings, g, n) * sched.init_noise_sigma
            u, c = guidance_pair(model, sched, x, t_first, embeddings)
            norms.append(scale * flat_norm(c - u))
            u, c = guidance_pair(model, sched, x, t_low, embeddings)
            aligns.append(torch.nn.functional.cosine_similarity(u, c - u, dim=1).flatten(1).mean(1).cpu().numpy())
        norm, align = np.mean(norms, axis=0), np.mean(aligns, axis=0)
        return {"score": norm + weight * align, "norm": norm, "alignment": align}
