"""Drawing on a supersampled RGB canvas: the primitives every image of the world is made of."""

from __future__ import annotations

import functools
import math
from typing import Iterable, Sequence

import numpy as np

from .palette import Color

__all__ = ["SUPERSAMPLE", "Canvas", "rotate", "to_uint8", "add_blotches"]

SUPERSAMPLE = 4  # shapes are drawn at 4x and box-filtered down (anti-aliasing)


class Canvas:
    """An RGB float canvas in [0, 1] image coordinates, drawn at 4x and box-filtered down.

    Primitives only touch the pixels of their bounding box, so many small strokes stay cheap.
    """

    def __init__(self, size: int, background: Color | np.ndarray, supersample: int = SUPERSAMPLE):
        self.size = size
        self.ss = supersample
        self.n = n = size * supersample
        c = ((np.arange(n, dtype=np.float32) + 0.5) / n).astype(np.float32)
        self.u = c[None, :]  # x, shape (1, n)
        self.v = c[:, None]  # y, shape (n, 1)
        self.img = np.empty((n, n, 3), np.float32)
        self.img[:] = np.asarray(background, np.float32)

    def _box(self, x0: float, y0: float, x1: float, y1: float) -> tuple[slice, slice, np.ndarray, np.ndarray] | None:
        n = self.n
        i0, i1 = max(0, math.floor(y0 * n)), min(n, math.ceil(y1 * n) + 1)
        j0, j1 = max(0, math.floor(x0 * n)), min(n, math.ceil(x1 * n) + 1)
        if i1 <= i0 or j1 <= j0:
            return None
        return slice(i0, i1), slice(j0, j1), self.u[:, j0:j1], self.v[i0:i1, :]

    def _fill(self, rows: slice, cols: slice, mask: np.ndarray, color: Color | np.ndarray, alpha: float) -> None:
        sub = self.img[rows, cols]
        m = np.broadcast_to(mask, sub.shape[:2]).astype(np.float32) * np.float32(alpha)
        sub += (np.asarray(color, np.float32) - sub) * m[..., None]

    def paint(self, mask: np.ndarray, color: Color | np.ndarray, alpha: float = 1.0) -> None:
        """Paint ``color`` where the full-canvas ``mask`` holds."""
        self._fill(slice(None), slice(None), mask, color, alpha)

    def vgradient(self, top: Color, bottom: Color) -> None:
        t = self.v[..., None]
        self.img[:] = np.asarray(top, np.float32) * (1 - t) + np.asarray(bottom, np.float32) * t

    def disk(self, cx: float, cy: float, r: float, color: Color, alpha: float = 1.0) -> None:
        box = self._box(cx - r, cy - r, cx + r, cy + r)
        if box:
            rows, cols, u, v = box
            self._fill(rows, cols, (u - cx) ** 2 + (v - cy) ** 2 <= r * r, color, alpha)

    def ring(self, cx: float, cy: float, r_out: float, r_in: float, color: Color) -> None:
        box = self._box(cx - r_out, cy - r_out, cx + r_out, cy + r_out)
        if box:
            rows, cols, u, v = box
            d2 = (u - cx) ** 2 + (v - cy) ** 2
            self._fill(rows, cols, (d2 <= r_out * r_out) & (d2 >= r_in * r_in), color, 1.0)

    def ellipse(
        self, cx: float, cy: float, rx: float, ry: float, color: Color, angle: float = 0.0, alpha: float = 1.0
    ) -> None:
        r = max(rx, ry)
        box = self._box(cx - r, cy - r, cx + r, cy + r)
        if box:
            rows, cols, u, v = box
            ca, sa = math.cos(angle), math.sin(angle)
            du, dv = u - cx, v - cy
            x = du * ca + dv * sa
            y = -du * sa + dv * ca
            self._fill(rows, cols, (x / rx) ** 2 + (y / ry) ** 2 <= 1.0, color, alpha)

    def rect(self, x0: float, y0: float, x1: float, y1: float, color: Color, alpha: float = 1.0) -> None:
        box = self._box(x0, y0, x1, y1)
        if box:
            rows, cols, u, v = box
            self._fill(rows, cols, (u >= x0) & (u < x1) & (v >= y0) & (v < y1), color, alpha)

    def polygon(self, points: Sequence[tuple[float, float]], color: Color, alpha: float = 1.0) -> None:
        """Fill a polygon (even-odd rule)."""
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        box = self._box(min(xs), min(ys), max(xs), max(ys))
        if not box:
            return
        rows, cols, u, v = box
        inside = np.zeros((v.shape[0], u.shape[1]), bool)
        for i in range(len(points)):
            x1, y1 = points[i]
            x2, y2 = points[i - 1]
            if y1 == y2:
                continue
            crosses = (y1 > v) != (y2 > v)
            x_at = (x2 - x1) * (v - y1) / (y2 - y1) + x1
            inside ^= crosses & (u < x_at)
        self._fill(rows, cols, inside, color, alpha)

    def segment(
        self, x0: float, y0: float, x1: float, y1: float, width: float, color: Color, alpha: float = 1.0
    ) -> None:
        """A straight stroke of ``width`` with round ends."""
        h = width / 2
        box = self._box(min(x0, x1) - h, min(y0, y1) - h, max(x0, x1) + h, max(y0, y1) + h)
        if not box:
            return
        rows, cols, u, v = box
        dx, dy = x1 - x0, y1 - y0
        length2 = dx * dx + dy * dy or 1e-12
        t = np.clip(((u - x0) * dx + (v - y0) * dy) / length2, 0.0, 1.0)
        d2 = (u - x0 - t * dx) ** 2 + (v - y0 - t * dy) ** 2
        self._fill(rows, cols, d2 <= h * h, color, alpha)

    def polyline(self, points: Sequence[tuple[float, float]], width: float, color: Color) -> None:
        for (x0, y0), (x1, y1) in zip(points[:-1], points[1:]):
            self.segment(x0, y0, x1, y1, width, color)

    def render(self) -> np.ndarray:
        s, k = self.size, self.ss
        return self.img.reshape(s, k, s, k, 3).mean(axis=(1, 3))


def rotate(points: Iterable[tuple[float, float]], cx: float, cy: float, angle: float) -> list[tuple[float, float]]:
    """``points`` relative to (cx, cy), rotated by ``angle`` radians, in image coordinates."""
    ca, sa = math.cos(angle), math.sin(angle)
    return [(cx + x * ca - y * sa, cy + x * sa + y * ca) for x, y in points]


def to_uint8(img: np.ndarray) -> np.ndarray:
    """A float image in [0, 1] as uint8 (rounded, clipped)."""
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=8)
def _upsampler(n: int, k: int) -> np.ndarray:
    """``n x k`` matrix of linear interpolation from ``k`` cell centres to ``n`` pixel centres."""
    pos = np.clip((np.arange(n) + 0.5) / n * k - 0.5, 0, k - 1)
    lo = np.minimum(np.floor(pos).astype(int), k - 2)
    frac = pos - lo
    m = np.zeros((n, k), np.float32)
    m[np.arange(n), lo] = 1 - frac
    m[np.arange(n), lo + 1] = frac
    return m


def add_blotches(canvas: Canvas, rng: np.random.Generator, grey: float, tint: float) -> None:
    """Add a smooth random field (4x4 cells, linearly interpolated): grey and coloured parts."""
    coarse = (rng.normal(0.0, grey, (4, 4, 1)) + rng.normal(0.0, tint, (4, 4, 3))).astype(np.float32)
    up = _upsampler(canvas.n, 4)
    rows = np.tensordot(up, coarse, axes=([1], [0]))  # n x 4 x 3
    canvas.img += np.tensordot(rows, up, axes=([1], [1])).transpose(0, 2, 1)
