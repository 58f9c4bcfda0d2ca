"""Models: load a pipeline from a spec, the adapter every part uses, the builtin models."""

from .adapter import (
    PARAMETER_GROUPS,
    DiffusionModel,
    Generation,
    PromptEmbeddings,
    PromptTruncatedWarning,
    expand_seeds,
)
from .builtin import BUILTIN_MODELS
from .components import TinyConfig, build_pipeline, build_tokenizer
from .loading import load_pipeline, resolve_device, resolve_dtype

__all__ = [
    "DiffusionModel", "Generation", "PromptEmbeddings", "PromptTruncatedWarning", "PARAMETER_GROUPS", "expand_seeds",
    "BUILTIN_MODELS", "TinyConfig", "build_pipeline", "build_tokenizer",
    "load_pipeline", "resolve_device", "resolve_dtype", "load_model",
]


def load_model(spec: str, device: str | None = None, dtype=None) -> DiffusionModel:
    """Load ``spec`` and wrap it in the adapter."""
    return DiffusionModel.load(spec, device=device, dtype=dtype)
