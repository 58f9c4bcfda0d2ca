"""SSCD copy-detection descriptors (Pizzi et al. 2022) from a TorchScript file the user provides.

Somepalli et al. 2023 measure replication with SSCD and call a pair a copy above a cosine
similarity of 0.5. The weights are not shipped and cannot be downloaded here: pass the path of
the released TorchScript model (e.g. ``sscd_disc_mixup.torchscript.pt``). Preprocessing follows
the SSCD release: resize to ``size`` x ``size`` (320 by default), ImageNet mean and std; the
model returns one descriptor per image, which is L2-normalized.

``preprocessing="dcr"`` is the preprocessing of Somepalli et al.'s official code
(github.com/somepago/DCR, ``diff_retrieval.py``, ``ret_transform``): torchvision's
``Resize(256)`` (the shorter side to 256, bilinear, aspect kept, the longer side truncated),
``CenterCrop(224)``, ``ToTensor`` and ``Normalize([0.5], [0.5])`` (values in [-1, 1]); ``size`` is
then unused. It is what ``sdguard audit generations --rule somepalli`` uses
(:mod:`sdguard.audit.somepalli`). Done with PIL's bilinear filter, which is what torchvision's
``Resize`` calls on PIL images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.errors import InputError
from ..core.images import resize
from .base import BaseEmbedder, as_rgb

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PREPROCESSING = ("release", "dcr")
DCR_RESIZE, DCR_CROP = 256, 224  # Resize(256), CenterCrop(224) of DCR's ret_transform


class SSCDEmbedder(BaseEmbedder):
    """A TorchScript SSCD model at ``path``; images resized to ``size`` x ``size`` (``preprocessing="release"``)
    or as in Somepalli et al.'s code (``"dcr"``)."""

    name = "sscd"
    default_threshold = 0.5  # Somepalli et al. 2023's replication threshold on SSCD similarity

    def __init__(self, path: str | None = None, size: int = 320, device: str | None = None, batch_size: int = 32,
                 preprocessing: str = "release"):
        import torch

        if not path:
            raise InputError("--embedder sscd needs the TorchScript model file: --embedder sscd:PATH "
                             "(the SSCD release's sscd_disc_mixup.torchscript.pt, for example).")
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError.bad("--embedder sscd path", str(path), "is not a file")
        if preprocessing not in PREPROCESSING:
            raise InputError.bad("--embedder-option preprocessing", preprocessing,
                                 f"is not one of {', '.join(PREPROCESSING)}")
        self.preprocessing = preprocessing
        self.size = DCR_CROP if preprocessing == "dcr" else int(size)
        self.batch_size = int(batch_size)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        try:
            self._net = torch.jit.load(str(self.path), map_location=self.device).eval()
        except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError/ValueError for bad files
            raise InputError.bad("--embedder sscd path", str(path), f"is not a TorchScript model ({exc})") from None
        with torch.inference_mode():
            probe = self._net(torch.zeros(1, 3, self.size, self.size, device=self.device))
        if probe.ndim != 2:
            raise InputError.bad("--embedder sscd path", str(path), f"returns shape {tuple(probe.shape)}, not (batch, dim)")
        self.dim = int(probe.shape[1])

    def config(self) -> dict:
        st = self.path.stat()
        return {"name": self.name, "path": str(self.path.resolve()), "bytes": st.st_size, "mtime": st.st_mtime_ns,
                "size": self.size, "preprocessing": self.preprocessing, "version": 1}

    def preprocess(self, image: np.ndarray) -> np.ndarray:
        if self.preprocessing == "dcr":
            return dcr_preprocess(image)
        x = resize(as_rgb(image), self.size, resample="bilinear").astype(np.float32) / 255.0
        x = (x - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)
        return x.transpose(2, 0, 1)

    def _embed_batch(self, images):
        import torch

        x = torch.from_numpy(np.stack([self.preprocess(im) for im in images])).to(self.device)
        with torch.inference_mode():
            return self._net(x).float().cpu().numpy()


def dcr_preprocess(image: np.ndarray) -> np.ndarray:
    """``3 x 224 x 224`` float32 in [-1, 1]: DCR's ``Resize(256)``, ``CenterCrop(224)``,
    ``ToTensor()``, ``Normalize([0.5], [0.5])`` (see the module docstring)."""
    a = as_rgb(image)
    h, w = a.shape[:2]
    short, long = (h, w) if h <= w else (w, h)
    new_long = int(DCR_RESIZE * long / short)  # torchvision truncates the longer side
    a = resize(a, (new_long, DCR_RESIZE) if h <= w else (DCR_RESIZE, new_long), resample="bilinear")
    h, w = a.shape[:2]
    top, left = int(round((h - DCR_CROP) / 2.0)), int(round((w - DCR_CROP) / 2.0))  # torchvision's centre crop
    x = a[top:top + DCR_CROP, left:left + DCR_CROP].astype(np.float32) / 255.0
    return ((x - 0.5) / 0.5).transpose(2, 0, 1)
