"""Trainable subsets by name: which parameters of a model a fine-tuning run updates.

``unet``, ``attention`` (self- and cross-attention of the UNet), ``cross_attn`` (the
text-to-image cross-attention only) and ``text_encoder`` are the adapter's parameter groups
(:meth:`sdguard.models.DiffusionModel.parameter_groups`); ``lora`` adds a peft LoRA adapter to the
UNet's attention projections (:mod:`sdguard.models.lora`) and trains only its low-rank matrices.
Groups combine (``--trainable cross_attn --trainable text_encoder``); ``lora`` stands alone (a
LoRA folder holds the adapter and nothing else).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import torch

from ..core.errors import InputError

GROUP_NAMES = ("unet", "attention", "cross_attn", "text_encoder", "lora")
Group = Literal["unet", "attention", "cross_attn", "text_encoder", "lora"]


@dataclass
class Trainable:
    """The parameters a run trains (by name, ``unet.`` or ``text_encoder.`` first) and their counts."""

    params: dict[str, torch.nn.Parameter]
    groups: list[str]
    total: int  # parameters of the UNet and text encoder together (what could train)

    @property
    def count(self) -> int:
        return sum(p.numel() for p in self.params.values())

    def modules(self) -> list[str]:
        """The components holding trainable parameters (``unet``, ``text_encoder``)."""
        return sorted({n.split(".", 1)[0] for n in self.params})

    def describe(self) -> dict:
        return {"groups": list(self.groups), "parameters": self.count, "of": self.total,
                "share": self.count / self.total if self.total else 0.0, "tensors": len(self.params)}


def select(model, groups: Sequence[str], *, lora_rank: int = 4, lora_alpha: float | None = None,
           lora_targets: Sequence[str] = ()) -> Trainable:
    """Freeze ``model`` but for ``groups`` (adding the LoRA adapter for ``lora``)."""
    from ..models.lora import DEFAULT_TARGETS, add_lora

    groups = list(dict.fromkeys(groups))
    unknown = [g for g in groups if g not in GROUP_NAMES]
    if unknown:
        raise InputError.bad("--trainable", unknown[0], f"is not a trainable group (known: {', '.join(GROUP_NAMES)})")
    if "lora" in groups and len(groups) > 1:
        raise InputError.bad("--trainable", groups, "combines lora with another group; a LoRA folder holds the "
                             "adapter alone, so train the other weights in a run of their own")
    total = sum(p.numel() for p in model.unet.parameters()) + sum(p.numel() for p in model.text_encoder.parameters())
    model.unet.requires_grad_(False)
    model.text_encoder.requires_grad_(False)
    model.vae.requires_grad_(False)
    params: dict[str, torch.nn.Parameter] = {}
    for g in groups:
        if g == "lora":
            found = add_lora(model.unet, lora_rank, lora_rank if lora_alpha is None else lora_alpha,
                             tuple(lora_targets) or DEFAULT_TARGETS)
            found = {f"unet.{k}": v for k, v in found.items()}
        else:
            prefix = "text_encoder." if g == "text_encoder" else "unet."
            found = {prefix + k: v for k, v in model.parameters(g).items()}
        if not found:
            raise InputError.bad("--trainable", g, f"names no parameter of MODEL {model.spec!r} (it has no {g} "
                                 "layers)")
        params.update(found)
    for p in params.values():
        p.requires_grad_(True)
    return Trainable(dict(sorted(params.items())), groups, total)


__all__ = ["GROUP_NAMES", "Group", "Trainable", "select"]
