"""Registry of models shipped with (or built by) the package: ``builtin:NAME`` specs."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from ..core.registry import Registry

#: ``builtin:NAME`` specs: each entry is a factory returning a StableDiffusionPipeline
BUILTIN_MODELS: Registry = Registry("builtin model", argument="MODEL")


def package_weights_dir(name: str) -> Path:
    """Folder of a model shipped inside the package (``sdguard/builtin/NAME``)."""
    return Path(str(resources.files("sdguard"))) / "builtin" / name


@BUILTIN_MODELS.register("tiny-random", description="a tiny Stable Diffusion with random weights, built from configs (for tests)")
def _tiny_random():
    from .components import DEMO_WORDS, build_pipeline, build_tokenizer

    return build_pipeline(build_tokenizer(DEMO_WORDS), seed=0)


TINY_RECIPE = "sdguard data make-world world && sdguard model train-tiny --dataset world --out tiny"


def tiny_available() -> bool:
    return (package_weights_dir("tiny") / "model_index.json").is_file()


@BUILTIN_MODELS.register("tiny", description="a tiny Stable Diffusion trained on the default synthetic world (shipped in the package)")
def _tiny():
    import torch
    from diffusers import StableDiffusionPipeline

    from ..core.errors import InputError

    folder = package_weights_dir("tiny")
    if not tiny_available():
        raise InputError.bad("MODEL", "builtin:tiny", f"is not installed (no weights in {folder}); rebuild them with: {TINY_RECIPE}")
    # shipped in fp16 to keep the package small; computed in fp32
    from .loading import pretrained_options

    return StableDiffusionPipeline.from_pretrained(str(folder), local_files_only=True, dtype=torch.float32,
                                                   **pretrained_options())
