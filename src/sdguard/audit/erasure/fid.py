"""FID between real and generated images (optional: torchmetrics or clean-fid)."""

from __future__ import annotations

import numpy as np

from ...core.errors import MissingDependencyError, WeightsUnavailable


def fid_backend() -> str:
    """``"torchmetrics"`` or ``"clean-fid"``, whichever is installed, checked before any work: a
    missing package exits 3 naming the extra, missing Inception weights exit 3 saying where they go
    (nothing is downloaded on purpose)."""
    import torch

    try:
        from torchmetrics.image.fid import FrechetInceptionDistance
    except ImportError:
        try:
            import cleanfid  # noqa: F401
        except ImportError as exc:
            raise MissingDependencyError("torchmetrics", "fid", "FID (torchmetrics[image] or clean-fid)") from exc
        return "clean-fid"
    try:
        FrechetInceptionDistance(feature=2048)
    except ModuleNotFoundError as exc:
        raise MissingDependencyError("torch-fidelity", "fid", "torchmetrics' FID") from exc
    except Exception as exc:
        raise WeightsUnavailable(
            f"--fid needs the Inception-v3 FID weights (pt_inception-2015-12-05-6726825d.pth in torch's hub cache, "
            f"{torch.hub.get_dir()}/checkpoints), which could not be loaded ({type(exc).__name__}); copy them there "
            f"from a machine that has them, or run without --fid.") from exc
    return "torchmetrics"


def fid_score(real: np.ndarray, fake: np.ndarray, backend: str | None = None) -> float:
    """FID between two sets of uint8 images (``N x H x W x 3``) with :func:`fid_backend`."""
    import torch

    backend = backend or fid_backend()
    if backend == "clean-fid":
        return _cleanfid_score(real, fake)
    from torchmetrics.image.fid import FrechetInceptionDistance

    metric = FrechetInceptionDistance(feature=2048)
    for imgs, real_flag in ((real, True), (fake, False)):
        metric.update(torch.from_numpy(np.ascontiguousarray(imgs)).permute(0, 3, 1, 2), real=real_flag)
    return float(metric.compute())


def _cleanfid_score(real: np.ndarray, fake: np.ndarray) -> float:  # pragma: no cover - needs weights
    import tempfile

    from cleanfid import fid
    from PIL import Image

    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        for folder, imgs in ((a, real), (b, fake)):
            for i, im in enumerate(imgs):
                Image.fromarray(im).save(f"{folder}/{i:05d}.png")
        try:
            return float(fid.compute_fid(a, b, mode="clean", num_workers=0))
        except Exception as exc:
            raise WeightsUnavailable(f"--fid: clean-fid could not load its Inception weights ({type(exc).__name__}: "
                                     f"{exc}); run without --fid.") from exc
