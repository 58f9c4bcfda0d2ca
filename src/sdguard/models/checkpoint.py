"""Single-file checkpoints and weight fingerprints.

sdguard's single-file format is one ``.safetensors`` file that holds every component's tensors
under a prefix (``unet.``, ``text_encoder.``, ``vae.``) and, in the safetensors header metadata,
each component's config, the scheduler config and the tokenizer (``tokenizer.json``). It loads
with no other file and no download. Single-file checkpoints in the original Stable Diffusion
(LDM) layout are loaded through diffusers' ``from_single_file`` instead (see ``loading.py``).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch

FORMAT_KEY = "sdguard_format"
FORMAT_VERSION = "1"
COMPONENTS = ("unet", "text_encoder", "vae")


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}


def save_single_file(pipe, path: str | Path) -> Path:
    """Write ``pipe`` (a StableDiffusionPipeline) as one sdguard ``.safetensors`` file, atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    for name in COMPONENTS:
        for key, value in _state(getattr(pipe, name)).items():
            tensors[f"{name}.{key}"] = value
    with tempfile.TemporaryDirectory() as tmp:
        pipe.tokenizer.save_pretrained(tmp)
        tokenizer_files = {f: Path(tmp, f).read_text() for f in sorted(os.listdir(tmp))}
    metadata = {
        FORMAT_KEY: FORMAT_VERSION,
        "unet_config": json.dumps(dict(pipe.unet.config)),
        "vae_config": json.dumps(dict(pipe.vae.config)),
        "text_encoder_config": pipe.text_encoder.config.to_json_string(),
        "scheduler": json.dumps({"class": type(pipe.scheduler).__name__, "config": dict(pipe.scheduler.config)}),
        "tokenizer": json.dumps(tokenizer_files),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp_path, metadata=metadata)
        os.replace(tmp_path, path)
    finally:
        if os.path.exists(tmp_path):
            os.unlink(tmp_path)
    return path


def read_metadata(path: str | Path) -> dict[str, str]:
    """The header metadata of a safetensors file (raises on a file that is not safetensors)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        return dict(fh.metadata() or {})


def is_sdguard_file(metadata: dict[str, str]) -> bool:
    return metadata.get(FORMAT_KEY) is not None


def load_single_file(path: str | Path):
    """Rebuild a StableDiffusionPipeline from an sdguard single-file checkpoint."""
    import diffusers
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    from safetensors.torch import load_file
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    meta = read_metadata(path)
    tensors = load_file(str(path))
    parts: dict[str, dict[str, torch.Tensor]] = {name: {} for name in COMPONENTS}
    for key, value in tensors.items():
        prefix, _, rest = key.partition(".")
        parts[prefix][rest] = value
    unet_cfg = {k: v for k, v in json.loads(meta["unet_config"]).items() if not k.startswith("_")}
    vae_cfg = {k: v for k, v in json.loads(meta["vae_config"]).items() if not k.startswith("_")}
    unet = UNet2DConditionModel.from_config(unet_cfg)
    vae = AutoencoderKL.from_config(vae_cfg)
    text_encoder = CLIPTextModel(CLIPTextConfig.from_dict(json.loads(meta["text_encoder_config"])))
    for module, name in ((unet, "unet"), (vae, "vae"), (text_encoder, "text_encoder")):
        missing, unexpected = module.load_state_dict(parts[name], strict=False)
        missing = [m for m in missing if not m.endswith("position_ids")]
        if missing or unexpected:
            raise ValueError(f"component {name} does not match its config (missing {missing[:3]}, unexpected {unexpected[:3]})")
    sched = json.loads(meta["scheduler"])
    scheduler = getattr(diffusers, sched["class"]).from_config(sched["config"])
    with tempfile.TemporaryDirectory() as tmp:
        for fname, text in json.loads(meta["tokenizer"]).items():
            Path(tmp, fname).write_text(text)
        tokenizer = CLIPTokenizer.from_pretrained(tmp)
    return StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def fingerprint(pipe) -> str:
    """sha256 over every weight of the UNet, text encoder and VAE (names, dtypes, shapes, bytes).

    Equal fingerprints mean equal weights whatever the file layout, so reports can tell which
    model produced them and whether a hardener really changed it.
    """
    digest = hashlib.sha256()
    for name in COMPONENTS:
        module = getattr(pipe, name, None)
        if module is None:
            continue
        for key, value in sorted(module.state_dict().items()):
            t = value.detach().to("cpu").contiguous()
            digest.update(f"{name}.{key}|{t.dtype}|{tuple(t.shape)}|".encode())
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()
