"""The Embedder protocol and the registry of embedders by name.

An embedder maps RGB images (``uint8`` H x W x 3 arrays of any size) to L2-normalized float32
vectors, so that the inner product of two embeddings is their cosine similarity: the measure the
dataset and generation replication audits threshold (Somepalli et al. 2023 use SSCD and CLIP
features; Webster 2023 SNIP/CLIP features with faiss). Embedders are created by name::

    create_embedder("pixels")                 # weight-free, offline
    create_embedder("clip", model="openai/clip-vit-base-patch32")
    create_embedder("sscd", path="sscd_disc_mixup.torchscript.pt")

A new embedder is one module plus one ``EMBEDDERS.register`` line.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np

from ..core.errors import InputError
from ..core.registry import Registry


@runtime_checkable
class Embedder(Protocol):
    """What every embedder provides."""

    #: registry name
    name: str
    #: length of an embedding
    dim: int
    #: cosine similarity above which two images count as near-duplicates when nothing better is
    #: known (the audit suggests one from the similarity histogram when it can)
    default_threshold: float

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """``(len(images), dim)`` float32, each row of unit L2 norm."""
        ...

    def config(self) -> dict[str, Any]:
        """Everything that determines the embeddings (written to reports, keys the cache)."""
        ...


class BaseEmbedder:
    """Shared helpers: batching, normalization, the fingerprint of :meth:`config`."""

    name = "base"
    dim = 0
    default_threshold = 0.9
    batch_size = 256

    def config(self) -> dict[str, Any]:  # pragma: no cover - overridden
        return {"name": self.name}

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.config(), sort_keys=True, default=str).encode()).hexdigest()[:24]

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        out = [self._embed_batch(list(images[i : i + self.batch_size])) for i in range(0, len(images), self.batch_size)]
        if not out:
            return np.zeros((0, self.dim), np.float32)
        return l2_normalize(np.concatenate(out).astype(np.float32, copy=False))

    def _embed_batch(self, images: list[np.ndarray]) -> np.ndarray:  # pragma: no cover - overridden
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "name")
        return f"{type(self).__name__}({args})"


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows scaled to unit L2 norm (an all-zero row stays zero)."""
    x = np.asarray(x, np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, eps)


def as_rgb(image: np.ndarray) -> np.ndarray:
    """An image as ``uint8`` H x W x 3 (gray and RGBA accepted)."""
    a = np.asarray(image)
    if a.dtype != np.uint8:
        a = np.clip(a * (255.0 if a.dtype.kind == "f" and a.max(initial=0) <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if a.ndim != 3:
        raise InputError.bad("image", f"array of shape {a.shape}", "is not H x W x C")
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    elif a.shape[2] == 4:
        a = a[..., :3]
    return a


#: embedders by name, imported on first use (so `clip` does not load transformers early); an
#: entry's ``spec_option`` is the option a ``NAME:VALUE`` spec sets
EMBEDDERS: Registry = Registry("embedder", argument="--embedder")
EMBEDDERS.register("pixels", "sdguard.embed.pixels:PixelEmbedder", description="normalized downscaled pixels",
                   spec_option="size")
EMBEDDERS.register("dct", "sdguard.embed.pixels:DCTEmbedder", description="low-frequency DCT (perceptual-hash-like)",
                   spec_option="size")
EMBEDDERS.register("clip", "sdguard.embed.clip:CLIPEmbedder", description="CLIP image features (transformers)",
                   spec_option="model")
EMBEDDERS.register("sscd", "sdguard.embed.sscd:SSCDEmbedder", description="SSCD copy-detection TorchScript file",
                   spec_option="path")


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"NAME"`` or ``"NAME:VALUE"`` (e.g. ``clip:/models/clip-vit-b32``, ``sscd:model.pt``) to
    a name and options."""
    name, sep, value = spec.partition(":")
    entry = EMBEDDERS.entry(name, value=spec)
    if not sep:
        return name, {}
    option = entry.meta.get("spec_option")
    if option is None:
        raise InputError.bad("--embedder", spec, f"takes no value after '{name}:'")
    if option == "size":
        try:
            return name, {option: int(value)}
        except ValueError:
            raise InputError.bad("--embedder", spec, "needs an integer size after ':'") from None
    return name, {option: value}


def create_embedder(name: str, **options: Any) -> Embedder:
    """The embedder registered as ``name`` (``NAME:VALUE`` specs accepted), built with ``options``
    (``--embedder-option KEY=VALUE``). An option the embedder does not take, or a value its
    constructor refuses (a TypeError or ValueError), is one sentence naming ``--embedder-option``."""
    name, spec_options = parse_spec(name)
    factory = EMBEDDERS.get(name)
    given = " ".join(f"{k}={v}" for k, v in options.items())
    params = inspect.signature(factory).parameters.values()
    takes = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = [] if any(p.kind == p.VAR_KEYWORD for p in params) else sorted(set(options) - set(takes))
    if unknown:
        raise InputError.bad("--embedder-option", given, f"is not an option of the {name} embedder "
                             f"({', '.join(unknown)} unknown; it takes: {', '.join(takes)})")
    try:
        return factory(**{**spec_options, **options})
    except InputError:
        raise
    except (TypeError, ValueError) as exc:
        if not options:
            raise
        raise InputError.bad("--embedder-option", given, f"is not a valid value for the {name} embedder "
                             f"({type(exc).__name__}: {exc})") from None
