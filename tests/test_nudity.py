"""I2P-format prompt files and NudeNet EXPOSED counts (the ESD paper's nudity evaluation)."""

import socket
import sys
from pathlib import Path

import numpy as np
import pytest

from sdguard.audit.nudity import (
    EXPOSED_CLASSES,
    NudityDetector,
    evaluate_nudity,
    load_i2p_prompts,
)
from sdguard.core.errors import InputError, MissingDependencyError

SAMPLE = Path(__file__).parent / "data" / "i2p_sample.csv"


def test_loads_the_i2p_format():
    f = load_i2p_prompts(SAMPLE)
    assert len(f) == 12 and not f.skipped
    first = f.prompts[0]
    assert first.prompt.startswith("weird and disturbing portrait of todd solondz")
    assert first.seed == 4261553411 and first.guidance == 13.0 and first.categories == ("violence", "self-harm")
    assert any(p.prompt == "😜" for p in f.prompts)  # unicode kept, whitespace normalised
    sexual = load_i2p_prompts(SAMPLE, categories=["sexual"])
    assert 0 < len(sexual) < len(f) and all("sexual" in p.categories for p in sexual.prompts)
    assert len(load_i2p_prompts(SAMPLE, limit=3)) == 3


def test_bad_rows_are_skipped_and_counted(tmp_path):
    p = tmp_path / "p.csv"
    p.write_text("prompt,evaluation_seed,evaluation_guidance\n"
                 "a cat,1,7\n"
                 ",2,7\n"
                 "a dog,not-a-seed,7\n"
                 "a bird,3,-1\n"
                 "\"a, comma\",4,7.5\n")
    f = load_i2p_prompts(p)
    assert [x.prompt for x in f.prompts] == ["a cat", "a, comma"]
    assert [s["row"] for s in f.skipped] == [2, 3, 4] and all(s["reason"] for s in f.skipped)


def test_bad_files_are_one_clear_sentence(tmp_path):
    with pytest.raises(InputError, match="--prompts .*does not exist"):
        load_i2p_prompts(tmp_path / "missing.csv")
    p = tmp_path / "wrong.csv"
    p.write_text("text,seed\nhello,1\n")
    with pytest.raises(InputError, match="evaluation_seed"):
        load_i2p_prompts(p)


def test_missing_nudenet_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "nudenet", None)
    with pytest.raises(MissingDependencyError, match=r"sdguard\[nudity\]") as exc:
        NudityDetector().detect(np.zeros((1, 32, 32, 3), np.uint8))
    assert exc.value.exit_code == 3


@pytest.fixture(scope="module")
def detector():
    pytest.importorskip("nudenet")
    return NudityDetector()


def test_real_photos_without_nudity_raise_no_alarm(detector, monkeypatch):
    from sklearn.datasets import load_sample_images

    def no_network(*args, **kwargs):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", no_network)  # the bundled detector runs offline
    photos = load_sample_images().images  # china.jpg and flower.jpg, shipped inside scikit-learn
    counts = detector.count(photos)
    assert counts["images"] == 2 and counts["total"] == 0 and counts["images_flagged"] == 0
    assert set(counts["per_class"]) == set(EXPOSED_CLASSES)
    # at any threshold: no EXPOSED class anywhere in these photos
    loose = NudityDetector(threshold=0.2)
    assert not any(d["class"] in EXPOSED_CLASSES for dets in loose.detect(photos) for d in dets)


def test_evaluate_nudity_runs_on_any_model(detector, tiny_random):
    f = load_i2p_prompts(SAMPLE, limit=3)
    result = evaluate_nudity(tiny_random, f, detector=detector, steps=2)
    assert result["images"] == 3 and result["images_array"].shape[0] == 3
    assert set(result["per_class"]) == set(EXPOSED_CLASSES)


def test_the_detector_finds_what_is_there(detector):
    """Positive control: the same counting path that finds no EXPOSED class above finds the face in
    scikit-image's astronaut photo (Eileen Collins, NASA; shipped in scikit-image), where it is,
    and none in scikit-learn's two photos without people. An always-"no" detector fails here."""
    data = pytest.importorskip("skimage.data")
    from sklearn.datasets import load_sample_images

    faces = NudityDetector(threshold=0.5, classes=("FACE_FEMALE", "FACE_MALE"))
    astronaut = data.astronaut()
    counts = faces.count(np.stack([astronaut]))
    assert counts["images_flagged"] == 1 and counts["total"] >= 1
    (box,) = [d["box"] for d in faces.detect(np.stack([astronaut]))[0] if d["class"].startswith("FACE")]
    x, y, w, h = box
    cx, cy = x + w / 2, y + h / 2
    assert 150 < cx < 300 and 60 < cy < 200, box  # the face, top middle of the 512 x 512 photo
    assert faces.count(load_sample_images().images)["total"] == 0
