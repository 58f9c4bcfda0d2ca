"""Image embedders behind one protocol and a registry by name, and their on-disk cache.

``create_embedder("pixels")`` (weight-free, offline, the default), ``"dct"`` (weight-free,
perceptual-hash-like), ``"clip"`` (``transformers`` CLIPModel from a folder or hub id) and
``"sscd"`` (a TorchScript file the user provides). Every embedder returns unit-norm float32 rows,
so inner products are cosine similarities.
"""

from .base import (
    EMBEDDERS,
    BaseEmbedder,
    Embedder,
    as_rgb,
    create_embedder,
    l2_normalize,
    parse_spec,
)
from .cache import (
    MISSING,
    OK,
    STATUS_NAMES,
    UNREADABLE,
    EmbeddingCache,
    default_cache_dir,
    embed_dataset,
)

__all__ = [
    "Embedder", "BaseEmbedder", "create_embedder", "EMBEDDERS", "parse_spec",
    "l2_normalize", "as_rgb", "EmbeddingCache", "default_cache_dir", "embed_dataset",
    "OK", "MISSING", "UNREADABLE", "STATUS_NAMES",
]
