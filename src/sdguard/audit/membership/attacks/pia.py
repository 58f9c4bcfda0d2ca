"""PIA, the proximal initialization attack.

Kong, Duan, Ma, Shen, Zhu, Shen & Xu 2024, "An Efficient Membership Inference Attack for the
Diffusion Model by Proximal Initialization" (ICLR). The model's own output at t = 0,
``eps_0 = eps_theta(x_0, 0, c)``, replaces random noise: ``x_t = sqrt(a_t) x_0 + sqrt(1 - a_t)
eps_0`` is deterministic, and members return their initialization more faithfully: the score is
the negated ``sum |eps_theta(x_t, t, c) - eps_0|^p`` (p = 4, the ``lp`` of the official code; the
p-th power of the p-norm, the same order). Two UNet evaluations per record.

Official code: ``github.com/kong13661/PIA``, ``stable_diffusion/components.py`` (class ``PIA``) and
``stable_diffusion/stable_attack.py``, which scores every t of ``interval * (1..attack_num)``
(``interval=10``, ``attack_num=50``); the paper's DDPM setting attacks t = 200 of 1000, the default
here (``--pia-t``).

Deviations: the official Stable Diffusion script applies classifier-free guidance 7.5 to both
predictions; here they are conditional (guidance 1, as in the paper's formulation and in SecMI-LDM);
the latent is the VAE posterior mean (the official code samples the posterior); one t, fixed in
advance, rather than the best of 50 read on the evaluated labels.
"""

from __future__ import annotations

from .base import MIAttack, epsilon


class PIA(MIAttack):
    name = "pia"
    published = ("Kong et al. ICLR 2024, An Efficient Membership Inference Attack for the Diffusion Model by "
                 "Proximal Initialization (github.com/kong13661/PIA stable_diffusion/components.py)")
    deviations = ("conditional predictions (the official SD script uses guidance 7.5)",
                  "VAE posterior mean instead of one posterior sample", "one timestep fixed in advance")

    def __init__(self, t: int = 200, p: float = 4.0):
        self.t, self.p = int(t), float(p)

    def evaluations(self) -> int:
        return 2

    def settings(self) -> dict:
        return {"t": self.t, "p": self.p}

    def score(self, model, latents, embeddings, seeds):
        x0 = latents.float()
        eps0 = epsilon(model, x0, 0, embeddings)
        a = model.alpha_bar(self.t, x0)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps0
        eps_t = epsilon(model, x_t, self.t, embeddings)
        return -((eps_t - eps0).abs() ** self.p).flatten(1).sum(1).cpu()[:, None]
