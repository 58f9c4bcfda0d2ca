"""Generation replication audit: statistics, cliques, prompt suites, determinism and resume."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from sdguard.audit.extraction import (
    DEFAULT_DELTA,
    calibrate_delta,
    extraction_clique,
    largest_clique,
    tiled_l2,
)
from sdguard.audit.generation_replication import audit_generations, calibrate_threshold
from sdguard.audit.prompt_suites import (
    KINDS,
    cluster_suite,
    control_prompts,
    read_prompt_file,
)
from sdguard.audit.stats import wilson_interval
from sdguard.core.errors import InputError


def test_wilson_interval_behaves():
    lo, hi = wilson_interval(0, 64)
    assert lo == 0.0 and 0 < hi < 0.1
    lo, hi = wilson_interval(64, 64)
    assert hi == 1.0 and 0.9 < lo < 1.0
    lo, hi = wilson_interval(30, 100)
    assert lo < 0.3 < hi
    lo2, hi2 = wilson_interval(300, 1000)
    assert hi2 - lo2 < hi - lo  # more samples, narrower


def test_clique_of_near_copies_is_found_and_random_images_are_not():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (32, 32, 3))
    copies = [np.clip(base + rng.normal(0, 4, base.shape), 0, 255).astype(np.uint8) for _ in range(12)]
    noise = [rng.integers(0, 256, (32, 32, 3)).astype(np.uint8) for _ in range(60)]
    found = extraction_clique(np.stack(copies + noise))
    assert found["flagged"] and found["clique_size"] == 12 and found["members"] == list(range(12))
    assert not extraction_clique(np.stack(noise))["flagged"]
    # a copy that differs in one tile only is far under the tiled distance
    altered = copies[0].copy()
    altered[:8, :8] = 255 - altered[:8, :8]
    d = tiled_l2(np.stack([copies[0], copies[1], altered]))
    assert d[0, 1] < 0.05 and d[0, 2] > 0.3


def _scene_like(rng, n, jitter):
    """n blurry images of one simple scene (a red blob on white, as a 32-pixel model draws it)
    with position/size jitter and noise."""
    yy, xx = np.mgrid[:32, :32]
    out = []
    for _ in range(n):
        cx, cy, r = 10 + rng.normal(0, jitter), 16 + rng.normal(0, jitter), 5 + rng.normal(0, jitter / 2)
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))[..., None]
        img = 240.0 * (1 - blob) + np.array([200.0, 30.0, 30.0]) * blob
        out.append(np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8))
    return np.stack(out)


def test_calibrated_clique_distance_spares_a_low_diversity_model_and_still_flags_copies():
    rng = np.random.default_rng(0)
    # a low-diversity model: every seed draws the scene with a little jitter, all within 0.15
    control = _scene_like(rng, 60, jitter=0.5)
    assert extraction_clique(control, delta=DEFAULT_DELTA)["flagged"]  # Carlini's 0.15 flags it
    refs = [_scene_like(rng, 40, jitter=0.5) for _ in range(3)]
    cal = calibrate_delta(refs)
    assert cal["source"] == "calibrated" and cal["value"] < DEFAULT_DELTA
    assert not extraction_clique(control, delta=cal["value"])["flagged"]
    # a memorized image comes back with pixel noise only: still one clique
    copies = _scene_like(rng, 1, jitter=0)
    copies = np.stack([np.clip(copies[0] + rng.normal(0, 2, copies[0].shape), 0, 255).astype(np.uint8) for _ in range(30)])
    assert extraction_clique(np.concatenate([copies, control]), delta=cal["value"])["clique_size"] >= 30
    # a diverse model keeps the published distance
    diverse = [rng.integers(0, 256, (20, 32, 32, 3)).astype(np.uint8) for _ in range(2)]
    assert calibrate_delta(diverse)["value"] == DEFAULT_DELTA
    with pytest.raises(ValueError):
        calibrate_delta([control[:1]])


def test_largest_clique_is_a_clique_and_maximum_on_small_graphs():
    rng = np.random.default_rng(1)
    for _ in range(5):
        adj = rng.random((25, 25)) < 0.5
        adj = adj | adj.T
        members, exact = largest_clique(adj)
        assert exact
        assert all(adj[i, j] for i in members for j in members if i != j)
        # brute force over 1-vertex extensions: no vertex can be added
        for v in set(range(25)) - set(members):
            assert not all(adj[v, u] for u in members)


def test_prompt_suite_has_the_five_kinds_and_clean_controls():
    rng = np.random.default_rng(0)
    captions = ["van gogh starry night", "the starry night by van gogh", "starry night van gogh oil painting of a village"]
    outside = ["a red circle on the left", "a blue square at the top", "a night sky over a house"]
    suite = cluster_suite(0, captions, ["van", "gogh", "starry", "night"], outside, rng)
    assert list(dict.fromkeys(s.kind for s in suite)) == list(KINDS)
    assert suite[0].prompt == "van gogh starry night"
    without = [s for s in suite if s.kind == "long_without_keyword"][0].prompt
    assert not {"van", "gogh", "starry", "night"} & set(without.split()) and "village" in without
    unrelated = [s.prompt for s in suite if s.kind == "unrelated_with_keywords"]
    assert len(unrelated) == 2  # the two outside captions without a keyword ("night" is one)
    # the keywords after the first caption, before the second (the order matters to a causal text encoder)
    assert unrelated[0].endswith(" van gogh starry night") and unrelated[1].startswith("van gogh starry night ")
    captions_used = {p.replace("van gogh starry night", "").strip() for p in unrelated}
    assert captions_used == {"a red circle on the left", "a blue square at the top"}
    controls = control_prompts(outside, {"night", "van"}, 5, rng)
    assert {c.prompt for c in controls} == {"a red circle on the left", "a blue square at the top"}


def test_unrelated_prompt_keeps_its_keywords_within_the_token_limit():
    captions = ["van gogh starry night", "the starry night by van gogh"]
    outside = ["a red circle on the left over a white background with a small house and a tree",
               "a blue square at the top"]
    fits = lambda p: len(p.split()) <= 10  # noqa: E731  (a text encoder that reads 10 words)
    for seed in range(6):
        suite = cluster_suite(0, captions, ["van", "gogh", "starry", "night"], outside, np.random.default_rng(seed),
                              fits=fits)
        unrelated = [s.prompt for s in suite if s.kind == "unrelated_with_keywords"]
        assert unrelated == ["a blue square at the top van gogh starry night"]
    assert not [s for s in cluster_suite(0, captions, ["van", "gogh"], outside[:1], np.random.default_rng(0), fits=fits)
                if s.kind == "unrelated_with_keywords"]  # nothing fits: the kind is left out


def test_prompt_file(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("# comment\nvan gogh starry night\n\ncontrol\ta red circle\n")
    specs = read_prompt_file(f)
    assert [(s.kind, s.prompt) for s in specs] == [("user", "van gogh starry night"), ("control", "a red circle")]
    with pytest.raises(InputError, match="--prompts"):
        read_prompt_file(tmp_path / "missing.txt")


def test_calibrated_threshold_separates_duplicates():
    rng = np.random.default_rng(0)
    base = rng.normal(size=32)
    dup = base + rng.normal(0, 0.1, (10, 32))
    other = rng.normal(size=(200, 32))
    v = np.concatenate([dup, other])
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    t = calibrate_threshold(np.arange(10), v.astype(np.float32), np.ones(len(v), bool))
    assert t["separated"] and t["non_duplicates_q95"] < t["value"] < t["duplicates_q05"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from sdguard.data import make_world

    root = tmp_path_factory.mktemp("gw") / "world"
    make_world(root, seed=4, size=500)
    return root


ARGS = ["--n", "12", "--batch-size", "4", "--steps", "2", "--top-clusters", "1", "--controls", "1"]


def test_same_seeds_same_rates(world, tmp_path, monkeypatch):
    monkeypatch.setenv("SDGUARD_CACHE", str(tmp_path / "cache"))
    kw = dict(n=8, batch_size=4, steps=2, top_clusters=1, controls=1)
    a = audit_generations("builtin:tiny-random", str(world), out=str(tmp_path / "a"), **kw)
    b = audit_generations("builtin:tiny-random", str(world), out=str(tmp_path / "b"), **kw)
    strip = lambda rows: [{k: v for k, v in r.items()} for r in rows]  # noqa: E731
    assert strip(a.results["prompts"]) == strip(b.results["prompts"])
    for r in a.results["prompts"]:
        assert {"prompt", "kind", "n", "replication_rate", "ci_low", "ci_high", "clique_size"} <= set(r)
        assert r["n"] == 8 and r["ci_low"] <= r["replication_rate"] <= r["ci_high"]
    assert {r["kind"] for r in a.results["prompts"]} >= {"keywords", "control"}
    html = (tmp_path / "a" / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 3


def test_killed_run_resumes_without_redoing_images(world, tmp_path):
    env = {**os.environ, "SDGUARD_CACHE": str(tmp_path / "cache"), "SDGUARD_NO_PROGRESS": "1"}
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "sdguard.cli.main", "audit", "generations", "builtin:tiny-random", "--dataset", str(world),
           "--out", str(out), *ARGS]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    chunks = tmp_path / ".run.partial" / "generations"
    deadline = time.time() + 240
    while time.time() < deadline and (not chunks.is_dir() or len(list(chunks.glob("*.npz"))) < 3):
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = len(list(chunks.glob("*.npz")))
    assert finished >= 3 and not out.exists()

    resumed = audit_generations("builtin:tiny-random", str(world), out=str(out), resume=True, n=12, batch_size=4,
                                steps=2, top_clusters=1, controls=1)
    generated = json.loads((out / "prompts.json").read_text())["prompts"]  # audited and reference prompts
    assert len(generated) > len(resumed.results["prompts"])
    total = len(generated) * 12
    assert resumed.results["generation"]["reused"] >= 4 * finished - 4  # a chunk holds 4 images
    assert resumed.results["generation"]["generated_now"] == total - resumed.results["generation"]["reused"]
    fresh = audit_generations("builtin:tiny-random", str(world), out=str(tmp_path / "fresh"), n=12, batch_size=4,
                              steps=2, top_clusters=1, controls=1)
    assert resumed.results["prompts"] == fresh.results["prompts"]
    assert not (tmp_path / ".run.partial").exists()


def test_resume_with_other_settings_is_refused(world, tmp_path, monkeypatch):
    monkeypatch.setenv("SDGUARD_CACHE", str(tmp_path / "cache"))
    staging = tmp_path / ".o.partial"
    staging.mkdir()
    (staging / "prompts.json").write_text(json.dumps({"config": {}, "prompts": []}))
    with pytest.raises(InputError, match="--resume"):
        audit_generations("builtin:tiny-random", str(world), out=str(tmp_path / "o"), resume=True, n=4, batch_size=4,
                          steps=1, top_clusters=1, controls=0)
