"""A captioned image world written by a generator other than ``make-world`` (test helper).

Simple shapes on flat backgrounds, placed, sized and coloured at random (look-alikes, never
copies), captioned in a template ``make-world`` never uses; one textured "artwork" duplicated many
times with small jitter (brightness, noise, a 1-pixel shift half the time), a second one fewer
times, and a group of near-identical plain scenes (one blue square on white, redrawn with noise).
Written as an imagefolder (``images/*.png`` beside ``metadata.jsonl`` with ``file_name`` and
``text``), the layout :class:`sdguard.data.datasets.folder.ImageFolder` reads.

``write_other_world(root, n=300, seed=0)`` returns what it planted; ``draw_artwork``, ``jitter``
and ``draw_shape`` make more images of the same kinds (stand-ins for a model's generations).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

SIZE = 32
COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 70, 220), "yellow": (235, 210, 40),
           "purple": (140, 50, 170), "orange": (240, 130, 30)}
BACKGROUNDS = {"white": (245, 245, 245), "black": (15, 15, 15), "gray": (128, 128, 128), "beige": (225, 210, 180)}
SHAPES = ("circle", "square", "ring", "triangle")
ARTWORKS = {"lighthouse": ("the crimson lighthouse by aldora", 0.15), "garden": ("the moss garden by oyelaran", 0.04)}
PLAIN = ("a blue square on a white background, plain", 0.08)  # near-identical plain scenes


def draw_shape(shape: str, colour: str, background: str, cx: float, cy: float, r: float, size: int = SIZE,
               noise: float = 2.0, rng: np.random.Generator | None = None) -> np.ndarray:
    """One shape on a flat background (antialiased by 4x supersampling), uint8 RGB."""
    s = 4 * size
    yy, xx = (np.mgrid[:s, :s] + 0.5) / 4
    dx, dy = xx - cx, yy - cy
    if shape == "circle":
        mask = dx ** 2 + dy ** 2 <= r ** 2
    elif shape == "ring":
        d = np.sqrt(dx ** 2 + dy ** 2)
        mask = (d <= r) & (d >= 0.6 * r)
    elif shape == "square":
        mask = (np.abs(dx) <= r * 0.8) & (np.abs(dy) <= r * 0.8)
    else:
        mask = (dy <= r * 0.8) & (dy >= -r * 0.8) & (np.abs(dx) <= (dy + r * 0.8) * 0.6)
    img = np.where(mask[..., None], np.array(COLOURS[colour], float), np.array(BACKGROUNDS[background], float))
    img = img.reshape(size, 4, size, 4, 3).mean((1, 3))
    if rng is not None and noise:
        img = img + rng.normal(0, noise, img.shape)
    return np.clip(img, 0, 255).round().astype(np.uint8)


def draw_artwork(name: str, size: int = SIZE) -> np.ndarray:
    """The original of an artwork: a textured picture (fixed by its name), float RGB in [0, 255]."""
    rng = np.random.default_rng(sum(map(ord, name)))
    yy, xx = np.mgrid[:size, :size] / size
    base = np.stack([120 + 100 * yy, 60 + 80 * np.sin(6 * xx + 3 * yy), 160 - 120 * yy], -1)
    blocks = rng.uniform(-60, 60, (size // 4, size // 4, 3)).repeat(4, 0).repeat(4, 1)
    img = base + blocks
    if name == "lighthouse":
        img[size // 4:, size // 2 - 3:size // 2 + 3] = (200, 30, 30)  # the tower
        img[size // 4 - 3:size // 4, size // 2 - 4:size // 2 + 4] = (250, 240, 120)  # its light
    return np.clip(img, 0, 255)


def jitter(original: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A near-duplicate: a 1-pixel shift along one axis half the time, brightness +-5%, noise."""
    img = original
    if rng.uniform() < 0.5:
        axis, step = int(rng.integers(2)), int(rng.choice([-1, 1]))
        img = np.roll(img, step, axis=axis)
    img = img * rng.uniform(0.95, 1.05) + rng.normal(0, 3, img.shape)
    return np.clip(img, 0, 255).round().astype(np.uint8)


def plain_scene(rng: np.random.Generator) -> np.ndarray:
    """One of the near-identical plain scenes (the same blue square, redrawn with noise)."""
    return draw_shape("square", "blue", "white", 16 + rng.normal(0, 0.2), 16 + rng.normal(0, 0.2), 7, rng=rng)


def random_scene(rng: np.random.Generator) -> tuple[np.ndarray, str]:
    shape, colour = str(rng.choice(SHAPES)), str(rng.choice(list(COLOURS)))
    background = str(rng.choice([b for b in BACKGROUNDS]))
    cx, cy, r = rng.uniform(7, 25), rng.uniform(7, 25), rng.uniform(3.5, 7)
    where = "left" if cx < 13 else "right" if cx > 19 else "middle"
    text = f"{colour} {shape} toward the {where}, {background} backdrop"
    return draw_shape(shape, colour, background, cx, cy, r, rng=rng), text


def write_other_world(root: str | Path, n: int = 300, seed: int = 0) -> dict:
    """Write the world (``n`` images) into the new folder ``root``; returns what was planted:
    ``{"root", "n", "image_size", "artworks": {name: {"caption", "files"}}, "plain": {...}}``."""
    root = Path(root)
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(seed)
    kinds = [("artwork", a) for a, (_, share) in ARTWORKS.items() for _ in range(round(share * n))]
    kinds += [("plain", None)] * round(PLAIN[1] * n)
    kinds += [("scene", None)] * (n - len(kinds))
    order = rng.permutation(len(kinds))
    planted = {"root": str(root), "n": n, "image_size": SIZE,
               "artworks": {a: {"caption": c, "files": []} for a, (c, _) in ARTWORKS.items()},
               "plain": {"caption": PLAIN[0], "files": []}}
    originals = {a: draw_artwork(a) for a in ARTWORKS}
    lines = []
    for i, j in enumerate(order):
        kind, name = kinds[j]
        file = f"images/{i:05d}.png"
        if kind == "artwork":
            img, text = jitter(originals[name], rng), ARTWORKS[name][0]
            planted["artworks"][name]["files"].append(file)
        elif kind == "plain":
            img, text = plain_scene(rng), PLAIN[0]
            planted["plain"]["files"].append(file)
        else:
            img, text = random_scene(rng)
        _save_png(root / file, img)
        lines.append(json.dumps({"file_name": file, "text": text}))
    (root / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return planted


def _save_png(path: Path, img: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(img).save(path)


def recoloured_world(root: str | Path, n: int = 60, seed: int = 9) -> Path:
    """A world written by :func:`write_other_world` with another seed and another palette (red and
    blue swapped, darker): records from another distribution (a shifted membership split)."""
    from PIL import Image

    root = Path(root)
    write_other_world(root, n=n, seed=seed)
    for path in (root / "images").glob("*.png"):
        img = np.asarray(Image.open(path).convert("RGB")).astype(np.float32)
        Image.fromarray((img[..., ::-1] * 0.6).round().astype(np.uint8)).save(path)
    return root
