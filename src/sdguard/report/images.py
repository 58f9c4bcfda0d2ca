"""Image grids and PNG encoding for reports."""

from __future__ import annotations

import base64
import io
from typing import Sequence

import numpy as np
from PIL import Image


def png_bytes(image: np.ndarray | Image.Image) -> bytes:
    img = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def make_grid(images: Sequence[np.ndarray] | np.ndarray, columns: int = 8, scale: int = 1, pad: int = 2,
              background: int = 255) -> np.ndarray:
    """Tile uint8 H×W×3 images into one image (``scale`` enlarges small images, nearest neighbour)."""
    images = [np.asarray(im, dtype=np.uint8) for im in images]
    if not images:
        return np.full((8, 8, 3), background, np.uint8)
    h = max(im.shape[0] for im in images) * scale
    w = max(im.shape[1] for im in images) * scale
    columns = max(1, min(columns, len(images)))
    rows = (len(images) + columns - 1) // columns
    grid = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, 3), background, np.uint8)
    for k, im in enumerate(images):
        if scale > 1:
            im = im.repeat(scale, 0).repeat(scale, 1)
        r, c = divmod(k, columns)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        grid[y : y + im.shape[0], x : x + im.shape[1]] = im
    return grid


def auto_scale(size: int, target: int = 96) -> int:
    """Integer upscale so a ``size``-pixel image shows at about ``target`` pixels."""
    return max(1, target // max(1, size))


def difference_image(original: np.ndarray, changed: np.ndarray, gain: int = 16) -> np.ndarray:
    """The largest per-channel difference of two uint8 images, times ``gain``, as a grey RGB image
    (a watermark's residue, made visible)."""
    d = np.abs(changed.astype(np.int16) - original.astype(np.int16)).max(axis=2)
    return np.repeat(np.clip(d * gain, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
