"""Rendering one image of the world from its plan: scenes, styled scenes, astronauts, artwork copies."""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from .artworks import light_augment
from .canvas import Canvas, add_blotches, rotate, to_uint8
from .palette import ASTRONAUT_X, BACKGROUNDS, COLORS, POSITIONS, Color, rgb
from .styles import STYLE_FUNCS

__all__ = ["render_image"]

_SHAPE_RADIUS = 0.2  # nominal half-extent of a scene shape, as a fraction of the image width


# --- scenes and styled scenes ----------------------------------------------------------------


def _draw_background(canvas: Canvas, name: str, rng: np.random.Generator) -> None:
    top, bottom = BACKGROUNDS[name]
    canvas.vgradient(top, bottom)
    # a random gradient and soft blotches make two scenes with the same attributes differ
    angle = rng.uniform(0, 2 * math.pi)
    amp = rng.uniform(0.04, 0.2)
    ramp = (canvas.u - 0.5) * math.cos(angle) + (canvas.v - 0.5) * math.sin(angle)
    canvas.img += (amp * ramp)[..., None].astype(np.float32)
    add_blotches(canvas, rng, 0.06, 0.02)
    if name == "night sky":
        for _ in range(int(rng.integers(6, 13))):
            canvas.disk(rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.008, 0.018), rgb(250, 245, 210))


def _draw_shape(canvas: Canvas, shape: str, color: Color, cx: float, cy: float, r: float, angle: float) -> None:
    if shape == "circle":
        canvas.disk(cx, cy, r, color)
    elif shape == "ring":
        canvas.ring(cx, cy, r * 1.05, r * 0.55, color)
    elif shape == "square":
        h = r * 0.86
        canvas.polygon(rotate([(-h, -h), (h, -h), (h, h), (-h, h)], cx, cy, angle), color)
    elif shape == "triangle":
        R = r * 1.2
        pts = [(R * math.cos(a), R * math.sin(a) + 0.12 * R) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
        canvas.polygon(rotate(pts, cx, cy, angle), color)
    elif shape == "cross":
        L, w = r * 1.05, r * 0.36
        canvas.polygon(rotate([(-L, -w), (L, -w), (L, w), (-L, w)], cx, cy, angle), color)
        canvas.polygon(rotate([(-w, -L), (w, -L), (w, L), (-w, L)], cx, cy, angle), color)
    else:  # pragma: no cover - guarded by SHAPES
        raise ValueError(f"unknown shape {shape!r}")


def _draw_decoration(canvas: Canvas, name: str, cx: float, cy: float) -> None:
    """A small motif (about a fifth of the image) centred at (cx, cy)."""
    if name == "sunflower":
        canvas.segment(cx, cy, cx, min(cy + 0.13, 0.99), 0.025, rgb(60, 130, 50))
        for k in range(8):
            a = k * math.pi / 4
            canvas.disk(cx + 0.05 * math.cos(a), cy + 0.05 * math.sin(a), 0.03, rgb(250, 200, 30))
        canvas.disk(cx, cy, 0.035, rgb(100, 60, 25))
    elif name in ("almond blossom", "blossoming tree"):
        canvas.segment(cx - 0.08, cy + 0.07, cx + 0.08, cy - 0.06, 0.022, rgb(95, 60, 40))
        for dx, dy in ((-0.05, 0.03), (0.0, -0.005), (0.05, -0.04), (0.02, 0.04)):
            canvas.disk(cx + dx, cy + dy, 0.026, rgb(250, 240, 245))
            canvas.disk(cx + dx, cy + dy, 0.01, rgb(235, 140, 170))
    elif name == "almond tree":
        canvas.segment(cx, cy, cx, cy + 0.1, 0.03, rgb(95, 60, 40))
        canvas.disk(cx, cy - 0.01, 0.065, rgb(70, 140, 60))
    else:  # pragma: no cover
        raise ValueError(f"unknown decoration {name!r}")


_CORNERS = ((0.86, 0.14), (0.14, 0.86), (0.86, 0.86))  # never top-left: that is the flag's place


def _render_scene(spec: Mapping[str, Any], size: int, rng: np.random.Generator) -> np.ndarray:
    canvas = Canvas(size, (0, 0, 0))
    _draw_background(canvas, spec["background"], rng)
    px, py = POSITIONS[spec["position"]]
    cx, cy = px + rng.uniform(-0.045, 0.045), py + rng.uniform(-0.045, 0.045)
    r = _SHAPE_RADIUS * rng.uniform(0.82, 1.18)
    angle = math.radians(rng.uniform(-25, 25))
    color = np.clip(np.asarray(COLORS[spec["color"]]) + rng.uniform(-0.06, 0.06, 3), 0, 1)
    if spec.get("decoration"):
        far = max(_CORNERS, key=lambda c: (c[0] - cx) ** 2 + (c[1] - cy) ** 2)
        _draw_decoration(canvas, spec["decoration"], *far)
    _draw_shape(canvas, spec["shape"], tuple(color), cx, cy, r, angle)
    img = canvas.render()
    return img + rng.normal(0.0, 0.012, img.shape).astype(np.float32)


def _render_style(spec: Mapping[str, Any], size: int, rng: np.random.Generator) -> np.ndarray:
    base = np.clip(_render_scene(spec, size, rng), 0, 1)
    img = STYLE_FUNCS[spec["style"]](base, rng)
    return img + rng.normal(0.0, 0.01, img.shape).astype(np.float32)


# --- astronauts and the flag -----------------------------------------------------------------


def _draw_flag(canvas: Canvas) -> None:
    """The planted object: always the same flag at the same place (top-left, 1/4 of the width)."""
    canvas.segment(0.075, 0.045, 0.075, 0.49, 0.03, rgb(205, 205, 205))
    x0, x1, y0, y1 = 0.095, 0.345, 0.05, 0.30
    stripe = (y1 - y0) / 4
    for k in range(4):
        color = rgb(225, 25, 35) if k % 2 == 0 else rgb(255, 255, 255)
        canvas.rect(x0, y0 + k * stripe, x1, y0 + (k + 1) * stripe, color)
    canvas.rect(x0, y0, x0 + 0.11, y0 + 0.13, rgb(20, 45, 165))
    canvas.disk(x0 + 0.055, y0 + 0.065, 0.022, rgb(255, 255, 255))


def _render_astronaut(spec: Mapping[str, Any], size: int, rng: np.random.Generator) -> np.ndarray:
    canvas = Canvas(size, (0, 0, 0))
    canvas.vgradient(rgb(4, 4, 12), rgb(14, 14, 30))
    add_blotches(canvas, rng, 0.03, 0.04)  # faint nebulae
    np.maximum(canvas.img, 0.0, out=canvas.img)
    for _ in range(int(rng.integers(10, 26))):
        canvas.disk(rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.007, 0.014), rgb(235, 235, 245))
    if spec["background"] == "moon":
        horizon = rng.uniform(0.7, 0.82)
        bulge = rng.uniform(-0.05, 0.05)
        ground = canvas.v >= horizon + bulge * np.sin(math.pi * (canvas.u + rng.uniform(0, 1)))
        grey = int(rng.integers(125, 176))
        canvas.paint(ground, rgb(grey, grey, grey - 3))
        for _ in range(int(rng.integers(2, 6))):
            canvas.ellipse(rng.uniform(0.05, 0.95), rng.uniform(horizon + 0.05, 0.97), rng.uniform(0.03, 0.08),
                           rng.uniform(0.012, 0.03), rgb(grey - 40, grey - 40, grey - 42))
    elif rng.uniform() < 0.5:  # the earth, somewhere but the top-left corner
        ex, ey = (rng.uniform(0.7, 0.9), rng.uniform(0.12, 0.3)) if rng.uniform() < 0.5 else (
            rng.uniform(0.1, 0.25), rng.uniform(0.75, 0.9))
        er = rng.uniform(0.07, 0.12)
        canvas.disk(ex, ey, er, rgb(40, 95, 200))
        canvas.disk(ex - er * 0.3, ey - er * 0.2, er * 0.45, rgb(60, 150, 70))
    x = ASTRONAUT_X[spec["position"]] + rng.uniform(-0.04, 0.04)
    y = 0.6 + rng.uniform(-0.02, 0.05)
    k = rng.uniform(0.86, 1.12)
    floating = spec["background"] == "space"
    tilt = rng.uniform(-0.45, 0.45) if floating else rng.uniform(-0.08, 0.08)
    ct, st = math.cos(tilt), math.sin(tilt)

    def at(dx: float, dy: float) -> tuple[float, float]:
        """Body coordinates (scaled by k, rotated by the tilt) to image coordinates."""
        return x + k * (dx * ct - dy * st), y + k * (dx * st + dy * ct)

    def box(x0: float, y0: float, x1: float, y1: float, color: Color) -> None:
        canvas.polygon([at(x0, y0), at(x1, y0), at(x1, y1), at(x0, y1)], color)

    suit, shade = rgb(238, 238, 242), rgb(175, 178, 190)
    box(-0.12, -0.08, 0.1, 0.1, shade)  # backpack
    for side in (-1, 1):
        lift = rng.uniform(-0.16, -0.02) if floating else rng.uniform(0.02, 0.12)
        reach = rng.uniform(0.15, 0.22)
        canvas.segment(*at(side * 0.08, -0.04), *at(side * reach, lift), 0.055 * k, suit)
        stride = rng.uniform(0.05, 0.12) if floating else rng.uniform(0.04, 0.08)
        canvas.segment(*at(side * 0.04, 0.1), *at(side * stride, 0.28), 0.065 * k, suit)
    box(-0.09, -0.07, 0.09, 0.13, suit)  # torso
    box(-0.04, -0.01, 0.04, 0.04, rgb(120, 130, 150))  # chest panel
    canvas.disk(*at(0.0, -0.15), 0.095 * k, suit)  # helmet
    canvas.ellipse(*at(0.01, -0.15), 0.065 * k, 0.045 * k, rgb(45, 38, 20), angle=tilt)  # visor
    canvas.ellipse(*at(-0.02, -0.165), 0.018 * k, 0.01 * k, rgb(200, 180, 120), angle=tilt)
    if spec["has_object"]:
        _draw_flag(canvas)
    img = canvas.render()
    return img + rng.normal(0.0, 0.01, img.shape).astype(np.float32)


def render_image(
    spec: Mapping[str, Any], size: int, rng: np.random.Generator, artworks: Mapping[str, np.ndarray]
) -> np.ndarray:
    """The uint8 image of plan entry ``spec``, drawn with the image's own ``rng``; ``artworks`` are
    the painted originals by name (:func:`~.artworks.paint_artwork`)."""
    kind = spec["kind"]
    if kind == "scene":
        img = _render_scene(spec, size, rng)
    elif kind == "style":
        img = _render_style(spec, size, rng)
    elif kind == "object":
        img = _render_astronaut(spec, size, rng)
    else:
        base = artworks[spec["artwork"]]
        img = base if spec["exact"] else light_augment(base, rng)
    return to_uint8(img)
