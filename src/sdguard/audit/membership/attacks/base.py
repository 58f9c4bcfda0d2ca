"""The registry of membership-inference attacks and what they share.

An attack is a small class: its constructor stores its options, :meth:`MIAttack.score` turns a
batch of records (clean latents ``x_0``, the text-encoder states of their captions and one seed per
record) into one score per record and candidate setting, **higher meaning member**. An attack
with one setting (SecMI, PIA) has one candidate; the loss attack scores several timesteps, and the
command picks the best one on the calibration split only (:mod:`sdguard.audit.membership.command`).
Every UNet output is turned into a noise estimate with
:meth:`~sdguard.models.DiffusionModel.to_epsilon` (so epsilon-, v- and sample-prediction models are
attacked alike) and every distance is computed in float32 (fp16/bf16 models included).

A new attack is one module with a subclass and one ``register`` line in :data:`MIA_ATTACKS`.
"""

from __future__ import annotations

from typing import ClassVar, Sequence

import torch

from ....core.registry import Registry

#: membership-inference attacks by name (``--attack``, repeatable)
MIA_ATTACKS: Registry = Registry("membership attack", argument="--attack")
MIA_ATTACKS.register("loss", "sdguard.audit.membership.attacks.loss:LossAttack",
                     description="loss threshold at the best timestep (Matsumoto et al. 2023)")
MIA_ATTACKS.register("secmi", "sdguard.audit.membership.attacks.secmi:SecMIStat",
                     description="SecMI_stat: t-error of a DDIM inversion step (Duan et al. 2023)")
MIA_ATTACKS.register("pia", "sdguard.audit.membership.attacks.pia:PIA",
                     description="proximal initialization attack (Kong et al. 2024)")


class MIAttack:
    """Base class: ``name``, ``published`` (the paper and the official code file it follows),
    :attr:`candidates` (labels of the settings scored, e.g. ``"t=100"``), :meth:`evaluations`
    (UNet evaluations per record) and :meth:`score`."""

    name: ClassVar[str] = ""
    published: ClassVar[str] = ""
    deviations: ClassVar[tuple[str, ...]] = ()

    @property
    def candidates(self) -> list[str]:
        return [", ".join(f"{k}={v}" for k, v in self.settings().items())]

    def evaluations(self) -> int:  # pragma: no cover - overridden
        raise NotImplementedError

    def settings(self) -> dict:  # pragma: no cover - overridden
        raise NotImplementedError

    def score(self, model, latents: torch.Tensor, embeddings: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
        """``len(latents) x len(candidates)`` float32 scores on the CPU, higher = member."""
        raise NotImplementedError  # pragma: no cover - overridden

    def describe(self) -> dict:
        return {"name": self.name, "published": self.published, "settings": self.settings(),
                "unet_evaluations_per_record": self.evaluations(), "deviations": list(self.deviations)}


def epsilon(model, x_t: torch.Tensor, t: int, embeddings: torch.Tensor) -> torch.Tensor:
    """The model's noise estimate eps_theta(x_t, t, c) in float32 (any prediction type)."""
    with torch.no_grad():
        pred = model.predict_noise(x_t, int(t), embeddings)
    return model.to_epsilon(pred, x_t.float(), int(t))


def record_noise(shape: Sequence[int], seed: int, draw: int) -> torch.Tensor:
    """Gaussian noise of one record's ``draw``-th draw, from its own generator (so a record's noise
    does not depend on the batch size or on the other records)."""
    g = torch.Generator("cpu").manual_seed((int(seed) * 1_000_003 + draw * 7919 + 17) % (2**63 - 1))
    return torch.randn(tuple(shape), generator=g)


__all__ = ["MIA_ATTACKS", "MIAttack", "epsilon", "record_noise"]
