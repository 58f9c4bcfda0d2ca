"""Gradient clipping of a training step, with the statistics a report shows.

Global-norm clipping (Pascanu et al. 2013, "On the difficulty of training recurrent neural
networks"): every gradient is scaled by ``min(1, C / (||g|| + 1e-6))``, ``||g||`` the L2 norm of
all the step's gradients together -- the semantics of ``torch.nn.utils.clip_grad_norm_`` (its
``1e-6`` included), which the tests compare it with. This is batch-level clipping: it bounds the
step, not one record's influence (per-sample clipping is DP-SGD's, in :mod:`sdguard.train.private`).

Per-layer clipping (opt-in, an extension; the flat split of McMahan et al. 2018, "A General
Approach to Adding Differential Privacy to Iterative Training Procedures"): each of the ``L``
parameter tensors is clipped on its own to ``C / sqrt(L)``, so the whole step's norm stays within
``C`` while a layer with a large gradient cannot shrink the others'.

The clipper keeps each step's norm before clipping, the number of steps it clipped and the
non-finite norms (an fp16 step whose gradient overflowed: the loss scaler skips that step).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable

import torch

EPS = 1e-6  # torch.nn.utils.clip_grad_norm_'s


def total_norm(grads: list[torch.Tensor]) -> torch.Tensor:
    """The L2 norm of all ``grads`` together, computed in float32."""
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.detach().float()) for g in grads]))


@dataclass
class GradientClipper:
    """Clip each step's gradients at ``max_norm`` (``None``: measure only) and keep the statistics."""

    max_norm: float | None = 1.0
    per_layer: bool = False
    norms: list[float] = field(default_factory=list)
    clipped: int = 0
    non_finite: int = 0

    def clip(self, parameters: Iterable[torch.nn.Parameter]) -> float:
        """Clip the ``.grad`` of ``parameters`` in place; return the norm before clipping."""
        grads = [p.grad for p in parameters if p.grad is not None]
        norm = total_norm(grads)
        value = float(norm)
        if not math.isfinite(value):
            self.non_finite += 1
            self.norms.append(value)
            return value
        self.norms.append(value)
        if self.max_norm is None:
            return value
        if self.per_layer:
            limit = self.max_norm / math.sqrt(len(grads))
            hit = False
            for g in grads:
                n = float(torch.linalg.vector_norm(g.detach().float()))
                if n > limit:
                    g.mul_(limit / (n + EPS))
                    hit = True
            self.clipped += int(hit)
            return value
        coef = self.max_norm / (value + EPS)
        if coef < 1.0:
            for g in grads:
                g.mul_(coef)
            self.clipped += 1
        return value

    def state(self) -> dict:
        """The statistics as JSON (kept in checkpoints, so a resumed run reports every step)."""
        return {"norms": list(self.norms), "clipped": self.clipped, "non_finite": self.non_finite}

    def restore(self, state: dict) -> None:
        self.norms = [float(v) for v in state["norms"]]
        self.clipped, self.non_finite = int(state["clipped"]), int(state["non_finite"])

    def summary(self) -> dict:
        finite = sorted(v for v in self.norms if math.isfinite(v))
        q = (lambda f: finite[min(len(finite) - 1, int(f * len(finite)))]) if finite else (lambda f: None)
        steps = len(self.norms)
        return {"threshold": self.max_norm, "per_layer": self.per_layer, "steps": steps,
                "clipped_steps": self.clipped, "clipped_share": self.clipped / steps if steps else 0.0,
                "non_finite_steps": self.non_finite, "norm_median": q(0.5), "norm_p90": q(0.9),
                "norm_max": finite[-1] if finite else None}


__all__ = ["GradientClipper", "total_norm", "EPS"]
