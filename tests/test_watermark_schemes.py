"""The watermark schemes and commands: sdguard-spread against the edits that break dwtDct, BCH,
detection against unmarked images and other keys, the commands' outputs (no key in them), bad input."""

import json

import numpy as np
import pytest

from sdguard.audit.watermark.attacks import apply_attack
from sdguard.audit.watermark.metrics import psnr
from sdguard.harden.watermark import WatermarkKey, create_watermark, detect_bits

pytest.importorskip("skimage")
KEY = WatermarkKey(bytes(range(32)))
OTHER = WatermarkKey(bytes(range(1, 33)))
HEX_KEY = "5a" * 32


@pytest.fixture(scope="module")
def photos():
    from sdguard.harden.watermark.options import photos

    return photos(512, ["astronaut", "coffee"])


@pytest.fixture(scope="module")
def spread():
    return create_watermark("sdguard-spread")


def _accuracy(scheme, image, payload, key=KEY):
    return detect_bits(scheme.decode(image, key), payload, 1e-3)


@pytest.mark.parametrize("name", ["astronaut"])
def test_sdguard_spread_survives_what_breaks_dwtdct(photos, spread, name):
    image = photos[name]
    payload = KEY.bits("payload", spread.bits)
    marked = spread.embed(image, payload, KEY)
    assert psnr(image, marked) >= 40.0
    for attack in ("none", "jpeg:50", "resize:0.5", "crop:0.75", "rotate:5"):
        found = _accuracy(spread, apply_attack(marked, attack, seed=1), payload)
        assert found.bit_accuracy >= 0.95 and found.detected, (name, attack, found)
    # unmarked, and marked under another key: no detection
    assert not _accuracy(spread, image, payload).detected
    assert not _accuracy(spread, marked, payload, OTHER).detected


def test_dwtdct_loses_its_payload_after_jpeg_50_where_sdguard_spread_keeps_it(photos, spread):
    pytest.importorskip("imwatermark")
    image = photos["coffee"]
    dwt = create_watermark("dwtDct")
    payload = KEY.bits("payload", 48)
    dwt_marked = dwt.embed(image, payload, KEY)
    assert _accuracy(dwt, dwt_marked, payload).detected  # it works unattacked
    dwt_after = _accuracy(dwt, apply_attack(dwt_marked, "jpeg:50", seed=1), payload).bit_accuracy
    ours_after = _accuracy(spread, apply_attack(spread.embed(image, payload, KEY), "jpeg:50", seed=1), payload)
    assert dwt_after < 0.8 and ours_after.bit_accuracy >= 0.95, (dwt_after, ours_after)


def test_bch_corrects_up_to_t_flipped_code_bits():
    pytest.importorskip("bchlib")
    scheme = create_watermark("sdguard-spread", bch_t=5)
    assert scheme.code_bits == 48 + 35
    payload = KEY.bits("payload", 48)
    code = scheme._encode(payload)
    scores = 2.0 * code - 1.0
    scores[[0, 9, 20, 47, 60]] *= -1  # five errors, two of them in the payload bits
    fixed, errors = scheme._correct(scores)
    assert errors == 5 and np.array_equal((fixed > 0).astype(np.uint8), payload)
    scores[[1, 2, 3, 4, 5, 6, 7]] *= -1  # twelve: beyond t, reported as a failure
    fixed, errors = scheme._correct(scores)
    assert errors < 0 or not np.array_equal((fixed > 0).astype(np.uint8), payload)


def _png(path, image):
    from PIL import Image

    Image.fromarray(image).save(path)
    return path


def test_embed_detect_and_the_audit_keep_the_key_out_of_every_file(tmp_path, run_cli, photos, monkeypatch):
    monkeypatch.setenv("SDGUARD_WATERMARK_KEY", HEX_KEY)
    src = tmp_path / "in"
    src.mkdir()
    _png(src / "a.png", photos["astronaut"])
    code, _, err = run_cli("watermark", "embed", src, "--watermark", "sdguard-spread", "--payload", "0x5eed5eed5eed",
                           "--out", tmp_path / "marked")
    assert code == 0, err
    code, out, err = run_cli("watermark", "detect", tmp_path / "marked" / "images", src, "--watermark",
                             "sdguard-spread", "--payload", "0x5eed5eed5eed", "--out", tmp_path / "found")
    assert code == 0, err
    detections = json.loads((tmp_path / "found" / "report.json").read_text())["results"]["detections"]
    assert [d["detected"] for d in detections] == [True, False]  # the marked copy, then the original
    code, _, err = run_cli("audit", "watermark", "--watermark", "sdguard-spread", "--images", src, "--attack", "none",
                           "--attack", "jpeg:75", "--out", tmp_path / "audit")
    assert code == 0, err
    rows = json.loads((tmp_path / "audit" / "report.json").read_text())["results"]["attacks"]
    assert all(r["tpr@0.001"] == 1.0 and r["null_detections@0.001"] == 0 for r in rows), rows
    fingerprint = KEY.__class__(bytes.fromhex(HEX_KEY)).fingerprint
    for folder in ("marked", "found", "audit"):
        for f in (tmp_path / folder).rglob("*"):
            if f.is_file() and f.suffix in (".json", ".jsonl", ".html"):
                text = f.read_text()
                assert HEX_KEY not in text and HEX_KEY.upper() not in text, f
        assert fingerprint in (tmp_path / folder / "report.json").read_text()


@pytest.mark.parametrize("setup, args, message", [
    ("short-key", ["--watermark", "sdguard-spread"], "--key 'file:"),
    ("", ["--watermark", "sdguard-spread", "--payload", "0x" + "f" * 13], "--payload '(52 bits)' is too long for "
     "sdguard-spread, which carries 48 bits"),
    ("small", ["--watermark", "sdguard-spread"], "is smaller than sdguard-spread's minimum of 128 pixels per side"),
    ("", ["--watermark", "gaussian-shading"], "give --model"),
    ("", ["--watermark", "tree-ring"], "--watermark 'tree-ring'"),
    ("", ["--watermark", "sdguard-spread", "--payload", "xyz"], "--payload 'xyz' is not hex digits"),
])
def test_bad_input_is_one_sentence_and_exit_2(tmp_path, run_cli, monkeypatch, setup, args, message):
    monkeypatch.setenv("SDGUARD_WATERMARK_KEY", HEX_KEY)
    src = tmp_path / "in"
    src.mkdir()
    side = 100 if setup == "small" else 160
    _png(src / "a.png", np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8))
    if setup == "short-key":
        (tmp_path / "k.hex").write_text("ab" * 31)
        args = args + ["--key", f"file:{tmp_path / 'k.hex'}"]
    code, _, err = run_cli("watermark", "embed", src, *args, "--out", tmp_path / "out")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert HEX_KEY not in err and not (tmp_path / "out").exists()


def test_a_corrupt_image_is_one_sentence(tmp_path, run_cli, monkeypatch):
    monkeypatch.setenv("SDGUARD_WATERMARK_KEY", HEX_KEY)
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    code, _, err = run_cli("watermark", "detect", tmp_path / "bad.png", "--watermark", "sdguard-spread",
                           "--out", tmp_path / "out")
    assert code == 2 and "is not a readable image" in err and len(err.strip().splitlines()) == 1, err
