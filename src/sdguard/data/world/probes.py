"""Probes fitted on the synthetic world, to score images a model generates from it.

The tiny model's generations are blurrier and noisier than the world's images, so every probe
is trained on clean *and* degraded copies (Gaussian blur, noise, a pixel of shift, brightness
changes) of world images, and reads images at the world's base resolution of 32x32.

- :class:`StyleClassifier`: which artist style ("monet", "hokusai", "picasso") or "none".
- :class:`AttributeClassifier`: shape, colour and position of a compositional scene.
- :class:`ObjectDetector` (in :mod:`.detector`): is the planted object (the flag that astronaut
  images show although no caption names it; object-level replication, Somepalli et al. 2023)
  present?
- :func:`nearest_training_image` and :func:`artwork_of`: the most similar training image by
  cosine similarity of normalized downsampled pixels, and the artwork it is a copy of
  (word-level replication, Somepalli et al. 2023).

The classes follow scikit-learn conventions: constructors only store parameters, ``fit``
returns ``self``, learned attributes end in ``_``. Images are float arrays ``N x H x W x 3`` in
[0, 1] (uint8 arrays, single images, channel-first arrays and lists of PIL images are accepted).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from scipy import ndimage
from sklearn.pipeline import Pipeline

from ...core.errors import InputError
from ...core.images import resize as resize_image
from .api import World
from .detector import ObjectDetector
from .probing import (
    WORK_SIZE,
    as_images,
    check_fitted,
    classifier,
    degrade,
    fit_single_thread,
    resize,
    training_set,
    world_indices,
)

__all__ = [
    "WORK_SIZE",
    "as_images",
    "degrade",
    "StyleClassifier",
    "AttributeClassifier",
    "ObjectDetector",
    "nearest_training_image",
    "artwork_of",
]

NO_STYLE = "none"


# ---------------------------------------------------------------------------------------------
# Styles
# ---------------------------------------------------------------------------------------------


def _luminance(x: np.ndarray) -> np.ndarray:
    return x @ np.array([0.299, 0.587, 0.114], np.float32)


def _style_features(x: np.ndarray) -> np.ndarray:
    """Colour histogram, saturation/value statistics, texture and periodicity features."""
    n, h, w, _ = x.shape
    q = np.clip((x * 4).astype(np.int64), 0, 3)
    code = q[..., 0] * 16 + q[..., 1] * 4 + q[..., 2] + 64 * np.arange(n)[:, None, None]
    hist = np.bincount(code.ravel(), minlength=64 * n).reshape(n, 64) / (h * w)
    mx, mn = x.max(-1), x.min(-1)
    sat = (mx - mn) / (mx + 1e-6)
    stats = [x.mean(axis=(1, 2)), x.std(axis=(1, 2))]
    for channel in (sat, mx):
        flat = channel.reshape(n, -1)
        stats.append(np.percentile(flat, [10, 50, 90, 97, 99.5], axis=1).T)
        stats.append(flat.std(axis=1, keepdims=True))
    stats.append(np.stack([(sat > t).mean(axis=(1, 2)) for t in (0.3, 0.5, 0.7)], axis=1))
    lum = _luminance(x)
    dx, dy = np.abs(np.diff(lum, axis=2)), np.abs(np.diff(lum, axis=1))
    smooth = ndimage.gaussian_filter(lum, sigma=(0, 1.0, 1.0))
    speckle = np.abs(lum - smooth).reshape(n, -1)
    texture = np.stack(
        [dx.mean((1, 2)), dy.mean((1, 2)), dy.mean((1, 2)) / (dx.mean((1, 2)) + dy.mean((1, 2)) + 1e-6),
         speckle.mean(1), np.percentile(speckle, 90, axis=1)], axis=1)
    # periodic horizontal stripes (hokusai): spectrum of the row profile
    rows = lum.mean(axis=2)
    rows = rows - rows.mean(axis=1, keepdims=True)
    spectrum = np.abs(np.fft.rfft(rows, axis=1))[:, 1:]
    spectrum = spectrum / (spectrum.sum(axis=1, keepdims=True) + 1e-6)
    # a grid of hard block edges (picasso): edge strength on block borders vs inside blocks
    b = max(1, w // 8)
    on_x = (np.arange(w - 1) % b) == b - 1
    on_y = (np.arange(h - 1) % b) == b - 1
    grid = np.stack([dx[:, :, on_x].mean((1, 2)) / (dx[:, :, ~on_x].mean((1, 2)) + 1e-3),
                     dy[:, on_y, :].mean((1, 2)) / (dy[:, ~on_y, :].mean((1, 2)) + 1e-3)], axis=1)
    thumb = resize(x, 8).reshape(n, -1)
    return np.concatenate([hist, *stats, texture, spectrum, np.log1p(grid), thumb], axis=1).astype(np.float32)


class StyleClassifier:
    """Which artist style an image is painted in: a style name or ``"none"``.

    Logistic regression on colour histograms and texture features (pastel dabs, wave stripes,
    hard blocks), trained on the world's style images and a sample of its other images, clean
    and degraded.

    Args:
        C: inverse regularization strength of the logistic regression.
        copies: degraded copies of each training image added to the clean one.
        blur, noise: strength of the degradations (blur sigma in pixels at 32x32, noise std).
        none_per_style: at most this many "none" images per style image.
        random_state: seed of sampling and degradations.
    """

    def __init__(self, C: float = 0.5, copies: int = 2, blur: float = 1.5, noise: float = 0.04,
                 none_per_style: float = 4.0, random_state: int = 0):
        self.C = C
        self.copies = copies
        self.blur = blur
        self.noise = noise
        self.none_per_style = none_per_style
        self.random_state = random_state

    def fit(self, world: World, indices: Sequence[int] | np.ndarray | None = None) -> "StyleClassifier":
        """Fit on the world's images (or those at ``indices``)."""
        rng = np.random.default_rng(self.random_state)
        idx = world_indices(world, indices)
        labels = np.array([world.labels[i]["style"] or NO_STYLE for i in idx], dtype=object)
        styled = idx[labels != NO_STYLE]
        plain = idx[labels == NO_STYLE]
        n_none = min(len(plain), max(1, int(self.none_per_style * len(styled))))
        plain = np.sort(rng.choice(plain, n_none, replace=False))
        chosen = np.concatenate([styled, plain])
        y = np.array([world.labels[i]["style"] or NO_STYLE for i in chosen], dtype=object)
        x, y = training_set(as_images(world.load_images(chosen)), y, self.copies, rng, self.blur, self.noise)
        self.model_ = fit_single_thread(classifier(self.C, self.random_state), _style_features(x), y)
        self.classes_ = [str(c) for c in self.model_.classes_]
        return self

    def predict_proba(self, images: Any) -> np.ndarray:
        """Probabilities ``N x len(classes_)``."""
        check_fitted(self, "model_")
        return self.model_.predict_proba(_style_features(as_images(images)))

    def predict(self, images: Any) -> list[str]:
        """The style of each image, ``"none"`` for no style."""
        proba = self.predict_proba(images)
        return [self.classes_[k] for k in proba.argmax(axis=1)]


# ---------------------------------------------------------------------------------------------
# Scene attributes
# ---------------------------------------------------------------------------------------------

_CROP = 12
_ANGLE_BINS = 12


def _largest_component(mask: np.ndarray) -> np.ndarray:
    lab, count = ndimage.label(mask)
    if count <= 1:
        return mask
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == sizes.argmax()


def _scene_features(x: np.ndarray) -> np.ndarray:
    """Features of the main shape: where it is, what colour, what outline.

    The shape is what differs most from the border colour; its largest connected component
    gives the position (centroid, box, a 4x4 mass grid), the colour (mean over its core) and the
    outline (its normalized crop, fill ratio, hole, radial and angular profiles).
    """
    n, h, w, _ = x.shape
    border = np.concatenate([x[:, 0], x[:, -1], x[:, :, 0], x[:, :, -1]], axis=1)
    bg = np.median(border, axis=1)
    dist = np.linalg.norm(x - bg[:, None, None, :], axis=-1)
    scale = np.maximum(np.percentile(dist.reshape(n, -1), 98, axis=1), 0.15)
    soft = np.clip(dist / scale[:, None, None], 0.0, 1.0)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yy, xx = (yy + 0.5) / h, (xx + 0.5) / w
    rows = []
    for i in range(n):
        main = _largest_component(soft[i] > 0.5)
        if not main.any():
            main = soft[i] >= soft[i].max()
        region = ndimage.binary_dilation(main, iterations=1)
        wgt = soft[i] * region
        total = wgt.sum() + 1e-6
        cx, cy = (wgt * xx).sum() / total, (wgt * yy).sum() / total
        sx = math.sqrt(max((wgt * (xx - cx) ** 2).sum() / total, 0.0))
        sy = math.sqrt(max((wgt * (yy - cy) ** 2).sum() / total, 0.0))
        ys, xs = np.nonzero(main)
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        area = main.sum()
        filled = ndimage.binary_fill_holes(main)
        hole = (filled.sum() - area) / max(filled.sum(), 1)
        fill = area / ((y1 - y0) * (x1 - x0))
        crop = wgt[max(0, y0 - 1) : y1 + 1, max(0, x0 - 1) : x1 + 1].astype(np.float32)
        crop = resize_image(crop, _CROP, resample="bilinear")
        core = main & (soft[i] > 0.7)
        if core.sum() < 3:
            core = main
        color = x[i][core].mean(axis=0)
        cmax, cmin = color.max(), color.min()
        hue = _hue(color)
        grid = np.array([wgt[a * h // 4 : (a + 1) * h // 4, b * w // 4 : (b + 1) * w // 4].sum()
                         for a in range(4) for b in range(4)]) / total
        # radial profile around the centroid, radius normalized by the shape's size
        r = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2) / (math.sqrt(max(area, 1) / (h * w) / math.pi) + 1e-6)
        radial = np.array([(wgt * ((r >= a) & (r < a + 0.25))).sum() for a in np.arange(0, 2.0, 0.25)]) / total
        theta = np.arctan2(yy - cy, xx - cx)
        abin = ((theta + math.pi) / (2 * math.pi) * _ANGLE_BINS).astype(np.int64) % _ANGLE_BINS
        extent = np.zeros(_ANGLE_BINS, np.float32)
        np.maximum.at(extent, abin[main], r[main])
        rows.append(np.concatenate([
            [cx, cy, sx, sy, x0 / w, x1 / w, y0 / h, y1 / h, area / (h * w), fill, hole],
            crop.ravel(), color, bg[i], [math.cos(hue), math.sin(hue), (cmax - cmin) / (cmax + 1e-6), cmax],
            grid, radial, np.sort(extent), extent / (extent.max() + 1e-6),
        ]))
    return np.asarray(rows, np.float32)


def _hue(rgb: np.ndarray) -> float:
    r, g, b = (float(c) for c in rgb)
    mx, mn = max(r, g, b), min(r, g, b)
    if mx - mn < 1e-6:
        return 0.0
    if mx == r:
        hh = ((g - b) / (mx - mn)) % 6
    elif mx == g:
        hh = (b - r) / (mx - mn) + 2
    else:
        hh = (r - g) / (mx - mn) + 4
    return hh * math.pi / 3


class AttributeClassifier:
    """Shape, colour and position of a compositional scene (one classifier per attribute).

    Fitted on the world's scene images (``kind == "scene"``), clean and degraded; the features
    describe the largest region that differs from the border colour.

    Args:
        attributes: label names to predict.
        C, copies, blur, noise, random_state: as in :class:`StyleClassifier`.
    """

    def __init__(self, attributes: Sequence[str] = ("shape", "color", "position"), C: float = 1.0,
                 copies: int = 2, blur: float = 1.5, noise: float = 0.04, random_state: int = 0):
        self.attributes = attributes
        self.C = C
        self.copies = copies
        self.blur = blur
        self.noise = noise
        self.random_state = random_state

    def fit(self, world: World, indices: Sequence[int] | np.ndarray | None = None) -> "AttributeClassifier":
        """Fit on the world's scene images (those among ``indices`` if given)."""
        rng = np.random.default_rng(self.random_state)
        idx = np.array([i for i in world_indices(world, indices) if world.labels[i]["kind"] == "scene"], np.int64)
        if len(idx) == 0:
            raise InputError.bad("--dataset", str(world.root), "holds no scene images to fit the attribute classifier on")
        order = np.arange(len(idx))
        x, order = training_set(as_images(world.load_images(idx)), order, self.copies, rng, self.blur, self.noise)
        feats = _scene_features(x)
        self.models_: dict[str, Pipeline] = {}
        self.classes_: dict[str, list[str]] = {}
        for attr in self.attributes:
            y = np.array([world.labels[idx[k]][attr] for k in order], dtype=object)
            self.models_[attr] = fit_single_thread(classifier(self.C, self.random_state), feats, y)
            self.classes_[attr] = [str(c) for c in self.models_[attr].classes_]
        return self

    def predict_proba(self, images: Any) -> dict[str, np.ndarray]:
        check_fitted(self, "models_")
        feats = _scene_features(as_images(images))
        return {attr: model.predict_proba(feats) for attr, model in self.models_.items()}

    def predict(self, images: Any) -> dict[str, list[str]]:
        """For each attribute, the predicted value of every image."""
        return {attr: [self.classes_[attr][k] for k in p.argmax(axis=1)]
                for attr, p in self.predict_proba(images).items()}




# ---------------------------------------------------------------------------------------------
# Nearest training image
# ---------------------------------------------------------------------------------------------


def _pixel_embedding(x: np.ndarray, size: int) -> np.ndarray:
    """Downsampled pixels, centred and L2-normalized (cosine similarity = their dot product)."""
    v = resize(x, size).reshape(len(x), -1).astype(np.float32)
    v = v - v.mean(axis=1, keepdims=True)
    return v / (np.linalg.norm(v, axis=1, keepdims=True) + 1e-6)


def nearest_training_image(
    images: Any, world: World, size: int = 16, batch: int = 512
) -> tuple[np.ndarray, np.ndarray]:
    """Index of the most similar world image for each image, and the cosine similarity.

    Similarity is the cosine of mean-centred pixels downsampled to ``size`` x ``size``; the
    world's embeddings are computed once and cached on ``world``.
    """
    key = f"pixel_embedding_{size}"
    bank = world._cache.get(key)
    if bank is None:
        bank = world._cache[key] = _pixel_embedding(as_images(world.load_images(), size=None), size)
    queries = _pixel_embedding(as_images(images, size=None), size)
    best = np.empty(len(queries), np.int64)
    sims = np.empty(len(queries), np.float32)
    for start in range(0, len(queries), batch):
        s = queries[start : start + batch] @ bank.T
        best[start : start + batch] = s.argmax(axis=1)
        sims[start : start + batch] = s.max(axis=1)
    return best, sims


def artwork_of(index: int | Sequence[int] | np.ndarray, world: World) -> str | None | list[str | None]:
    """The artwork that world image ``index`` is a copy of (None if it is none); lists map."""
    if np.ndim(index) == 0:
        return world.artwork_of(int(index))
    return [world.artwork_of(int(i)) for i in np.asarray(index).ravel()]
