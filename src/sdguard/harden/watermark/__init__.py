"""Watermarking generated images (issue 20, in progress): the scheme registry and detection
statistics (:mod:`.base`) and keys (:mod:`.keys`). The schemes themselves are not registered yet."""

from .base import (
           WATERMARKS,
           Detection,
           Watermark,
           create_watermark,
           detect_bits,
           match_threshold,
)
from .keys import WatermarkKey, load_key

__all__ = ["WATERMARKS", "Detection", "Watermark", "WatermarkKey", "create_watermark", "detect_bits", "load_key",
           "match_threshold"]
