"""SecMI, the statistical variant (SecMI_stat).

Duan, Kong, Wang, Shi & Xu 2023, "Are Diffusion Models Vulnerable to Membership Inference
Attacks?" (ICML). The clean latent ``x_0`` is carried to ``x_t`` by a deterministic DDIM inversion
in steps of ``interval`` (each step uses the model's noise estimate at the current point), then one
more inversion step to ``t + interval`` and one deterministic denoising step back to ``t``; the
t-error ||x̂_t - x_t||^2 (sum over latent elements) is lower for members. The score is its negation.

Official code: ``github.com/jinhaoduan/SecMI-LDM``, ``src/mia/secmi.py`` with the modified
``pipeline_stable_diffusion.py`` (the Stable Diffusion setting: timesteps ``range(0, 200, 10)``,
the error between ``reverse_results[14]`` and ``denoising_results[-15]``, i.e. at t = 140 reached
in steps of 10, conditional prediction with guidance 1); ``github.com/jinhaoduan/SecMI``
``mia_evals/secmia.py`` is the pixel-space DDPM setting (``t_sec=100``, ``k=10``). The defaults here
are the Stable Diffusion ones (``t=140``, ``interval=10``: 16 UNet evaluations per record).

Deviations: the latent is the VAE posterior mean (the official code samples the posterior once);
SecMI_NNs (a classifier trained on the t-error maps) is not implemented.
"""

from __future__ import annotations

from ....core.errors import InputError
from .base import MIAttack, epsilon


class SecMIStat(MIAttack):
    name = "secmi"
    published = ("Duan et al. ICML 2023, Are Diffusion Models Vulnerable to Membership Inference Attacks? "
                 "(github.com/jinhaoduan/SecMI-LDM src/mia/secmi.py)")
    deviations = ("VAE posterior mean instead of one posterior sample", "SecMI_NNs not implemented")

    def __init__(self, t: int = 140, interval: int = 10):
        if t < interval or t % interval:
            raise InputError.bad("--secmi-t", t, f"must be a positive multiple of --secmi-interval ({interval})")
        self.t, self.interval = int(t), int(interval)

    def evaluations(self) -> int:
        return self.t // self.interval + 2

    def settings(self) -> dict:
        return {"t": self.t, "interval": self.interval}

    def score(self, model, latents, embeddings, seeds):
        x = latents.float()
        for s in range(0, self.t, self.interval):  # deterministic inversion x_0 -> x_t
            x = model.ddim_move(x, epsilon(model, x, s, embeddings), s, s + self.interval)
        x_t, k = x, self.t + self.interval
        x_k = model.ddim_move(x_t, epsilon(model, x_t, self.t, embeddings), self.t, k)
        x_hat = model.ddim_move(x_k, epsilon(model, x_k, k, embeddings), k, self.t)
        return -((x_hat - x_t) ** 2).flatten(1).sum(1).cpu()[:, None]
