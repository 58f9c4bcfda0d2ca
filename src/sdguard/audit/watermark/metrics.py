"""Image quality of a watermark: PSNR and SSIM between the original and the watermarked image."""

from __future__ import annotations

import math

import numpy as np


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of two ``uint8`` images of one size (inf when identical)."""
    if a.shape != b.shape:
        raise ValueError(f"images of different sizes: {a.shape} and {b.shape}")
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Structural similarity (Wang et al. 2004: Gaussian window sigma 1.5, K1 0.01, K2 0.03) of two
    ``uint8`` RGB images, the mean over channels; scikit-image's implementation."""
    from ...core.errors import require

    metrics = require("skimage.metrics", "watermark", "SSIM of watermarked images")
    return float(metrics.structural_similarity(a, b, channel_axis=2, data_range=255, gaussian_weights=True,
                                               sigma=1.5, use_sample_covariance=False))
