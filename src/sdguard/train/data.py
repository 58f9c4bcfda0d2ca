"""A dataset made ready for training: the member/holdout split, images at the model's size, latents.

- :func:`split_holdout`: a seeded share of the records kept out of training, drawn from the same
  dataset (non-members of the same distribution: the ground truth membership inference needs).
- :func:`prepare_image`: the shorter side resized to the training resolution (bilinear), then a
  centre crop, in [-1, 1] (the preprocessing of diffusers' ``train_text_to_image.py`` with
  ``--center_crop``; no random flip, which would make a record's two halves differ).
- :func:`encode_members`: every member's image read, preprocessed and encoded once by the frozen
  VAE into its posterior (mean and std; each step samples from it, as encoding every step would,
  for one VAE pass per image instead of one per step). Unreadable images are skipped and counted;
  none readable is an error.
- :func:`write_manifest`: ``members.jsonl`` / ``nonmembers.jsonl``, one record per line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..core.errors import InputError
from ..core.images import resize
from ..core.io import atomic_write_text
from ..data.datasets.base import MISSING, UNREADABLE, Entries, SkipCounter

MEMBERS, NONMEMBERS = "members.jsonl", "nonmembers.jsonl"


def split_holdout(entries: Entries, share: float, seed: int) -> tuple[Entries, Entries]:
    """``(members, holdout)``: ``round(share * n)`` records drawn with ``seed`` (at least one when
    ``share > 0``) held out; both keep dataset order."""
    n = len(entries)
    k = 0 if share <= 0 else max(1, int(round(share * n)))
    if k >= n:
        raise InputError.bad("--holdout", share, f"leaves no record to train on ({n} record(s) in the dataset)")
    held = set(np.random.default_rng([seed, 0x401D]).permutation(n)[:k].tolist())
    return (entries.take([i for i in range(n) if i not in held]), entries.take(sorted(held)))


def prepare_image(image: np.ndarray, size: int) -> torch.Tensor:
    """``uint8`` H x W x 3 to a 3 x size x size float tensor in [-1, 1]: shorter side to ``size``
    (bilinear), centre crop."""
    h, w = image.shape[:2]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    a = resize(image, (nw, nh), resample="bilinear")
    top, left = (nh - size) // 2, (nw - size) // 2
    a = a[top:top + size, left:left + size]
    return torch.from_numpy(np.array(a)).permute(2, 0, 1).float() / 127.5 - 1  # a copy: PIL arrays are read-only


@dataclass
class EncodedSet:
    """The readable members (their entries) and their latent posteriors, in dataset order."""

    entries: Entries
    means: torch.Tensor
    stds: torch.Tensor
    skipped: SkipCounter = field(default_factory=SkipCounter)


def readable(dataset, entries: Entries, size: int, on_image: Callable[[int, torch.Tensor], None] | None = None,
             purpose: str = "to train on") -> tuple[list[int], SkipCounter]:
    """Positions in ``entries`` whose image could be read (``on_image(position, tensor)`` for each),
    and the count of those that could not. None readable: :class:`InputError`."""
    from ..embed import cache

    skipped, ok = SkipCounter(), []
    status = np.full(len(entries), cache.OK, np.int8)
    for pos, item in enumerate(dataset.images(entries.rows)):
        if item.image is None:
            skipped.add(entries.file_names[pos], item.error or UNREADABLE, item.detail)
            status[pos] = cache.MISSING if item.error == MISSING else cache.UNREADABLE
            continue
        ok.append(pos)
        if on_image is not None:
            on_image(pos, prepare_image(item.image, size))
    if entries and not ok:
        raise cache.nothing_readable(dataset, len(entries), status, skipped, purpose)
    return ok, skipped


@torch.no_grad()
def posteriors(model, images: torch.Tensor, batch_size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """The VAE posterior (means, stds; float32 on the CPU) of preprocessed ``images`` (N x 3 x H x W)."""
    means, stds = [], []
    for i in range(0, len(images), batch_size):
        post = model.vae.encode(images[i:i + batch_size].to(model.device, model.vae.dtype)).latent_dist
        means.append(post.mean.float().cpu())
        stds.append(post.std.float().cpu())
    return torch.cat(means), torch.cat(stds)


def encode_members(model, dataset, entries: Entries, size: int, batch_size: int = 32,
                   on_batch: Callable[[int], None] | None = None) -> EncodedSet:
    """Read, preprocess and VAE-encode the images of ``entries`` (see the module's docstring)."""
    means, stds, pending = [], [], []

    def flush() -> None:
        mean, std = posteriors(model, torch.stack(pending), batch_size)
        means.append(mean)
        stds.append(std)
        if on_batch is not None:
            on_batch(len(pending))
        pending.clear()

    def take(_pos: int, tensor: torch.Tensor) -> None:
        pending.append(tensor)
        if len(pending) >= batch_size:
            flush()

    ok, skipped = readable(dataset, entries, size, take)
    if pending:
        flush()
    return EncodedSet(entries.take(ok), torch.cat(means), torch.cat(stds), skipped)


def manifest_rows(entries: Entries) -> list[dict]:
    return [{"row": int(r), "file_name": f, "text": t} for r, f, t in zip(entries.rows, entries.file_names, entries.texts)]


def write_manifest(path: Path, entries: Entries) -> None:
    """One JSON record per line: the record's ``row`` in the dataset, its ``file_name`` and ``text``."""
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in manifest_rows(entries)))


def read_manifest(path: str | Path) -> list[dict]:
    """The records of a ``members.jsonl`` / ``nonmembers.jsonl``."""
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


__all__ = ["MEMBERS", "NONMEMBERS", "split_holdout", "prepare_image", "EncodedSet", "readable", "posteriors", "encode_members",
           "manifest_rows", "write_manifest", "read_manifest"]
