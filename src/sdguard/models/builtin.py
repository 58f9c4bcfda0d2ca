"""Registry of models shipped with (or built by) the package: ``builtin:NAME`` specs."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable


@dataclass(frozen=True)
class BuiltinModel:
    name: str
    description: str
    factory: Callable[[], object]  # returns a StableDiffusionPipeline


_REGISTRY: dict[str, BuiltinModel] = {}


def register_builtin(name: str, description: str) -> Callable:
    """Decorator: register ``factory`` as ``builtin:name``."""

    def wrap(factory: Callable[[], object]) -> Callable[[], object]:
        _REGISTRY[name] = BuiltinModel(name, description, factory)
        return factory

    return wrap


def builtin_names() -> list[str]:
    return sorted(_REGISTRY)


def get_builtin(name: str) -> BuiltinModel | None:
    return _REGISTRY.get(name)


def package_weights_dir(name: str) -> Path:
    """Folder of a model shipped inside the package (``sdguard/builtin/NAME``)."""
    return Path(str(resources.files("sdguard"))) / "builtin" / name


@register_builtin("tiny-random", "a tiny Stable Diffusion with random weights, built from configs (for tests)")
def _tiny_random():
    from .components import DEMO_WORDS, build_pipeline, build_tokenizer

    return build_pipeline(build_tokenizer(DEMO_WORDS), seed=0)


TINY_RECIPE = "sdguard data make-world world && sdguard model train-tiny --world world --out tiny"


def tiny_available() -> bool:
    return (package_weights_dir("tiny") / "model_index.json").is_file()


@register_builtin("tiny", "a tiny Stable Diffusion trained on the default synthetic world (shipped in the package)")
def _tiny():
    import torch
    from diffusers import StableDiffusionPipeline

    from ..errors import InputError

    folder = package_weights_dir("tiny")
    if not tiny_available():
        raise InputError.bad("MODEL", "builtin:tiny", f"is not installed (no weights in {folder}); rebuild them with: {TINY_RECIPE}")
    # shipped in fp16 to keep the package small; computed in fp32
    from .loading import pretrained_options

    return StableDiffusionPipeline.from_pretrained(str(folder), local_files_only=True, dtype=torch.float32,
                                                   **pretrained_options())
