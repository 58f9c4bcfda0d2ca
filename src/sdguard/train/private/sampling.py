"""Poisson sampling of privacy units, seeded per step.

The sampling the accountants assume (Abadi et al. 2016; Opacus's ``UniformWithReplacementSampler``):
every step takes each of the ``n`` units independently with probability ``q``, so a batch's size
varies (and may be 0). Opacus's sampler draws all steps from one generator stream; this one seeds a
generator per step from (seed, step), the same distribution, so that a resumed run draws exactly
the batches an uninterrupted one draws and any step's batch can be reproduced on its own. It is a
batch sampler of a ``DataLoader``, which Opacus's ``BatchMemoryManager`` splits into physical
batches. ``q = 1 / ceil(n / B)`` for an expected batch ``B``: Opacus's rate for a loader of
``ceil(n / B)`` batches (``make_private`` takes ``1 / len(data_loader)``).
"""

from __future__ import annotations

import math

import torch
from torch.utils.data import Dataset, Sampler


def sample_rate(units: int, batch: int) -> float:
    return 1.0 / math.ceil(units / batch)


def poisson_batch(seed: int, step: int, n: int, q: float) -> list[int]:
    """The units of ``step``: each of ``n`` kept with probability ``q`` (a generator of its own)."""
    g = torch.Generator().manual_seed((seed * 2_654_435_761 + step * 40_503 + 0xD95) % (2**63 - 1))
    return torch.nonzero(torch.rand(n, generator=g) < q).flatten().tolist()


class UnitIndex(Dataset):
    """The dataset a DP loader walks: unit ``i`` is ``i`` (the records are looked up by the step)."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


def collate_units(items: list[int]) -> torch.Tensor:
    return torch.tensor(items, dtype=torch.long)  # an empty batch is an empty tensor


class SeededPoissonSampler(Sampler[list[int]]):
    """Batches of units for consecutive steps from ``next_step`` on, ``len()`` per epoch."""

    def __init__(self, n: int, batch: int, seed: int):
        self.n, self.seed = n, seed
        self.steps_per_epoch = math.ceil(n / batch)
        self.q = 1.0 / self.steps_per_epoch
        self.next_step = 0
        self.last_step = -1

    def __len__(self) -> int:
        return self.steps_per_epoch

    def __iter__(self):
        for _ in range(self.steps_per_epoch):
            step = self.next_step
            self.next_step += 1
            self.last_step = step
            yield poisson_batch(self.seed, step, self.n, self.q)


__all__ = ["sample_rate", "poisson_batch", "UnitIndex", "collate_units", "SeededPoissonSampler"]
