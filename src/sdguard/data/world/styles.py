"""Artist styles: filters that repaint a rendered scene as monet, hokusai or picasso would."""

from __future__ import annotations

import math
from typing import Callable, Mapping

import numpy as np

from .canvas import Canvas
from .palette import rgb

__all__ = ["STYLE_FUNCS"]

_PICASSO_PALETTE = np.array(
    [rgb(205, 150, 60), rgb(125, 75, 35), rgb(28, 26, 24),
     rgb(40, 75, 150), rgb(232, 212, 170), rgb(185, 55, 40)],
    np.float32,
)


def _style_monet(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Pastel palette and dense impressionist dabs."""
    size = img.shape[0]
    pastel = 0.5 * img + 0.5 * np.asarray(rgb(214, 222, 206), np.float32)
    canvas = Canvas(size, (0, 0, 0))
    canvas.img[:] = np.repeat(np.repeat(pastel, canvas.ss, 0), canvas.ss, 1)
    for _ in range(int(rng.integers(150, 190))):
        x, y = rng.uniform(0, 1, 2)
        base = pastel[min(int(y * size), size - 1), min(int(x * size), size - 1)]
        tint = np.clip(base + rng.uniform(-0.16, 0.16, 3) + 0.06, 0.45, 1.0)
        rx, ry = rng.uniform(0.022, 0.04), rng.uniform(0.014, 0.025)
        canvas.ellipse(x, y, rx, ry, tuple(tint), angle=rng.uniform(0, math.pi))
    return canvas.render()


def _foreground(img: np.ndarray) -> np.ndarray:
    """Soft mask of what differs from the image's border colour (the scene's shape)."""
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
    dist = np.linalg.norm(img - np.median(border, axis=0), axis=-1)
    return np.clip((dist - 0.12) / 0.2, 0.0, 1.0)


def _style_hokusai(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Prussian-blue woodblock: cream shapes on deep blue, the sea in strong wave stripes."""
    size = img.shape[0]
    fg = _foreground(img)[..., None]
    dark, light = np.asarray(rgb(18, 38, 92), np.float32), np.asarray(rgb(238, 230, 204), np.float32)
    lum = img @ np.array([0.299, 0.587, 0.114], np.float32)
    tone = 0.25 * lum[..., None] + 0.75 * fg  # shapes come out light, grounds dark
    out = dark + (light - dark) * tone
    c = (np.arange(size, dtype=np.float32) + 0.5) / size
    u, v = c[None, :], c[:, None]
    phase = rng.uniform(0, 2 * math.pi)
    wave = np.sin(2 * math.pi * (7.0 * v + 0.12 * np.sin(2 * math.pi * 1.5 * u + phase)))
    crest = (np.clip((wave - 0.3) / 0.4, 0, 1)[..., None]) * (1 - fg)
    foam = (np.clip((wave - 0.85) / 0.15, 0, 1)[..., None]) * (1 - fg)
    out = out * (1 - 0.8 * crest) + np.asarray(rgb(45, 100, 175), np.float32) * 0.8 * crest
    return out * (1 - 0.7 * foam) + light * 0.7 * foam


def _style_picasso(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Hard blocks quantized to an ochre-brown-blue palette, some split into facets, black edges."""
    size = img.shape[0]
    b = size // 8
    blocks = img.reshape(8, b, 8, b, 3).mean(axis=(1, 3))
    shifted = blocks * 0.85 + np.asarray(rgb(150, 110, 60), np.float32) * 0.15
    dist = ((shifted[:, :, None, :] - _PICASSO_PALETTE[None, None]) ** 2).sum(-1)
    idx = dist.argmin(-1)
    out = np.empty_like(img)
    yy, xx = np.mgrid[0:b, 0:b]
    for i in range(8):
        for j in range(8):
            color = _PICASSO_PALETTE[idx[i, j]]
            tile = np.broadcast_to(color, (b, b, 3)).copy()
            facet = rng.uniform()
            shade = color * 0.6 if color.mean() > 0.3 else color + 0.25
            if facet < 0.15:
                tile[yy > xx] = shade
            elif facet < 0.3:
                tile[yy + xx >= b] = shade
            out[i * b : (i + 1) * b, j * b : (j + 1) * b] = tile
    line = max(1, size // 32)
    black = np.asarray(rgb(20, 18, 16), np.float32)
    for k in range(1, 8):
        rows = rng.uniform(0, 1, 8) < 0.3
        cols = rng.uniform(0, 1, 8) < 0.3
        for j in range(8):
            if rows[j]:
                out[k * b - line : k * b, j * b : (j + 1) * b] = black
            if cols[j]:
                out[j * b : (j + 1) * b, k * b - line : k * b] = black
    return out


#: style name -> filter (scene image in [0, 1], rng) -> styled image
STYLE_FUNCS: Mapping[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "monet": _style_monet,
    "hokusai": _style_hokusai,
    "picasso": _style_picasso,
}
