"""Bad values that used to end in a traceback or be accepted silently, through the CLI: prompt files,
I2P files, embedder options, fp16 and incomplete model folders, broken worlds (the README's
"Bad input" table)."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from sdguard.audit.nudity import load_i2p_prompts
from sdguard.audit.prompt_suites import read_prompt_file

LONG = "a red circle on the left " * 400  # 10,000 characters
EMOJI = "a red circle " + "\U0001f600\U0001f680\U0001f308" * 40


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from sdguard.data import make_world

    root = tmp_path_factory.mktemp("bad") / "world"
    make_world(root, seed=2, size=500)
    return root


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("SDGUARD_CACHE", str(tmp_path_factory.getbasetemp() / "sdguard-cache"))


def one_sentence(code, stderr, *words):
    """Exit 2, one ``error:`` sentence holding ``words``, no traceback."""
    message = " ".join(stderr.split())
    assert code == 2, stderr
    assert message.startswith("error:") and "Traceback" not in stderr, stderr
    for w in words:
        assert w in message, message
    return message


def nothing_written(folder, name="o"):
    assert not (folder / name).exists() and not list(folder.glob(f".{name}*"))


def warnings_of(stderr):
    return [" ".join(w.split()) for w in ("\n" + stderr).split("\nwarning:")[1:]]


# -- 1. prompt files ---------------------------------------------------------------------------

GEN_ARGS = ["--n", 1, "--steps", 2, "--batch-size", 4, "--controls", 0, "--reference-prompts", 0, "--threshold", 0.9,
            "--clique-delta", 0.15]


def test_prompt_file_bom_is_dropped_and_long_prompts_are_recorded(run_cli, world, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_bytes(b"\xef\xbb\xbf" + f"keywords\tvan gogh starry night\n{LONG}\n{EMOJI}\n".encode())
    assert [s.kind for s in read_prompt_file(prompts)] == ["keywords", "user", "user"]
    code, _, stderr = run_cli("audit", "generations", "builtin:tiny-random", "--dataset", world, "--prompts", prompts,
                              *GEN_ARGS, "--out", tmp_path / "o")
    assert code == 0, stderr
    rows = json.loads((tmp_path / "o" / "report.json").read_text())["results"]["prompts"]
    assert [r["kind"] for r in rows] == ["keywords", "user", "user"]
    limit = 32  # builtin:tiny-random's text encoder
    assert rows[0]["tokens"] <= limit and rows[0]["truncated"] is False
    for row in rows[1:]:
        assert row["tokens"] > limit and row["truncated"] is True
    warned = warnings_of(stderr)
    assert len(warned) == 2, stderr
    for text, row in zip((LONG, EMOJI), rows[1:]):
        line = next(w for w in warned if text[:60].strip() in w)
        assert f"{row['tokens']} tokens" in line and str(limit) in line


@pytest.mark.parametrize("content,words", [
    (b"a red circle\nvan gogh \xff\xfe night\n", ["p.txt", "line 2", "UTF-8"]),
    (b"control\ta red circle\nkeywords\t\n", ["p.txt", "line 2", "'keywords'", "no prompt"]),
    (b"control\ta red circle\nkeywords\t   \n", ["p.txt", "line 2", "no prompt"]),
], ids=["invalid-utf8", "kind-tab-nothing", "kind-tab-spaces"])
def test_bad_prompt_file_is_one_sentence(run_cli, world, tmp_path, content, words):
    prompts = tmp_path / "p.txt"
    prompts.write_bytes(content)
    code, _, stderr = run_cli("audit", "generations", "builtin:tiny-random", "--dataset", world, "--prompts", prompts,
                              *GEN_ARGS, "--out", tmp_path / "o")
    one_sentence(code, stderr, "--prompts", *words)
    nothing_written(tmp_path)


def test_generate_warns_of_and_records_truncated_prompts(run_cli, tmp_path):
    code, _, stderr = run_cli("generate", "builtin:tiny-random", "a red circle", LONG, EMOJI, "--n", 1, "--steps", 2,
                              "--out", tmp_path / "o")
    assert code == 0, stderr
    rows = json.loads((tmp_path / "o" / "report.json").read_text())["results"]["prompts"]
    assert [r["truncated"] for r in rows] == [False, True, True]
    assert rows[0]["tokens"] == 5 and rows[1]["tokens"] > 2000 and rows[2]["tokens"] > 32
    warned = warnings_of(stderr)
    assert len(warned) == 2, stderr
    assert LONG[:60].strip() in warned[0] and f"{rows[1]['tokens']} tokens" in warned[0] and "32" in warned[0]
    assert EMOJI[:20] in warned[1] and f"{rows[2]['tokens']} tokens" in warned[1]


# -- 2. I2P prompt files -----------------------------------------------------------------------

I2P = ("prompt,evaluation_seed,evaluation_guidance\n"
       "a nude person,1,7\n"
       "a huge seed,1e30,7\n"
       "a negative seed,-5,7\n"
       "a word seed,abc,7\n"
       "a nan guidance,2,nan\n"
       "an infinite guidance,3,inf\n"
       "a large guidance,4,250\n"
       "a float seed,5.0,7.5\n")


def test_i2p_bad_seeds_and_guidance_are_skipped_with_their_reason(tmp_path):
    p = tmp_path / "i2p.csv"
    p.write_text(I2P)
    f = load_i2p_prompts(p)
    assert [(x.prompt, x.seed) for x in f.prompts] == [("a nude person", 1), ("a float seed", 5)]
    reasons = {s["value"]: s["reason"] for s in f.skipped}
    assert set(reasons) == {"1e30", "-5", "abc", "nan", "inf", "250"}
    for v in ("1e30", "-5", "abc"):
        assert "evaluation_seed" in reasons[v] and "integer" in reasons[v]
    assert "finite" in reasons["nan"] and "finite" in reasons["inf"] and "100" in reasons["250"]
    assert sum(f.skipped_reasons().values()) == 6


def test_i2p_cli_reports_the_skipped_rows(run_cli, tmp_path):
    pytest.importorskip("nudenet")
    p = tmp_path / "i2p.csv"
    p.write_text(I2P)
    code, _, stderr = run_cli("audit", "erasure", "builtin:tiny-random", "builtin:tiny-random", "--concept", "nudity",
                              "--prompts", p, "--n", 1, "--steps", 1, "--attack", "none", "--out", tmp_path / "o")
    assert code == 0, stderr
    warned = " ".join(warnings_of(stderr))
    assert "6 row(s) skipped" in warned and "'1e30'" in warned
    results = json.loads((tmp_path / "o" / "report.json").read_text())["results"]
    assert results["prompt_file"]["prompts"] == 2 and len(results["prompt_file"]["skipped"]) == 6
    assert results["efficacy"]["nudity"]["images"] == 2


@pytest.mark.parametrize("content,words", [
    (b"prompt,evaluation_seed,evaluation_guidance\na cat,1,7\na \xe9t\xe9 dog,2,7\n", ["i2p.csv", "line 3", "UTF-8"]),
    (b"prompt,evaluation_seed,evaluation_guidance\na cat,nan,7\n", ["i2p.csv", "no usable prompt", "evaluation_seed"]),
], ids=["invalid-utf8", "no-usable-row"])
def test_i2p_bad_file_is_one_sentence(run_cli, tmp_path, content, words):
    p = tmp_path / "i2p.csv"
    p.write_bytes(content)
    code, _, stderr = run_cli("audit", "erasure", "builtin:tiny-random", "builtin:tiny-random", "--concept", "nudity",
                              "--prompts", p, "--n", 1, "--steps", 1, "--attack", "none", "--out", tmp_path / "o")
    one_sentence(code, stderr, "--prompts", *words)
    nothing_written(tmp_path)


# -- 3. embedder options -----------------------------------------------------------------------

@pytest.mark.parametrize("option,words", [
    ("size=abc", ["--embedder-option", "'size=abc'", "pixels"]),
    ("size=nan", ["--embedder-option", "'size=nan'"]),
    ("colour=1", ["--embedder-option", "'colour=1'", "colour", "size"]),
])
def test_bad_embedder_option_is_one_sentence(run_cli, world, tmp_path, option, words):
    code, _, stderr = run_cli("audit", "data", world, "--embedder-option", option, "--out", tmp_path / "o")
    one_sentence(code, stderr, *words)
    nothing_written(tmp_path)


# -- 4. model folders --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fp16_folders(tmp_path_factory):
    import torch

    from sdguard.models import load_pipeline

    root = tmp_path_factory.mktemp("fp16")
    pipe = load_pipeline("builtin:tiny-random").to(torch.float16)
    pipe.save_pretrained(str(root / "plain"))
    pipe.save_pretrained(str(root / "variant"), variant="fp16")
    return root


@pytest.mark.parametrize("name", ["plain", "variant"])
def test_fp16_folder_generates_on_the_cpu(run_cli, fp16_folders, tmp_path, name):
    import torch

    from sdguard.models import load_pipeline

    pipe = load_pipeline(fp16_folders / name, device="cpu")
    for key, module in pipe.components.items():
        if isinstance(module, torch.nn.Module):
            assert {p.dtype for p in module.parameters()} == {torch.float32}, key
    code, _, stderr = run_cli("generate", fp16_folders / name, "a red circle", "--n", 1, "--steps", 2,
                              "--device", "cpu", "--out", tmp_path / "o")
    assert code == 0, stderr
    img = np.asarray(Image.open(tmp_path / "o" / "images" / "p000_s0.png"), np.float32)
    assert np.isfinite(img).all() and img.std() > 0  # NaN latents decode to one flat colour


def test_folder_without_its_unet_is_one_sentence(run_cli, fp16_folders, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(fp16_folders / "plain", model)
    shutil.rmtree(model / "unet")
    code, _, stderr = run_cli("generate", model, "a red circle", "--n", 1, "--steps", 1, "--out", tmp_path / "o")
    message = one_sentence(code, stderr, f"MODEL '{model}' is a diffusers folder without its unet/",
                           "model_index.json names it")
    assert "config.json" not in message
    nothing_written(tmp_path)


# -- 5. datasets train-tiny cannot train on ----------------------------------------------------

def _break_every_image(w):
    for png in (w / "images").glob("*.png"):
        png.write_bytes(png.read_bytes()[:60])
    return "DATASET", "none of the", "images to train on could be read", "unreadable; the first"


def _break_every_record(w):
    (w / "metadata.jsonl").write_text("")
    return "--dataset", str(w), "has no records to train on"


@pytest.mark.parametrize("breaks", [_break_every_image, _break_every_record], ids=["no-readable-image", "no-record"])
def test_train_tiny_on_a_dataset_without_images_is_one_sentence(run_cli, world, tmp_path, breaks):
    broken = tmp_path / "world"
    shutil.copytree(world, broken)
    words = breaks(broken)
    code, _, stderr = run_cli("model", "train-tiny", "--dataset", broken, "--out", tmp_path / "o", "--vae-steps", 1,
                              "--unet-steps", 1, "--batch-size", 2)
    one_sentence(code, stderr, *words)
    nothing_written(tmp_path)


@pytest.mark.parametrize("argv, sentence", [
    (["--guidance", "nan"], "--guidance nan is not a finite number."),
    (["--guidance", "inf"], "--guidance inf is not a finite number."),
    (["--seed", "99999999999999999999"], "--seed 99999999999999999999 is invalid: input should be less than or equal to"),
])
def test_numbers_no_option_takes(run_cli, tmp_path, argv, sentence):
    code, _, stderr = run_cli("generate", "builtin:tiny-random", "a red circle", "--out", tmp_path / "g", *argv)
    assert code == 2 and sentence in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert list(tmp_path.iterdir()) == []


def test_a_prompt_of_raw_bytes_that_are_not_utf8(run_cli, tmp_path):
    prompt = b"a red \xff circle".decode("utf-8", "surrogateescape")  # what Python makes of such an argv
    code, _, stderr = run_cli("generate", "builtin:tiny-random", prompt, "--out", tmp_path / "g")
    assert code == 2 and "is not valid UTF-8 text." in stderr and "PROMPT" in stderr, stderr
    assert list(tmp_path.iterdir()) == []
