"""The watermark options every command shares (``sdguard generate``, ``sdguard watermark embed|detect``,
``sdguard audit watermark``), declared once, and what they turn into: a scheme, a key, a payload,
images."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from pydantic import field_validator

from ...core.config import RunConfig, option
from ...core.errors import InputError, reason
from .base import WATERMARKS, Watermark, create_watermark
from .keys import DEFAULT_ENV, WatermarkKey, load_key

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
#: scikit-image's natural photos (RGB, or grey made RGB), the images ``builtin:photos`` names
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "motorcycle_left", "camera", "moon",
          "page", "grass", "gravel", "brick", "retina", "cat", "hubble_deep_field", "coins", "text", "clock",
          "microaneurysms", "eagle")


class WatermarkOptions(RunConfig):
    """Which scheme, which key, which payload."""

    watermark: str | None = option(None, help="the watermark scheme: sdguard-spread (sdguard's own, post-hoc), "
                                   "gaussian-shading (in the initial latents; needs the model), dwtDct, dwtDctSvd, "
                                   "rivaGan (invisible-watermark's baselines)")
    key: str | None = option(None, help=f"where the watermark key is: env:NAME or file:PATH (default env:{DEFAULT_ENV}; "
                             "64 hex digits); never the key itself")
    payload: str | None = option(None, help="the payload as hex digits (at most the scheme's bits; default: bits "
                                 "derived from the key)")

    @field_validator("watermark")
    @classmethod
    def _known(cls, value):
        if value is not None:
            WATERMARKS.entry(value)  # an unknown name: one sentence listing the known ones
        return value

    @field_validator("payload")
    @classmethod
    def _hex(cls, value):
        if value is not None:
            digits = value.lower().removeprefix("0x")
            if not digits or any(c not in "0123456789abcdef" for c in digits):
                raise InputError.bad("--payload", value, "is not hex digits (e.g. 0x1f2e3d4c5b6a)")
        return value


def payload_bits(cfg: WatermarkOptions, scheme: Watermark, key: WatermarkKey) -> np.ndarray:
    """The payload the scheme carries: ``--payload`` (hex, 4 bits a digit, padded with zeros by the
    scheme) or ``scheme.bits`` bits derived from the key."""
    if cfg.payload is None:
        return key.bits(f"payload/{scheme.name}", scheme.bits)
    digits = cfg.payload.lower().removeprefix("0x")
    bits = np.array([int(b) for d in digits for b in format(int(d, 16), "04b")], np.uint8)
    return scheme.check_payload(bits)


def scheme_for(cfg: WatermarkOptions, model=None, **generation_options) -> tuple[Watermark, WatermarkKey, np.ndarray]:
    """The scheme ``cfg`` names, its key and payload; an in-generation scheme is built with
    ``model`` and ``generation_options`` (its size, inversion steps), which a post-hoc one ignores."""
    if cfg.watermark is None:
        raise InputError.bad("--watermark", None, f"is needed: name a scheme ({', '.join(WATERMARKS.names())})")
    cls = WATERMARKS.get(cfg.watermark)
    if getattr(cls, "in_generation", False):
        if model is None:
            raise InputError.bad("--watermark", cfg.watermark, "marks images while they are generated and reads them "
                                 "through the model: give --model")
        scheme = create_watermark(cfg.watermark, model=model,
                                  **{k: v for k, v in generation_options.items() if v is not None})
    else:
        scheme = create_watermark(cfg.watermark)
    key = load_key(cfg.key)
    return scheme, key, payload_bits(cfg, scheme, key)


def image_paths(files: Sequence[str], argument: str = "FILES") -> list[Path]:
    """Image files given or inside the folders given (sorted), refusing a missing path or none found."""
    out: list[Path] = []
    for given in files:
        path = Path(given)
        if path.is_dir():
            out += sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        elif path.is_file():
            out.append(path)
        else:
            raise InputError.bad(argument, given, "names no file or folder")
    if not out:
        raise InputError.bad(argument, list(files), f"holds no image ({', '.join(IMAGE_SUFFIXES)})")
    return out


def read_image(path: Path, argument: str = "FILES") -> np.ndarray:
    """An image file as ``uint8`` RGB; a file that is not one is one sentence."""
    from ...data.datasets.base import decode_image

    try:
        return decode_image(path)
    except Exception as exc:  # noqa: BLE001 - PIL raises many kinds for corrupt files
        raise InputError.bad(argument, str(path), f"is not a readable image ({reason(exc)})") from None


def photos(size: int = 512, names: Sequence[str] = PHOTOS) -> dict[str, np.ndarray]:
    """scikit-image's sample photos, RGB, resized to ``size`` x ``size`` (what ``builtin:photos`` is)."""
    from PIL import Image

    from ...core.errors import require

    data = require("skimage.data", "watermark", "the sample photos")
    out = {}
    for name in names:
        try:
            im = np.asarray(getattr(data, name)())
        except Exception:  # noqa: BLE001 - a photo scikit-image cannot give here (a download): skipped
            continue
        if im.dtype != np.uint8:
            im = im.astype(np.float64)
            im = (255 * (im - im.min()) / max(float(im.max() - im.min()), 1e-12)).astype(np.uint8)
        out[name] = np.asarray(Image.fromarray(im).convert("RGB").resize((size, size), Image.BICUBIC))
    return out
