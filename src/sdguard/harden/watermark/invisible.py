"""The packaged baselines: invisible-watermark's ``dwtDct``, ``dwtDctSvd`` and ``rivaGan``
(ShieldMnt/invisible-watermark 0.2, the marker Stable Diffusion's reference scripts apply).

- ``dwtDct``: the payload in the DCT of 4 x 4 blocks of the first-level DWT approximation of the
  YUV channels, one bit per block by quantising its largest coefficient (``imwatermark/maxDct.py``);
- ``dwtDctSvd``: the same blocks, each bit in the largest singular value of the block's DCT
  (``imwatermark/dwtDctSvd.py``);
- ``rivaGan``: RivaGAN (Zhang et al. 2019, "Robust Invisible Video Watermarking with Attention"),
  32 bits, the ONNX encoder and decoder the package ships (``imwatermark/rivaGan.py``).

None of them resynchronises after a resize or a crop: the watermark audit hands them the attacked
image resized back to the size it was marked at (:attr:`Watermark.needs_original_size`), their
best case, which sdguard's own schemes are not given. The library works in BGR; this wrapper
takes and returns RGB like every scheme. invisible-watermark 0.2 declares ``opencv-python``,
which owns the same ``cv2`` module as the ``opencv-python-headless`` that NudeNet needs, so it
is installed without its dependencies (``pip install --no-deps invisible-watermark==0.2.0``; the
Makefile does) and its real ones come with the ``watermark`` extra (PyWavelets, onnxruntime).
"""

from __future__ import annotations

import numpy as np

from ...core.errors import MissingDependencyError
from .base import Watermark


def _imwatermark():
    try:
        import imwatermark
    except ImportError as exc:
        raise MissingDependencyError("invisible-watermark", "watermark", "the dwtDct, dwtDctSvd and rivaGan baselines "
                                     "(install it with pip install --no-deps invisible-watermark==0.2.0)") from exc
    return imwatermark


class InvisibleWatermark(Watermark):
    """One invisible-watermark method (``method``) carrying ``bits`` bits."""

    method = ""
    min_side = 256  # the library refuses images under 256 x 256 pixels
    needs_original_size = True

    def __init__(self, bits: int = 48):
        self.bits = int(bits)

    def _coder(self, payload=None):
        lib = _imwatermark()
        if self.method == "rivaGan":
            lib.WatermarkEncoder.loadModel()
            lib.WatermarkDecoder.loadModel()
        if payload is None:
            return lib.WatermarkDecoder("bits", self.bits)
        encoder = lib.WatermarkEncoder()
        encoder.set_watermark("bits", [int(b) for b in payload])
        return encoder

    def embed(self, image: np.ndarray, payload: np.ndarray, key) -> np.ndarray:
        """``key`` is not used: the library's marks are unkeyed (anyone can read them)."""
        image = self.check_image(image)
        payload = self.check_payload(payload)
        out = self._coder(payload).encode(np.ascontiguousarray(image[..., ::-1]), self.method)
        return np.ascontiguousarray(np.asarray(out)[..., ::-1]).astype(np.uint8)

    def decode(self, image: np.ndarray, key) -> np.ndarray:
        image = self.check_image(image)
        bits = self._coder().decode(np.ascontiguousarray(image[..., ::-1]), self.method)
        return np.where(np.asarray(bits, dtype=np.float64) > 0.5, 1.0, -1.0)


class DwtDct(InvisibleWatermark):
    name, method = "dwtDct", "dwtDct"
    description = "invisible-watermark's DWT-DCT (the Stable Diffusion scripts' marker), unkeyed"


class DwtDctSvd(InvisibleWatermark):
    name, method = "dwtDctSvd", "dwtDctSvd"
    description = "invisible-watermark's DWT-DCT-SVD, unkeyed"


class RivaGan(InvisibleWatermark):
    name, method = "rivaGan", "rivaGan"
    description = "RivaGAN (Zhang et al. 2019) through invisible-watermark's ONNX models, 32 bits, unkeyed"

    def __init__(self, bits: int = 32):
        from ...core.errors import InputError

        if bits != 32:
            raise InputError.bad("--bits", bits, "is not available for rivaGan, which carries exactly 32 bits")
        super().__init__(32)
