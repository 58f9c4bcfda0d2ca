"""The robustness suite: watermarked and unwatermarked images through each attack, decoded, and
what that gives at each false-positive rate.

Per attack: the bit accuracy of the decoded payload (median, mean, the 10th percentile), the true
positive rate at each FPR (the share of watermarked images detected with the binomial threshold
of :func:`~sdguard.harden.watermark.base.match_threshold`, which holds that FPR over the key space
when unwatermarked images decode to fair coin flips), and the detections among the null images
through the same attack (the check of that premise: at most the stated rate, up to its sampling
error). A scheme that cannot resynchronise (:attr:`needs_original_size`) is handed each attacked
image resized back to the size it was marked at, its best case.
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

import numpy as np

from ...harden.watermark.base import Watermark, detect_bits
from .attacks import apply_attack


def _restore(image: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    from PIL import Image

    if image.shape[:2] == tuple(shape[:2]):
        return image
    return np.asarray(Image.fromarray(image).resize((shape[1], shape[0]), Image.BICUBIC))


def attacked(scheme: Watermark, images: Sequence[np.ndarray], spec: str, seed: int, model=None) -> list[np.ndarray]:
    """Each image after ``spec`` (image i with seed ``seed + i``), restored to its size for a
    scheme that needs it."""
    out = []
    for i, im in enumerate(images):
        a = apply_attack(im, spec, seed + i, model=model)
        out.append(_restore(a, im.shape) if scheme.needs_original_size else a)
    return out


def decode_all(scheme: Watermark, images: Sequence[np.ndarray], key) -> np.ndarray:
    """Soft scores per image; an image an attack made too small to read scores 0 for every bit
    (read as 0s: never detected at a useful FPR, a bit accuracy of the payload's share of zeros)."""
    from ...core.errors import InputError

    try:
        return scheme.decode_many(images, key)
    except InputError:
        rows = []
        for im in images:
            try:
                rows.append(scheme.decode_many([im], key)[0])
            except InputError:
                rows.append(np.zeros(scheme.bits))
        return np.stack(rows)


def score_attack(scheme: Watermark, key, payload: np.ndarray, marked: Sequence[np.ndarray],
                 null: Sequence[np.ndarray], spec: str, fprs: Sequence[float], seed: int = 0, model=None) -> dict:
    """One attack's row: bit accuracy, TPR and null detections at each FPR, decode time."""
    t0 = time.perf_counter()
    soft = decode_all(scheme, attacked(scheme, marked, spec, seed, model), key)
    decode_s = (time.perf_counter() - t0) / max(len(marked), 1)
    null_soft = decode_all(scheme, attacked(scheme, null, spec, seed + 100_000, model), key) if len(null) else []
    acc = np.array([detect_bits(s, payload, fprs[0]).bit_accuracy for s in soft])
    row = {"attack": spec, "images": len(marked), "null_images": len(null),
           "bit_accuracy_median": float(np.median(acc)), "bit_accuracy_mean": float(acc.mean()),
           "bit_accuracy_p10": float(np.quantile(acc, 0.1)), "detect_seconds_per_image": round(decode_s, 4)}
    for fpr in fprs:
        row[f"tpr@{fpr:g}"] = float(np.mean([detect_bits(s, payload, fpr).detected for s in soft]))
        if len(null):
            row[f"null_detections@{fpr:g}"] = int(sum(detect_bits(s, payload, fpr).detected for s in null_soft))
    if len(null):
        row["null_bit_accuracy_max"] = float(max(detect_bits(s, payload, fprs[0]).bit_accuracy for s in null_soft))
    return row


def run_suite(scheme: Watermark, key, payload: np.ndarray, marked: Sequence[np.ndarray], null: Sequence[np.ndarray],
              attacks: Sequence[str], fprs: Sequence[float], seed: int = 0, model=None,
              on_attack: Callable[[int], None] | None = None) -> list[dict]:
    """:func:`score_attack` for each attack in order."""
    rows = []
    for spec in attacks:
        rows.append(score_attack(scheme, key, payload, marked, null, spec, fprs, seed, model))
        if on_attack is not None:
            on_attack(1)
    return rows


def quality(originals: Sequence[np.ndarray], marked: Sequence[np.ndarray]) -> dict:
    """PSNR and SSIM of each marked image against its original: median and minimum."""
    from .metrics import psnr, ssim

    p = np.array([psnr(a, b) for a, b in zip(originals, marked)])
    s = np.array([ssim(a, b) for a, b in zip(originals, marked)])
    return {"psnr_median": float(np.median(p)), "psnr_min": float(p.min()), "ssim_median": float(np.median(s)),
            "ssim_min": float(s.min())}
