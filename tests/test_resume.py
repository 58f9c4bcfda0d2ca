"""``--resume`` never mixes runs, never runs code from the staging folder, and options are checked
before anything expensive (README, "Bad input")."""

import json
import os
import pathlib
import pickle
import shutil
import sys

import pytest
import torch

from sdguard.core.state import checkpoint_paths
from sdguard.harden.erasure import esd
from sdguard.models import DiffusionModel, load_model


class Interrupted(Exception):
    """Stands for a kill in the middle of a run."""


def _refuse(*args, **kwargs):
    raise AssertionError("reached an expensive step that the check should have come before")


@pytest.fixture(scope="module")
def other_model(tmp_path_factory):
    """builtin:tiny-random saved as a folder with one weight changed; its fingerprint."""
    m = load_model("builtin:tiny-random")
    with torch.no_grad():
        next(m.unet.parameters()).view(-1)[0] += 0.5
    path = tmp_path_factory.mktemp("om") / "other"
    m.save(path)
    return path, load_model(str(path)).fingerprint()


@pytest.fixture
def cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("SDGUARD_CACHE", str(tmp_path_factory.getbasetemp() / "resume-cache"))


def _one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


# -- 1. audit generations ---------------------------------------------------------------------

def _audit(model, data, out, prompts, steps="2"):
    return ["audit", "generations", model, "--dataset", data, "--out", out, "--prompts", prompts, "--n", "2",
            "--steps", steps, "--reference-prompts", "0"]


def test_audit_generations_resume_refuses_another_model_dataset_or_setting(small_world, other_model, tiny_random, tmp_path,
                                                                           monkeypatch, cache, run_cli):
    data, out, prompts = tmp_path / "world", tmp_path / "out", tmp_path / "prompts.txt"
    shutil.copytree(small_world, data)
    prompts.write_text("a red circle on the left\nvan gogh starry night\na photo of an astronaut\n")
    real = DiffusionModel.generate
    calls = []

    def once(self, *args, **kwargs):  # the first chunk is stored, then the run is killed
        if calls:
            raise Interrupted()
        calls.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(DiffusionModel, "generate", once)
    base = _audit("builtin:tiny-random", data, out, prompts)
    with pytest.raises(Interrupted):
        run_cli(*base, "--resume")
    staging = tmp_path / ".out.partial"
    assert len(list((staging / "generations").glob("*.npz"))) == 1 and not out.exists()

    monkeypatch.setattr(DiffusionModel, "generate", _refuse)  # every refusal comes before generating
    path, other_fp = other_model
    code, _, stderr = run_cli(*_audit(path, data, out, prompts), "--resume")
    line = _one_line(stderr)
    assert code == 2 and f"--resume '{out}': the model differs from the interrupted run's" in line, line
    assert f"fingerprint {tiny_random.fingerprint()[:12]}… there, fingerprint {other_fp[:12]}… now" in line, line

    meta = data / "metadata.jsonl"
    original, st = meta.read_bytes(), meta.stat()
    meta.write_bytes(original.replace(b"a ", b"one ", 1))  # one caption edited in place
    code, _, stderr = run_cli(*base, "--resume")
    assert code == 2 and ": the dataset differs from the interrupted run's (fingerprint" in _one_line(stderr), stderr
    meta.write_bytes(original)
    os.utime(meta, ns=(st.st_atime_ns, st.st_mtime_ns))

    code, _, stderr = run_cli(*_audit("builtin:tiny-random", data, out, prompts, steps="3"), "--resume")
    assert code == 2 and ": --steps differs from the interrupted run's (2 there, 3 now)" in _one_line(stderr), stderr
    assert staging.is_dir() and not out.exists()  # the interrupted run's work is kept for a right resume

    monkeypatch.setattr(DiffusionModel, "generate", real)
    code, _, stderr = run_cli(*base, "--resume")
    assert code == 0, stderr
    resumed = json.loads((out / "report.json").read_text())["results"]
    assert resumed["generation"]["reused"] == 2 and not staging.exists()
    code, _, stderr = run_cli(*_audit("builtin:tiny-random", data, tmp_path / "fresh", prompts))
    assert code == 0, stderr
    fresh = json.loads((tmp_path / "fresh" / "report.json").read_text())["results"]
    assert resumed["prompts"] == fresh["prompts"] and len(fresh["prompts"]) == 3
    assert fresh["generation"]["reused"] == 0


# -- 2. erase (ESD) -----------------------------------------------------------------------------

ERASE = ["--concept", "a red circle", "--method", "esd-x", "--iterations", "4", "--checkpoint-every", "2",
         "--ddim-steps", "3", "--lr", "1e-3", "--preview", "0"]


def _interrupt_esd(monkeypatch, run_cli, out):
    real = esd._ESD._iteration
    calls = []

    def third_fails(self, *args, **kwargs):  # after the checkpoint at iteration 2
        calls.append(1)
        if len(calls) == 3:
            raise Interrupted()
        return real(self, *args, **kwargs)

    monkeypatch.setattr(esd._ESD, "_iteration", third_fails)
    with pytest.raises(Interrupted):
        run_cli("erase", "builtin:tiny-random", *ERASE, "--out", out)
    monkeypatch.setattr(esd._ESD, "_iteration", real)


def test_erase_resume_refuses_another_model_and_a_record_that_does_not_fit(other_model, tiny_random, tmp_path,
                                                                           monkeypatch, run_cli, capsys):
    out = tmp_path / "erased"
    _interrupt_esd(monkeypatch, run_cli, out)
    assert "continue it with: sdguard erase" in capsys.readouterr().err  # the interrupted run said how to resume
    st, js = checkpoint_paths(tmp_path / ".erased.partial", esd.CHECKPOINT)
    assert st.is_file() and js.is_file() and not out.exists()

    real_setup = esd._ESD._setup
    monkeypatch.setattr(esd._ESD, "_setup", _refuse)  # refused before the teacher, the prior or a step
    path, other_fp = other_model
    code, _, stderr = run_cli("erase", path, *ERASE, "--out", out, "--resume")
    line = _one_line(stderr)
    assert code == 2 and f"--resume '{js}' was written by another run (model_fingerprint: " in line, line
    assert f"'{tiny_random.fingerprint()[:12]}…' there, '{other_fp[:12]}…' now" in line, line

    # a record whose hash and key are right but whose state does not fit: one sentence, no traceback
    monkeypatch.setattr(esd._ESD, "_setup", real_setup)
    record = js.read_text()
    meta = json.loads(record)
    meta["state"] = {"__dict__": [["iteration", 2]]}
    js.write_text(json.dumps(meta))
    code, _, stderr = run_cli("erase", "builtin:tiny-random", *ERASE, "--out", out, "--resume")
    line = _one_line(stderr)
    assert code == 2 and f"--resume '{js}' holds a state that does not fit this run (KeyError" in line, line

    js.write_text(record)
    code, _, stderr = run_cli("erase", "builtin:tiny-random", *ERASE, "--out", out, "--resume")
    assert code == 0, stderr
    assert json.loads((out / "report.json").read_text())["results"]["stats"]["resumed_at"] == 2


# -- 3. nothing in the staging folder runs code ---------------------------------------------------


class _Planted:
    """Unpickling this touches ``sentinel``: what a planted pickle could do, and worse."""

    def __init__(self, sentinel):
        self.sentinel = pathlib.Path(sentinel)

    def __reduce__(self):
        return pathlib.Path.touch, (self.sentinel,)


def _plant(staging, old_name, sentinel, tmp_path):
    staging.mkdir(parents=True, exist_ok=True)
    proof = tmp_path / "proof"
    pickle.loads(pickle.dumps(_Planted(proof)))  # the planted file is live: loading it runs code
    assert proof.exists()
    (staging / old_name).write_bytes(pickle.dumps(_Planted(sentinel)))


def _plant_malformed(staging, name):
    st, js = checkpoint_paths(staging, name)
    st.write_bytes(os.urandom(256))
    js.write_text('{"format": "sdguard-checkpoint", "version": 1, "key": ')  # cut short


TRAIN = ["--vae-steps", "2", "--unet-steps", "2", "--batch-size", "4", "--unet-channels", "32", "--unet-channels",
         "64", "--vae-channels", "16", "--vae-channels", "16", "--vae-channels", "16", "--text-hidden", "32",
         "--threads", "1"]


@pytest.mark.parametrize("command", ["train-tiny", "erase"])
def test_a_planted_pickle_never_runs_and_a_malformed_pair_is_refused(command, small_world, tmp_path, run_cli):
    out, staging, sentinel = tmp_path / "out", tmp_path / ".out.partial", tmp_path / "sentinel"
    if command == "train-tiny":
        args, old_name, name = ["model", "train-tiny", "--world", small_world, *TRAIN], "train_state.pt", "train_state"
    else:
        args, old_name, name = ["erase", "builtin:tiny-random", *ERASE], "erasure_checkpoint.pt", esd.CHECKPOINT
    _plant(staging, old_name, sentinel, tmp_path)
    _plant_malformed(staging, name)
    code, _, stderr = run_cli(*args, "--out", out, "--resume")
    line = _one_line(stderr)
    js = checkpoint_paths(staging, name)[1]
    assert code == 2 and f"--resume '{js}' is not a readable sdguard checkpoint (" in line, line
    assert not sentinel.exists() and not out.exists()

    for p in checkpoint_paths(staging, name):
        p.unlink()
    code, _, stderr = run_cli(*args, "--out", out, "--resume")  # only the pickle: ignored, a fresh run
    assert code == 0, stderr
    assert not sentinel.exists() and (out / "report.json").is_file()


# -- 4. options are checked before anything is loaded or generated ---------------------------------


EARLY = [
    (["audit", "generations", "builtin:tiny-random", "--dataset", "WORLD", "--object-keyword", "astronaut",
      "--detector", "nope"], 2, "--detector 'nope' is not a known object detector (known: clip, world)."),
    (["audit", "generations", "builtin:tiny-random", "--dataset", "WORLD", "--object", "flag"], 2,
     "--object 'flag' needs --object-keyword"),
    (["audit", "generations", "builtin:tiny-random", "--dataset", "WORLD", "--detector", "world"], 2,
     "--detector 'world' is used only with --object-keyword"),
    (["audit", "generations", "builtin:tiny-random", "--dataset", "WORLD", "--object-keyword", "astronaut",
      "--detector", "world", "--object", "hat"], 2, "--object 'hat' is not an object planted in this world"),
    (["audit", "generations", "builtin:tiny-random", "--dataset", "WORLD", "--embedder", "nope"], 2,
     "--embedder 'nope' is not a known embedder"),
    (["erase", "builtin:tiny-random", "--concept", "a red circle", "--method", "magic"], 2,
     "--method 'magic' is not a known erasure method"),
    (["erase", "builtin:tiny-random", "--concept", "a red circle", "--method", "uce", "--iterations", "3"], 2,
     "--iterations is not an option of --method 'uce'"),
    (["audit", "erasure", "builtin:tiny-random", "builtin:tiny-random", "--concept", "nudity"], 3,
     "pip install 'sdguard[nudity]'"),
]


@pytest.mark.parametrize("argv,code,words", EARLY, ids=lambda v: v[-1] if isinstance(v, list) else None)
def test_options_are_checked_before_any_model_is_loaded(argv, code, words, small_world, tmp_path, monkeypatch, run_cli):
    monkeypatch.setattr(DiffusionModel, "load", _refuse)
    monkeypatch.setattr(DiffusionModel, "generate", _refuse)
    monkeypatch.setitem(sys.modules, "nudenet", None)  # as if not installed: its import fails
    got, _, stderr = run_cli(*[small_world if a == "WORLD" else a for a in argv], "--out", tmp_path / "o")
    line = _one_line(stderr)
    assert got == code and words in line, line
    assert not (tmp_path / "o").exists() and not (tmp_path / ".o.partial").exists()
