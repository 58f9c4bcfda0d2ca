"""Load a StableDiffusionPipeline from any model spec of DESIGN.md.

Specs: ``builtin:NAME``, a local diffusers folder (``model_index.json``), a single ``.safetensors``
file (sdguard's own single-file format, or an original Stable Diffusion checkpoint loaded with
diffusers' ``from_single_file``), an encrypted folder (``sdguard encrypt``; the key from ``SDGUARD_KEY``
or ``SDGUARD_KEY_FILE``, decrypted in memory), or a Hugging Face model id (loaded from the hub where it is
reachable; offline, a clear error that says how to pass a local folder instead).
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

import torch

from ..core.errors import InputError
from . import checkpoint
from .builtin import BUILTIN_MODELS

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")


def resolve_device(device: str | None = None) -> torch.device:
    """The device to run on: the given one, else cuda > mps > cpu."""
    if device:
        try:
            dev = torch.device(device)
        except RuntimeError:
            raise InputError.bad("--device", device, "is not a torch device (use cpu, cuda, cuda:N or mps)") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise InputError.bad("--device", device, "was asked for but no CUDA device is available")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_dtype(device: torch.device, dtype: str | torch.dtype | None = None) -> torch.dtype:
    """fp16 on a CUDA GPU, fp32 elsewhere, unless the caller chose."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype:
        table = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16,
                 "float16": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
        if dtype not in table:
            raise InputError.bad("--dtype", dtype, f"is not one of {sorted(table)}")
        return table[dtype]
    return torch.float16 if device.type == "cuda" else torch.float32


def pretrained_options() -> dict:
    """Keyword arguments for diffusers' ``from_pretrained`` shared by every load: no safety checker
    (sdguard audits raw outputs and has its own filter) and, without ``accelerate``, the plain
    loading path (diffusers would otherwise warn on every load)."""
    import importlib.util

    opts = {"safety_checker": None, "requires_safety_checker": False}
    if importlib.util.find_spec("accelerate") is None:
        opts["low_cpu_mem_usage"] = False
    return opts


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}


def _load_folder(path: Path):
    from diffusers import StableDiffusionPipeline

    if not (path / "model_index.json").is_file():
        raise InputError.bad("MODEL", str(path), "is a folder but not a diffusers pipeline (it has no model_index.json)")
    from ..deploy.weights import is_encrypted_folder

    if is_encrypted_folder(path):  # `sdguard encrypt`'s output: verified, decrypted in memory
        from ..deploy.weights import load_encrypted_pipeline

        return load_encrypted_pipeline(path)
    variant = _check_components(path)
    try:
        return StableDiffusionPipeline.from_pretrained(str(path), local_files_only=True, variant=variant,
                                                       **pretrained_options())
    except InputError:
        raise
    except Exception as exc:  # diffusers raises many kinds for broken folders
        raise InputError.bad("MODEL", str(path), f"could not be loaded as a Stable Diffusion pipeline ({type(exc).__name__}: {exc})") from exc


def _check_components(path: Path) -> str | None:
    """Refuse a diffusers folder whose ``model_index.json`` names a component folder it lacks;
    return the weights' variant (``"fp16"`` when the UNet has only ``*.fp16.*`` weight files)."""
    import json

    try:
        index = json.loads((path / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError.bad("MODEL", str(path), f"has an unreadable model_index.json ({exc})") from None
    if not isinstance(index, dict):
        raise InputError.bad("MODEL", str(path), "has a model_index.json that is not a JSON object")
    named = [k for k, v in index.items() if not k.startswith("_") and isinstance(v, list) and len(v) == 2
             and all(isinstance(x, str) for x in v)]
    missing = [k for k in named if not (path / k).is_dir()]
    if missing:
        folders = ", ".join(f"{k}/" for k in missing)
        raise InputError.bad("MODEL", str(path), f"is a diffusers folder without its {folders} (model_index.json "
                             f"names {'it' if len(missing) == 1 else 'them'}); copy the whole pipeline folder, "
                             "every component subfolder included")
    weights = [f.name for f in (path / "unet").iterdir() if f.name.endswith((".safetensors", ".bin"))] \
        if (path / "unet").is_dir() else []
    plain = [n for n in weights if "fp16" not in n]
    return "fp16" if weights and not plain else None


def _load_file(path: Path):
    if path.suffix not in SINGLE_FILE_SUFFIXES:
        raise InputError.bad("MODEL", str(path), f"is a file but not a checkpoint (expected one of {', '.join(SINGLE_FILE_SUFFIXES)})")
    if path.suffix == ".safetensors":
        try:
            meta = checkpoint.read_metadata(path)
        except Exception as exc:
            raise InputError.bad("MODEL", str(path), f"is not a readable safetensors file ({exc})") from exc
        if checkpoint.is_sdguard_file(meta):
            try:
                return checkpoint.load_single_file(path)
            except Exception as exc:
                raise InputError.bad("MODEL", str(path), f"is a corrupt sdguard checkpoint ({exc})") from exc
    from diffusers import StableDiffusionPipeline

    try:  # an original (LDM-layout) Stable Diffusion checkpoint
        return StableDiffusionPipeline.from_single_file(
            str(path), local_files_only=_offline(), safety_checker=None, requires_safety_checker=False
        )
    except Exception as exc:
        hint = " (offline: diffusers needs the model's config from the hub; pass a diffusers folder instead)" if _offline() else ""
        raise InputError.bad("MODEL", str(path), f"could not be loaded as a single-file Stable Diffusion checkpoint{hint}: {exc}") from exc


def _load_hub(model_id: str):
    from diffusers import StableDiffusionPipeline

    try:
        return StableDiffusionPipeline.from_pretrained(model_id, **pretrained_options())
    except Exception as exc:
        why = "HF_HUB_OFFLINE is set" if _offline() else f"{type(exc).__name__}"
        raise InputError(
            f"MODEL {model_id!r} looks like a Hugging Face model id, but its weights could not be reached "
            f"({why}); download them where the hub is reachable (huggingface-cli download {model_id} "
            f"--local-dir DIR) and pass the local folder DIR instead."
        ) from exc


@contextlib.contextmanager
def quiet_hub_bars():
    """No "Loading pipeline components" / "Loading weights" / "Writing model shards" bars from
    diffusers and transformers while a model loads or saves (sdguard shows its own progress); their
    previous settings are restored after."""
    from diffusers.utils import logging as d_log
    from transformers.utils import logging as t_log

    was = not d_log.is_progress_bar_enabled(), not t_log.is_progress_bar_enabled()
    d_log.disable_progress_bar()
    t_log.disable_progress_bar()
    try:
        yield
    finally:
        if not was[0]:
            d_log.enable_progress_bar()
        if not was[1]:
            t_log.enable_progress_bar()


def load_pipeline(spec: str | os.PathLike, device: str | None = None, dtype: str | torch.dtype | None = None):
    """Load a ``StableDiffusionPipeline`` from a model spec, on ``device`` in ``dtype``.

    Raises :class:`~sdguard.core.errors.InputError` (exit code 2) with one sentence naming the spec
    when it cannot be loaded.
    """
    with quiet_hub_bars():
        return _load_pipeline(spec, device, dtype)


def _load_pipeline(spec: str | os.PathLike, device: str | None = None, dtype: str | torch.dtype | None = None):
    from .lora import apply_lora, split_spec

    spec_str = str(spec)
    if not spec_str.strip():
        raise InputError.bad("MODEL", spec_str, "is empty")
    dev = resolve_device(device)
    dt = resolve_dtype(dev, dtype)
    base, lora = split_spec(spec_str)
    pipe = _load_base(base)
    if lora is not None:
        if not lora.is_dir():
            raise InputError.bad("MODEL", spec_str, f"names a LoRA folder {str(lora)!r} that does not exist")
        apply_lora(pipe, lora, spec_str)
    pipe.set_progress_bar_config(disable=True)
    return _to_dtype(pipe, dt).to(dev)


def _load_base(spec_str: str):
    """The pipeline of a spec without a LoRA: builtin, folder, single file or hub id."""
    if spec_str.startswith("builtin:"):
        name = spec_str.split(":", 1)[1]
        if name not in BUILTIN_MODELS:
            known = ", ".join("builtin:" + n for n in BUILTIN_MODELS.names())
            raise InputError.bad("MODEL", spec_str, f"names no builtin model (known: {known})")
        pipe = BUILTIN_MODELS.get(name)()
    else:
        path = Path(spec_str).expanduser()
        if path.is_dir():
            pipe = _load_folder(path)
        elif path.is_file():
            pipe = _load_file(path)
        elif _HUB_ID.match(spec_str) and not spec_str.startswith((".", "/")) and not spec_str.endswith(SINGLE_FILE_SUFFIXES):
            pipe = _load_hub(spec_str)
        else:
            raise InputError.bad("MODEL", spec_str, "does not exist (expected builtin:NAME, a diffusers folder, a .safetensors file, a hub id or BASE+lora:FOLDER)")
    return pipe


def _to_dtype(pipe, dtype: torch.dtype):
    """Every module of ``pipe`` (UNet, VAE, text encoder, any other) in ``dtype``: a folder saved in
    fp16 loads its text encoder in fp16 (transformers keeps the saved dtype) and its UNet in fp32,
    which a CPU cannot multiply together."""
    modules = [c for c in pipe.components.values() if isinstance(c, torch.nn.Module)]
    if any(t.is_floating_point() and t.dtype != dtype
           for m in modules for t in [*m.parameters(), *m.buffers()]):
        for m in modules:
            m.to(dtype=dtype)
    return pipe
