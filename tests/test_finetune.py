"""`sdguard train`: clipping against torch's, the members manifest, accumulation, resume after kill -9,
two processes through Accelerate, LoRA folders as model specs, and bad input."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sdguard.core.io import staging_dir_of
from sdguard.models import load_model
from sdguard.train import train
from sdguard.train.clipping import GradientClipper
from sdguard.train.data import read_manifest

pytest.importorskip("peft")
pytest.importorskip("accelerate")

FAST = dict(steps=4, batch_size=4, samples=0, lr=1e-3)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
       "SDGUARD_NO_PROGRESS": "1", "TRANSFORMERS_VERBOSITY": "error"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from other_world import write_other_world

    root = tmp_path_factory.mktemp("ft") / "data"
    write_other_world(root, n=40, seed=1)
    return root


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _unet_grads(model) -> list[torch.Tensor]:
    """The real gradients of one diffusion-loss step of ``model``'s UNet."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, *model.latent_shape(model.default_size, model.default_size), generator=g)
    noise, t = torch.randn(z.shape, generator=g), torch.tensor([100, 700])
    emb = model.encode_text(model.tokenize(["a red circle", "a blue square"]))
    pred = model.unet(model.scheduler.add_noise(z, noise, t), t, encoder_hidden_states=emb).sample
    model.unet.zero_grad()
    torch.nn.functional.mse_loss(pred, model.prediction_target(z, noise, t)).backward()
    return [p.grad.clone() for p in model.unet.parameters()]


def test_global_clipping_matches_torch_clip_grad_norm():
    model = load_model("builtin:tiny")
    params = list(model.unet.parameters())
    grads = _unet_grads(model)
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    for c in (float(norm) / 4, float(norm) * 4):  # one threshold below the norm, one above
        for p, g in zip(params, grads):
            p.grad = g.clone()
        ours = GradientClipper(c)
        measured = ours.clip(params)
        ref = [torch.nn.Parameter(p.detach().clone()) for p in params]
        for r, g in zip(ref, grads):
            r.grad = g.clone()
        expected = torch.nn.utils.clip_grad_norm_(ref, c)
        assert measured == pytest.approx(float(expected), rel=1e-5)
        for p, r in zip(params, ref):
            torch.testing.assert_close(p.grad, r.grad, rtol=1e-5, atol=1e-8)
        assert ours.clipped == (1 if c < norm else 0)
    clipped_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
    assert float(clipped_norm) == pytest.approx(float(norm), rel=1e-5)  # above the norm: untouched


def test_per_layer_clipping_bounds_every_tensor_and_keeps_small_ones():
    model = load_model("builtin:tiny")
    params = list(model.unet.parameters())
    grads = _unet_grads(model)
    norms = torch.stack([torch.linalg.vector_norm(g) for g in grads])
    c = float(torch.linalg.vector_norm(norms)) / 3
    limit = c / len(grads) ** 0.5
    for p, g in zip(params, grads):
        p.grad = g.clone()
    GradientClipper(c, per_layer=True).clip(params)
    after = torch.stack([torch.linalg.vector_norm(p.grad) for p in params])
    assert (after <= limit * (1 + 1e-5)).all()
    small = norms <= limit
    assert small.any() and (~small).any()
    torch.testing.assert_close(after[small], norms[small])
    assert float(torch.linalg.vector_norm(after)) <= c * (1 + 1e-5)


def test_train_writes_the_members_manifest_and_a_seeded_holdout(data, tmp_path):
    out = tmp_path / "run"
    report = train("builtin:tiny-random", data, out, holdout=0.25, clip_norm=1e-4, **FAST)
    members, non = read_manifest(out / "members.jsonl"), read_manifest(out / "nonmembers.jsonl")
    rows = {r["row"] for r in members} | {r["row"] for r in non}
    assert rows == set(range(40)) and not {r["row"] for r in members} & {r["row"] for r in non}
    assert len(non) == 10 and report.results["members"] == 30
    lines = [json.loads(x) for x in (data / "metadata.jsonl").read_text().splitlines()]
    assert all(lines[r["row"]]["file_name"] == r["file_name"] and lines[r["row"]]["text"] == r["text"]
               for r in members + non)
    # every step clipped at a tiny threshold; the trained model loads and differs from the base
    clip = report.results["clipping"]
    assert clip["steps"] == 4 and clip["clipped_share"] == 1.0
    trained = load_model(str(out))
    assert trained.fingerprint() == report.models["trained"]["fingerprint"] != report.models["base"]["fingerprint"]
    assert (out / "report.html").is_file() and not (out / "finetune_state.json").exists()
    # the same seed holds out the same records, another seed others; nothing clipped at threshold 0
    again = train("builtin:tiny-random", data, tmp_path / "again", holdout=0.25, seed=1, clip_norm=0, **FAST)
    other = {r["row"] for r in read_manifest(tmp_path / "again" / "nonmembers.jsonl")}
    assert other != {r["row"] for r in non} and len(other) == 10
    assert again.results["clipping"]["clipped_steps"] == 0 and again.results["clipping"]["threshold"] is None


def test_gradient_accumulation_equals_the_whole_batch(data, tmp_path):
    train("builtin:tiny-random", data, tmp_path / "one", **FAST)
    train("builtin:tiny-random", data, tmp_path / "two", grad_accum=2, **FAST)
    log = [json.loads(x)["loss"] for x in (tmp_path / "one" / "training_log.jsonl").read_text().splitlines()]
    log2 = [json.loads(x)["loss"] for x in (tmp_path / "two" / "training_log.jsonl").read_text().splitlines()]
    assert log == pytest.approx(log2, rel=1e-4)
    flat = [torch.cat([p.detach().flatten() for p in load_model(str(s)).unet.parameters()])
            for s in (tmp_path / "one", tmp_path / "two", "builtin:tiny-random")]
    moved, diff = float((flat[0] - flat[2]).norm()), float((flat[0] - flat[1]).norm())
    assert moved > 1e-3 and diff < moved / 20  # Adam amplifies float noise on near-zero gradients, so not bitwise


def _cli(*args) -> list[str]:
    return [sys.executable, "-m", "sdguard", "train", *map(str, args)]


def test_kill_9_then_resume_gives_the_same_weights(data, tmp_path):
    args = ["builtin:tiny-random", "--dataset", data, "--steps", 20, "--batch-size", 16, "--checkpoint-every", 5,
            "--samples", 0, "--lr", 1e-3]
    ref = tmp_path / "ref"
    subprocess.run(_cli(*args, "--out", ref), env=ENV, check=True, timeout=300, capture_output=True)
    out = tmp_path / "run"
    staging = staging_dir_of(out)
    proc = subprocess.Popen(_cli(*args, "--out", out), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not (staging / "finetune_state.json").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not out.exists()
    other = subprocess.run(_cli(*args[:-2], "--lr", 2e-3, "--out", out, "--resume"), env=ENV, timeout=300,
                           capture_output=True, text=True)
    assert other.returncode == 2 and "lr" in other.stderr and "another run" in other.stderr, other.stderr
    done = subprocess.run(_cli(*args, "--out", out, "--resume"), env=ENV, timeout=300, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["results"]["steps"] == 20
    for part in ("unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"):
        assert _sha(out / part) == _sha(ref / part), part
    steps = [json.loads(x)["step"] for x in (out / "training_log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 21))  # the log of the killed part is kept once, not twice


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_through_accelerate_follow_the_one_process_loss_curve(data, tmp_path):
    args = ["builtin:tiny-random", "--dataset", data, "--steps", 6, "--batch-size", 8, "--samples", 0, "--lr", 1e-3]
    single = train("builtin:tiny-random", data, tmp_path / "one", steps=6, batch_size=8, samples=0, lr=1e-3)
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "--main_process_ip", "127.0.0.1", "--main_process_port", str(_free_port()),
              "-m", "sdguard", "train", *map(str, args), "--out", str(tmp_path / "two")]
    done = subprocess.run(launch, env=ENV, timeout=400, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    two = json.loads((tmp_path / "two" / "report.json").read_text())
    assert two["results"]["processes"] == 2 and single.results["processes"] == 1
    curve1 = [json.loads(x)["loss"] for x in (tmp_path / "one" / "training_log.jsonl").read_text().splitlines()]
    curve2 = [json.loads(x)["loss"] for x in (tmp_path / "two" / "training_log.jsonl").read_text().splitlines()]
    assert len(curve1) == len(curve2) == 6
    assert curve2 == pytest.approx(curve1, rel=1e-3)
    assert curve1[0] != pytest.approx(curve1[-1], rel=1e-3)  # the curve moves: the comparison means something


# -- LoRA folders as model specs -------------------------------------------------------------------

@pytest.fixture(scope="module")
def lora_run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("lora") / "lora"
    report = train("builtin:tiny-random", data, out, trainable=["lora"], lora_rank=2, steps=3, batch_size=4,
                   samples=0, lr=5e-2)
    return out, report


def test_lora_trains_only_the_adapter_and_saves_the_diffusers_format(lora_run):
    from diffusers import StableDiffusionPipeline

    out, report = lora_run
    t = report.results["trainable"]
    assert t["groups"] == ["lora"] and 0 < t["parameters"] < t["of"] / 10
    assert (out / "pytorch_lora_weights.safetensors").is_file() and (out / "lora.json").is_file()
    # diffusers itself loads the folder onto the base pipeline and gets what sdguard's spec gives
    base = load_model("builtin:tiny-random")
    ours = load_model(str(out))
    plain = StableDiffusionPipeline(**base.copy().pipeline.components)
    plain.load_lora_weights(str(out))
    plain.set_progress_bar_config(disable=True)
    from sdguard.models import DiffusionModel

    theirs = DiffusionModel(plain)
    kw = dict(seeds=0, steps=3, guidance=3.0)
    img_ours, img_theirs = ours.generate(["a red circle"], **kw).images, theirs.generate(["a red circle"], **kw).images
    img_base = base.generate(["a red circle"], **kw).images
    assert abs(img_ours.astype(int) - img_theirs).max() <= 2
    assert abs(img_ours.astype(int) - img_base).mean() > 5 * max(1e-9, abs(img_ours.astype(int) - img_theirs).mean())


def test_base_plus_lora_spec_loads_everywhere_a_model_spec_is_accepted(lora_run, data, run_cli, tmp_path):
    out, report = lora_run
    spec = f"builtin:tiny-random+lora:{out}"
    a, b = load_model(spec), load_model(str(out))
    assert a.fingerprint() == b.fingerprint() == report.models["trained"]["fingerprint"]
    assert a.fingerprint() != load_model("builtin:tiny-random").fingerprint()
    assert not any("lora" in n for n, _ in a.unet.named_parameters())  # fused: the base model's names
    code, _, err = run_cli("erase", spec, "--concept", "red circle", "--method", "uce", "--preview", 0,
                           "--out", tmp_path / "erased")
    assert code == 0, err
    erased = json.loads((tmp_path / "erased" / "report.json").read_text())
    assert erased["models"]["original"]["fingerprint"] == a.fingerprint()
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\n")
    code, _, err = run_cli("audit", "generations", str(out), "--dataset", data, "--prompts", prompts,
                           "--n", 1, "--steps", 2, "--batch-size", 4, "--controls", 0, "--reference-prompts", 0,
                           "--out", tmp_path / "audit")
    assert code == 0, err
    audited = json.loads((tmp_path / "audit" / "report.json").read_text())
    assert audited["models"]["model"]["fingerprint"] == a.fingerprint()


def test_a_lora_of_another_model_or_a_missing_folder_is_refused(lora_run, run_cli, tmp_path):
    out, _ = lora_run
    code, _, err = run_cli("info", f"builtin:tiny-random+lora:{tmp_path / 'nowhere'}")
    assert code == 2 and "nowhere" in err and "does not exist" in err
    code, _, err = run_cli("info", f"builtin:tiny+lora:{out}")  # other widths: the adapter does not fit
    assert code == 2 and "LoRA" in err and len(err.strip().splitlines()) == 1


# -- bad input: one sentence, exit 2, nothing written -----------------------------------------------

def _no_attention_model(root: Path) -> Path:
    """A pipeline whose UNet has no attention layer at all (down/up blocks without transformers)."""
    from diffusers import UNet2DConditionModel

    pipe = load_model("builtin:tiny-random").pipeline
    cfg = dict(pipe.unet.config)
    cfg.update(down_block_types=["DownBlock2D"] * len(cfg["down_block_types"]),
               up_block_types=["UpBlock2D"] * len(cfg["up_block_types"]), mid_block_type=None)
    pipe.unet = UNet2DConditionModel(**{k: v for k, v in cfg.items() if not k.startswith("_")})
    pipe.register_modules(unet=pipe.unet)
    from sdguard.models.loading import quiet_hub_bars

    with quiet_hub_bars():
        pipe.save_pretrained(str(root), safe_serialization=True)
    return root


BAD = [
    (["--trainable", "lora", "--lora-rank", "0"], "--lora-rank"),
    (["--holdout", "1.0"], "--holdout"),
    (["--trainable", "everything"], "--trainable"),
    (["--batch-size", "6", "--grad-accum", "4"], "--grad-accum"),
]


@pytest.mark.parametrize("extra,named", BAD)
def test_bad_options_get_one_sentence_and_write_nothing(extra, named, data, run_cli, tmp_path):
    code, _, err = run_cli("train", "builtin:tiny-random", "--dataset", data, "--out", tmp_path / "o", *extra)
    assert code == 2 and named in err and len(err.strip().splitlines()) == 1, err
    assert not any(tmp_path.iterdir())


def test_a_dataset_without_one_readable_image_is_refused(run_cli, tmp_path):
    d = tmp_path / "broken"
    (d / "images").mkdir(parents=True)
    rows = []
    for i in range(3):
        (d / "images" / f"{i}.png").write_bytes(b"not a png at all")
        rows.append(json.dumps({"file_name": f"images/{i}.png", "text": f"caption {i}"}))
    (d / "metadata.jsonl").write_text("\n".join(rows) + "\n")
    code, _, err = run_cli("train", "builtin:tiny-random", "--dataset", d, "--out", tmp_path / "o")
    assert code == 2 and "none of the 3 images to train on could be read" in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "o").exists()
    assert not staging_dir_of(tmp_path / "o").exists()


def test_a_trainable_group_the_model_lacks_is_refused(data, run_cli, tmp_path):
    model = _no_attention_model(tmp_path / "plain")
    for group in ("attention", "cross_attn"):
        code, _, err = run_cli("train", model, "--dataset", data, "--trainable", group, "--out", tmp_path / "o")
        assert code == 2 and f"--trainable '{group}'" in err and "no" in err, err
        assert len(err.strip().splitlines()) == 1 and not (tmp_path / "o").exists()


def test_bf16_autocast_keeps_fp32_master_weights_and_the_frozen_parts_exact(data, tmp_path):
    from safetensors.torch import load_file

    ref = train("builtin:tiny-random", data, tmp_path / "fp32", **FAST)
    half = train("builtin:tiny-random", data, tmp_path / "bf16", mixed_precision="bf16", **FAST)
    assert half.results["mixed_precision"] == "bf16" and ref.results["mixed_precision"] == "no"
    assert half.results["loss_last"] == pytest.approx(ref.results["loss_last"], rel=0.05)
    unet = load_file(tmp_path / "bf16" / "unet" / "diffusion_pytorch_model.safetensors")
    assert {v.dtype for v in unet.values()} == {torch.float32}  # the trained weights: fp32 masters
    base = load_model("builtin:tiny-random")
    vae = load_file(tmp_path / "bf16" / "vae" / "diffusion_pytorch_model.safetensors")
    for k, v in base.vae.state_dict().items():  # frozen during training in bf16, saved as the base's
        assert torch.equal(vae[k], v), k


def test_every_dataset_format_trains_alike_and_unreadable_records_are_skipped(data, tmp_path):
    """The same records as an imagefolder, webdataset shard, parquet with image bytes and CSV table
    give the same members and the same loss curve; a corrupt image is skipped and counted."""
    import csv
    import io
    import tarfile

    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    rows = [json.loads(x) for x in (data / "metadata.jsonl").read_text().splitlines()][:12]
    blobs = [(data / r["file_name"]).read_bytes() for r in rows]
    blobs_bad = blobs[:-1] + [b"\x89PNG broken"]
    shard = tmp_path / "wds"
    shard.mkdir()
    with tarfile.open(shard / "00000.tar", "w") as tar:
        for i, (r, b) in enumerate(zip(rows, blobs_bad)):
            for name, payload in ((f"{i:06d}.png", b), (f"{i:06d}.txt", r["text"].encode())):
                info = tarfile.TarInfo(name)
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    (tmp_path / "pq").mkdir()
    pq.write_table(pa.Table.from_pylist([{"key": str(i), "caption": r["text"], "png": b}
                                         for i, (r, b) in enumerate(zip(rows, blobs_bad))]),
                   tmp_path / "pq" / "00000.parquet")
    table = tmp_path / "table"
    (table / "images").mkdir(parents=True)
    with open(table / "captions.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file_name", "caption"])
        for i, (r, b) in enumerate(zip(rows, blobs_bad)):
            (table / "images" / f"{i}.png").write_bytes(b)
            w.writerow([f"images/{i}.png", r["text"]])
    curves, members = {}, {}
    for name, ds in (("webdataset", shard), ("parquet", tmp_path / "pq"), ("csv", table / "captions.csv")):
        out = tmp_path / f"out_{name}"
        report = train("builtin:tiny-random", ds, out, steps=3, batch_size=4, samples=0, lr=1e-3)
        assert report.results["skipped"]["unreadable"] == 1 and report.results["members"] == 11, name
        curves[name] = [json.loads(x)["loss"] for x in (out / "training_log.jsonl").read_text().splitlines()]
        members[name] = [m["text"] for m in read_manifest(out / "members.jsonl")]
    assert members["webdataset"] == members["parquet"] == members["csv"] == [r["text"] for r in rows[:-1]]
    assert curves["webdataset"] == pytest.approx(curves["parquet"], rel=1e-6)
    assert curves["parquet"] == pytest.approx(curves["csv"], rel=1e-6)
