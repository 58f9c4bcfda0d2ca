"""`--backend ray` (issue 23): on a local Ray cluster of 2 CPU workers, the generation audit's and the
dataset audit's reports equal the local backend's, and a worker killed mid-run loses no chunk and
counts none twice."""

import json
import os
import signal
import threading
import time

import numpy as np
import pytest

from sdguard.models.builtin import tiny_available

pytestmark = pytest.mark.skipif(not tiny_available(), reason="builtin:tiny is not installed")
ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

AUDIT = dict(n=8, steps=6, batch_size=4, top_clusters=1, controls=1, reference_prompts=2)


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster of 2 CPUs: two workers of one CPU each."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}})
    yield
    ray.shutdown()


def _kill_a_worker_once_chunks_exist(staging, name, found):
    """SIGKILL one process of a Ray actor named ``name`` once 4 chunks are on disk."""
    import psutil

    chunks = staging / "generations"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if chunks.is_dir() and len(list(chunks.glob("*.npz"))) >= 4:
            for p in psutil.process_iter(["pid", "cmdline"]):
                if any(name in part for part in (p.info["cmdline"] or [])):
                    os.kill(p.info["pid"], signal.SIGKILL)
                    found.append((p.info["pid"], len(list(chunks.glob("*.npz")))))
                    return
        time.sleep(0.02)


def _rows(report):
    return [(p["prompt"], p["kind"], p["replication_rate"], p["clique_size"], p["extraction_flagged"])
            for p in report.results["prompts"]]


def test_generation_audit_on_ray_equals_local_and_survives_a_killed_worker(cluster, default_world, tmp_path):
    from sdguard.audit.dataset_replication import audit_data
    from sdguard.audit.generation_replication import audit_generations

    audit_data(default_world, ["van gogh"], out=tmp_path / "data", progress=False)
    common = dict(clusters=str(tmp_path / "data"), progress=False, **AUDIT)
    local = audit_generations("builtin:tiny", str(default_world), out=str(tmp_path / "local"), **common)
    killed: list = []
    killer = threading.Thread(target=_kill_a_worker_once_chunks_exist,
                              args=(tmp_path / ".ray.partial", "GenerationWorker", killed), daemon=True)
    killer.start()
    remote = audit_generations("builtin:tiny", str(default_world), out=str(tmp_path / "ray"), backend="ray",
                               workers=2, **common)
    killer.join(timeout=5)
    assert killed, "no Ray worker was found to kill"
    assert _rows(remote) == _rows(local)
    assert remote.results["clique"]["value"] == local.results["clique"]["value"]
    gen_l, gen_r = local.results["generation"], remote.results["generation"]
    assert gen_r["generated_now"] == gen_l["generated_now"] and gen_r["reused"] == 0  # every chunk once
    files = sorted(p.name for p in (tmp_path / "ray" / "generations").glob("*.npz"))
    assert files == sorted(p.name for p in (tmp_path / "local" / "generations").glob("*.npz"))
    for name in files[:6]:
        with np.load(tmp_path / "local" / "generations" / name) as a, np.load(tmp_path / "ray" / "generations" / name) as b:
            assert (a["seeds"] == b["seeds"]).all()
            assert np.abs(a["images"].astype(int) - b["images"].astype(int)).max() <= 1


def test_dataset_embedding_on_ray_equals_local(cluster, small_world, tmp_path):
    from sdguard.audit.dataset_replication import audit_data

    local = audit_data(small_world, out=tmp_path / "local", cache=False, progress=False)
    remote = audit_data(small_world, out=tmp_path / "ray", cache=False, backend="ray", workers=2, progress=False)
    assert remote.results["clustering"]["clusters"] == local.results["clustering"]["clusters"]
    assert [c["size"] for c in remote.results["clusters"]] == [c["size"] for c in local.results["clusters"]]
    read = lambda d: json.loads((d / "report.json").read_text())["results"]["images"]  # noqa: E731
    assert read(tmp_path / "ray")["embedded"] == read(tmp_path / "local")["embedded"]


def test_ray_options_need_the_ray_backend(run_cli, default_world, tmp_path):
    code, _, err = run_cli("audit", "data", default_world, "--workers", "2", "--out", tmp_path / "o")
    assert code == 2 and "--workers" in err and "--backend ray" in err


def test_generate_on_ray_makes_the_local_images(cluster, run_cli, tmp_path):
    """`sdguard generate --backend ray`: chunks of --batch-size images on the workers, written in the
    order of the prompts and seeds, the same images as the local backend's."""
    from PIL import Image

    args = ["builtin:tiny", "van gogh starry night", "a red circle", "--n", "3", "--steps", "4", "--batch-size", "2"]
    assert run_cli("generate", *args, "--out", tmp_path / "local")[0] == 0
    code, _, err = run_cli("generate", *args, "--backend", "ray", "--workers", "1", "--out", tmp_path / "ray")
    assert code == 0, err
    rows = [(tmp_path / d / "images.jsonl").read_text() for d in ("local", "ray")]
    assert rows[0] == rows[1] and len(rows[0].splitlines()) == 6
    for line in rows[0].splitlines():
        name = json.loads(line)["file"]
        a, b = (np.asarray(Image.open(tmp_path / d / name), np.int16) for d in ("local", "ray"))
        assert np.abs(a - b).max() <= 1, name
