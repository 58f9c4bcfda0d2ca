"""Watermarking generated images: the scheme registry and detection statistics (:mod:`.base`), keys
(:mod:`.keys`), sdguard's own post-hoc scheme (:mod:`.spread`), Gaussian Shading in the initial
latents (:mod:`.gaussian_shading`), invisible-watermark's baselines (:mod:`.invisible`), and
``sdguard watermark embed|detect`` (:mod:`.run`)."""

from .base import (
           WATERMARKS,
           Detection,
           Watermark,
           create_watermark,
           detect_bits,
           match_threshold,
)
from .keys import WatermarkKey, load_key
from .run import (
           WatermarkDetectConfig,
           WatermarkEmbedConfig,
           watermark_detect,
           watermark_embed,
)

__all__ = ["WATERMARKS", "Detection", "Watermark", "WatermarkDetectConfig", "WatermarkEmbedConfig", "WatermarkKey",
           "create_watermark", "detect_bits", "load_key", "match_threshold", "watermark_detect", "watermark_embed"]
