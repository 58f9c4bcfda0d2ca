"""Gaussian Shading on builtin:tiny: the watermarked initial latents are standard normal and carry
the payload; generations at 128 px are detected through DDIM inversion and unwatermarked ones are not."""

import json

import numpy as np
import pytest

from sdguard.harden.watermark import WatermarkKey, create_watermark
from sdguard.harden.watermark.gaussian_shading import _chacha20

HEX_KEY = "3c" * 32


@pytest.fixture(scope="module")
def tiny():
    from sdguard.models.adapter import DiffusionModel

    return DiffusionModel.load("builtin:tiny")


def test_the_latents_are_standard_normal_and_their_signs_carry_the_payload(tiny):
    from scipy.stats import kstest

    key = WatermarkKey(bytes.fromhex(HEX_KEY))
    scheme = create_watermark("gaussian-shading", model=tiny, size=64)
    assert scheme.latent == (4, 16, 16) and scheme.hw_copy == 2 and scheme.bits == 256  # the paper's 256 bits
    payload = key.bits("payload", scheme.bits)
    z = scheme.initial_latents(payload, key, range(32)).numpy()
    assert kstest(z.ravel(), "norm").pvalue > 1e-3 and abs(z.mean()) < 0.02
    signs = (z.reshape(32, -1) > 0).astype(np.uint8) ^ _chacha20(key, z[0].size)
    assert (signs == scheme._tiled(payload)).all()  # every copy, every seed
    assert not np.allclose(z[0], z[1])  # the magnitudes vary with the seed
    other = WatermarkKey(bytes(32))
    assert not np.array_equal(_chacha20(other, 64), _chacha20(key, 64))  # the keystream is the key's


def test_generate_then_detect_through_the_model(tmp_path, run_cli, monkeypatch):
    monkeypatch.setenv("SDGUARD_WATERMARK_KEY", HEX_KEY)
    common = ["builtin:tiny", "a red circle on the left", "a blue square at the top", "--n", "2", "--height", "128",
              "--width", "128", "--steps", "25", "--guidance", "5"]
    code, _, err = run_cli("generate", *common, "--watermark", "gaussian-shading", "--out", tmp_path / "marked")
    assert code == 0, err
    code, _, err = run_cli("generate", *common, "--out", tmp_path / "plain")
    assert code == 0, err
    detected = {}
    for name in ("marked", "plain"):
        code, _, err = run_cli("watermark", "detect", tmp_path / name / "images", "--watermark", "gaussian-shading",
                               "--model", "builtin:tiny", "--size", "128", "--inversion-steps", "25", "--fpr", "1e-3",
                               "--out", tmp_path / f"found-{name}")
        assert code == 0, err
        rows = json.loads((tmp_path / f"found-{name}" / "report.json").read_text())["results"]["detections"]
        detected[name] = sum(r["detected"] for r in rows)
    assert detected["marked"] >= 3 and detected["plain"] == 0, detected
    report = (tmp_path / "marked" / "report.json").read_text()
    assert HEX_KEY not in report and WatermarkKey(bytes.fromhex(HEX_KEY)).fingerprint in report
