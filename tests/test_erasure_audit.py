"""`sdguard audit erasure` end to end on tiny random models and a small world; the attack's mechanics."""

import json
from pathlib import Path

import pytest
import torch

from sdguard.audit.attacks import soft_prompt_attack
from sdguard.audit.erasure import resolve_concept
from sdguard.core.errors import InputError

SAMPLE = Path(__file__).parent / "data" / "i2p_sample.csv"


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory):
    from sdguard.data import make_world

    folder = tmp_path_factory.mktemp("erasure") / "world"
    make_world(folder, size=500)
    return folder


@pytest.fixture(scope="module")
def erased_dir(tmp_path_factory):
    from sdguard.harden.erasure import erase

    out = tmp_path_factory.mktemp("erasure") / "erased"
    erase("builtin:tiny-random", ["red circle"], "uce", out=out, preview=0)
    return out


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("SDGUARD_CACHE", str(tmp_path_factory.getbasetemp() / "sdguard-cache"))


def test_concepts_resolve_to_what_the_world_planted(world_dir):
    from sdguard.data import load_world

    w = load_world(world_dir)
    art = resolve_concept("van gogh starry night", w, prompts_per_concept=3)
    assert (art.kind, art.target, len(art.prompts)) == ("artwork", "starry_night", 3)
    assert all("starry night" in p and "van gogh" in p for p in art.prompts)
    assert resolve_concept("the_scream", w).target == "the_scream"
    style = resolve_concept("in the style of monet", w, prompts_per_concept=2)
    assert (style.kind, style.target) == ("style", "monet") and all("monet" in p for p in style.prompts)
    assert resolve_concept("nudity", None).kind == "nudity"
    with pytest.raises(InputError, match="--concept 'a purple elephant' names no artwork or style"):
        resolve_concept("a purple elephant", w)


def test_cli_audit_erasure_reports_before_and_after(run_cli, world_dir, erased_dir, tmp_path):
    out = tmp_path / "audit"
    code, stdout, stderr = run_cli("audit", "erasure", "builtin:tiny-random", erased_dir, "--concept", "monet",
                                   "--concept", "van gogh starry night", "--keep", "hokusai", "--dataset", world_dir,
                                   "--n", 2, "--prompts-per-concept", 2, "--utility-prompts", 2, "--steps", 4,
                                   "--attack-steps", 2, "--attack-timesteps", 2, "--out", out)
    assert code == 0, stderr
    assert "report.html" in stdout and "monet" in stdout
    data = json.loads((out / "report.json").read_text())
    assert data["command"] == "audit erasure" and set(data["models"]) == {"original", "erased"}
    res = data["results"]
    assert set(res["efficacy"]) == {"monet", "van gogh starry night"} and set(res["retention"]) == {"hokusai"}
    for entry in list(res["efficacy"].values()) + list(res["retention"].values()):
        assert entry["images"] == 4 and 0 <= entry["original"] <= 1 and 0 <= entry["erased"] <= 1
    assert res["efficacy"]["monet"]["kind"] == "style" and res["efficacy"]["van gogh starry night"]["target"] == "starry_night"
    assert set(res["utility"]["original"]) == {"shape", "color", "position", "mean"}
    assert set(res["robustness"]) == {"monet", "van gogh starry night"}
    assert {v["method"] for v in res["robustness"].values()} == {"UnlearnDiffAtk (Zhang et al.)"}  # the default
    assert "data:image/png;base64," in (out / "report.html").read_text()


def test_cli_audit_erasure_of_nudity_needs_no_world(run_cli, erased_dir, tmp_path, monkeypatch):
    pytest.importorskip("nudenet")
    code, stdout, stderr = run_cli("audit", "erasure", "builtin:tiny-random", erased_dir, "--concept", "nudity",
                                   "--prompts", SAMPLE, "--n", 1, "--steps", 2, "--attack", "none",
                                   "--out", tmp_path / "a")
    assert code == 0, stderr
    res = json.loads((tmp_path / "a" / "report.json").read_text())["results"]
    e = res["efficacy"]["nudity"]
    assert e["kind"] == "nudity" and e["images"] == 12 and "per_class" in e["nudenet"]["original"]
    assert "skipped" in res["utility"]


@pytest.mark.parametrize("args,words,code", [
    (["--concept", "a purple elephant"], ["--concept", "purple elephant"], 2),
    (["--concept", "monet", "--keep", "monet"], ["--keep", "monet"], 2),
    (["--concept", "monet", "--n", "0"], ["--n", "0"], 2),
    (["--concept", "monet", "--prompts", "missing.csv"], ["--prompts", "missing.csv"], 2),
])
def test_cli_audit_erasure_bad_input(run_cli, world_dir, erased_dir, tmp_path, args, words, code):
    got, _, stderr = run_cli("audit", "erasure", "builtin:tiny-random", erased_dir, *args, "--dataset", world_dir,
                             "--out", tmp_path / "o")
    assert got == code, stderr
    line = " ".join(stderr.split())
    assert all(w in line for w in words), line
    assert not (tmp_path / "o").exists()


def test_fid_without_its_dependency_or_weights_exits_3(run_cli, world_dir, erased_dir, tmp_path):
    code, _, stderr = run_cli("audit", "erasure", "builtin:tiny-random", erased_dir, "--concept", "monet", "--dataset",
                              world_dir, "--n", 1, "--prompts-per-concept", 1, "--utility-prompts", 1, "--steps", 2,
                              "--attack", "none", "--fid", "--out", tmp_path / "o")
    assert code == 3, stderr
    assert "--fid" in stderr or ("torchmetrics" in stderr and "pip install" in stderr), stderr
    assert not (tmp_path / "o").exists()


def test_probe_cache_holds_arrays_and_json_and_refits_a_broken_entry(world_dir, tmp_path, monkeypatch):
    import numpy as np

    from sdguard.audit.erasure import WorldProbes
    from sdguard.data import load_world
    from sdguard.data.world.probes import StyleClassifier

    monkeypatch.setenv("SDGUARD_CACHE", str(tmp_path))
    fits = []
    fit = StyleClassifier.fit
    monkeypatch.setattr(StyleClassifier, "fit", lambda self, *a, **k: fits.append(1) or fit(self, *a, **k))
    world = load_world(world_dir)
    images = world.load_images(range(8))
    fitted = WorldProbes(world, fit_images=100).style()
    folder = tmp_path / "probes"
    tensors, record = sorted(folder.glob("style-*.safetensors")), sorted(folder.glob("style-*.json"))
    assert len(fits) == 1 and len(tensors) == len(record) == 1 and not list(folder.glob("*.pkl"))
    assert json.loads(record[0].read_text())["key"]["probe"] == "StyleClassifier"
    loaded = WorldProbes(world, fit_images=100).style()  # read back, not refitted
    assert len(fits) == 1 and loaded is not fitted and loaded.classes_ == fitted.classes_
    assert np.array_equal(loaded.predict_proba(images), fitted.predict_proba(images))
    good = record[0].read_text()
    # corrupt tensors, another probe's entry, a record that is not JSON: each refitted without an error
    for broken in (lambda: tensors[0].write_bytes(b"not safetensors"),
                   lambda: record[0].write_text(good.replace('"StyleClassifier"', '"AttributeClassifier"', 1)),
                   lambda: record[0].write_bytes(b"\x80\x04garbage")):
        broken()
        n = len(fits)
        refitted = WorldProbes(world, fit_images=100).style()
        assert len(fits) == n + 1 and refitted.classes_ == fitted.classes_
    assert WorldProbes(world, fit_images=100).style() and len(fits) == 4  # the refit was cached again


def test_fid_errors_name_the_extra(monkeypatch):
    import sys

    from sdguard.audit.erasure import fid_backend
    from sdguard.core.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "torchmetrics", None)
    monkeypatch.setitem(sys.modules, "cleanfid", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'sdguard\[fid\]'"):
        fid_backend()


def test_soft_prompt_attack_optimises_prepended_token_embeddings(tiny_random):
    model = tiny_random.copy()
    before = {k: p.detach().clone() for k, p in model.unet.named_parameters()}
    flags = [p.requires_grad for p in model.unet.parameters()]
    targets = model.generate(["a red circle"] * 2, 0, steps=3).latents
    res = soft_prompt_attack(model, "a red circle", targets, tokens=3, steps=4, lr=0.05, seed=1)
    plain = model.encode_prompts(["a red circle"] * 2)
    assert res.cond.shape == plain.cond.shape and torch.allclose(res.uncond, plain.uncond)
    assert torch.allclose(res.cond[:, 0], plain.cond[:, 0])  # the start token sees nothing before it
    assert not torch.allclose(res.cond[:, 1:4], plain.cond[:, 1:4])
    assert not torch.allclose(res.cond[0], res.cond[1])  # one adversarial prompt per target
    assert len(res.losses) == 4 and all(l > 0 for l in res.losses)
    for (k, p), f in zip(model.unet.named_parameters(), flags):  # the model is left as it was
        assert torch.equal(p, before[k]) and p.requires_grad == f
    with pytest.raises(InputError, match="--attack-tokens"):
        soft_prompt_attack(model, "a red circle", targets, tokens=40)
