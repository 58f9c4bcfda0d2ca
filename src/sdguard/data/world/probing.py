"""Shared machinery of the world's probes: images in, degraded training copies, fitting."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from PIL import Image
from scipy import ndimage
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from ...core.errors import InputError
from ...core.images import resize_batch
from .api import World

__all__ = [
    "WORK_SIZE",
    "resize",
    "as_images",
    "degrade",
    "training_set",
    "fit_single_thread",
    "classifier",
    "world_indices",
    "check_fitted",
]

#: resolution every probe reads images at
WORK_SIZE = 32


def resize(images: np.ndarray, size: int) -> np.ndarray:
    """``N x H x W x 3`` images to ``size`` x ``size``: area average where it divides, else linear."""
    n, h, w, _ = images.shape
    if h == size and w == size:
        return images
    if h % size == 0 and w % size == 0:  # exact area average, in the images' own precision
        return images.reshape(n, size, h // size, size, w // size, 3).mean(axis=(2, 4))
    return np.clip(resize_batch(images.astype(np.float32), size, resample="bilinear"), 0.0, 1.0)


def as_images(images: Any, size: int | None = WORK_SIZE) -> np.ndarray:
    """Convert ``images`` to float32 ``N x size x size x 3`` in [0, 1].

    Accepts a float or uint8 array (``N x H x W x 3``, ``N x 3 x H x W`` or one ``H x W x 3``
    image), a torch tensor, or a sequence of PIL images / arrays. ``size=None`` keeps the size.
    """
    if hasattr(images, "detach"):  # torch tensor
        images = images.detach().cpu().numpy()
    if isinstance(images, (list, tuple)):
        images = np.stack([np.asarray(im.convert("RGB") if isinstance(im, Image.Image) else im) for im in images])
    arr = np.asarray(images)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4:
        raise InputError.bad("images", f"array of shape {arr.shape}", "is not N x H x W x 3")
    if arr.shape[-1] != 3 and arr.shape[1] == 3:
        arr = arr.transpose(0, 2, 3, 1)
    if arr.shape[-1] != 3:
        raise InputError.bad("images", f"array of shape {arr.shape}", "does not have 3 colour channels")
    if arr.dtype == np.uint8:
        out = arr.astype(np.float32) / 255.0
    else:
        out = np.clip(arr.astype(np.float32), 0.0, 1.0)
    return out if size is None else resize(out, size).astype(np.float32)


def degrade(
    images: np.ndarray, rng: np.random.Generator, blur: float = 1.5, noise: float = 0.04, shift: int = 1
) -> np.ndarray:
    """Random blur (sigma up to ``blur`` px), shift, brightness/contrast change and noise.

    Mimics what a small diffusion model does to the images it reproduces.
    """
    x = np.array(images, np.float32, copy=True)
    n = len(x)
    if shift:
        padded = np.pad(x, ((0, 0), (shift, shift), (shift, shift), (0, 0)), mode="edge")
        d = rng.integers(-shift, shift + 1, size=(n, 2))
        h, w = x.shape[1:3]
        for i in range(n):
            x[i] = padded[i, shift + d[i, 0] : shift + d[i, 0] + h, shift + d[i, 1] : shift + d[i, 1] + w]
    sigmas = np.round(rng.uniform(0.0, blur, n), 1)
    for s in np.unique(sigmas):
        if s > 0:
            sel = sigmas == s
            x[sel] = ndimage.gaussian_filter(x[sel], sigma=(0, s, s, 0), mode="nearest")
    gain = rng.uniform(0.9, 1.1, (n, 1, 1, 1)).astype(np.float32)
    offset = rng.uniform(-0.04, 0.04, (n, 1, 1, 1)).astype(np.float32)
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    x = (x - mean) * gain + mean + offset
    x += rng.normal(0.0, 1.0, x.shape).astype(np.float32) * rng.uniform(0.0, noise, (n, 1, 1, 1)).astype(np.float32)
    return np.clip(x, 0.0, 1.0)


def training_set(
    images: np.ndarray, y: np.ndarray, copies: int, rng: np.random.Generator, blur: float, noise: float
) -> tuple[np.ndarray, np.ndarray]:
    """The clean images plus ``copies`` degraded copies of each."""
    xs = [images] + [degrade(images, rng, blur=blur, noise=noise) for _ in range(copies)]
    return np.concatenate(xs), np.concatenate([y] * (copies + 1))


def fit_single_thread(model: Pipeline, x: np.ndarray, y: np.ndarray) -> Pipeline:
    """Fit with one BLAS/OpenMP thread: the problems are small, and on a shared CPU more threads
    make logistic regression several times slower."""
    with threadpool_limits(limits=1):
        return model.fit(x, y)


def classifier(C: float, random_state: int) -> Pipeline:
    """Standardized features, then a class-balanced logistic regression of inverse strength ``C``."""
    return make_pipeline(
        StandardScaler(),
        LogisticRegression(C=C, max_iter=3000, class_weight="balanced", random_state=random_state),
    )


def world_indices(world: World, indices: Sequence[int] | np.ndarray | None) -> np.ndarray:
    """``indices`` as an int64 array; every image of ``world`` when None."""
    return np.arange(len(world)) if indices is None else np.asarray(indices, np.int64)


def check_fitted(probe: Any, attribute: str) -> None:
    """Raise a RuntimeError unless ``probe`` has its learned ``attribute`` (``fit`` was called)."""
    if not hasattr(probe, attribute):
        raise RuntimeError(f"{type(probe).__name__} is not fitted yet: call fit(world) first")

