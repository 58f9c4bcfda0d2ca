"""Planning the world: which image is what (kind, attributes, caption), in file order, and its labels."""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from .artworks import ARTWORKS, COOCCURRENCE
from .captions import (
    ASTRONAUT_TEMPLATES,
    DECORATION_PHRASES,
    SCENE_TEMPLATES,
    STYLE_TEMPLATES,
    TERSE_TEMPLATES,
    astronaut_caption,
    scene_caption,
)
from .palette import (
    ASTRONAUT_X,
    BACKGROUNDS,
    COLORS,
    OBJECT_NAME,
    POSITIONS,
    SHAPES,
    STYLES,
)

__all__ = ["plan_world", "image_labels"]

_MIN_CONTRAST = 0.45  # RGB distance in [0, 1] units between a shape colour and its background
_STYLE_RATE = 0.06
_TERSE_SHARE = 0.5  # share of the plain scenes whose caption is under-described
_OBJECT_RATE = 0.07  # share of the world that is astronaut images
_OBJECT_SHARE = 0.28  # share of astronaut images that show the flag
_SPREAD_RATE = 0.05  # diverse scenes with the spread keyword
_SINGLE_KEYWORD_RATE = 0.01  # scenes with only "almond" or only "blossoming"
_EXACT_COPY_SHARE = 0.4  # the rest of an artwork's copies are light augmentations


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
    for keywords, dominant, share in COOCCURRENCE:
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


def plan_world(seed: int, size: int) -> tuple[list[dict[str, Any]], list[tuple[str, str, str]]]:
    """Decide every image of the world (kind, attributes, caption), in file order; also return the
    held-out (shape, colour, position) combinations that no scene shows."""
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
            spec["text"] = scene_caption(spec, pick(SCENE_TEMPLATES), pick(DECORATION_PHRASES[decoration]))
            plan.append(spec)
    terse = rng.permutation(n["scene:plain"]) < round(_TERSE_SHARE * n["scene:plain"])
    for j in range(n["scene:plain"]):
        spec = {"kind": "scene", **scene_attrs(), "under_described": bool(terse[j])}
        spec["text"] = scene_caption(spec, pick(TERSE_TEMPLATES if terse[j] else SCENE_TEMPLATES), None)
        plan.append(spec)
    for style in STYLES:
        for _ in range(n[f"style:{style}"]):
            spec = {"kind": "style", **scene_attrs(), "style": style}
            spec["text"] = scene_caption(spec, pick(STYLE_TEMPLATES), None)
            plan.append(spec)
    for j in range(n["object"]):
        background = pick(("space", "moon"))
        position = pick(tuple(ASTRONAUT_X))
        template = pick(ASTRONAUT_TEMPLATES[background])
        text = astronaut_caption(template, position)
        plan.append({"kind": "object", "background": background, "position": position,
                     "has_object": j < n["object:with"], "text": text})
    order = rng.permutation(len(plan))
    return [plan[int(i)] for i in order], held


def image_labels(spec: Mapping[str, Any]) -> dict[str, Any]:
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
