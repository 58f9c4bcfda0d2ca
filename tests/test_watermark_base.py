"""Watermark foundations: detection thresholds at a false-positive rate, keys, the attack suite, PSNR/SSIM."""

import math

import numpy as np
import pytest

from sdguard.audit.watermark.attacks import DEFAULT_SUITE, apply_attack, parse_attack
from sdguard.audit.watermark.metrics import psnr, ssim
from sdguard.core.errors import InputError
from sdguard.harden.watermark import (
    WatermarkKey,
    detect_bits,
    load_key,
    match_threshold,
)
from sdguard.harden.watermark.base import binomial_tail, min_bits_for


def test_binomial_tail_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    for n, k in [(48, 24), (48, 40), (100, 80), (256, 200), (32, 32), (10, 0)]:
        assert math.isclose(binomial_tail(n, k), float(stats.binom.sf(k - 1, n, 0.5)), rel_tol=1e-9, abs_tol=1e-300)


@pytest.mark.parametrize("n, fpr", [(48, 1e-3), (64, 1e-2), (100, 1e-3)])
def test_the_threshold_holds_the_false_positive_rate_on_random_bits(n, fpr):
    k = match_threshold(n, fpr)
    assert binomial_tail(n, k) <= fpr < binomial_tail(n, k - 1)  # the smallest such count
    rng = np.random.default_rng(0)
    trials = 200_000
    matches = rng.binomial(n, 0.5, trials)
    rate = float((matches >= k).mean())
    assert rate <= fpr + 4 * math.sqrt(fpr / trials)
    expected = rng.integers(0, 2, n).astype(np.uint8)
    assert detect_bits(expected, expected, fpr).detected
    flipped = expected.copy()
    flipped[: int(0.4 * n)] ^= 1
    assert not detect_bits(flipped, expected, fpr).detected
    assert min_bits_for(1e-6) == 20 and match_threshold(8, 1e-6) == 9  # 8 bits cannot reach 1e-6


def test_keys_come_from_the_environment_or_a_file_and_never_show(tmp_path, monkeypatch):
    key = WatermarkKey.generate()
    monkeypatch.setenv("SDGUARD_WATERMARK_KEY", key.hex())
    assert load_key() == key and load_key("env:SDGUARD_WATERMARK_KEY") == key
    (tmp_path / "k.hex").write_text(key.hex() + "\n")
    (tmp_path / "k.bin").write_bytes(key.secret)
    assert load_key(f"file:{tmp_path / 'k.hex'}") == key == load_key(f"file:{tmp_path / 'k.bin'}")
    assert key.hex() not in repr(key) + str(key) and len(key.fingerprint) == 16
    assert key.derive("a") != key.derive("b") and len(key.derive("a", 100)) == 100
    assert not np.array_equal(key.bits("payload", 64), WatermarkKey.generate().bits("payload", 64))
    (tmp_path / "short").write_text("ab" * 16)
    with pytest.raises(InputError, match="holds a key of 16 bytes; a watermark key is 32 bytes"):
        load_key(f"file:{tmp_path / 'short'}")
    with pytest.raises(InputError) as exc:
        load_key(key.hex())  # a key typed on the command line is refused without being echoed
    assert key.hex() not in str(exc.value) and "never given on the command line" in str(exc.value)
    monkeypatch.delenv("SDGUARD_WATERMARK_KEY")
    with pytest.raises(InputError, match="environment variable that is not set"):
        load_key()


def test_the_attack_suite():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (128, 96, 3), dtype=np.uint8)
    for spec in DEFAULT_SUITE:
        out = apply_attack(image, spec, seed=1)
        assert out.dtype == np.uint8 and out.ndim == 3
    assert apply_attack(image, "resize:0.5").shape == (64, 48, 3)
    assert apply_attack(image, "crop:0.75").shape == (96, 72, 3)
    assert apply_attack(image, "rotate:5").shape == image.shape
    assert np.array_equal(apply_attack(image, "none"), image)
    assert not np.array_equal(apply_attack(image, "jpeg:90"), image)
    assert np.array_equal(apply_attack(image, "noise:8", seed=3), apply_attack(image, "noise:8", seed=3))
    assert parse_attack("jpeg:75+resize:0.5") == [("jpeg", 75.0), ("resize", 0.5)]
    for spec, match in [("sharpen:1", "names no attack 'sharpen'"), ("jpeg:150", "jpeg 150 outside"),
                        ("crop:x", "needs crop:VALUE")]:
        with pytest.raises(InputError, match=match):
            parse_attack(spec)


def test_psnr_and_ssim():
    pytest.importorskip("skimage")
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert psnr(image, image) == math.inf and ssim(image, image) == pytest.approx(1.0)
    shifted = np.clip(image.astype(int) + 2, 0, 255).astype(np.uint8)
    mse = float(np.mean((shifted.astype(float) - image) ** 2))
    assert psnr(image, shifted) == pytest.approx(10 * math.log10(255 ** 2 / mse))
    noisy = apply_attack(image, "noise:20")
    assert ssim(image, noisy) < ssim(image, apply_attack(image, "noise:4")) < 1.0
