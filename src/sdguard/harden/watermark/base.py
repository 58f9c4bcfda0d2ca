"""The watermark registry and what every scheme answers to.

A scheme (:class:`Watermark`) embeds ``bits`` payload bits into an image (``uint8`` H x W x 3 RGB)
under a key, and decodes them back as soft scores (positive: 1). Detection is the same for every
scheme: the decoded bits are compared with the bits expected under the key, and the image is
called watermarked when at least :func:`match_threshold` of them agree, the smallest count that
an unwatermarked image (whose decoded bits are fair coin flips, independent of the key) reaches
with probability at most the chosen false-positive rate. That premise is checked, not assumed:
the watermark audit measures the detections on null images (natural photos and generations
without a mark) at the stated rate.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from ...core.errors import InputError
from ...core.registry import Registry

#: watermark schemes by name (``--watermark``); each entry is a :class:`Watermark` subclass
WATERMARKS: Registry = Registry("watermark scheme", argument="--watermark")
WATERMARKS.register("sdguard-spread", "sdguard.harden.watermark.spread:SpreadWatermark",
                    description="sdguard's own periodic spread-spectrum mark (post-hoc, 48 bits)")
for _name, _cls in (("dwtDct", "DwtDct"), ("dwtDctSvd", "DwtDctSvd"), ("rivaGan", "RivaGan")):
    WATERMARKS.register(_name, f"sdguard.harden.watermark.invisible:{_cls}",
                        description=f"invisible-watermark's {_name} (baseline, post-hoc, unkeyed)")
WATERMARKS.register("gaussian-shading", "sdguard.harden.watermark.gaussian_shading:GaussianShading",
                    description="Gaussian Shading (Yang et al. 2024): the key in the initial latents, read by DDIM "
                                "inversion (in-generation)")


def binomial_tail(n: int, k: int) -> float:
    """P(X >= k) for X ~ Binomial(n, 1/2), exactly (log-space sums, no overflow for large n)."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2) for i in range(k, n + 1)]
    top = max(logs)
    return float(min(1.0, math.exp(top) * sum(math.exp(v - top) for v in logs)))


def match_threshold(n: int, fpr: float) -> int:
    """The smallest number of matching bits out of ``n`` whose chance under the null is <= ``fpr``
    (``n + 1`` when even all ``n`` bits are not rare enough)."""
    if not 0 < fpr < 1:
        raise InputError.bad("--fpr", fpr, "is not a false-positive rate in (0, 1)")
    for k in range(n // 2, n + 2):
        if binomial_tail(n, k) <= fpr:
            return k
    return n + 1


def min_bits_for(fpr: float) -> int:
    """The fewest payload bits with which a perfect match is rarer than ``fpr`` under the null."""
    return max(1, math.ceil(-math.log2(fpr)))


@dataclass(frozen=True)
class Detection:
    """A detection: matching bits out of ``n``, the null's chance of that many, the decision at ``fpr``."""

    matches: int
    n: int
    p_value: float
    fpr: float
    detected: bool

    @property
    def bit_accuracy(self) -> float:
        return self.matches / self.n

    def to_dict(self) -> dict:
        return {"matches": self.matches, "bits": self.n, "bit_accuracy": self.bit_accuracy, "p_value": self.p_value,
                "fpr": self.fpr, "detected": self.detected}


def detect_bits(decoded: np.ndarray, expected: np.ndarray, fpr: float) -> Detection:
    """Compare decoded bits (0/1 or soft scores, positive meaning 1) with ``expected`` at ``fpr``."""
    got = (np.asarray(decoded, dtype=np.float64) > 0).astype(np.uint8) if np.asarray(decoded).dtype.kind == "f" \
        else np.asarray(decoded, dtype=np.uint8)
    expected = np.asarray(expected, dtype=np.uint8)
    if got.shape != expected.shape:
        raise ValueError(f"decoded {got.shape} and expected {expected.shape} bits differ in length")
    n, k = int(expected.size), int((got == expected).sum())
    return Detection(k, n, binomial_tail(n, k), fpr, k >= match_threshold(n, fpr))


class Watermark(ABC):
    """A scheme: ``bits`` payload bits, images of at least ``min_side`` pixels.

    Subclasses implement :meth:`embed` and :meth:`decode`; :meth:`check_image` and
    :meth:`check_payload` give the one-sentence refusals the command line shows.
    """

    name = ""
    bits = 0
    min_side = 0
    #: what the scheme is, for reports
    description = ""
    #: a scheme that cannot resynchronise is handed attacked images resized back to their marked size
    needs_original_size = False
    #: marks at generation time (the initial latents) rather than an image afterwards
    in_generation = False

    @abstractmethod
    def embed(self, image: np.ndarray, payload: np.ndarray, key) -> np.ndarray:
        """``image`` carrying ``payload`` (``bits`` 0/1 values) under ``key``."""

    @abstractmethod
    def decode(self, image: np.ndarray, key) -> np.ndarray:
        """Soft scores per payload bit (positive: 1)."""

    def decode_many(self, images, key) -> np.ndarray:
        """:meth:`decode` of each image, one row per image (schemes that batch override it)."""
        return np.stack([np.asarray(self.decode(im, key), dtype=np.float64) for im in images])

    def check_payload(self, payload: np.ndarray) -> np.ndarray:
        payload = np.asarray(payload, dtype=np.uint8).ravel()
        if payload.size > self.bits:
            raise InputError.bad("--payload", f"({payload.size} bits)", f"is too long for {self.name}, which carries "
                                 f"{self.bits} bits")
        if payload.size and payload.max() > 1:
            raise InputError.bad("--payload", "(bits)", "holds values other than 0 and 1")
        return np.concatenate([payload, np.zeros(self.bits - payload.size, np.uint8)])

    def check_image(self, image: np.ndarray, argument: str = "FILES") -> np.ndarray:
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise InputError.bad(argument, f"{image.shape} {image.dtype}", "is not an 8-bit RGB image")
        if min(image.shape[:2]) < self.min_side:
            raise InputError.bad(argument, f"{image.shape[1]}x{image.shape[0]}", f"is smaller than {self.name}'s "
                                 f"minimum of {self.min_side} pixels per side")
        return image

    def config(self) -> dict:
        return {"name": self.name, "bits": self.bits, "min_side": self.min_side, "description": self.description}


def create_watermark(name: str, **options) -> Watermark:
    """The scheme called ``name``; an unknown name is one sentence listing the known ones."""
    return WATERMARKS.get(name)(**options)
