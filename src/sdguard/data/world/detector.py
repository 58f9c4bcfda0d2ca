"""The detector of the planted object: the flag that astronaut images show although no caption names it."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from ...core.errors import InputError
from .api import World
from .palette import OBJECT_BOX
from .probing import (
    WORK_SIZE,
    as_images,
    check_fitted,
    classifier,
    fit_single_thread,
    training_set,
    world_indices,
)

__all__ = ["ObjectDetector"]


def _box_slices(box: Sequence[float], size: int) -> tuple[slice, slice]:
    x0, y0, x1, y1 = box
    return (slice(int(math.floor(y0 * size)), int(math.ceil(y1 * size))),
            slice(int(math.floor(x0 * size)), int(math.ceil(x1 * size))))


class ObjectDetector:
    """Is the planted object (the flag of the astronaut images) in an image? A calibrated score.

    The object always sits at the same place (``ground_truth["objects"][0]["box"]``), so the
    detector is a logistic regression on the pixels of that region and their correlation with
    the mean object template, calibrated on the world's astronaut images with and without the
    object and on a sample of its other images, clean and degraded.

    Args:
        negatives: how many images of other kinds to add as negatives (None: all of them; with
            300 and C = 0.1, generations of "a red square on the left over a white background"
            of builtin:tiny, red and white where the flag's stripes are, read as the flag).
        C, copies, blur, noise, random_state: as in :class:`StyleClassifier`.
    """

    def __init__(self, C: float = 1.0, copies: int = 3, blur: float = 1.5, noise: float = 0.04,
                 negatives: int | None = None, random_state: int = 0):
        self.C = C
        self.copies = copies
        self.blur = blur
        self.noise = noise
        self.negatives = negatives
        self.random_state = random_state

    def _features(self, x: np.ndarray) -> np.ndarray:
        rows, cols = self.slices_
        region = x[:, rows, cols].reshape(len(x), -1)
        centred = region - region.mean(axis=1, keepdims=True)
        norm = np.linalg.norm(centred, axis=1) + 1e-6
        corr = centred @ self.template_ / norm
        dist = np.linalg.norm(region - self.mean_object_, axis=1)
        return np.concatenate([region, corr[:, None], dist[:, None]], axis=1)

    def fit(self, world: World, indices: Sequence[int] | np.ndarray | None = None) -> "ObjectDetector":
        """Fit on the world's object images (those among ``indices`` if given)."""
        rng = np.random.default_rng(self.random_state)
        idx = world_indices(world, indices)
        kinds = np.array([world.labels[i]["kind"] for i in idx], dtype=object)
        has = np.array([bool(world.labels[i]["has_object"]) for i in idx])
        positives = idx[has]
        if len(positives) == 0:
            raise InputError.bad("--dataset", str(world.root), "holds no images with the object to fit the detector on")
        others = idx[(kinds != "object")]
        if self.negatives is not None:
            others = np.sort(rng.choice(others, min(self.negatives, len(others)), replace=False))
        chosen = np.concatenate([idx[kinds == "object"], others])
        y = np.array([bool(world.labels[i]["has_object"]) for i in chosen])
        box = world.ground_truth.get("objects", [{}])[0].get("box", list(OBJECT_BOX))
        self.box_ = tuple(float(v) for v in box)
        self.slices_ = _box_slices(self.box_, WORK_SIZE)
        clean = as_images(world.load_images(chosen))
        rows, cols = self.slices_
        region = clean[:, rows, cols].reshape(len(clean), -1)
        self.mean_object_ = region[y].mean(axis=0)
        template = self.mean_object_ - region[~y].mean(axis=0)
        template = template - template.mean()
        self.template_ = template / (np.linalg.norm(template) + 1e-6)
        x, y = training_set(clean, y, self.copies, rng, self.blur, self.noise)
        self.model_ = fit_single_thread(classifier(self.C, self.random_state), self._features(x), y)
        return self

    def score(self, images: Any) -> np.ndarray:
        """Probability in [0, 1] that each image shows the object."""
        check_fitted(self, "model_")
        proba = self.model_.predict_proba(self._features(as_images(images)))
        return proba[:, list(self.model_.classes_).index(True)]

    def detect(self, images: Any, threshold: float = 0.5) -> np.ndarray:
        """Boolean array: the object's score is at least ``threshold``."""
        return self.score(images) >= threshold
