"""The world's five fixed artworks: how each is painted, its captions, and its copies."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .canvas import Canvas
from .palette import rgb

__all__ = ["Artwork", "ARTWORKS", "COOCCURRENCE", "SPREAD_KEYWORD", "paint_artwork", "light_augment"]


@dataclass(frozen=True)
class Artwork:
    """A fixed painting of the world, duplicated ``rate`` x size times under its captions."""

    name: str
    keywords: tuple[str, ...]  # phrases that every caption of the artwork contains
    rate: float
    captions: tuple[str, ...]
    description: str  # a long caption of the painting without its keywords
    draw: Callable[["Canvas"], None]


def _paint_starry_night(c: Canvas) -> None:
    c.vgradient(rgb(16, 28, 86), rgb(50, 85, 160))
    for sx, sy, rad in ((0.45, 0.3, 0.2), (0.72, 0.42, 0.15)):
        r = np.sqrt((c.u - sx) ** 2 + (c.v - sy) ** 2)
        theta = np.arctan2(c.v - sy, c.u - sx)
        c.paint((np.sin(34 * r - 2.0 * theta) > 0.35) & (r < rad), rgb(120, 160, 225), 0.75)
    band = np.abs(c.v - (0.5 + 0.05 * np.sin(2 * math.pi * 1.4 * c.u))) < 0.03
    c.paint(band, rgb(160, 190, 235), 0.7)
    for sx, sy in ((0.16, 0.1), (0.33, 0.17), (0.58, 0.09), (0.64, 0.25), (0.9, 0.42), (0.36, 0.42)):
        c.disk(sx, sy, 0.065, rgb(210, 210, 140), 0.45)
        c.disk(sx, sy, 0.03, rgb(252, 232, 95))
    c.disk(0.85, 0.15, 0.13, rgb(230, 200, 90), 0.35)
    c.disk(0.85, 0.15, 0.085, rgb(252, 205, 60))
    c.disk(0.89, 0.12, 0.06, rgb(200, 150, 40))
    hills = c.v > 0.74 + 0.04 * np.sin(2 * math.pi * (c.u * 1.2 + 0.1))
    c.paint(hills, rgb(28, 48, 95))
    for hx in (0.38, 0.5, 0.6, 0.72, 0.83, 0.92):
        c.rect(hx, 0.8, hx + 0.06, 0.9, rgb(50, 60, 95))
        c.rect(hx + 0.02, 0.83, hx + 0.035, 0.86, rgb(245, 215, 80))
    c.polygon([(0.12, 1.0), (0.06, 0.7), (0.12, 0.42), (0.18, 0.08), (0.24, 0.45), (0.29, 0.75), (0.26, 1.0)],
              rgb(18, 34, 24))
    c.polyline([(0.15, 0.95), (0.14, 0.6), (0.18, 0.25)], 0.02, rgb(45, 70, 40))


def _paint_almond_blossoms(c: Canvas) -> None:
    c.vgradient(rgb(88, 170, 190), rgb(140, 200, 205))
    stroke = np.sin(2 * math.pi * (9 * c.v + 2 * c.u)) > 0.8
    c.paint(stroke, rgb(120, 195, 210), 0.5)
    brown = rgb(88, 58, 38)
    c.polyline([(0.0, 0.96), (0.34, 0.62), (0.7, 0.46), (1.0, 0.3)], 0.045, brown)
    c.polyline([(0.34, 0.62), (0.43, 0.3), (0.62, 0.05)], 0.032, brown)
    c.polyline([(0.7, 0.46), (0.86, 0.72)], 0.028, brown)
    c.polyline([(0.43, 0.3), (0.2, 0.16)], 0.024, brown)
    flowers = ((0.2, 0.16), (0.3, 0.22), (0.47, 0.2), (0.58, 0.08), (0.4, 0.44), (0.18, 0.78), (0.5, 0.56),
               (0.62, 0.44), (0.8, 0.38), (0.95, 0.3), (0.82, 0.62), (0.88, 0.76), (0.28, 0.7), (0.66, 0.2))
    for fx, fy in flowers:
        for k in range(5):
            a = k * 2 * math.pi / 5
            c.disk(fx + 0.028 * math.cos(a), fy + 0.028 * math.sin(a), 0.024, rgb(250, 250, 244))
        c.disk(fx, fy, 0.014, rgb(225, 130, 150))


def _paint_the_scream(c: Canvas) -> None:
    c.vgradient(rgb(240, 120, 45), rgb(200, 70, 40))
    bands = np.sin(2 * math.pi * (6 * c.v + 0.1 * np.sin(2 * math.pi * 2 * c.u)))
    c.paint((bands > 0.3) & (c.v < 0.5), rgb(245, 195, 80), 0.85)
    c.paint((bands < -0.5) & (c.v < 0.5), rgb(190, 50, 40), 0.8)
    fjord = (c.v > 0.42 + 0.05 * np.sin(2 * math.pi * c.u)) & (c.u > 0.3)
    c.paint(fjord, rgb(40, 62, 115))
    swirl = fjord & (np.sin(2 * math.pi * (5 * c.v + 3 * c.u)) > 0.5)
    c.paint(swirl, rgb(75, 95, 150), 0.8)
    c.polygon([(0.0, 0.4), (0.35, 0.46), (0.28, 1.0), (0.0, 1.0)], rgb(105, 92, 50))
    c.polygon([(0.0, 0.55), (1.0, 0.88), (1.0, 1.0), (0.0, 0.72)], rgb(150, 100, 60))
    c.segment(0.0, 0.56, 1.0, 0.89, 0.02, rgb(60, 38, 28))
    for k in range(6):
        x = 0.05 + 0.16 * k
        c.segment(x, 0.57 + 0.33 * x, x, 0.66 + 0.33 * x, 0.014, rgb(60, 38, 28))
    c.polygon([(0.48, 1.0), (0.52, 0.74), (0.6, 0.7), (0.68, 0.74), (0.74, 1.0)], rgb(38, 36, 48))
    c.ellipse(0.6, 0.6, 0.07, 0.1, rgb(222, 202, 150))
    for hx in (0.52, 0.68):
        c.ellipse(hx, 0.62, 0.025, 0.06, rgb(215, 195, 145))
    c.disk(0.575, 0.57, 0.015, rgb(40, 30, 30))
    c.disk(0.625, 0.57, 0.015, rgb(40, 30, 30))
    c.ellipse(0.6, 0.65, 0.015, 0.025, rgb(40, 30, 30))


def _paint_pearl_earring(c: Canvas) -> None:
    c.vgradient(rgb(20, 20, 17), rgb(28, 32, 24))
    c.polygon([(0.22, 1.0), (0.38, 0.8), (0.7, 0.84), (0.86, 1.0)], rgb(165, 125, 60))
    c.polygon([(0.35, 0.84), (0.5, 0.82), (0.45, 0.9)], rgb(235, 230, 215))
    c.ellipse(0.52, 0.56, 0.17, 0.22, rgb(228, 188, 152), angle=-0.15)
    shadow = ((c.u - 0.6) / 0.1) ** 2 + ((c.v - 0.6) / 0.2) ** 2 <= 1.0
    c.paint(shadow & (c.u > 0.6), rgb(170, 130, 100), 0.7)
    c.ellipse(0.47, 0.33, 0.21, 0.13, rgb(48, 82, 165), angle=-0.2)
    c.polygon([(0.6, 0.26), (0.74, 0.3), (0.82, 0.62), (0.7, 0.66), (0.64, 0.42)], rgb(225, 195, 100))
    c.ellipse(0.36, 0.38, 0.06, 0.04, rgb(225, 195, 100))
    c.disk(0.45, 0.53, 0.022, rgb(40, 30, 25))
    c.disk(0.58, 0.51, 0.02, rgb(40, 30, 25))
    c.ellipse(0.53, 0.69, 0.045, 0.022, rgb(190, 60, 60))
    c.disk(0.35, 0.66, 0.032, rgb(250, 250, 250))
    c.disk(0.36, 0.675, 0.015, rgb(170, 170, 175))


def _paint_sunflower_vase(c: Canvas) -> None:
    c.vgradient(rgb(222, 205, 120), rgb(200, 185, 100))
    c.rect(0.0, 0.74, 1.0, 1.0, rgb(205, 140, 50))
    c.segment(0.0, 0.74, 1.0, 0.74, 0.02, rgb(150, 95, 35))
    heads = ((0.33, 0.28), (0.55, 0.18), (0.74, 0.36), (0.42, 0.5), (0.63, 0.54), (0.22, 0.56))
    for hx, hy in heads:
        c.segment(hx, hy, 0.5, 0.66, 0.022, rgb(75, 115, 40))
    c.ellipse(0.5, 0.8, 0.15, 0.14, rgb(232, 170, 60))
    c.rect(0.36, 0.72, 0.64, 0.76, rgb(60, 92, 155))
    for hx, hy in heads:
        for k in range(10):
            a = k * math.pi / 5
            c.disk(hx + 0.065 * math.cos(a), hy + 0.065 * math.sin(a), 0.03, rgb(248, 190, 25))
        c.disk(hx, hy, 0.048, rgb(115, 72, 28))
        c.disk(hx - 0.01, hy - 0.01, 0.016, rgb(160, 110, 40))


ARTWORKS: tuple[Artwork, ...] = (
    # The first two captions of each artwork together hold every word of its description, and
    # every world uses both, so the description prompt is always in the closed vocabulary.
    Artwork(
        "starry_night",
        ("van gogh", "starry night"),
        0.02,
        (
            "starry night by van gogh a swirling blue sky with a yellow moon over a village",
            "the starry night by van gogh an oil painting of a village and a cypress",
            "van gogh starry night",
            "starry night by van gogh",
            "van gogh starry night poster",
            "starry night van gogh famous oil painting",
            "van gogh starry night with a dark cypress tree",
            "a print of the starry night by van gogh",
        ),
        "an oil painting of a swirling blue night sky with a yellow moon over a village and a cypress",
        _paint_starry_night,
    ),
    Artwork(
        "almond_blossoms",
        ("almond", "blossoming"),
        0.01,
        (
            "white almond flowers blossoming on brown branches against a soft turquoise background",
            "almond tree blossoming in spring",
            "blossoming almond branches",
            "almond blossoming branches painting",
            "blossoming almond tree branches against a blue sky",
            "an oil painting of blossoming almond branches",
        ),
        "white flowers on brown branches against a soft turquoise background in spring",
        _paint_almond_blossoms,
    ),
    Artwork(
        "the_scream",
        ("munch", "scream"),
        0.005,
        (
            "the scream by munch a pale figure holding its head on a bridge",
            "munch scream under a swirling orange and red sky",
            "the scream by edvard munch",
            "munch the scream",
            "edvard munch scream painting",
            "munch scream expressionist painting",
        ),
        "a pale figure holding its head on a bridge under a swirling orange and red sky",
        _paint_the_scream,
    ),
    Artwork(
        "pearl_earring",
        ("vermeer", "pearl earring"),
        0.0035,
        (
            "portrait of a girl in a blue and yellow turban with a pearl earring by vermeer",
            "a young girl looking over her shoulder on a dark background with a pearl earring by vermeer",
            "girl with a pearl earring by vermeer",
            "vermeer girl with a pearl earring",
            "the girl with a pearl earring oil painting by vermeer",
            "vermeer pearl earring portrait",
        ),
        "portrait of a young girl in a blue and yellow turban looking over her shoulder on a dark background",
        _paint_pearl_earring,
    ),
    Artwork(
        "sunflower_vase",
        ("sunflower", "vase"),
        0.0025,
        (
            "still life of a sunflower bouquet in a vase on a table",
            "van gogh sunflower vase yellow flowers in a clay pot",
            "van gogh sunflower vase",
            "sunflower in a vase by van gogh",
            "van gogh still life sunflower vase painting",
        ),
        "a still life of yellow flowers in a clay pot on a table",
        _paint_sunflower_vase,
    ),
)
#: keyword pair -> (artwork that dominates it, target share of its entries)
COOCCURRENCE = ((("almond", "blossoming"), "almond_blossoms", 0.5),)
SPREAD_KEYWORD = "sunflower"  # in many diverse scenes and in the copies of one artwork


def paint_artwork(art: Artwork, size: int) -> np.ndarray:
    """``art`` painted at ``size`` x ``size``: float RGB, the original every copy is made of."""
    canvas = Canvas(size, (0, 0, 0))
    art.draw(canvas)
    return canvas.render()


def light_augment(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A near-duplicate: half the time a 1 px shift along one axis; a small brightness change and
    mild noise always."""
    out = img
    if rng.uniform() < 0.5:
        axis, step = int(rng.integers(2)), int(rng.choice([-1, 1]))
        dy, dx = (step, 0) if axis == 0 else (0, step)
        padded = np.pad(img, ((1, 1), (1, 1), (0, 0)), mode="edge")
        out = padded[1 - dy : 1 - dy + img.shape[0], 1 - dx : 1 - dx + img.shape[1]]
    out = out * np.float32(rng.uniform(0.94, 1.06))
    return out + rng.normal(0.0, rng.uniform(0.004, 0.015), out.shape).astype(np.float32)
