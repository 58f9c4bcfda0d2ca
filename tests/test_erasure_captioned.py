"""`sdguard audit erasure` on a dataset that make-world did not write: concepts its captions name,
presence by the nearest training image (and its near-duplicate cluster)."""

import json

import numpy as np
import pytest
from captioned_shapes import artwork, shape_scene, write_shapes_dataset

from sdguard.audit.erasure.captioned import CaptionedDataset
from sdguard.core.errors import InputError
from sdguard.data.datasets import open_dataset
from sdguard.embed import create_embedder


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return write_shapes_dataset(tmp_path_factory.mktemp("shapes") / "ds")


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("SDGUARD_CACHE", str(tmp_path_factory.getbasetemp() / "sdguard-cache"))


def test_presence_is_high_for_copies_of_the_named_images_and_low_for_other_images(shapes):
    data = CaptionedDataset(open_dataset(shapes), create_embedder("pixels"))
    concept = data.concept("golden checkerboard", prompts_per_concept=2, n=1)
    assert concept.kind == "caption" and len(concept.prompts) == 2
    assert all("golden checkerboard" in p for p in concept.prompts)
    rule = data.rule(concept)
    # three captions name it; its near-duplicate cluster adds the nine copies captioned "an old painting"
    assert rule["name"] == "nearest-captioned" and rule["named_images"] == 3
    assert rule["counted_images"] >= 12 and rule["base_rate"] < 0.3
    rng = np.random.default_rng(99)  # generations the test makes: fresh copies vs fresh other scenes
    copies = np.stack([artwork(rng) for _ in range(20)])
    others = np.stack([shape_scene(rng)[0] for _ in range(20)])
    # were only the three named images counted, a copy would land on one of them about a quarter of the time
    assert data.present(concept, copies).mean() >= 0.9
    assert data.present(concept, others).mean() <= 0.1
    scene = data.concept("red square", prompts_per_concept=3, n=1)
    assert data.present(scene, copies).mean() == 0.0
    with pytest.raises(InputError, match="'purple elephant' is named by no caption of the dataset"):
        data.concept("purple elephant")


@pytest.fixture(scope="module")
def erased(tmp_path_factory):
    from sdguard.harden.erasure import erase

    out = tmp_path_factory.mktemp("captioned") / "erased"
    erase("builtin:tiny-random", ["golden checkerboard"], "uce", out=out, preview=0)
    return out


def test_cli_audit_erasure_on_a_captioned_dataset(run_cli, shapes, erased, tmp_path):
    out = tmp_path / "audit"
    code, stdout, stderr = run_cli("audit", "erasure", "builtin:tiny-random", erased, "--concept",
                                   "golden checkerboard", "--keep", "red square", "--dataset", shapes, "--n", 2,
                                   "--prompts-per-concept", 2, "--steps", 2, "--attack", "none", "--out", out)
    assert code == 0, stderr
    res = json.loads((out / "report.json").read_text())["results"]
    entry = res["efficacy"]["golden checkerboard"]
    assert entry["kind"] == "caption" and entry["images"] == 4 and 0 <= entry["erased"] <= 1
    assert entry["rule"]["name"] == "nearest-captioned" and entry["rule"]["embedder"]["name"] == "pixels"
    assert res["retention"]["red square"]["rule"]["named_images"] >= 1
    assert "not a synthetic world" in res["utility"]["skipped"]
    html = (out / "report.html").read_text()
    assert "nearest-captioned" in html and "base rate" in html

    code, _, stderr = run_cli("audit", "erasure", "builtin:tiny-random", erased, "--concept", "purple elephant",
                              "--dataset", shapes, "--out", tmp_path / "refused")
    line = " ".join(stderr.split())
    assert code == 2 and "--concept 'purple elephant' is named by no caption" in line, stderr
    assert line.count(". ") == 0 and not (tmp_path / "refused").exists()


def test_embedder_is_refused_on_a_world(run_cli, small_world, tmp_path):
    code, _, stderr = run_cli("audit", "erasure", "builtin:tiny-random", "builtin:tiny-random", "--concept", "monet",
                              "--dataset", small_world, "--embedder", "pixels", "--out", tmp_path / "o")
    assert code == 2 and "--embedder" in stderr and "make-world did not write" in stderr
