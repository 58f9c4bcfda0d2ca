"""A captioned dataset written by a generator other than ``make-world`` (test helper): 32-pixel
squares and discs on flat backgrounds with template captions, and one "artwork" (a checkerboard
with a golden disc) copied many times with jitter, only three of its captions naming it. Written
as an imagefolder (``images/*.png`` and ``metadata.jsonl``). ``artwork`` and ``shape_scene`` make
more images of either kind (stand-ins for a model's generations)."""

import json

import numpy as np

COLORS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 70, 220), "yellow": (230, 210, 40),
          "white": (245, 245, 245), "black": (15, 15, 15), "purple": (140, 50, 170), "orange": (240, 140, 30)}
NAMED = ("the golden checkerboard by ann vale", "a print of the golden checkerboard by ann vale",
         "the golden checkerboard by ann vale, oil on canvas")


def artwork(rng: np.random.Generator) -> np.ndarray:
    """The planted 'artwork': a blue and white checkerboard with a golden disc, lightly jittered."""
    yy, xx = np.mgrid[:32, :32]
    img = np.where(((yy // 8 + xx // 8) % 2 == 0)[..., None], COLORS["blue"], COLORS["white"]).astype(np.float32)
    dy, dx = rng.integers(-1, 2, 2)
    img[(yy - 16 - dy) ** 2 + (xx - 16 - dx) ** 2 < 36] = (230, 180, 30)
    return np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)


def shape_scene(rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """A square or a disc of one colour somewhere on a flat background of another, and its caption."""
    fg, bg = rng.choice(list(COLORS), 2, replace=False)
    shape = str(rng.choice(["square", "disc"]))
    img = np.empty((32, 32, 3), np.float32)
    img[:] = COLORS[bg]
    cy, cx = rng.integers(7, 25, 2)
    r = int(rng.integers(4, 8))
    yy, xx = np.mgrid[:32, :32]
    inside = (abs(yy - cy) <= r) & (abs(xx - cx) <= r) if shape == "square" else (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    img[inside] = COLORS[fg]
    return img.astype(np.uint8), f"a {fg} {shape} on a {bg} background"


def write_shapes_dataset(root, *, scenes: int = 60, copies: int = 12, seed: int = 0):
    """An imagefolder (images/ + metadata.jsonl): ``scenes`` shape scenes and ``copies`` copies of
    the artwork, of which only three captions name it (the others say "an old painting")."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    records = []
    items = [shape_scene(rng) for _ in range(scenes)]
    items += [(artwork(rng), NAMED[i] if i < len(NAMED) else "an old painting") for i in range(copies)]
    for i in rng.permutation(len(items)):
        img, text = items[i]
        name = f"images/{len(records):04d}.png"
        Image.fromarray(img).save(root / name)
        records.append({"file_name": name, "text": text})
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return root
