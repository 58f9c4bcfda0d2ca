"""The tiny model's training recipe: deterministic, loadable, and it resumes where it stopped in
either stage (the autoencoder's own loop, then the shared fine-tuning loop)."""

import json

import pytest

from sdguard.core.state import checkpoint_exists
from sdguard.models import load_model
from sdguard.train import finetune
from sdguard.train import tiny as training
from sdguard.train.data import MEMBERS, read_manifest
from sdguard.train.finetune_run import FineTuneRun

SMALL = dict(vae_steps=6, unet_steps=6, batch_size=8, checkpoint_every=4, unet_channels=(32, 64),
             vae_channels=(16, 16, 16), text_hidden=32, threads=1)


@pytest.fixture(scope="module")
def reference(small_world, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "model"
    return out, training.train_tiny(small_world, out, **SMALL)


def test_train_is_deterministic_and_loads(small_world, reference, tmp_path):
    ref_dir, ref = reference
    again = training.train_tiny(small_world, tmp_path / "again", **SMALL)
    assert again.models["trained"]["fingerprint"] == ref.models["trained"]["fingerprint"]
    other_seed = training.train_tiny(small_world, tmp_path / "seed1", seed=1, **SMALL)
    assert other_seed.models["trained"]["fingerprint"] != ref.models["trained"]["fingerprint"]
    model = load_model(str(ref_dir))
    assert model.fingerprint() == ref.models["trained"]["fingerprint"]
    assert model.generate(["a red circle on the left"], steps=2).images.shape == (1, 32, 32, 3)
    assert (ref_dir / "report.json").is_file()
    assert not checkpoint_exists(ref_dir, training.CHECKPOINT) and not checkpoint_exists(ref_dir, finetune.CHECKPOINT)
    # the world's captions give its vocabulary: each of its words has its token
    vocabulary = json.loads((small_world / "ground_truth.json").read_text())["vocabulary"]
    assert ref.results["vocabulary"] == len(vocabulary)
    tokens = model.tokenizer.get_vocab()
    assert all(f"{w}</w>" in tokens for w in vocabulary)
    assert len(read_manifest(ref_dir / MEMBERS)) == ref.results["images"] == 500


class Crash(Exception):
    pass


def crash_after_checkpoint(monkeypatch, stage: str, step: int) -> None:
    """Raise :class:`Crash` right after the checkpoint of ``step`` of ``stage`` ("vae" or "unet")."""
    if stage == "vae":
        real = training.save_train_state

        def save(folder, name, key, *, state, **parts):
            real(folder, name, key, state=state, **parts)
            if state["step"] == step:
                raise Crash()

        monkeypatch.setattr(training, "save_train_state", save)
    else:
        real_save = FineTuneRun.save

        def save_unet(self):
            real_save(self)
            if self.state["step"] == step:
                raise Crash()

        monkeypatch.setattr(FineTuneRun, "save", save_unet)


def starting_steps(monkeypatch) -> dict:
    """Where each stage starts (its step when its loop begins), filled as the run goes."""
    seen = {}
    real_vae, real_fit = training.TinyRun.train_vae, FineTuneRun.fit

    def train_vae(self, progress):
        seen["vae"] = self.state["step"]
        return real_vae(self, progress)

    def fit(self):
        seen["unet"] = self.state["step"]
        return real_fit(self)

    monkeypatch.setattr(training.TinyRun, "train_vae", train_vae)
    monkeypatch.setattr(FineTuneRun, "fit", fit)
    return seen


def test_interrupted_training_resumes_to_the_same_weights(small_world, reference, tmp_path, monkeypatch):
    reference = reference[1]
    out, staging = tmp_path / "run", tmp_path / ".run.partial"
    with monkeypatch.context() as m:
        crash_after_checkpoint(m, "vae", 4)
        with pytest.raises(Crash):
            training.train_tiny(small_world, out, **SMALL)
    assert not out.exists()
    assert checkpoint_exists(staging, training.CHECKPOINT)  # kept for --resume, even without it

    with monkeypatch.context() as m:
        seen = starting_steps(m)
        crash_after_checkpoint(m, "unet", 4)
        with pytest.raises(Crash):
            training.train_tiny(small_world, out, resume=True, **SMALL)
    assert seen == {"vae": 4, "unet": 0}  # the autoencoder went on from its checkpoint
    assert checkpoint_exists(staging, training.CHECKPOINT) and checkpoint_exists(staging, finetune.CHECKPOINT)

    with monkeypatch.context() as m:
        seen = starting_steps(m)
        resumed = training.train_tiny(small_world, out, resume=True, **SMALL)
    assert seen == {"vae": 6, "unet": 4}  # neither stage started over
    assert resumed.models["trained"]["fingerprint"] == reference.models["trained"]["fingerprint"]
    assert not staging.exists()


def test_resume_refuses_another_runs_checkpoint(small_world, tmp_path, monkeypatch, run_cli):
    with monkeypatch.context() as m:
        crash_after_checkpoint(m, "unet", 4)
        with pytest.raises(Crash):
            training.train_tiny(small_world, tmp_path / "run", **SMALL)
    options = [a for k, v in SMALL.items() for item in (v if isinstance(v, tuple) else (v,))
               for a in (f"--{k.replace('_', '-')}", item)]
    code, _, stderr = run_cli("model", "train-tiny", "--dataset", small_world, "--out", tmp_path / "run", "--resume",
                              *options, "--seed", 1)
    assert code == 2 and "was written by another run (seed: 0 there, 1 now)" in stderr, stderr
    assert len(stderr.strip().splitlines()) == 1


def test_cli_resume_refuses_a_corrupt_checkpoint(small_world, tmp_path, monkeypatch, run_cli):
    with monkeypatch.context() as m:
        crash_after_checkpoint(m, "vae", 4)
        with pytest.raises(Crash):
            training.train_tiny(small_world, tmp_path / "run", resume=True, **SMALL)
    tensors = tmp_path / ".run.partial" / f"{training.CHECKPOINT}.safetensors"
    data = bytearray(tensors.read_bytes())
    data[len(data) // 2] ^= 0xFF
    tensors.write_bytes(bytes(data))
    code, _, stderr = run_cli("model", "train-tiny", "--world", small_world, "--out", tmp_path / "run", "--resume")
    assert code == 2, stderr
    assert f"'{tensors}' does not match its checkpoint record" in stderr and len(stderr.strip().splitlines()) == 1
