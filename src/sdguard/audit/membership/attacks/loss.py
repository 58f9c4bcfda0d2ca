"""The loss-threshold attack on diffusion models.

Matsumoto, Miura & Yanai 2023, "Membership Inference Attacks against Diffusion Models" (IEEE
S&P Workshops): a record is a member when the denoising loss ||eps_theta(x_t, t, c) - eps||^2 at
``x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) eps`` is low; the attack is strongest at a timestep in the
lower-middle of the schedule, which the attacker picks. The paper's code is not public; this
follows the paper (the same loss is the ``naive`` baseline of PIA's official code,
``github.com/kong13661/PIA/stable_diffusion/components.py``, ``NaiveAttacker``).

Deviations: the loss is averaged over ``draws`` noise draws per record (each record's noise from
its own seeded generator), which lowers its variance; the timestep is chosen by the calibration
AUC among ``timesteps`` (the paper picks it over its evaluation), and the score is the negated mean
squared error over latent elements (higher = member).
"""

from __future__ import annotations

from typing import Sequence

import torch

from .base import MIAttack, epsilon, record_noise

DEFAULT_TIMESTEPS = (100, 200, 300, 500, 700)


class LossAttack(MIAttack):
    name = "loss"
    published = ("Matsumoto et al. 2023, Membership Inference Attacks against Diffusion Models (no official code; "
                 "the NaiveAttacker of github.com/kong13661/PIA stable_diffusion/components.py is the same loss)")
    deviations = ("loss averaged over several seeded noise draws per record",
                  "timestep chosen by the AUC on the calibration split")

    def __init__(self, timesteps: Sequence[int] = DEFAULT_TIMESTEPS, draws: int = 2):
        self.timesteps, self.draws = [int(t) for t in timesteps], int(draws)

    @property
    def candidates(self) -> list[str]:
        return [f"t={t}" for t in self.timesteps]

    def evaluations(self) -> int:
        return len(self.timesteps) * self.draws

    def settings(self) -> dict:
        return {"timesteps": self.timesteps, "draws": self.draws}

    def score(self, model, latents, embeddings, seeds):
        x0 = latents.float()
        out = torch.zeros(len(x0), len(self.timesteps))
        for j, t in enumerate(self.timesteps):
            a = model.alpha_bar(t, x0)
            for d in range(self.draws):
                noise = torch.stack([record_noise(x0.shape[1:], s, j * 1000 + d) for s in seeds]).to(x0.device)
                x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
                eps = epsilon(model, x_t, t, embeddings)
                out[:, j] -= ((eps - noise) ** 2).flatten(1).mean(1).cpu() / self.draws
        return out
