"""LoRA adapters (Hu et al. 2022, "LoRA: Low-Rank Adaptation of Large Language Models") on the UNet:
added with peft, saved in the diffusers LoRA format, loaded back into any pipeline.

- :func:`add_lora` puts a peft ``LoraConfig`` adapter on the UNet's attention projections through
  diffusers' public ``unet.add_adapter`` (the path of diffusers' ``train_text_to_image_lora.py``):
  only the low-rank ``lora_A``/``lora_B`` matrices train.
- :func:`save_lora` writes ``pytorch_lora_weights.safetensors`` with
  ``StableDiffusionPipeline.save_lora_weights`` (so ``pipe.load_lora_weights(folder)`` of diffusers
  itself loads it) and ``lora.json``: the base model it was trained on, rank, alpha, targets.
- A model spec may be a base plus a LoRA: ``BASE+lora:FOLDER``, or a LoRA folder that sdguard
  wrote (its ``lora.json`` names the base). :func:`apply_lora` loads it with ``load_lora_weights``,
  fuses it into the base weights (``fuse_lora``) and drops the adapter (``unload_lora_weights``),
  so every audit and hardener sees plain weights whose names are the base model's.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

from ..core.errors import InputError, require

LORA_WEIGHTS = "pytorch_lora_weights.safetensors"
LORA_META = "lora.json"
#: the attention projections diffusers' LoRA training script adapts
DEFAULT_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
SPEC_SEPARATOR = "+lora:"


def _peft():
    return require("peft", "train", "LoRA adapters")


def add_lora(unet, rank: int, alpha: float, targets: Sequence[str] = DEFAULT_TARGETS) -> dict:
    """Add a LoRA adapter of ``rank`` (scale ``alpha / rank``) to the ``targets`` modules of
    ``unet`` and return its trainable parameters by name. ``lora_B`` starts at zero, so the
    adapted UNet equals the base until it trains (peft's default initialisation)."""
    peft = _peft()
    matched = [n for n, _ in unet.named_modules() if any(n == t or n.endswith("." + t) for t in targets)]
    if not matched:
        raise InputError.bad("--lora-targets", list(targets), "matches no module of the UNet")
    unet.requires_grad_(False)
    unet.add_adapter(peft.LoraConfig(r=int(rank), lora_alpha=float(alpha), init_lora_weights=True,
                                     target_modules=list(targets)))
    return {n: p for n, p in unet.named_parameters() if p.requires_grad}


def lora_state_dict(unet) -> dict:
    """The adapter's weights in the diffusers layout (``...to_q.lora.down.weight``)."""
    from diffusers.utils import convert_state_dict_to_diffusers

    return convert_state_dict_to_diffusers(_peft().utils.get_peft_model_state_dict(unet))


def save_lora(folder: str | Path, unet, *, base: str, rank: int, alpha: float, targets: Sequence[str]) -> None:
    """Write the adapter of ``unet`` into ``folder`` (diffusers' format) with ``lora.json``."""
    from diffusers import StableDiffusionPipeline

    from ..core.io import atomic_write_json
    from .loading import quiet_hub_bars

    state = {k: v.detach().float().contiguous().cpu() for k, v in lora_state_dict(unet).items()}
    with quiet_hub_bars():
        StableDiffusionPipeline.save_lora_weights(str(folder), unet_lora_layers=state, safe_serialization=True)
    atomic_write_json(Path(folder) / LORA_META, {"base": base, "rank": int(rank), "alpha": float(alpha),
                                                 "targets": list(targets), "weights": LORA_WEIGHTS})


def base_spec_for_saving(spec: str) -> str:
    """How ``lora.json`` names the base: a local path made absolute (the LoRA folder moves
    independently of the working directory), anything else as given."""
    p = Path(spec).expanduser()
    return str(p.resolve()) if not spec.startswith("builtin:") and p.exists() else spec


def is_lora_folder(path: Path) -> bool:
    return path.is_dir() and (path / LORA_META).is_file() and not (path / "model_index.json").is_file()


def split_spec(spec: str) -> tuple[str, Path | None]:
    """``(base spec, LoRA folder or None)`` of a model spec."""
    if SPEC_SEPARATOR in spec:
        base, folder = spec.rsplit(SPEC_SEPARATOR, 1)
        if not base.strip() or not folder.strip():
            raise InputError.bad("MODEL", spec, f"must read BASE{SPEC_SEPARATOR}FOLDER (a model spec, then a LoRA "
                                 "folder)")
        return base, Path(folder).expanduser()
    path = Path(spec).expanduser()
    if is_lora_folder(path):
        try:
            meta = json.loads((path / LORA_META).read_text(encoding="utf-8"))
            base = meta["base"]
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise InputError.bad("MODEL", spec, f"is a LoRA folder with an unreadable {LORA_META} ({exc})") from None
        if not isinstance(base, str) or not base.strip():
            raise InputError.bad("MODEL", spec, f"is a LoRA folder whose {LORA_META} names no base model")
        return base, path
    return spec, None


def _weight_file(folder: Path) -> str:
    """The LoRA weight file in ``folder``: diffusers' default name, else the only safetensors file."""
    if (folder / LORA_WEIGHTS).is_file():
        return LORA_WEIGHTS
    files = sorted(f.name for f in folder.glob("*.safetensors")) if folder.is_dir() else []
    if len(files) != 1:
        raise InputError.bad("MODEL", os.fspath(folder), f"is not a LoRA folder (expected {LORA_WEIGHTS} or one "
                             ".safetensors file in it)")
    return files[0]


def apply_lora(pipe, folder: Path, spec: str):
    """Load the LoRA in ``folder`` into ``pipe``, fuse it into the weights and drop the adapter."""
    _peft()
    weight_name = _weight_file(folder)
    from diffusers.utils import logging as d_log

    before = {n for n, _ in pipe.unet.named_parameters()}
    level = d_log.get_verbosity()
    d_log.set_verbosity_error()  # not "no LoRA keys for CLIPTextModel" on every load of a UNet-only LoRA
    try:
        pipe.load_lora_weights(str(folder), weight_name=weight_name, adapter_name="sdguard")
    except Exception as exc:  # diffusers raises ValueError/KeyError/RuntimeError for a LoRA of another model
        raise InputError.bad("MODEL", spec, f"has a LoRA that does not fit its base model "
                             f"({type(exc).__name__}: {str(exc)[:300]})") from exc
    finally:
        d_log.set_verbosity(level)
    loaded = {n for n, _ in pipe.unet.named_parameters()} - before
    if not loaded and not getattr(pipe.text_encoder, "peft_config", None):
        raise InputError.bad("MODEL", spec, "has a LoRA none of whose weights match a module of its base model")
    pipe.fuse_lora(adapter_names=["sdguard"])
    pipe.unload_lora_weights()
    return pipe


__all__ = ["LORA_WEIGHTS", "LORA_META", "DEFAULT_TARGETS", "SPEC_SEPARATOR", "add_lora", "lora_state_dict",
           "save_lora", "base_spec_for_saving", "is_lora_folder", "split_spec", "apply_lora"]
