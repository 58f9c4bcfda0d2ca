"""The command line: output contract and the bad-input table of the README."""

import json

import pytest


def test_generate_writes_images_and_report(run_cli, tmp_path):
    out = tmp_path / "gen"
    code, stdout, _ = run_cli("generate", "builtin:tiny-random", "a red circle", "night sky", "--n", 3, "--steps", 3,
                              "--seed", 5, "--out", out)
    assert code == 0, stdout
    assert "report.html" in stdout
    rows = [json.loads(line) for line in (out / "images.jsonl").read_text().splitlines()]
    assert [r["seed"] for r in rows] == [5, 6, 7, 5, 6, 7]
    assert all((out / r["file"]).is_file() for r in rows)
    report = json.loads((out / "report.json").read_text())
    assert report["schema_version"] >= 1 and report["command"] == "generate"
    assert report["config"]["n"] == 3 and report["config"]["prompts"] == ["a red circle", "night sky"]
    assert len(report["models"]["model"]["fingerprint"]) == 64
    assert {"torch", "diffusers", "transformers"} <= set(report["environment"]["packages"])
    assert report["timings"]["generate"] > 0
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 2 and "http://" not in html and "https://" not in html


def test_same_command_same_images(run_cli, tmp_path):
    for name in ("a", "b"):
        assert run_cli("generate", "builtin:tiny-random", "night sky", "--n", 2, "--steps", 2, "--out", tmp_path / name)[0] == 0
    for f in ("images/p000_s0.png", "images/p000_s1.png"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()


def test_info_prints_groups_and_fingerprint(run_cli):
    code, stdout, _ = run_cli("info", "builtin:tiny-random", "--json")
    assert code == 0
    desc = json.loads(stdout)
    assert desc["parameters"]["cross_attn"] + desc["parameters"]["non_cross_attn"] == desc["parameters"]["unet"]
    assert desc["components"]["unet"] == "UNet2DConditionModel"


@pytest.fixture
def bad_models(tmp_path):
    (tmp_path / "not_a_pipeline").mkdir()
    (tmp_path / "not_a_pipeline" / "readme.txt").write_text("hello")
    (tmp_path / "corrupt.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    return tmp_path


# the README's bad-input table: (arguments, words the one-sentence error must contain)
BAD_INPUTS = [
    (["info", "{tmp}/missing_model"], ["missing_model", "does not exist"]),
    (["info", "{tmp}/not_a_pipeline"], ["not_a_pipeline", "model_index.json"]),
    (["info", "{tmp}/corrupt.safetensors"], ["corrupt.safetensors", "safetensors"]),
    (["info", "builtin:nope"], ["builtin:nope", "builtin:tiny-random"]),
    (["info", "someone/some-model"], ["someone/some-model", "local folder"]),
    (["generate", "builtin:tiny-random", "a", "--n", "0", "--out", "{tmp}/o"], ["--n", "0"]),
    (["generate", "builtin:tiny-random", "a", "--steps", "0", "--out", "{tmp}/o"], ["--steps", "0"]),
    (["generate", "builtin:tiny-random", "", "--out", "{tmp}/o"], ["PROMPT", "word"]),
    (["generate", "builtin:tiny-random", "a", "--guidance", "-1", "--out", "{tmp}/o"], ["--guidance", "-1"]),
    (["generate", "builtin:tiny-random", "a", "--device", "gpu7", "--steps", "1", "--out", "{tmp}/o"], ["--device", "gpu7"]),
]


@pytest.mark.parametrize("args,words", BAD_INPUTS, ids=[" ".join(a[:3]) for a, _ in BAD_INPUTS])
def test_bad_input_one_sentence_exit_2_nothing_written(run_cli, bad_models, args, words):
    args = [a.replace("{tmp}", str(bad_models)) for a in args]
    code, stdout, stderr = run_cli(*args)
    assert code == 2
    message = " ".join(stderr.split())
    assert message.startswith("error:")
    for w in words:
        assert w in message, message
    assert "Traceback" not in stderr
    assert not (bad_models / "o").exists()
    assert not list(bad_models.glob(".*partial"))


def test_existing_output_refused_unless_overwrite(run_cli, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    args = ("generate", "builtin:tiny-random", "a", "--n", 1, "--steps", 1, "--out")
    code, _, stderr = run_cli(*args, out)
    assert code == 2 and "--overwrite" in stderr and (out / "keep.txt").exists()
    code, _, stderr = run_cli(*args, out, "--overwrite")  # not a folder sdguard wrote
    assert code == 2 and "did not write" in stderr and (out / "keep.txt").read_text() == "mine"
    ours = tmp_path / "ours"
    assert run_cli(*args, ours)[0] == 0
    (ours / "old.txt").write_text("from the first run")
    code, _, _ = run_cli(*args, ours, "--overwrite")
    assert code == 0 and not (ours / "old.txt").exists() and (ours / "report.json").exists()


def test_usage_error_exit_2(run_cli):
    assert run_cli("generate")[0] == 2
    assert run_cli("no-such-command")[0] == 2


def test_failed_run_leaves_nothing(monkeypatch, run_cli, tmp_path):
    from sdguard.models import adapter

    def boom(*a, **k):
        raise RuntimeError("simulated crash mid-run")

    monkeypatch.setattr(adapter.DiffusionModel, "generate", boom)
    with pytest.raises(RuntimeError):
        run_cli("generate", "builtin:tiny-random", "a", "--out", tmp_path / "o")
    assert not (tmp_path / "o").exists() and not list(tmp_path.glob(".*"))
