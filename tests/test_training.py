"""The tiny model's training recipe: deterministic, loadable, and it resumes where it stopped."""

import contextlib

import pytest

from sdguard.core.state import checkpoint_exists
from sdguard.models import load_model
from sdguard.train import tiny as training

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
    assert (ref_dir / "report.json").is_file() and not checkpoint_exists(ref_dir, training.CHECKPOINT)


class Crash(Exception):
    pass


@contextlib.contextmanager
def crashing_bar(*args, completed=0, **kwargs):
    class Bar:
        done = completed

        def advance(self, n=1):
            Bar.done += n
            if Bar.done == 10:  # after the checkpoint at step 8, in the UNet stage
                raise Crash()

    yield Bar()


def test_interrupted_training_resumes_to_the_same_weights(small_world, reference, tmp_path, monkeypatch):
    reference = reference[1]
    monkeypatch.setattr(training, "progress_bar", crashing_bar)
    with pytest.raises(Crash):
        training.train_tiny(small_world, tmp_path / "run", **SMALL)
    staging = tmp_path / ".run.partial"
    assert not (tmp_path / "run").exists()
    assert checkpoint_exists(staging, training.CHECKPOINT)  # kept for --resume, even without it

    with pytest.raises(Crash):
        training.train_tiny(small_world, tmp_path / "run", resume=True, **SMALL)
    assert checkpoint_exists(staging, training.CHECKPOINT)  # kept for the resume
    monkeypatch.undo()

    steps_seen = []
    real_bar = training.progress_bar

    @contextlib.contextmanager
    def counting_bar(*args, completed=0, **kwargs):
        steps_seen.append(completed)
        with real_bar(*args, completed=completed, **kwargs) as bar:
            yield bar

    monkeypatch.setattr(training, "progress_bar", counting_bar)
    resumed = training.train_tiny(small_world, tmp_path / "run", resume=True, **SMALL)
    assert steps_seen == [8]  # it did not start over
    assert resumed.models["trained"]["fingerprint"] == reference.models["trained"]["fingerprint"]
    assert not staging.exists()



def test_cli_resume_refuses_a_corrupt_checkpoint(small_world, tmp_path, monkeypatch, run_cli):
    monkeypatch.setattr(training, "progress_bar", crashing_bar)
    with pytest.raises(Crash):
        training.train_tiny(small_world, tmp_path / "run", resume=True, **SMALL)
    monkeypatch.undo()
    tensors = tmp_path / ".run.partial" / f"{training.CHECKPOINT}.safetensors"
    data = bytearray(tensors.read_bytes())
    data[len(data) // 2] ^= 0xFF
    tensors.write_bytes(bytes(data))
    code, _, stderr = run_cli("model", "train-tiny", "--world", small_world, "--out", tmp_path / "run", "--resume")
    assert code == 2, stderr
    assert f"'{tensors}' does not match its checkpoint record" in stderr and len(stderr.strip().splitlines()) == 1
