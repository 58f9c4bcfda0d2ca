"""Fast memorization detection (``sdguard audit memorization``) and inference-time mitigation."""

import json

import numpy as np
import pytest
import torch

from sdguard.audit.memorization import DETECTORS, DetectionSettings, audit_memorization
from sdguard.audit.memorization.prompts import read_prompt_set, sdv1_500
from sdguard.core.errors import InputError
from sdguard.data.world.artworks import ARTWORKS


@pytest.fixture(scope="module")
def tiny():
    from sdguard.models import DiffusionModel

    return DiffusionModel.load("builtin:tiny")


@pytest.fixture(scope="module")
def world_audit(default_world, tmp_path_factory):
    out = tmp_path_factory.mktemp("memo") / "out"
    audit_memorization("builtin:tiny", suite="world", dataset=str(default_world), out=str(out), timestep=100,
                       detector=["wen"])
    return json.loads((out / "report.json").read_text()), out


def test_planted_artworks_are_detected_from_two_unet_evaluations(world_audit):
    """The planted paintings' captions stand out from the world's scene captions at 2 UNet evaluations
    per prompt, with the threshold calibrated on other scene captions keeping its false-positive rate."""
    report, _ = world_audit
    wen = report["results"]["detectors"]["wen"]
    assert wen["unet_evaluations_per_prompt"] == 2
    m = wen["metrics"]
    assert m["n_positive"] >= 25 and m["n_negative"] >= 100  # enough ordinary prompts to resolve 1% FPR
    assert m["auc"] >= 0.97 and m["auc_ci"][0] > 0.9
    assert m["tpr_at_0_01_fpr"] >= 0.8
    assert wen["threshold"]["calibration_fpr"] <= 0.01
    assert m["at_threshold"]["fpr"] <= 0.05 and m["at_threshold"]["tpr"] >= 0.8
    assert wen["extensions"], "the --timestep extension is named in the report"
    flagged = [r["prompt"] for r in report["results"]["prompts"] if r["flagged"]["wen"]]
    assert any("starry night" in p for p in flagged)


def test_wen_score_is_the_conditional_minus_unconditional_norm(tiny):
    """Reference: the score of each prompt is ||pred(x_T, c) - pred(x_T, '')|| on the noise seeded
    ``seed``, computed by hand; a prompt scores the same alone as in a batch."""
    prompts = [ARTWORKS[0].captions[0], "a red circle at the top left over a black background"]
    det = DETECTORS.get("wen")()
    settings = DetectionSettings(seed=3)
    both = det.score(tiny, tiny.encode_prompts(prompts), settings)["score"]
    alone = det.score(tiny, tiny.encode_prompts(prompts[1:]), settings)["score"]
    assert alone[0] == pytest.approx(both[1], rel=1e-5)
    tiny.scheduler.set_timesteps(50)
    t = tiny.scheduler.timesteps[0]
    x = tiny.initial_latents([3], 32, 32) * tiny.scheduler.init_noise_sigma
    emb = tiny.encode_prompts(prompts[:1])
    with torch.no_grad():
        c = tiny.predict_noise(x, t, emb.cond)
        u = tiny.predict_noise(x, t, emb.uncond)
    assert both[0] == pytest.approx(float((c - u).norm()), rel=1e-4)
    more = det.score(tiny, tiny.encode_prompts(prompts), DetectionSettings(seed=3, generations=2, scored_steps=3))
    assert more["score"].shape == (2,) and np.all(np.isfinite(more["score"]))
    # from a timestep: its score first, then deterministic DDIM down the sampler's grid
    at = det.score(tiny, emb, DetectionSettings(seed=3, timestep=100))["score"]
    with torch.no_grad():
        c = tiny.predict_noise(x, 100, emb.cond)
        u = tiny.predict_noise(x, 100, emb.uncond)
    assert at[0] == pytest.approx(float((c - u).norm()), rel=1e-4)
    two = det.score(tiny, emb, DetectionSettings(seed=3, timestep=100, scored_steps=2))["score"]
    assert np.isfinite(two[0]) and two[0] != pytest.approx(at[0])


def test_anisotropy_is_norm_plus_weighted_alignment(tiny):
    det = DETECTORS.get("anisotropy")()
    emb = tiny.encode_prompts([ARTWORKS[1].captions[0], "a blue ring at the center under a night sky"])
    a = det.score(tiny, emb, DetectionSettings())
    b = det.score(tiny, emb, DetectionSettings(anisotropy_weight=-3.0))
    assert np.allclose(a["score"], a["norm"] + 0.1 * a["alignment"])  # v-prediction: the published 0.1
    assert np.allclose(b["score"], b["norm"] - 3.0 * b["alignment"])
    assert np.all(np.abs(a["alignment"]) <= 1 + 1e-6)
    info = det.describe(tiny, DetectionSettings())
    assert info["timesteps"][0] > info["timesteps"][1] and "alpha_bar" in info["norm_term"]  # zero terminal SNR


def test_prompt_files_and_the_public_suite(tmp_path):
    (tmp_path / "p.txt").write_text("memorized\tvan gogh starry night\nordinary\ta cat\njust a prompt\n")
    s = read_prompt_set(tmp_path / "p.txt")
    assert s.labels == [True, False, None]
    (tmp_path / "p.jsonl").write_text('{"caption": "a", "memorized": true}\n{"prompt": "b", "label": "ordinary"}\n')
    assert read_prompt_set(tmp_path / "p.jsonl").labels == [True, False]
    (tmp_path / "p.csv").write_text("prompt,memorized\nx,1\ny,0\n")
    assert read_prompt_set(tmp_path / "p.csv").labels == [True, False]
    (tmp_path / "bad.csv").write_text("prompt,memorized\nx,maybe\n")
    with pytest.raises(InputError, match="maybe"):
        read_prompt_set(tmp_path / "bad.csv")
    scored, calibration = sdv1_500()
    assert scored.labels.count(True) == 500 and scored.labels.count(False) == 500
    assert not set(calibration) & set(scored.prompts) and len(calibration) == 500


@pytest.mark.parametrize("args, words", [
    ((), "--prompts"),
    (("--suite", "world", "--scored-steps", "60"), "--scored-steps"),
    (("--suite", "world", "--timestep", "5000"), "--timestep"),
    (("--suite", "world", "--detector", "nope"), "nope"),
    (("--prompts", "/no/such/file.txt"), "does not exist"),
    (("--prompts", "x.txt", "--dataset", "w"), "--dataset"),
])
def test_bad_input_is_one_sentence(run_cli, tmp_path, args, words):
    code, _, err = run_cli("audit", "memorization", "builtin:tiny", *args, "--out", tmp_path / "o")
    assert code == 2 and words in err and err.count("error:") == 1
    assert not (tmp_path / "o").exists()


def test_mitigation_stops_replication_and_leaves_ordinary_prompts_alone(world_audit, default_world, tmp_path):
    """The generation audit of a planted painting's caption, with and without Wen et al.'s mitigation
    calibrated by the memorization audit: replication falls from >= 0.9 to <= 0.2, and an ordinary
    scene prompt's images that score below the flag threshold (most of them) are generated exactly
    as without mitigation."""
    from sdguard.audit.generation_replication import audit_generations

    _, memo = world_audit
    prompts = tmp_path / "prompts.txt"
    scene = "a red circle at the top left over a black background"
    prompts.write_text(f"user\t{ARTWORKS[0].captions[0]}\nuser\t{scene}\n")
    rates, images = {}, {}
    for mode in ("none", "wen"):
        extra = {"mitigate": "wen", "mitigate_from": str(memo)} if mode == "wen" else {}
        out = tmp_path / mode
        rep = audit_generations("builtin:tiny", str(default_world), prompts=str(prompts), n=10, reference_prompts=0,
                                embedder="dct", out=str(out), **extra)
        rates[mode] = {p["prompt"]: p["replication_rate"] for p in rep.results["prompts"]}
        with np.load(out / "generations" / "p0001_s000000.npz") as z:
            images[mode] = z["images"]
            stats = z["mitigation"] if "mitigation" in z.files else None
    art = ARTWORKS[0].captions[0]
    assert rates["none"][art] >= 0.9 and rates["wen"][art] <= 0.2
    untouched = stats[:, 2] == 0
    assert untouched.mean() >= 0.7
    assert np.array_equal(images["none"][untouched], images["wen"][untouched])
    mit = rep.results["generation"]["mitigation"]
    by_prompt = {p["prompt"]: p for p in mit["prompts"]}
    assert by_prompt[art]["optimized"] == 10
    assert by_prompt[art]["score_after_mean"] < 0.8 * by_prompt[art]["score_before_mean"]
    assert by_prompt[scene]["optimized"] == int((~untouched).sum())


def test_mitigation_needs_a_target_and_the_same_model(run_cli, world_audit, tmp_path):
    code, _, err = run_cli("generate", "builtin:tiny", "a cat", "--mitigate", "wen", "--out", tmp_path / "a")
    assert code == 2 and "--mitigate-from" in err
    _, memo = world_audit
    code, _, err = run_cli("generate", "builtin:tiny-random", "a cat", "--mitigate", "wen", "--mitigate-from", memo,
                           "--out", tmp_path / "b")
    assert code == 2 and "another model" in err
    code, _, err = run_cli("generate", "builtin:tiny", "a cat", "--mitigate-target", "3", "--out", tmp_path / "c")
    assert code == 2 and "--mitigate wen" in err


def test_the_public_protocol_runs_through_the_cli(run_cli, tmp_path):
    """``--suite sdv1-500`` (the GPU protocol) end to end on the tiny model, capped by ``--limit``:
    memorized captions and COCO captions scored, other COCO captions calibrating the threshold."""
    code, out, err = run_cli("audit", "memorization", "builtin:tiny", "--suite", "sdv1-500", "--limit", "12",
                             "--detector", "wen", "--out", tmp_path / "o")
    assert code == 0, err
    rep = json.loads((tmp_path / "o" / "report.json").read_text())["results"]
    assert rep["counts"] == {"scored": 24, "memorized": 12, "ordinary": 12}
    wen = rep["detectors"]["wen"]
    assert wen["threshold"]["calibration_prompts"] == 12 and "metrics" in wen
    assert "UNet evaluations" in out
