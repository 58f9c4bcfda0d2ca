"""Weight-free embedders for near-duplicate search: they work offline and need no model.

- ``pixels``: the image shrunk to ``size`` x ``size`` (8 by default) by area averaging (RGB),
  minus its mean, scaled to unit norm. The cosine similarity of two such vectors is the Pearson correlation of
  the thumbnails, so exact copies score 1 and copies that differ by re-encoding, resizing,
  brightness/contrast changes, mild noise or a shift of a fraction of a thumbnail pixel stay close
  to 1, while different pictures spread far below. The simplest near-duplicate detector of the
  deduplication literature (thumbnail correlation), strong on the copies the replication studies
  count (Somepalli et al. 2023; Webster 2023, whose duplicates are mostly exact or re-encoded
  copies), blind to semantics, flips and large crops (use ``clip`` or ``sscd`` for those).
- ``dct``: the low-frequency block of the 2-D DCT of the grey image (the DC term left out), as
  in perceptual hashing (pHash) but kept as real numbers: robust to colour shifts and gamma, a
  little less discriminative than ``pixels`` on colour images.

The default thumbnail is small on purpose: a shift of one pixel of a 32-pixel image (the
synthetic world's light augmentations) moves an 8 x 8 thumbnail by an eighth of a cell, so the
copies of a planted artwork stay linked at similarity 0.9 while the closest other image of the
world stays near 0.85 or below (measured on three worlds; 16 x 16 thumbnails needed a threshold
near 0.8 with smaller margins). For millions of real photos, where unrelated images correlate
more often at 8 x 8, ``pixels:16`` or ``pixels:32`` discriminate better.

An all-flat image has no variation to correlate and embeds as the zero vector (similarity 0 with
everything), so blank images never form a cluster.
"""

from __future__ import annotations

import numpy as np

from ..core.images import resize
from .base import BaseEmbedder, as_rgb

_LUMA = np.asarray([0.299, 0.587, 0.114], np.float32)


def _thumbnail(image: np.ndarray, size: int, mode: str) -> np.ndarray:
    """Area-averaged ``size`` x ``size`` float thumbnail (no rounding to 8 bits on the way)."""
    t = resize(as_rgb(image).astype(np.float32), size)  # area mean, exact in numpy where size divides
    return t @ _LUMA if mode == "L" else t


class PixelEmbedder(BaseEmbedder):
    """Mean-centred, unit-norm ``size`` x ``size`` thumbnails (RGB, or grey with ``grayscale``)."""

    name = "pixels"
    default_threshold = 0.9

    def __init__(self, size: int = 8, grayscale: bool = False, batch_size: int = 1024):
        if not 2 <= int(size) <= 256:
            from ..core.errors import InputError

            raise InputError.bad("size", size, "must be between 2 and 256")
        self.size, self.grayscale, self.batch_size = int(size), bool(grayscale), int(batch_size)
        self.dim = self.size * self.size * (1 if self.grayscale else 3)

    def config(self) -> dict:
        return {"name": self.name, "size": self.size, "grayscale": self.grayscale, "version": 1}

    def _embed_batch(self, images):
        mode = "L" if self.grayscale else "RGB"
        x = np.stack([_thumbnail(im, self.size, mode).reshape(-1) for im in images]).astype(np.float32)
        return x - x.mean(axis=1, keepdims=True)


class DCTEmbedder(BaseEmbedder):
    """The ``k`` x ``k`` low-frequency DCT block of the ``size`` x ``size`` grey image, DC left out."""

    name = "dct"
    default_threshold = 0.9

    def __init__(self, size: int = 32, k: int = 8, batch_size: int = 1024):
        from ..core.errors import InputError

        if not 4 <= int(size) <= 512:
            raise InputError.bad("size", size, "must be between 4 and 512")
        if not 2 <= int(k) <= int(size):
            raise InputError.bad("k", k, f"must be between 2 and size={size}")
        self.size, self.k, self.batch_size = int(size), int(k), int(batch_size)
        self.dim = self.k * self.k - 1
        n = self.size
        # orthonormal DCT-II matrix: C @ x @ C.T is the 2-D DCT of x
        i = np.arange(n)
        c = np.cos(np.pi * (2 * i[None, :] + 1) * i[:, None] / (2 * n)) * np.sqrt(2.0 / n)
        c[0] /= np.sqrt(2.0)
        self._basis = c[: self.k].astype(np.float32)

    def config(self) -> dict:
        return {"name": self.name, "size": self.size, "k": self.k, "version": 1}

    def _embed_batch(self, images):
        g = np.stack([_thumbnail(im, self.size, "L") for im in images]).astype(np.float32)
        coeffs = np.einsum("ui,nij,vj->nuv", self._basis, g, self._basis, optimize=True)
        return coeffs.reshape(len(images), -1)[:, 1:]
