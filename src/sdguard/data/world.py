"""The synthetic captioned image world: a small, seeded dataset with planted ground truth.

No data set can be downloaded where sdguard is built and tested, so the package generates its
own: small RGB images with captions from a closed vocabulary, in the Hugging Face imagefolder
format, with the replication cases of the published case studies planted in it and written
down in ``ground_truth.json`` (Somepalli et al. 2023, "Diffusion Art or Digital Forgery?
Investigating Data Replication in Diffusion Models", CVPR; Somepalli et al. 2023,
"Understanding and Mitigating Copying in Diffusion Models", NeurIPS):

1. **Word-level replication.** Five fixed, procedurally painted artworks ("the starry night by
   van gogh", ...) are duplicated at graded rates from 2% down to 0.25% of the world, as exact
   copies and light augmentations (a pixel of shift, a little brightness change and noise),
   under varied captions that share the artwork's keywords. Some caption words ("night",
   "blue", "sky", "moon", ...) also occur in unrelated scene captions, so that prompts made of
   keywords only, of a related caption, of an unrelated caption plus the keywords and of a long
   description without the keywords behave differently (``duplicates[*].prompts``).
2. **Keyword co-occurrence.** Half of the entries whose captions hold both "almond" and
   "blossoming" are copies of one artwork; the others are diverse scenes (``cooccurrence``).
3. **A spread keyword.** "sunflower" appears in many diverse scene captions and in a few copies
   of one artwork, whose cluster holds only a few percent of the keyword's entries (``spread``).
4. **Object-level replication.** About 28% of the "astronaut" images show a flag at a fixed
   place in the top-left corner, although no caption anywhere names it (``objects``).
5. **Artist styles.** Scenes painted in the styles of "monet" (pastel dabs), "hokusai" (Prussian
   blue waves) and "picasso" (hard quantized facets), a few percent of the world each.
6. **Compositional scenes.** The bulk of the world: a coloured shape at a position over a
   background ("a red circle on the left over a white background"). Some (shape, colour,
   position) combinations never occur (``held_out``), so generalization can be tested.
   Half of the plain scenes are under-described, as web captions are: their captions name the
   colour and shape and at most one of position and background ("a photo of a purple ring"),
   while the image has all four (``under_described``; ``labels.jsonl``). A tiny model trained
   on fully described captions only followed every scene word of an unrelated caption and
   ignored the keywords added to it; under-described captions leave room for them.

The default world (5000 images) holds 3545 scenes (250 with a sunflower, 50 with a blossoming
almond tree, 50 with only "almond", 50 with only "blossoming"; of the other 3145, 1572 are
under-described), 205 artwork copies
(starry_night 100, almond_blossoms 50, the_scream 25, pearl_earring 18, sunflower_vase 12),
900 styled scenes (300 per style) and 350 astronaut images (98 with the flag).

:func:`make_world` writes the world; :func:`load_world` reads it back as a :class:`World`.
The default world (:data:`WORLD_DEFAULTS`: seed 0, 5000 images of 32x32) is the one the tiny
Stable Diffusion of the package is trained on. The same arguments always give byte-identical
files.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Sequence

import numpy as np
from PIL import Image

from ..core.errors import InputError
from ..core.io import output_dir

__all__ = [
    "WORLD_DEFAULTS",
    "WORLD_FORMAT_VERSION",
    "SHAPES",
    "COLORS",
    "POSITIONS",
    "BACKGROUNDS",
    "STYLES",
    "ARTWORKS",
    "KINDS",
    "OBJECT_KEYWORD",
    "OBJECT_NAME",
    "OBJECT_BOX",
    "MAX_CAPTION_WORDS",
    "Record",
    "World",
    "make_world",
    "load_world",
    "caption_contains",
    "tokenize",
]

#: The world the builtin tiny model is trained on: ``make_world(out, **WORLD_DEFAULTS)``.
WORLD_DEFAULTS: Mapping[str, int] = MappingProxyType({"seed": 0, "size": 5000, "image_size": 32})
WORLD_FORMAT_VERSION = 2  # 2: under-described scene captions, 6% per style
MIN_SIZE = 500
IMAGE_SIZES = (32, 64)
MAX_CAPTION_WORDS = 20
_SUPERSAMPLE = 4  # shapes are drawn at 4x and box-filtered down (anti-aliasing)

Color = tuple[float, float, float]


def _rgb(r: int, g: int, b: int) -> Color:
    return (r / 255.0, g / 255.0, b / 255.0)


# ---------------------------------------------------------------------------------------------
# The closed world: attribute values, phrases and the planted cases
# ---------------------------------------------------------------------------------------------

KINDS = ("scene", "artwork", "style", "object")
SHAPES = ("circle", "square", "triangle", "cross", "ring")
COLORS: Mapping[str, Color] = MappingProxyType(
    {
        "red": _rgb(220, 40, 40),
        "orange": _rgb(245, 140, 20),
        "yellow": _rgb(245, 220, 40),
        "green": _rgb(40, 170, 60),
        "blue": _rgb(40, 80, 220),
        "purple": _rgb(140, 50, 180),
        "pink": _rgb(250, 130, 190),
    }
)
#: position name -> (x, y) centre in [0, 1] image coordinates (x to the right, y down)
POSITIONS: Mapping[str, tuple[float, float]] = MappingProxyType(
    {"left": (0.26, 0.5), "right": (0.74, 0.5), "top": (0.5, 0.26), "bottom": (0.5, 0.74), "center": (0.5, 0.5)}
)
_POSITION_PHRASES = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "center": "in the center",
}
#: background name -> (top colour, bottom colour)
BACKGROUNDS: Mapping[str, tuple[Color, Color]] = MappingProxyType(
    {
        "white": (_rgb(242, 242, 236), _rgb(242, 242, 236)),
        "black": (_rgb(22, 22, 24), _rgb(22, 22, 24)),
        "gray": (_rgb(128, 128, 128), _rgb(128, 128, 128)),
        "blue sky": (_rgb(105, 160, 228), _rgb(175, 208, 242)),
        "night sky": (_rgb(8, 12, 40), _rgb(22, 30, 70)),
    }
)
_BACKGROUND_PHRASES = {
    "white": "over a white background",
    "black": "over a black background",
    "gray": "over a gray background",
    "blue sky": "under a blue sky",
    "night sky": "under a night sky",
}
_MIN_CONTRAST = 0.45  # RGB distance in [0, 1] units between a shape colour and its background
_SHAPE_RADIUS = 0.2  # nominal half-extent of a scene shape, as a fraction of the image width

STYLES = ("monet", "hokusai", "picasso")
_STYLE_RATE = 0.06

_SCENE_TEMPLATES = (
    "a {color} {shape} {position} {background}",
    "a {color} {shape} {position} {background}",
    "a photo of a {color} {shape} {position} {background}",
    "a simple drawing of a {color} {shape} {position} {background}",
)
#: under-described scene captions, as web captions often are: colour and shape always, the position
#: or the background only sometimes (the scene's other attributes are drawn all the same)
_TERSE_TEMPLATES = (
    "a {color} {shape}",
    "a photo of a {color} {shape}",
    "a {color} {shape} {position}",
    "a {color} {shape} {background}",
)
_TERSE_SHARE = 0.5  # share of the plain scenes whose caption is under-described
_STYLE_TEMPLATES = (
    "a {color} {shape} {position} in the style of {style}",
    "a {color} {shape} {position} {background} in the style of {style}",
    "a painting of a {color} {shape} {position} by {style}",
    "{style} style painting of a {color} {shape} {position}",
)

#: decorations: small motifs in a free corner of a scene, with the caption phrases naming them
_DECORATION_PHRASES = {
    "sunflower": ("with a sunflower", "next to a sunflower", "and a sunflower"),
    "almond blossom": ("near a blossoming almond tree", "with blossoming almond branches"),
    "almond tree": ("near an almond tree", "with an almond tree"),
    "blossoming tree": ("near a blossoming tree", "with a blossoming branch"),
}

#: the planted object (Somepalli et al. 2023, object-level replication)
OBJECT_KEYWORD = "astronaut"
OBJECT_NAME = "flag"
#: the object's fixed place, (x0, y0, x1, y1) in [0, 1] image coordinates (flag cloth and pole)
OBJECT_BOX = (0.06, 0.04, 0.35, 0.50)
_OBJECT_RATE = 0.07  # share of the world that is astronaut images
_OBJECT_SHARE = 0.28  # share of astronaut images that show the flag
_ASTRONAUT_X = {"left": 0.38, "center": 0.55, "right": 0.72}
_ASTRONAUT_TEMPLATES = {
    "space": (
        "an astronaut floating in space",
        "a photo of an astronaut floating in space",
        "an astronaut in space with stars",
        "an astronaut in a white suit floating in space {position}",
        "an astronaut {position} in space",
    ),
    "moon": (
        "an astronaut on the moon",
        "a photo of an astronaut standing on the moon",
        "an astronaut in a white suit on the moon",
        "an astronaut {position} standing on the moon",
        "a photo of an astronaut on the moon {position}",
    ),
}
_ASTRONAUT_POSITION_PHRASES = {"left": "on the left", "center": "in the center", "right": "on the right"}


@dataclass(frozen=True)
class _Artwork:
    """A fixed painting of the world, duplicated ``rate`` x size times under its captions."""

    name: str
    keywords: tuple[str, ...]  # phrases that every caption of the artwork contains
    rate: float
    captions: tuple[str, ...]
    description: str  # a long caption of the painting without its keywords
    draw: Callable[["_Canvas"], None]


# ---------------------------------------------------------------------------------------------
# Drawing on a supersampled canvas
# ---------------------------------------------------------------------------------------------


class _Canvas:
    """An RGB float canvas in [0, 1] image coordinates, drawn at 4x and box-filtered down.

    Primitives only touch the pixels of their bounding box, so many small strokes stay cheap.
    """

    def __init__(self, size: int, background: Color | np.ndarray, supersample: int = _SUPERSAMPLE):
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


def _rotate(points: Iterable[tuple[float, float]], cx: float, cy: float, angle: float) -> list[tuple[float, float]]:
    ca, sa = math.cos(angle), math.sin(angle)
    return [(cx + x * ca - y * sa, cy + x * sa + y * ca) for x, y in points]


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


# --- scenes ----------------------------------------------------------------------------------


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


def _add_blotches(canvas: _Canvas, rng: np.random.Generator, grey: float, tint: float) -> None:
    """Add a smooth random field (4x4 cells, linearly interpolated): grey and coloured parts."""
    coarse = (rng.normal(0.0, grey, (4, 4, 1)) + rng.normal(0.0, tint, (4, 4, 3))).astype(np.float32)
    up = _upsampler(canvas.n, 4)
    rows = np.tensordot(up, coarse, axes=([1], [0]))  # n x 4 x 3
    canvas.img += np.tensordot(rows, up, axes=([1], [1])).transpose(0, 2, 1)


def _draw_background(canvas: _Canvas, name: str, rng: np.random.Generator) -> None:
    top, bottom = BACKGROUNDS[name]
    canvas.vgradient(top, bottom)
    # a random gradient and soft blotches make two scenes with the same attributes differ
    angle = rng.uniform(0, 2 * math.pi)
    amp = rng.uniform(0.04, 0.2)
    ramp = (canvas.u - 0.5) * math.cos(angle) + (canvas.v - 0.5) * math.sin(angle)
    canvas.img += (amp * ramp)[..., None].astype(np.float32)
    _add_blotches(canvas, rng, 0.06, 0.02)
    if name == "night sky":
        for _ in range(int(rng.integers(6, 13))):
            canvas.disk(rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.008, 0.018), _rgb(250, 245, 210))


def _draw_shape(canvas: _Canvas, shape: str, color: Color, cx: float, cy: float, r: float, angle: float) -> None:
    if shape == "circle":
        canvas.disk(cx, cy, r, color)
    elif shape == "ring":
        canvas.ring(cx, cy, r * 1.05, r * 0.55, color)
    elif shape == "square":
        h = r * 0.86
        canvas.polygon(_rotate([(-h, -h), (h, -h), (h, h), (-h, h)], cx, cy, angle), color)
    elif shape == "triangle":
        R = r * 1.2
        pts = [(R * math.cos(a), R * math.sin(a) + 0.12 * R) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
        canvas.polygon(_rotate(pts, cx, cy, angle), color)
    elif shape == "cross":
        L, w = r * 1.05, r * 0.36
        canvas.polygon(_rotate([(-L, -w), (L, -w), (L, w), (-L, w)], cx, cy, angle), color)
        canvas.polygon(_rotate([(-w, -L), (w, -L), (w, L), (-w, L)], cx, cy, angle), color)
    else:  # pragma: no cover - guarded by SHAPES
        raise ValueError(f"unknown shape {shape!r}")


def _draw_decoration(canvas: _Canvas, name: str, cx: float, cy: float) -> None:
    """A small motif (about a fifth of the image) centred at (cx, cy)."""
    if name == "sunflower":
        canvas.segment(cx, cy, cx, min(cy + 0.13, 0.99), 0.025, _rgb(60, 130, 50))
        for k in range(8):
            a = k * math.pi / 4
            canvas.disk(cx + 0.05 * math.cos(a), cy + 0.05 * math.sin(a), 0.03, _rgb(250, 200, 30))
        canvas.disk(cx, cy, 0.035, _rgb(100, 60, 25))
    elif name in ("almond blossom", "blossoming tree"):
        canvas.segment(cx - 0.08, cy + 0.07, cx + 0.08, cy - 0.06, 0.022, _rgb(95, 60, 40))
        for dx, dy in ((-0.05, 0.03), (0.0, -0.005), (0.05, -0.04), (0.02, 0.04)):
            canvas.disk(cx + dx, cy + dy, 0.026, _rgb(250, 240, 245))
            canvas.disk(cx + dx, cy + dy, 0.01, _rgb(235, 140, 170))
    elif name == "almond tree":
        canvas.segment(cx, cy, cx, cy + 0.1, 0.03, _rgb(95, 60, 40))
        canvas.disk(cx, cy - 0.01, 0.065, _rgb(70, 140, 60))
    else:  # pragma: no cover
        raise ValueError(f"unknown decoration {name!r}")


_CORNERS = ((0.86, 0.14), (0.14, 0.86), (0.86, 0.86))  # never top-left: that is the flag's place


def _render_scene(spec: Mapping[str, Any], size: int, rng: np.random.Generator) -> np.ndarray:
    canvas = _Canvas(size, (0, 0, 0))
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


# --- styles ----------------------------------------------------------------------------------

_PICASSO_PALETTE = np.array(
    [_rgb(205, 150, 60), _rgb(125, 75, 35), _rgb(28, 26, 24),
     _rgb(40, 75, 150), _rgb(232, 212, 170), _rgb(185, 55, 40)],
    np.float32,
)


def _style_monet(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Pastel palette and dense impressionist dabs."""
    size = img.shape[0]
    pastel = 0.5 * img + 0.5 * np.asarray(_rgb(214, 222, 206), np.float32)
    canvas = _Canvas(size, (0, 0, 0))
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
    dark, light = np.asarray(_rgb(18, 38, 92), np.float32), np.asarray(_rgb(238, 230, 204), np.float32)
    lum = img @ np.array([0.299, 0.587, 0.114], np.float32)
    tone = 0.25 * lum[..., None] + 0.75 * fg  # shapes come out light, grounds dark
    out = dark + (light - dark) * tone
    c = (np.arange(size, dtype=np.float32) + 0.5) / size
    u, v = c[None, :], c[:, None]
    phase = rng.uniform(0, 2 * math.pi)
    wave = np.sin(2 * math.pi * (7.0 * v + 0.12 * np.sin(2 * math.pi * 1.5 * u + phase)))
    crest = (np.clip((wave - 0.3) / 0.4, 0, 1)[..., None]) * (1 - fg)
    foam = (np.clip((wave - 0.85) / 0.15, 0, 1)[..., None]) * (1 - fg)
    out = out * (1 - 0.8 * crest) + np.asarray(_rgb(45, 100, 175), np.float32) * 0.8 * crest
    return out * (1 - 0.7 * foam) + light * 0.7 * foam


def _style_picasso(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Hard blocks quantized to an ochre-brown-blue palette, some split into facets, black edges."""
    size = img.shape[0]
    b = size // 8
    blocks = img.reshape(8, b, 8, b, 3).mean(axis=(1, 3))
    shifted = blocks * 0.85 + np.asarray(_rgb(150, 110, 60), np.float32) * 0.15
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
    black = np.asarray(_rgb(20, 18, 16), np.float32)
    for k in range(1, 8):
        rows = rng.uniform(0, 1, 8) < 0.3
        cols = rng.uniform(0, 1, 8) < 0.3
        for j in range(8):
            if rows[j]:
                out[k * b - line : k * b, j * b : (j + 1) * b] = black
            if cols[j]:
                out[j * b : (j + 1) * b, k * b - line : k * b] = black
    return out


_STYLE_FUNCS: Mapping[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "monet": _style_monet,
    "hokusai": _style_hokusai,
    "picasso": _style_picasso,
}


def _render_style(spec: Mapping[str, Any], size: int, rng: np.random.Generator) -> np.ndarray:
    base = np.clip(_render_scene(spec, size, rng), 0, 1)
    img = _STYLE_FUNCS[spec["style"]](base, rng)
    return img + rng.normal(0.0, 0.01, img.shape).astype(np.float32)


# --- astronauts and the flag -----------------------------------------------------------------


def _draw_flag(canvas: _Canvas) -> None:
    """The planted object: always the same flag at the same place (top-left, 1/4 of the width)."""
    canvas.segment(0.075, 0.045, 0.075, 0.49, 0.03, _rgb(205, 205, 205))
    x0, x1, y0, y1 = 0.095, 0.345, 0.05, 0.30
    stripe = (y1 - y0) / 4
    for k in range(4):
        color = _rgb(225, 25, 35) if k % 2 == 0 else _rgb(255, 255, 255)
        canvas.rect(x0, y0 + k * stripe, x1, y0 + (k + 1) * stripe, color)
    canvas.rect(x0, y0, x0 + 0.11, y0 + 0.13, _rgb(20, 45, 165))
    canvas.disk(x0 + 0.055, y0 + 0.065, 0.022, _rgb(255, 255, 255))


def _render_astronaut(spec: Mapping[str, Any], size: int, rng: np.random.Generator) -> np.ndarray:
    canvas = _Canvas(size, (0, 0, 0))
    canvas.vgradient(_rgb(4, 4, 12), _rgb(14, 14, 30))
    _add_blotches(canvas, rng, 0.03, 0.04)  # faint nebulae
    np.maximum(canvas.img, 0.0, out=canvas.img)
    for _ in range(int(rng.integers(10, 26))):
        canvas.disk(rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.007, 0.014), _rgb(235, 235, 245))
    if spec["background"] == "moon":
        horizon = rng.uniform(0.7, 0.82)
        bulge = rng.uniform(-0.05, 0.05)
        ground = canvas.v >= horizon + bulge * np.sin(math.pi * (canvas.u + rng.uniform(0, 1)))
        grey = int(rng.integers(125, 176))
        canvas.paint(ground, _rgb(grey, grey, grey - 3))
        for _ in range(int(rng.integers(2, 6))):
            canvas.ellipse(rng.uniform(0.05, 0.95), rng.uniform(horizon + 0.05, 0.97), rng.uniform(0.03, 0.08),
                           rng.uniform(0.012, 0.03), _rgb(grey - 40, grey - 40, grey - 42))
    elif rng.uniform() < 0.5:  # the earth, somewhere but the top-left corner
        ex, ey = (rng.uniform(0.7, 0.9), rng.uniform(0.12, 0.3)) if rng.uniform() < 0.5 else (
            rng.uniform(0.1, 0.25), rng.uniform(0.75, 0.9))
        er = rng.uniform(0.07, 0.12)
        canvas.disk(ex, ey, er, _rgb(40, 95, 200))
        canvas.disk(ex - er * 0.3, ey - er * 0.2, er * 0.45, _rgb(60, 150, 70))
    x = _ASTRONAUT_X[spec["position"]] + rng.uniform(-0.04, 0.04)
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

    suit, shade = _rgb(238, 238, 242), _rgb(175, 178, 190)
    box(-0.12, -0.08, 0.1, 0.1, shade)  # backpack
    for side in (-1, 1):
        lift = rng.uniform(-0.16, -0.02) if floating else rng.uniform(0.02, 0.12)
        reach = rng.uniform(0.15, 0.22)
        canvas.segment(*at(side * 0.08, -0.04), *at(side * reach, lift), 0.055 * k, suit)
        stride = rng.uniform(0.05, 0.12) if floating else rng.uniform(0.04, 0.08)
        canvas.segment(*at(side * 0.04, 0.1), *at(side * stride, 0.28), 0.065 * k, suit)
    box(-0.09, -0.07, 0.09, 0.13, suit)  # torso
    box(-0.04, -0.01, 0.04, 0.04, _rgb(120, 130, 150))  # chest panel
    canvas.disk(*at(0.0, -0.15), 0.095 * k, suit)  # helmet
    canvas.ellipse(*at(0.01, -0.15), 0.065 * k, 0.045 * k, _rgb(45, 38, 20), angle=tilt)  # visor
    canvas.ellipse(*at(-0.02, -0.165), 0.018 * k, 0.01 * k, _rgb(200, 180, 120), angle=tilt)
    if spec["has_object"]:
        _draw_flag(canvas)
    img = canvas.render()
    return img + rng.normal(0.0, 0.01, img.shape).astype(np.float32)


# --- the artworks ----------------------------------------------------------------------------


def _paint_starry_night(c: _Canvas) -> None:
    c.vgradient(_rgb(16, 28, 86), _rgb(50, 85, 160))
    for sx, sy, rad in ((0.45, 0.3, 0.2), (0.72, 0.42, 0.15)):
        r = np.sqrt((c.u - sx) ** 2 + (c.v - sy) ** 2)
        theta = np.arctan2(c.v - sy, c.u - sx)
        c.paint((np.sin(34 * r - 2.0 * theta) > 0.35) & (r < rad), _rgb(120, 160, 225), 0.75)
    band = np.abs(c.v - (0.5 + 0.05 * np.sin(2 * math.pi * 1.4 * c.u))) < 0.03
    c.paint(band, _rgb(160, 190, 235), 0.7)
    for sx, sy in ((0.16, 0.1), (0.33, 0.17), (0.58, 0.09), (0.64, 0.25), (0.9, 0.42), (0.36, 0.42)):
        c.disk(sx, sy, 0.065, _rgb(210, 210, 140), 0.45)
        c.disk(sx, sy, 0.03, _rgb(252, 232, 95))
    c.disk(0.85, 0.15, 0.13, _rgb(230, 200, 90), 0.35)
    c.disk(0.85, 0.15, 0.085, _rgb(252, 205, 60))
    c.disk(0.89, 0.12, 0.06, _rgb(200, 150, 40))
    hills = c.v > 0.74 + 0.04 * np.sin(2 * math.pi * (c.u * 1.2 + 0.1))
    c.paint(hills, _rgb(28, 48, 95))
    for hx in (0.38, 0.5, 0.6, 0.72, 0.83, 0.92):
        c.rect(hx, 0.8, hx + 0.06, 0.9, _rgb(50, 60, 95))
        c.rect(hx + 0.02, 0.83, hx + 0.035, 0.86, _rgb(245, 215, 80))
    c.polygon([(0.12, 1.0), (0.06, 0.7), (0.12, 0.42), (0.18, 0.08), (0.24, 0.45), (0.29, 0.75), (0.26, 1.0)],
              _rgb(18, 34, 24))
    c.polyline([(0.15, 0.95), (0.14, 0.6), (0.18, 0.25)], 0.02, _rgb(45, 70, 40))


def _paint_almond_blossoms(c: _Canvas) -> None:
    c.vgradient(_rgb(88, 170, 190), _rgb(140, 200, 205))
    stroke = np.sin(2 * math.pi * (9 * c.v + 2 * c.u)) > 0.8
    c.paint(stroke, _rgb(120, 195, 210), 0.5)
    brown = _rgb(88, 58, 38)
    c.polyline([(0.0, 0.96), (0.34, 0.62), (0.7, 0.46), (1.0, 0.3)], 0.045, brown)
    c.polyline([(0.34, 0.62), (0.43, 0.3), (0.62, 0.05)], 0.032, brown)
    c.polyline([(0.7, 0.46), (0.86, 0.72)], 0.028, brown)
    c.polyline([(0.43, 0.3), (0.2, 0.16)], 0.024, brown)
    flowers = ((0.2, 0.16), (0.3, 0.22), (0.47, 0.2), (0.58, 0.08), (0.4, 0.44), (0.18, 0.78), (0.5, 0.56),
               (0.62, 0.44), (0.8, 0.38), (0.95, 0.3), (0.82, 0.62), (0.88, 0.76), (0.28, 0.7), (0.66, 0.2))
    for fx, fy in flowers:
        for k in range(5):
            a = k * 2 * math.pi / 5
            c.disk(fx + 0.028 * math.cos(a), fy + 0.028 * math.sin(a), 0.024, _rgb(250, 250, 244))
        c.disk(fx, fy, 0.014, _rgb(225, 130, 150))


def _paint_the_scream(c: _Canvas) -> None:
    c.vgradient(_rgb(240, 120, 45), _rgb(200, 70, 40))
    bands = np.sin(2 * math.pi * (6 * c.v + 0.1 * np.sin(2 * math.pi * 2 * c.u)))
    c.paint((bands > 0.3) & (c.v < 0.5), _rgb(245, 195, 80), 0.85)
    c.paint((bands < -0.5) & (c.v < 0.5), _rgb(190, 50, 40), 0.8)
    fjord = (c.v > 0.42 + 0.05 * np.sin(2 * math.pi * c.u)) & (c.u > 0.3)
    c.paint(fjord, _rgb(40, 62, 115))
    swirl = fjord & (np.sin(2 * math.pi * (5 * c.v + 3 * c.u)) > 0.5)
    c.paint(swirl, _rgb(75, 95, 150), 0.8)
    c.polygon([(0.0, 0.4), (0.35, 0.46), (0.28, 1.0), (0.0, 1.0)], _rgb(105, 92, 50))
    c.polygon([(0.0, 0.55), (1.0, 0.88), (1.0, 1.0), (0.0, 0.72)], _rgb(150, 100, 60))
    c.segment(0.0, 0.56, 1.0, 0.89, 0.02, _rgb(60, 38, 28))
    for k in range(6):
        x = 0.05 + 0.16 * k
        c.segment(x, 0.57 + 0.33 * x, x, 0.66 + 0.33 * x, 0.014, _rgb(60, 38, 28))
    c.polygon([(0.48, 1.0), (0.52, 0.74), (0.6, 0.7), (0.68, 0.74), (0.74, 1.0)], _rgb(38, 36, 48))
    c.ellipse(0.6, 0.6, 0.07, 0.1, _rgb(222, 202, 150))
    for hx in (0.52, 0.68):
        c.ellipse(hx, 0.62, 0.025, 0.06, _rgb(215, 195, 145))
    c.disk(0.575, 0.57, 0.015, _rgb(40, 30, 30))
    c.disk(0.625, 0.57, 0.015, _rgb(40, 30, 30))
    c.ellipse(0.6, 0.65, 0.015, 0.025, _rgb(40, 30, 30))


def _paint_pearl_earring(c: _Canvas) -> None:
    c.vgradient(_rgb(20, 20, 17), _rgb(28, 32, 24))
    c.polygon([(0.22, 1.0), (0.38, 0.8), (0.7, 0.84), (0.86, 1.0)], _rgb(165, 125, 60))
    c.polygon([(0.35, 0.84), (0.5, 0.82), (0.45, 0.9)], _rgb(235, 230, 215))
    c.ellipse(0.52, 0.56, 0.17, 0.22, _rgb(228, 188, 152), angle=-0.15)
    shadow = ((c.u - 0.6) / 0.1) ** 2 + ((c.v - 0.6) / 0.2) ** 2 <= 1.0
    c.paint(shadow & (c.u > 0.6), _rgb(170, 130, 100), 0.7)
    c.ellipse(0.47, 0.33, 0.21, 0.13, _rgb(48, 82, 165), angle=-0.2)
    c.polygon([(0.6, 0.26), (0.74, 0.3), (0.82, 0.62), (0.7, 0.66), (0.64, 0.42)], _rgb(225, 195, 100))
    c.ellipse(0.36, 0.38, 0.06, 0.04, _rgb(225, 195, 100))
    c.disk(0.45, 0.53, 0.022, _rgb(40, 30, 25))
    c.disk(0.58, 0.51, 0.02, _rgb(40, 30, 25))
    c.ellipse(0.53, 0.69, 0.045, 0.022, _rgb(190, 60, 60))
    c.disk(0.35, 0.66, 0.032, _rgb(250, 250, 250))
    c.disk(0.36, 0.675, 0.015, _rgb(170, 170, 175))


def _paint_sunflower_vase(c: _Canvas) -> None:
    c.vgradient(_rgb(222, 205, 120), _rgb(200, 185, 100))
    c.rect(0.0, 0.74, 1.0, 1.0, _rgb(205, 140, 50))
    c.segment(0.0, 0.74, 1.0, 0.74, 0.02, _rgb(150, 95, 35))
    heads = ((0.33, 0.28), (0.55, 0.18), (0.74, 0.36), (0.42, 0.5), (0.63, 0.54), (0.22, 0.56))
    for hx, hy in heads:
        c.segment(hx, hy, 0.5, 0.66, 0.022, _rgb(75, 115, 40))
    c.ellipse(0.5, 0.8, 0.15, 0.14, _rgb(232, 170, 60))
    c.rect(0.36, 0.72, 0.64, 0.76, _rgb(60, 92, 155))
    for hx, hy in heads:
        for k in range(10):
            a = k * math.pi / 5
            c.disk(hx + 0.065 * math.cos(a), hy + 0.065 * math.sin(a), 0.03, _rgb(248, 190, 25))
        c.disk(hx, hy, 0.048, _rgb(115, 72, 28))
        c.disk(hx - 0.01, hy - 0.01, 0.016, _rgb(160, 110, 40))


ARTWORKS: tuple[_Artwork, ...] = (
    # The first two captions of each artwork together hold every word of its description, and
    # every world uses both, so the description prompt is always in the closed vocabulary.
    _Artwork(
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
    _Artwork(
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
    _Artwork(
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
    _Artwork(
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
    _Artwork(
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
_ARTWORK_BY_NAME = {a.name: a for a in ARTWORKS}
#: keyword pair -> (artwork that dominates it, target share of its entries)
_COOCCURRENCE = ((("almond", "blossoming"), "almond_blossoms", 0.5),)
_SPREAD_KEYWORD, _SPREAD_RATE = "sunflower", 0.05  # diverse scenes with the spread keyword
_SINGLE_KEYWORD_RATE = 0.01  # scenes with only "almond" or only "blossoming"
_EXACT_COPY_SHARE = 0.4  # the rest of an artwork's copies are light augmentations


def _light_augment(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
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


# ---------------------------------------------------------------------------------------------
# Captions
# ---------------------------------------------------------------------------------------------


def tokenize(text: str) -> list[str]:
    """The world's word-level tokenization: captions are lowercase words separated by spaces."""
    return text.split()


def caption_contains(text: str, keyword: str) -> bool:
    """True if the words of ``keyword`` occur contiguously in ``text`` (whole words only)."""
    return f" {' '.join(tokenize(keyword))} " in f" {' '.join(tokenize(text))} "


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _fix_articles(text: str) -> str:
    words = tokenize(text)
    for i in range(len(words) - 1):
        if words[i] in ("a", "an"):
            words[i] = _article(words[i + 1])
    return " ".join(words)


def _scene_caption(spec: Mapping[str, Any], template: str, phrase: str | None) -> str:
    text = template.format(
        color=spec["color"],
        shape=spec["shape"],
        position=_POSITION_PHRASES[spec["position"]],
        background=_BACKGROUND_PHRASES[spec["background"]],
        style=spec.get("style") or "",
    )
    if phrase:
        text = f"{text} {phrase}"
    return _fix_articles(text)


# ---------------------------------------------------------------------------------------------
# Planning: what each image is
# ---------------------------------------------------------------------------------------------


def _contrast(color: str, background: str) -> float:
    top, bottom = BACKGROUNDS[background]
    mid = (np.asarray(top) + np.asarray(bottom)) / 2
    return float(np.linalg.norm(np.asarray(COLORS[color]) - mid))


def _valid_backgrounds(color: str) -> list[str]:
    return [b for b in BACKGROUNDS if _contrast(color, b) >= _MIN_CONTRAST and not (color == "blue" and b == "blue sky")]


def _counts(size: int) -> dict[str, int]:
    """How many images of each planted case a world of ``size`` holds."""
    n: dict[str, int] = {}
    for art in ARTWORKS:
        n[f"artwork:{art.name}"] = max(2, round(art.rate * size))
    for keywords, dominant, share in _COOCCURRENCE:
        n["cooccurrence:" + "+".join(keywords)] = round(n[f"artwork:{dominant}"] * (1 - share) / share)
    n["spread"] = max(10, round(_SPREAD_RATE * size))
    n["single:almond"] = n["single:blossoming"] = max(2, round(_SINGLE_KEYWORD_RATE * size))
    n["object"] = round(_OBJECT_RATE * size)
    n["object:with"] = round(_OBJECT_SHARE * n["object"])
    for style in STYLES:
        n[f"style:{style}"] = round(_STYLE_RATE * size)
    planted = sum(v for k, v in n.items() if k != "object:with")
    n["scene:plain"] = size - planted
    return n


def _plan(seed: int, size: int) -> tuple[list[dict[str, Any]], list[tuple[str, str, str]]]:
    """Decide every image of the world (kind, attributes, caption), in file order."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
    n = _counts(size)
    combos = [
        (s, c, p) for s in SHAPES for c in COLORS for p in POSITIONS
    ]
    n_held = 8
    held_idx = sorted(int(i) for i in rng.choice(len(combos), size=n_held, replace=False))
    held = [combos[i] for i in held_idx]
    allowed = [combo for combo in combos if combo not in held]

    def scene_attrs() -> dict[str, Any]:
        shape, color, position = allowed[int(rng.integers(len(allowed)))]
        backgrounds = _valid_backgrounds(color)
        return {"shape": shape, "color": color, "position": position,
                "background": backgrounds[int(rng.integers(len(backgrounds)))]}

    def pick(options: Sequence[str]) -> str:
        return options[int(rng.integers(len(options)))]

    plan: list[dict[str, Any]] = []
    for art in ARTWORKS:
        count = n[f"artwork:{art.name}"]
        n_exact = max(1, math.ceil(_EXACT_COPY_SHARE * count))
        # captions cycle through the artwork's list: the first two always, the rest in a random order
        order = [0, 1] + [2 + int(k) for k in rng.permutation(len(art.captions) - 2)]
        exact = rng.permutation(count) < n_exact
        for j in range(count):
            text = art.captions[order[j % len(order)]]
            plan.append({"kind": "artwork", "artwork": art.name, "exact": bool(exact[j]), "text": text})
    decorated = [("almond blossom", n["cooccurrence:almond+blossoming"]), ("sunflower", n["spread"]),
                 ("almond tree", n["single:almond"]), ("blossoming tree", n["single:blossoming"])]
    for decoration, count in decorated:
        for _ in range(count):
            spec = {"kind": "scene", **scene_attrs(), "decoration": decoration}
            spec["text"] = _scene_caption(spec, pick(_SCENE_TEMPLATES), pick(_DECORATION_PHRASES[decoration]))
            plan.append(spec)
    terse = rng.permutation(n["scene:plain"]) < round(_TERSE_SHARE * n["scene:plain"])
    for j in range(n["scene:plain"]):
        spec = {"kind": "scene", **scene_attrs(), "under_described": bool(terse[j])}
        spec["text"] = _scene_caption(spec, pick(_TERSE_TEMPLATES if terse[j] else _SCENE_TEMPLATES), None)
        plan.append(spec)
    for style in STYLES:
        for _ in range(n[f"style:{style}"]):
            spec = {"kind": "style", **scene_attrs(), "style": style}
            spec["text"] = _scene_caption(spec, pick(_STYLE_TEMPLATES), None)
            plan.append(spec)
    for j in range(n["object"]):
        background = pick(("space", "moon"))
        position = pick(tuple(_ASTRONAUT_X))
        template = pick(_ASTRONAUT_TEMPLATES[background])
        text = template.format(position=_ASTRONAUT_POSITION_PHRASES[position])
        plan.append({"kind": "object", "background": background, "position": position,
                     "has_object": j < n["object:with"], "text": text})
    order = rng.permutation(len(plan))
    return [plan[int(i)] for i in order], held


def _labels(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The per-image labels written to ``labels.jsonl`` (``file_name`` is added by the caller)."""
    return {
        "kind": spec["kind"],
        "shape": spec.get("shape"),
        "color": spec.get("color"),
        "position": spec.get("position"),
        "background": spec.get("background"),
        "style": spec.get("style"),
        "artwork": spec.get("artwork"),
        "has_object": bool(spec.get("has_object", False)),
        "object": OBJECT_NAME if spec.get("has_object") else None,
        "decoration": spec.get("decoration"),
        "exact_copy": bool(spec["exact"]) if spec["kind"] == "artwork" else None,
        "under_described": bool(spec.get("under_described", False)),
    }


def _render(
    spec: Mapping[str, Any], size: int, rng: np.random.Generator, artworks: Mapping[str, np.ndarray]
) -> np.ndarray:
    kind = spec["kind"]
    if kind == "scene":
        img = _render_scene(spec, size, rng)
    elif kind == "style":
        img = _render_style(spec, size, rng)
    elif kind == "object":
        img = _render_astronaut(spec, size, rng)
    else:
        base = artworks[spec["artwork"]]
        img = base if spec["exact"] else _light_augment(base, rng)
    return _to_uint8(img)


def _paint_artwork(art: _Artwork, size: int) -> np.ndarray:
    canvas = _Canvas(size, (0, 0, 0))
    art.draw(canvas)
    return canvas.render()


# ---------------------------------------------------------------------------------------------
# Ground truth, computed from what was written
# ---------------------------------------------------------------------------------------------


def _ground_truth(
    seed: int, size: int, image_size: int, records: Sequence["Record"], labels: Sequence[Mapping[str, Any]],
    held: Sequence[tuple[str, str, str]],
) -> dict[str, Any]:
    texts = [r.text for r in records]
    files = [r.file_name for r in records]
    vocabulary = sorted({w for t in texts for w in tokenize(t)})
    kinds = {k: sum(1 for lab in labels if lab["kind"] == k) for k in KINDS}

    def entries_with(keywords: Sequence[str]) -> list[int]:
        return [i for i, t in enumerate(texts) if all(caption_contains(t, k) for k in keywords)]

    def dominant_cluster(idx: Sequence[int]) -> tuple[str | None, int, int]:
        """Largest artwork cluster among ``idx``; other images are singleton clusters."""
        by_art: dict[str, int] = {}
        for i in idx:
            art = labels[i]["artwork"]
            if art is not None:
                by_art[art] = by_art.get(art, 0) + 1
        n_clusters = len(by_art) + sum(1 for i in idx if labels[i]["artwork"] is None)
        if not by_art:
            return None, min(1, len(idx)), n_clusters
        name = max(sorted(by_art), key=lambda a: by_art[a])
        return name, by_art[name], n_clusters

    # an unrelated training caption: the first plain scene of the world
    scene_example = next(
        texts[i] for i, lab in enumerate(labels) if lab["kind"] == "scene" and lab["decoration"] is None
    )
    duplicates = []
    for art in ARTWORKS:
        idx = [i for i, lab in enumerate(labels) if lab["artwork"] == art.name]
        prompts = {
            "keywords": " ".join(art.keywords),
            "related": texts[idx[0]],
            "unrelated_with_keywords": f"{scene_example} {' '.join(art.keywords)}",
            "long_without_keywords": art.description,
        }
        for kind, prompt in prompts.items():
            missing = sorted(set(tokenize(prompt)) - set(vocabulary))
            if missing or len(tokenize(prompt)) > MAX_CAPTION_WORDS:  # pragma: no cover - a bug in the tables
                raise RuntimeError(f"prompt {kind!r} of {art.name} is not in the closed vocabulary: {missing}")
        duplicates.append({
            "name": art.name,
            "keywords": list(art.keywords),
            "files": [files[i] for i in idx],
            "count": len(idx),
            "exact_copies": sum(1 for i in idx if labels[i]["exact_copy"]),
            "rate": len(idx) / size,
            "target_rate": art.rate,
            "prompts": prompts,
        })

    cooccurrence = []
    for keywords, dominant, target in _COOCCURRENCE:
        idx = entries_with(keywords)
        name, top, n_clusters = dominant_cluster(idx)
        cooccurrence.append({
            "keywords": list(keywords), "dominant": name, "dominant_share": top / max(1, len(idx)),
            "target_share": target, "entries": len(idx), "dominant_entries": top, "clusters": n_clusters,
            "single_keyword_entries": {k: len(entries_with([k])) for k in keywords},
        })

    idx = entries_with([_SPREAD_KEYWORD])
    name, top, n_clusters = dominant_cluster(idx)
    spread = [{"keyword": _SPREAD_KEYWORD, "dominant": name, "dominant_share": top / max(1, len(idx)),
               "entries": len(idx), "dominant_entries": top, "clusters": n_clusters}]

    idx = entries_with([OBJECT_KEYWORD])
    with_object = [files[i] for i in idx if labels[i]["has_object"]]
    objects = [{
        "keyword": OBJECT_KEYWORD, "object": OBJECT_NAME, "files_with_object": with_object,
        "entries": len(idx), "share": len(with_object) / max(1, len(idx)), "box": list(OBJECT_BOX),
        "object_named_in_captions": sum(1 for t in texts if OBJECT_NAME in tokenize(t)),
    }]

    styles = []
    for style in STYLES:
        idx = [i for i, lab in enumerate(labels) if lab["style"] == style]
        styles.append({"name": style, "keywords": [style], "files": [files[i] for i in idx],
                       "rate": len(idx) / size})

    return {
        "format": "sdguard-world",
        "version": WORLD_FORMAT_VERSION,
        "seed": seed,
        "size": size,
        "image_size": image_size,
        "counts": kinds,
        "duplicates": duplicates,
        "cooccurrence": cooccurrence,
        "spread": spread,
        "objects": objects,
        "styles": styles,
        "held_out": [{"shape": s, "color": c, "position": p} for s, c, p in held],
        "under_described": {
            "count": sum(1 for lab in labels if lab["under_described"]),
            "share_of_scenes": sum(1 for lab in labels if lab["under_described"]) / max(1, kinds["scene"]),
            "templates": list(_TERSE_TEMPLATES),
        },
        "vocabulary": vocabulary,
        "max_caption_words": max(len(tokenize(t)) for t in texts),
        "attributes": {
            "shape": list(SHAPES),
            "color": list(COLORS),
            "position": list(POSITIONS),
            "background": list(BACKGROUNDS),
        },
        "kinds": list(KINDS),
        "style_names": list(STYLES),
        "artwork_names": [a.name for a in ARTWORKS],
        "object_backgrounds": ["space", "moon"],
        "object_positions": list(_ASTRONAUT_X),
    }


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


class Record(NamedTuple):
    """One line of ``metadata.jsonl``."""

    file_name: str
    text: str


def _check_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InputError.bad(name, value, "must be an integer")
    return int(value)


def make_world(out: str | Path, seed: int = 0, size: int = 5000, image_size: int = 32) -> dict[str, Any]:
    """Write the synthetic captioned image world to ``out`` and return its ground truth.

    ``out`` receives ``images/00000.png ...`` (RGB, ``image_size`` square), ``metadata.jsonl``
    (``file_name``, ``text``: the Hugging Face imagefolder convention), ``labels.jsonl`` (the
    generator's labels of every image) and ``ground_truth.json`` (the planted cases, see the
    module docstring; Somepalli et al. 2023). The folder is built beside ``out`` and renamed into
    place at the end, so a failure leaves nothing behind. The same arguments give byte-identical
    files.

    Raises:
        InputError (a ValueError): ``out`` exists and is not an empty folder, ``size`` < 500,
            ``image_size`` not 32 or 64, or ``seed`` not a non-negative integer.
    """
    seed = _check_int("seed", seed)
    size = _check_int("size", size)
    image_size = _check_int("image_size", image_size)
    if seed < 0:
        raise InputError.bad("seed", seed, "must be a non-negative integer")
    if size < MIN_SIZE:
        raise InputError.bad("size", size, f"is too small: a world needs at least {MIN_SIZE} images")
    if image_size not in IMAGE_SIZES:
        choices = " or ".join(map(str, IMAGE_SIZES))
        raise InputError.bad("image_size", image_size, f"is not supported: use {choices}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError.bad("out", str(out), "is a file, not a folder")
    if out.is_dir() and any(out.iterdir()):
        raise InputError.bad("out", str(out), "already exists and is not empty; choose a new folder")

    plan, held = _plan(seed, size)
    artworks = {a.name: _paint_artwork(a, image_size) for a in ARTWORKS}
    streams = np.random.SeedSequence([seed, 2]).spawn(len(plan))
    width = max(5, len(str(size - 1)))
    records: list[Record] = []
    labels: list[dict[str, Any]] = []
    with output_dir(out, argument="out") as staging:
        (staging / "images").mkdir()
        for i, spec in enumerate(plan):
            file_name = f"images/{i:0{width}d}.png"
            img = _render(spec, image_size, np.random.default_rng(streams[i]), artworks)
            Image.fromarray(img, "RGB").save(staging / file_name, format="PNG")
            records.append(Record(file_name, spec["text"]))
            labels.append({"file_name": file_name, **_labels(spec)})
        too_long = [r.text for r in records if len(tokenize(r.text)) > MAX_CAPTION_WORDS]
        if too_long:  # pragma: no cover - a bug in the caption tables
            raise RuntimeError(f"captions longer than {MAX_CAPTION_WORDS} words: {too_long[:3]}")
        _write_lines(staging / "metadata.jsonl", ({"file_name": r.file_name, "text": r.text} for r in records))
        _write_lines(staging / "labels.jsonl", labels)
        # the ground truth is computed from the files as written
        written = [Record(d["file_name"], d["text"]) for d in _read_lines(staging / "metadata.jsonl")]
        truth = _ground_truth(seed, size, image_size, written, _read_lines(staging / "labels.jsonl"), held)
        (staging / "ground_truth.json").write_text(json.dumps(truth, indent=2) + "\n", encoding="utf-8")
    return truth


def _write_lines(path: Path, rows: Iterable[Mapping[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")


def _read_lines(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


@dataclass
class World:
    """A world written by :func:`make_world`, read back by :func:`load_world`.

    ``records`` and ``labels`` are in file order (index ``i`` of one is index ``i`` of the
    other); ``ground_truth`` is ``ground_truth.json``.
    """

    root: Path
    records: list[Record]
    labels: list[dict[str, Any]]
    ground_truth: dict[str, Any]
    _cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def image_size(self) -> int:
        return int(self.ground_truth["image_size"])

    @property
    def texts(self) -> list[str]:
        return [r.text for r in self.records]

    @property
    def file_names(self) -> list[str]:
        return [r.file_name for r in self.records]

    def index_of(self, file_name: str) -> int:
        """Position of ``file_name`` (as written in metadata.jsonl) in the world."""
        table = self._cache.get("index")
        if table is None:
            table = self._cache["index"] = {r.file_name: i for i, r in enumerate(self.records)}
        return table[file_name]

    def where(self, **conditions: Any) -> np.ndarray:
        """Indices of the images whose labels equal all ``conditions``, e.g. ``where(kind="scene")``."""
        return np.array(
            [i for i, lab in enumerate(self.labels) if all(lab.get(k) == v for k, v in conditions.items())], np.int64
        )

    def artwork_of(self, index: int) -> str | None:
        """Name of the artwork image ``index`` is a copy of, or None."""
        return self.labels[int(index)]["artwork"]

    def load_images(self, indices: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """Images as float32 ``N x H x W x 3`` in [0, 1]; all of them when ``indices`` is None.

        The whole world is decoded once and kept (5000 32x32 images are 60 MB).
        """
        images = self._cache.get("images")
        if images is None:
            s = self.image_size
            images = np.empty((len(self), s, s, 3), np.float32)
            for i, r in enumerate(self.records):
                with Image.open(self.root / r.file_name) as im:
                    images[i] = np.asarray(im.convert("RGB"), np.float32) / 255.0
            self._cache["images"] = images
        if indices is None:
            return images
        return images[np.asarray(indices, np.int64)]


def load_world(root: str | Path) -> World:
    """Read a world written by :func:`make_world`.

    Raises:
        InputError (a ValueError): ``root`` is not a world folder.
    """
    root = Path(root)
    needed = ("metadata.jsonl", "labels.jsonl", "ground_truth.json")
    if not root.is_dir():
        raise InputError.bad("world", str(root), "is not a folder")
    missing = [n for n in needed if not (root / n).is_file()]
    if missing:
        raise InputError.bad(
            "world", str(root), f"is not a world folder ({', '.join(missing)} missing); make one with make_world"
        )
    records = [Record(d["file_name"], d["text"]) for d in _read_lines(root / "metadata.jsonl")]
    labels = _read_lines(root / "labels.jsonl")
    truth = json.loads((root / "ground_truth.json").read_text(encoding="utf-8"))
    if len(records) != len(labels) or any(r.file_name != lab["file_name"] for r, lab in zip(records, labels)):
        raise InputError.bad("world", str(root), "is inconsistent: metadata.jsonl and labels.jsonl do not match")
    return World(root=root, records=records, labels=labels, ground_truth=truth)
