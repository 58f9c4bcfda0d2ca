"""The one image-resize helper: arrays in, arrays of the same kind out.

``uint8`` images go through PIL with the named filter (the rounding every thumbnail, grid and
embedder input had before); float images are resized per channel in PIL's 32-bit float mode (no
rounding to 8 bits), and by an exact area mean in numpy when the box filter's size divides the
image. Grey ``H x W`` and colour ``H x W x C`` arrays are both accepted.
"""

from __future__ import annotations

import numpy as np

_FILTERS = ("box", "bilinear", "bicubic", "nearest", "lanczos")


def _pil_filter(name: str):
    from PIL import Image

    if name not in _FILTERS:
        raise ValueError(f"resample must be one of {', '.join(_FILTERS)}, got {name!r}")
    return getattr(Image.Resampling, name.upper())


def resize(image: np.ndarray, size: int | tuple[int, int], *, resample: str = "box") -> np.ndarray:
    """``image`` resized to ``size`` (an int: square; a pair: ``(width, height)``, PIL's order)."""
    from PIL import Image

    a = np.asarray(image)
    w, h = (size, size) if isinstance(size, (int, np.integer)) else (int(size[0]), int(size[1]))
    if a.shape[:2] == (h, w):
        return a
    if a.dtype == np.uint8:
        return np.asarray(Image.fromarray(a).resize((w, h), _pil_filter(resample)))
    a = a.astype(np.float32, copy=False)
    ih, iw = a.shape[:2]
    if resample == "box" and ih % h == 0 and iw % w == 0:  # exact area mean
        return a.reshape(h, ih // h, w, iw // w, *a.shape[2:]).mean(axis=(1, 3), dtype=np.float32)
    f = _pil_filter(resample)
    if a.ndim == 2:
        return np.asarray(Image.fromarray(a, mode="F").resize((w, h), f))
    return np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(a[..., c]), mode="F").resize((w, h), f))
                     for c in range(a.shape[2])], axis=-1)


def resize_batch(images: np.ndarray, size: int, *, resample: str = "box") -> np.ndarray:
    """``N x H x W (x C)`` images to ``size`` x ``size`` each (see :func:`resize`)."""
    images = np.asarray(images)
    if images.shape[1:3] == (size, size):
        return images
    return np.stack([resize(im, size, resample=resample) for im in images])


def fit_within(image: np.ndarray, max_side: int, *, resample: str = "bilinear", upscale: bool = False) -> np.ndarray:
    """``image`` scaled so that its longer side is ``max_side`` (only down, unless ``upscale``),
    aspect ratio kept (PIL's ``thumbnail`` rounding)."""
    a = np.asarray(image)
    h, w = a.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1 and not upscale:
        return a
    return resize(a, (max(1, round(w * scale)), max(1, round(h * scale))), resample=resample)
