"""The synthetic world (sdguard.data.world) and the probes fitted on it (sdguard.data.world.probes).

Two small worlds (seeds 0 and 1) are written once per module; probes are fitted on the first
and scored on degraded images of the second, like generations of a small model would be.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from sdguard.data import WORLD_DEFAULTS, load_world, make_world
from sdguard.data import world as world_module
from sdguard.data.world import api as world_api
from sdguard.data.world import caption_contains, tokenize
from sdguard.data.world.artworks import paint_artwork
from sdguard.data.world.plan import plan_world
from sdguard.data.world.probes import (
    AttributeClassifier,
    ObjectDetector,
    StyleClassifier,
    artwork_of,
    as_images,
    nearest_training_image,
)

SIZE = 600


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> dict[int, Path]:
    base = tmp_path_factory.mktemp("worlds")
    for seed in (0, 1):
        make_world(base / f"seed{seed}", seed=seed, size=SIZE)
    return {seed: base / f"seed{seed}" for seed in (0, 1)}


@pytest.fixture(scope="module")
def world(roots):
    return load_world(roots[0])


@pytest.fixture(scope="module")
def other_world(roots):
    return load_world(roots[1])


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _degrade(images: np.ndarray, seed: int = 0, sigma: float = 0.9, noise: float = 0.03) -> np.ndarray:
    """What a small diffusion model does to an image: blur and noise."""
    rng = np.random.default_rng(seed)
    blurred = ndimage.gaussian_filter(images, sigma=(0, sigma, sigma, 0))
    return np.clip(blurred + rng.normal(0, noise, images.shape), 0, 1).astype(np.float32)


def _embed(images: np.ndarray, size: int = 16) -> np.ndarray:
    n, h = len(images), images.shape[1]
    v = images.reshape(n, size, h // size, size, h // size, 3).mean(axis=(2, 4)).reshape(n, -1)
    v = v - v.mean(axis=1, keepdims=True)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _auc(pos: np.ndarray, neg: np.ndarray) -> float:
    return float((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean())


# --- determinism and layout ----------------------------------------------------------------------


def test_defaults_are_the_documented_world():
    assert dict(WORLD_DEFAULTS) == {"seed": 0, "size": 5000, "image_size": 32}


def test_same_seed_gives_byte_identical_files(roots, tmp_path):
    make_world(tmp_path / "again", seed=0, size=SIZE)
    assert _digests(tmp_path / "again") == _digests(roots[0])


def test_different_seed_gives_a_different_world(roots):
    a, b = _digests(roots[0]), _digests(roots[1])
    assert set(a) == set(b)
    assert a["metadata.jsonl"] != b["metadata.jsonl"]
    images = [k for k in a if k.startswith("images/")]
    assert sum(a[k] != b[k] for k in images) > 0.9 * len(images)


def test_layout_is_an_imagefolder_with_labels(world, roots):
    root = roots[0]
    assert len(world) == SIZE
    assert sorted(p.name for p in root.iterdir()) == [".sdguard.json", "ground_truth.json", "images", "labels.jsonl",
                                                       "metadata.jsonl"]  # .sdguard.json: sdguard's marker
    assert len(list((root / "images").glob("*.png"))) == SIZE
    first = json.loads((root / "metadata.jsonl").read_text().splitlines()[0])
    assert set(first) == {"file_name", "text"} and first["file_name"] == "images/00000.png"
    for record in world.records[:50]:
        with Image.open(root / record.file_name) as im:
            assert im.mode == "RGB" and im.size == (32, 32)
    required = {"file_name", "kind", "shape", "color", "position", "background", "style", "artwork", "has_object"}
    assert all(required <= set(lab) for lab in world.labels)
    assert {lab["kind"] for lab in world.labels} == {"scene", "artwork", "style", "object"}
    truth = world.ground_truth
    for key in ("seed", "size", "image_size", "duplicates", "cooccurrence", "spread", "objects", "styles",
                "held_out", "vocabulary", "attributes"):
        assert key in truth
    assert (truth["seed"], truth["size"], truth["image_size"]) == (0, SIZE, 32)
    images = world.load_images([0, 5, 7])
    assert images.shape == (3, 32, 32, 3) and images.dtype == np.float32
    assert 0.0 <= images.min() and images.max() <= 1.0


def test_scenes_are_most_of_the_world(world):
    kinds = [lab["kind"] for lab in world.labels]
    assert kinds.count("scene") > 0.6 * len(world)
    assert world.ground_truth["counts"] == {k: kinds.count(k) for k in ("scene", "artwork", "style", "object")}


def test_some_scene_captions_are_under_described(world):
    """A share of the plain scenes' captions name colour and shape but not all of position and
    background, as web captions do; the image still has all four attributes."""
    positions = ("on the left", "on the right", "at the top", "at the bottom", "in the center")
    backgrounds = ("background", "sky")
    terse = [i for i, lab in enumerate(world.labels) if lab["under_described"]]
    full = [i for i, lab in enumerate(world.labels)
            if lab["kind"] == "scene" and lab["decoration"] is None and not lab["under_described"]]
    assert 0.3 * (len(terse) + len(full)) <= len(terse) <= 0.7 * (len(terse) + len(full))
    assert world.ground_truth["under_described"]["count"] == len(terse)
    for i in terse:
        text, lab = world.texts[i], world.labels[i]
        assert lab["kind"] == "scene" and lab["decoration"] is None
        assert caption_contains(text, f"{lab['color']} {lab['shape']}")
        named_position = any(caption_contains(text, p) for p in positions)
        named_background = any(caption_contains(text, b) for b in backgrounds)
        assert not (named_position and named_background), text
        assert lab["position"] in world.ground_truth["attributes"]["position"] and lab["background"]
    for i in full:
        assert any(caption_contains(world.texts[i], p) for p in positions), world.texts[i]
        assert any(caption_contains(world.texts[i], b) for b in backgrounds), world.texts[i]
    # every other kind keeps its full caption
    assert not any(lab["under_described"] for lab in world.labels if lab["kind"] != "scene")


def test_captions_use_a_small_closed_vocabulary(world):
    words = set()
    for text in world.texts:
        tokens = tokenize(text)
        assert 1 <= len(tokens) <= 20
        assert all(re.fullmatch(r"[a-z]+", t) for t in tokens), text
        words.update(tokens)
    assert world.ground_truth["vocabulary"] == sorted(words)
    assert len(words) < 200


# --- the planted cases ---------------------------------------------------------------------------


def test_artworks_are_duplicated_at_graded_rates(world):
    duplicates = world.ground_truth["duplicates"]
    assert len(duplicates) >= 4
    counts = [d["count"] for d in duplicates]
    assert counts == sorted(counts, reverse=True) and counts[0] >= 4 * counts[-1]
    for d in duplicates:
        assert 0.0025 <= d["target_rate"] <= 0.02
        assert abs(d["rate"] - d["target_rate"]) <= 1.5 / SIZE
        idx = [world.index_of(f) for f in d["files"]]
        assert len(idx) == d["count"] == round(d["rate"] * SIZE)
        assert all(world.artwork_of(i) == d["name"] for i in idx)
        assert all(caption_contains(world.texts[i], k) for i in idx for k in d["keywords"])
        assert 1 <= d["exact_copies"] <= d["count"]
        assert len({world.texts[i] for i in idx}) >= min(2, d["count"])  # varied captions
    assert sum(d["count"] for d in duplicates) == world.ground_truth["counts"]["artwork"]


def test_artwork_copies_are_near_duplicates_and_distinct_from_everything_else(world):
    emb = _embed(world.load_images())
    for d in world.ground_truth["duplicates"]:
        idx = np.array([world.index_of(f) for f in d["files"]])
        exact = [i for i in idx if world.labels[i]["exact_copy"]]
        others = np.setdiff1d(np.arange(len(world)), idx)
        to_original = emb[idx] @ emb[exact[0]]
        to_others = emb[others] @ emb[exact[0]]
        assert to_original.min() > to_others.max() + 0.05, d["name"]


def test_prompt_kinds_separate(world):
    vocabulary = set(world.ground_truth["vocabulary"])
    scene_words = {w for t, lab in zip(world.texts, world.labels) if lab["kind"] == "scene" for w in tokenize(t)}
    starry = next(d for d in world.ground_truth["duplicates"] if d["name"] == "starry_night")
    starry_words = {w for f in starry["files"] for w in tokenize(world.texts[world.index_of(f)])}
    assert {"night", "blue", "sky"} <= scene_words & starry_words  # keywords' words in unrelated captions
    for d in world.ground_truth["duplicates"]:
        p = d["prompts"]
        assert all(set(tokenize(text)) <= vocabulary and len(tokenize(text)) <= 20 for text in p.values())
        assert all(caption_contains(p["keywords"], k) for k in d["keywords"])
        assert p["related"] in {world.texts[world.index_of(f)] for f in d["files"]}
        assert all(caption_contains(p["unrelated_with_keywords"], k) for k in d["keywords"])
        assert not any(caption_contains(p["long_without_keywords"], k) for k in d["keywords"])
        assert len(tokenize(p["long_without_keywords"])) > len(tokenize(p["keywords"])) + 5


def _entries(world, keywords):
    return [i for i, t in enumerate(world.texts) if all(caption_contains(t, k) for k in keywords)]


def test_keyword_pair_mostly_falls_in_one_artwork(world):
    (co,) = world.ground_truth["cooccurrence"]
    idx = _entries(world, co["keywords"])
    in_dominant = sum(world.artwork_of(i) == co["dominant"] for i in idx)
    assert co["dominant_share"] == pytest.approx(in_dominant / len(idx))
    assert 0.4 <= co["dominant_share"] <= 0.6
    others = [i for i in idx if world.artwork_of(i) != co["dominant"]]
    assert all(world.artwork_of(i) is None for i in others)  # diverse, non-duplicate images
    for keyword in co["keywords"]:  # each keyword alone is spread wider than the pair
        alone = _entries(world, [keyword])
        assert sum(world.artwork_of(i) == co["dominant"] for i in alone) / len(alone) < co["dominant_share"] - 0.1


def test_spread_keyword_has_a_small_dominant_cluster(world):
    (spread,) = world.ground_truth["spread"]
    idx = _entries(world, [spread["keyword"]])
    arts = [world.artwork_of(i) for i in idx]
    assert spread["dominant"] is not None
    assert spread["dominant_share"] == pytest.approx(arts.count(spread["dominant"]) / len(idx))
    assert 0 < spread["dominant_share"] <= 0.12
    assert sum(a is None for a in arts) > 0.8 * len(idx)


def test_object_appears_in_a_share_of_keyword_images_and_is_never_named(world):
    (obj,) = world.ground_truth["objects"]
    idx = _entries(world, [obj["keyword"]])
    assert 0.05 <= len(idx) / len(world) <= 0.09
    with_object = {world.index_of(f) for f in obj["files_with_object"]}
    assert with_object <= set(idx)
    assert obj["share"] == pytest.approx(len(with_object) / len(idx))
    assert 0.2 <= obj["share"] <= 0.35
    assert {i for i, lab in enumerate(world.labels) if lab["has_object"]} == with_object
    assert obj["object"] not in world.ground_truth["vocabulary"]
    assert not any(obj["object"] in tokenize(t) for t in world.texts)
    # the object is salient and always at the same place
    images = world.load_images(idx)
    has = np.array([i in with_object for i in idx])
    diff = np.abs(images[has].mean(0) - images[~has].mean(0)).mean(-1)
    x0, y0, x1, y1 = (int(round(v * 32)) for v in obj["box"])
    inside = np.zeros((32, 32), bool)
    inside[y0:y1, x0:x1] = True
    assert diff[inside].mean() > max(0.2, 3 * diff[~inside].mean())


def test_styles_are_a_few_percent_each_with_their_name_in_the_caption(world):
    styles = world.ground_truth["styles"]
    assert len(styles) >= 3
    names = {s["name"] for s in styles}
    for s in styles:
        assert 0.02 <= len(s["files"]) / len(world) <= 0.08
        idx = [world.index_of(f) for f in s["files"]]
        assert all(world.labels[i]["kind"] == "style" and caption_contains(world.texts[i], s["name"]) for i in idx)
    for text, lab in zip(world.texts, world.labels):
        if lab["style"] is None:
            assert not names & set(tokenize(text))
    # styled images show varied content
    shapes = {world.labels[world.index_of(f)]["shape"] for s in styles for f in s["files"]}
    assert len(shapes) >= 4


def test_held_out_combinations_never_occur(world):
    held = world.ground_truth["held_out"]
    attrs = world.ground_truth["attributes"]
    assert len(held) >= 5
    seen = {(lab["shape"], lab["color"], lab["position"]) for lab in world.labels if lab["shape"]}
    for combo in held:
        assert combo["shape"] in attrs["shape"] and combo["color"] in attrs["color"]
        assert combo["position"] in attrs["position"]
        assert (combo["shape"], combo["color"], combo["position"]) not in seen
    # the separate values all occur
    for key in ("shape", "color", "position"):
        assert {lab[key] for lab in world.labels if lab["kind"] == "scene"} == set(attrs[key])


# --- refusing bad input, atomic writes -----------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [({"size": 499}, "--size"), ({"image_size": 48}, "--image-size"), ({"seed": -1}, "--seed"), ({"size": 600.0}, "--size"),
     ({"size": 10**8}, "--size")],
)
def test_refuses_bad_arguments(tmp_path, kwargs, argument):
    with pytest.raises(ValueError, match=rf"^{argument} .*{re.escape(str(list(kwargs.values())[0]))}"):
        make_world(tmp_path / "w", **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_refuses_a_non_empty_folder_or_a_file(tmp_path):
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="OUT .*full.* not empty"):
        make_world(full, size=500)
    assert [p.name for p in full.iterdir()] == ["keep.txt"]
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(ValueError, match="OUT .*file.* not a folder"):
        make_world(a_file, size=500)


def test_a_failure_leaves_nothing_behind(tmp_path, monkeypatch):
    calls = {"n": 0}
    render = world_api.render_image

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 20:
            raise RuntimeError("disk full")
        return render(*args, **kwargs)

    monkeypatch.setattr(world_api, "render_image", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        make_world(tmp_path / "w", size=500)
    assert list(tmp_path.iterdir()) == []


def test_load_world_refuses_other_folders(tmp_path):
    with pytest.raises(ValueError, match="not a world folder"):
        load_world(tmp_path)


# --- probes --------------------------------------------------------------------------------------


def test_style_classifier_recognizes_blurred_styles(world, other_world):
    clf = StyleClassifier().fit(world)
    assert set(clf.classes_) == {"none", "monet", "hokusai", "picasso"}
    styled = other_world.where(kind="style")
    rng = np.random.default_rng(0)
    plain = rng.choice(np.setdiff1d(np.arange(len(other_world)), styled), len(styled), replace=False)
    idx = np.concatenate([styled, plain])
    truth = [other_world.labels[i]["style"] or "none" for i in idx]
    pred = clf.predict(_degrade(other_world.load_images(idx)))
    assert np.mean([p == t for p, t in zip(pred, truth)]) >= 0.9
    for style in ("monet", "hokusai", "picasso"):
        sel = [k for k, t in enumerate(truth) if t == style]
        assert np.mean([pred[k] == style for k in sel]) >= 0.8, style


def test_attribute_classifier_reads_blurred_scenes(world, other_world):
    clf = AttributeClassifier().fit(world)
    scenes = other_world.where(kind="scene")
    pred = clf.predict(_degrade(other_world.load_images(scenes), sigma=1.0))
    for attr, values in world.ground_truth["attributes"].items():
        if attr == "background":
            continue
        accuracy = np.mean([p == other_world.labels[i][attr] for p, i in zip(pred[attr], scenes)])
        assert accuracy >= max(0.7, 3.0 / len(values)), attr


def test_object_detector_separates_images_with_and_without_the_object(world, other_world):
    det = ObjectDetector().fit(world)
    astronauts = other_world.where(kind="object")
    has = np.array([other_world.labels[i]["has_object"] for i in astronauts])
    scores = det.score(_degrade(other_world.load_images(astronauts)))
    assert ((0 <= scores) & (scores <= 1)).all()
    assert _auc(scores[has], scores[~has]) >= 0.95
    assert scores[has].mean() - scores[~has].mean() >= 0.5
    found = det.detect(_degrade(other_world.load_images(astronauts), seed=1))
    assert found[has].mean() >= 0.8 and found[~has].mean() <= 0.1
    rest = other_world.where(has_object=False)
    assert det.detect(_degrade(other_world.load_images(rest))).mean() <= 0.05
    # hard negatives: red or pink shapes where the flag's red and white stripes would be
    alike = [i for i in rest if other_world.labels[i]["color"] in ("red", "pink")
             and other_world.labels[i]["position"] in ("left", "top")]
    assert len(alike) >= 10
    assert det.detect(_degrade(other_world.load_images(alike))).mean() <= 0.1


def test_nearest_training_image_finds_the_artwork_of_a_copy(world, other_world):
    copies = other_world.where(kind="artwork")
    index, sims = nearest_training_image(_degrade(other_world.load_images(copies)), world)
    assert index.shape == sims.shape == (len(copies),) and index.dtype.kind == "i"
    names = artwork_of(index, world)
    assert names == [other_world.labels[i]["artwork"] for i in copies]
    assert artwork_of(int(index[0]), world) == names[0]
    scenes = other_world.where(kind="scene")[:100]
    _, scene_sims = nearest_training_image(_degrade(other_world.load_images(scenes)), world)
    assert np.median(sims) > np.median(scene_sims)
    same, same_sims = nearest_training_image(world.load_images([3, 4]), world)
    assert same.tolist() == [3, 4] and np.allclose(same_sims, 1.0, atol=1e-4)


def test_probes_accept_other_image_formats(world):
    images = world.load_images(np.arange(4))
    as_uint8 = (images * 255).round().astype(np.uint8)
    assert np.allclose(as_images(as_uint8), images, atol=1e-6)
    assert np.allclose(as_images(images.transpose(0, 3, 1, 2)), images)
    pil = [Image.fromarray(im) for im in as_uint8]
    assert np.allclose(as_images(pil), images, atol=1e-6)
    big = np.repeat(np.repeat(images, 2, axis=1), 2, axis=2)  # a 64x64 generation
    assert np.allclose(as_images(big), images, atol=1e-6)
    with pytest.raises(RuntimeError, match="not fitted"):
        StyleClassifier().predict(images)


def test_large_images_show_the_same_world():
    """image_size=64 draws the same compositions at twice the resolution."""
    plan, _ = plan_world(0, 500)
    small = {a.name: paint_artwork(a, 32) for a in world_module.ARTWORKS}
    large = {a.name: paint_artwork(a, 64) for a in world_module.ARTWORKS}
    for name in small:
        shrunk = large[name].reshape(32, 2, 32, 2, 3).mean(axis=(1, 3))
        assert np.abs(shrunk - small[name]).mean() < 0.03, name
    for spec in plan[:30]:
        image = world_api.render_image(spec, 64, np.random.default_rng(0), large)
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8


def test_make_world_command_reports_the_planted_cases(run_cli, tmp_path):
    code, out, err = run_cli("data", "make-world", tmp_path / "w", "--size", 500, "--seed", 3)
    assert code == 0, err
    truth = json.loads((tmp_path / "w" / "ground_truth.json").read_text())
    assert "starry_night" in out and "under-described scene captions" in out
    assert f"{truth['under_described']['count']} (" in out
    code, _, err = run_cli("data", "make-world", tmp_path / "x", "--size", 10)
    assert code != 0 and "size 10" in err and not (tmp_path / "x" / "ground_truth.json").exists()
