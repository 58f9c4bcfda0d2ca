"""A small file holding only the tensors an edit changed, applicable to the original model.

``erasure_delta.safetensors`` stores the new values of the changed tensors under
``COMPONENT.PARAMETER`` names (``unet.down_blocks.0...attn2.to_k.weight``) and, in its metadata,
the format, the weight fingerprint of the model it was made from, the method and the concepts.
:func:`apply_delta` checks that fingerprint (unless told not to) and the names and shapes, then
copies the tensors in. Applying the delta of an erasure to the original model gives the erased
model, bit for bit.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import torch

from ...core.errors import InputError
from ...core.io import atomic_write_bytes

FORMAT = "sdguard-delta"
VERSION = 1
DELTA_FILE = "erasure_delta.safetensors"
_COMPONENTS = ("unet", "text_encoder", "vae")


def snapshot(params: Mapping[str, torch.Tensor], component: str = "unet") -> dict[str, torch.Tensor]:
    """Copies of ``params`` (before an edit), keyed ``component.name``."""
    return {f"{component}.{k}": p.detach().clone() for k, p in params.items()}


def changed_tensors(model, before: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors of ``model`` named in ``before`` whose values differ from it, as CPU copies."""
    out = {}
    for key, old in before.items():
        new = _get_tensor(model, key)
        if not torch.equal(new.detach().cpu(), old.cpu()):
            out[key] = new.detach().cpu().contiguous()
    return out


def save_delta(path: str | Path, tensors: Mapping[str, torch.Tensor], *, base_fingerprint: str,
               metadata: Mapping[str, Any] | None = None) -> Path:
    """Write ``tensors`` (``component.name`` -> new value) and metadata to ``path`` atomically."""
    from safetensors.torch import save

    meta = {"format": FORMAT, "version": str(VERSION), "base_fingerprint": base_fingerprint,
            "info": json.dumps(dict(metadata or {}), sort_keys=True, default=str)}
    data = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=meta)
    return atomic_write_bytes(path, data)


def read_delta(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors and metadata (``base_fingerprint``, ``info`` as a dict) of a delta file."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if path.is_dir():
        path = path / DELTA_FILE
    if not path.is_file():
        raise InputError.bad("DELTA", str(path), "does not exist")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = dict(fh.metadata() or {})
        tensors = load_file(str(path))
    except Exception as exc:
        raise InputError.bad("DELTA", str(path), f"is not a readable safetensors file ({exc})") from exc
    if meta.get("format") != FORMAT:
        raise InputError.bad("DELTA", str(path), f"is not an sdguard delta file (format {meta.get('format')!r})")
    meta["info"] = json.loads(meta.get("info") or "{}")
    return tensors, meta


def apply_delta(model, path: str | Path, *, check_base: bool = True):
    """Copy the tensors of the delta at ``path`` into ``model`` (a DiffusionModel), in place.

    With ``check_base`` the model's weight fingerprint must be the one the delta was made from.
    Returns the model.
    """
    tensors, meta = read_delta(path)
    if check_base:
        fp = model.fingerprint()
        if fp != meta.get("base_fingerprint"):
            raise InputError.bad("MODEL", model.spec, f"is not the model the delta {str(path)!r} was made from "
                                 f"(fingerprint {fp[:12]}, expected {str(meta.get('base_fingerprint'))[:12]})")
    targets = {}
    for key, value in tensors.items():
        target = _get_tensor(model, key, path)
        if tuple(target.shape) != tuple(value.shape):
            raise InputError.bad("DELTA", str(path), f"has {key} of shape {tuple(value.shape)} but the model's is "
                                 f"{tuple(target.shape)}")
        targets[key] = target
    with torch.no_grad():
        for key, value in tensors.items():
            targets[key].copy_(value.to(targets[key].device, targets[key].dtype))
    return model


def _get_tensor(model, key: str, path: str | Path | None = None) -> torch.Tensor:
    component, _, name = key.partition(".")
    module = getattr(model, component, None) if component in _COMPONENTS else None
    found = None
    if module is not None:
        found = dict(module.named_parameters()).get(name)
        if found is None:
            found = dict(module.named_buffers()).get(name)
    if found is None:
        raise InputError.bad("DELTA", str(path) if path else key, f"names a tensor {key!r} the model does not have")
    return found
