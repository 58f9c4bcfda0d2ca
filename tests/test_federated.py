"""`sdguard federate` (issue 18): partitions, client-level DP accounting against Flower's own
accountant, a simulated federation whose saved model is the final aggregate, SecAgg+ equal to
FedAvg, a real SuperLink + 3 SuperNodes with one killed mid-round, and bad input refused."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flwr")
pytest.importorskip("peft")

from sdguard.core.errors import InputError  # noqa: E402
from sdguard.train.federated.options import FederateConfig  # noqa: E402

MODEL = "builtin:tiny-random"
BASE = dict(model=MODEL, trainable=["attention"], rounds=2, local_steps=2, batch_size=4, samples=0, lr=1e-3,
            workers=2)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from other_world import write_other_world

    root = tmp_path_factory.mktemp("fl") / "data"
    write_other_world(root, n=36, seed=2)
    return root


def _cfg(data, tmp_path, **values) -> FederateConfig:
    from sdguard.core.config import validate

    return validate(FederateConfig, **{**BASE, "dataset": str(data), "out": str(tmp_path / "out"), "clients": 3, **values})


def _members(data):
    from sdguard.data.datasets import open_dataset

    ds = open_dataset(str(data))
    return ds, ds.entries()


def test_partitions_split_every_record_once_and_keep_keys_together(data, tmp_path):
    from sdguard.train.federated.partitions import partition

    ds, entries = _members(data)
    iid = partition(_cfg(data, tmp_path), ds, entries)
    assert sorted(np.concatenate(iid.parts).tolist()) == list(range(len(entries)))
    assert max(map(len, iid.parts)) - min(map(len, iid.parts)) <= 1
    word = entries.texts[0].split()[-1]
    key = partition(_cfg(data, tmp_path, partition=f"keyword:{word}"), ds, entries)
    from sdguard.data.captions import KeywordFilter

    hits = {i for i, t in enumerate(entries.texts) if KeywordFilter((word,)).matches(t)}
    assert hits and hits <= set(key.parts[0].tolist())  # every keyword record on client 0
    assert key.describe()["clients"][0]["key_records"] == len(hits)
    assert all(c["key_records"] == 0 for c in key.describe()["clients"][1:])
    assert sorted(np.concatenate(key.parts).tolist()) == list(range(len(entries)))


def test_a_column_partition_keeps_each_owner_on_one_client(data, tmp_path):
    import shutil

    from sdguard.data.datasets import open_dataset
    from sdguard.train.federated.partitions import partition

    own = tmp_path / "owned"
    shutil.copytree(data, own)
    rows = [json.loads(line) for line in (own / "metadata.jsonl").read_text().splitlines() if line.strip()]
    (own / "metadata.jsonl").write_text("".join(json.dumps({**r, "owner": f"user{i % 4}"}) + "\n"
                                                for i, r in enumerate(rows)))
    ds = open_dataset(str(own))
    entries = ds.entries()
    split = partition(_cfg(own, tmp_path, partition="column:owner"), ds, entries)
    owners = [{f"user{int(r) % 4}" for r in entries.rows[p]} for p in split.parts]
    assert all(owners) and sum(len(o) for o in owners) == 4  # no owner split over two clients
    assert sorted(np.concatenate(split.parts).tolist()) == list(range(len(entries)))
    with pytest.raises(InputError, match="4 distinct value"):
        partition(_cfg(own, tmp_path, partition="column:owner", clients=5), ds, entries)


def test_a_cluster_partition_puts_the_planted_artwork_on_client_0(data, tmp_path):
    """`--partition cluster:AUDIT`: the largest near-duplicate cluster of `sdguard audit data`
    (here the planted lighthouse) whole on client 0, the other clusters each whole on one client."""
    from sdguard.audit.dataset_replication import audit_data
    from sdguard.train.federated.partitions import partition

    audit = tmp_path / "audit"
    audit_data(str(data), out=str(audit))
    ds, entries = _members(data)
    split = partition(_cfg(data, tmp_path, partition=f"cluster:{audit}"), ds, entries)
    lighthouse = {i for i, t in enumerate(entries.texts) if "lighthouse" in t}
    assert len(lighthouse) >= 3 and lighthouse <= set(split.parts[0].tolist())
    info = split.describe()
    assert info["clients"][0]["key_records"] >= len(lighthouse) and all(
        c["key_records"] == 0 for c in info["clients"][1:])
    assert sorted(np.concatenate(split.parts).tolist()) == list(range(len(entries)))


@pytest.mark.parametrize("values, argument", [
    ({"clients": 1000}, "--clients"),
    ({"partition": "keyword:zebracorn"}, "--partition"),
    ({"partition": "shards"}, "--partition"),
])
def test_bad_partitions_are_one_sentence(values, argument, data, tmp_path):
    from sdguard.train.federated.partitions import partition

    ds, entries = _members(data)
    with pytest.raises(InputError) as exc:
        partition(_cfg(data, tmp_path, **values), ds, entries)
    assert str(exc.value).startswith(argument)


@pytest.mark.parametrize("values, argument", [
    ({"dp": True, "noise_multiplier": 1.0, "strategy": "fedprox"}, "--strategy"),
    ({"client_dp": "server"}, "--client-dp"),
    ({"client_epsilon": 4.0}, "--client-epsilon"),
    ({"secagg": True, "client_dp": "client", "update_noise": 1.0}, "--secagg"),
    ({"min_clients": 9}, "--min-clients"),
])
def test_bad_federation_options_are_one_sentence(values, argument, data, tmp_path):
    with pytest.raises(InputError) as exc:
        _cfg(data, tmp_path, **values)
    assert str(exc.value).startswith(argument)


def test_simulation_workers_get_their_share_of_the_cpus_and_gpus(data, tmp_path):
    """Ray hides the GPUs from an actor that asks for none: on a GPU machine every worker asks
    for its share (one worker per GPU by default), on a CPU machine for none."""
    from sdguard.train.federated.simulation import resources

    backend, env = resources(_cfg(data, tmp_path, clients=10, workers=None), cpus=16, gpus=2)
    assert backend["client_resources"] == {"num_cpus": 8, "num_gpus": 1.0} and backend["init_args"]["num_gpus"] == 2
    backend, _ = resources(_cfg(data, tmp_path, clients=10, workers=4), cpus=16, gpus=1)
    assert backend["client_resources"] == {"num_cpus": 4, "num_gpus": 0.25}
    backend, env = resources(_cfg(data, tmp_path, clients=3, workers=None), cpus=2, gpus=0)
    assert backend["client_resources"] == {"num_cpus": 1, "num_gpus": 0.0} and env["OMP_NUM_THREADS"] == "1"


def test_client_level_epsilon_agrees_with_flowers_accountant(data, tmp_path):
    """sdguard's per-round epsilon (Opacus RDP, no sampling amplification) against Flower 1.42's
    RdpAccountant (dp-accounting underneath) for the same Gaussian releases."""
    from flwr.serverapp import (
        NeighboringRelation,
        PrivacyConfig,
        RdpAccountant,
        SamplingMethod,
    )
    from flwr.supercore.privacy_accounting import GaussianPrivacyEvent

    from sdguard.train.federated.server import epsilon_after

    cfg = _cfg(data, tmp_path, client_dp="server", update_noise=1.0, accountant="rdp", rounds=4)
    acc = RdpAccountant(PrivacyConfig(target_delta=cfg.delta, population_size=3,
                                      neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
                                      sampling_method=SamplingMethod.NO_AMPLIFICATION))
    for r in range(1, 5):
        acc.compose(GaussianPrivacyEvent(noise_multiplier=1.0, sample_size=3, population_size=3))
        theirs, ours = acc.get_privacy_spent().epsilon, epsilon_after(cfg, r)
        assert abs(ours - theirs) / theirs < 0.03, (r, ours, theirs)
    assert epsilon_after(cfg, 4) > epsilon_after(cfg, 1) > 0


@pytest.mark.parametrize("mechanism", ["server", "client"])
def test_a_target_epsilon_solves_the_noise_and_wraps_the_strategy(mechanism, data, tmp_path):
    from flwr.serverapp import strategy as fs

    from sdguard.train.federated.server import epsilon_after, make_strategy

    cfg = _cfg(data, tmp_path, client_dp=mechanism, client_epsilon=8.0, rounds=5)
    s = make_strategy(cfg)
    kind = fs.DifferentialPrivacyServerSideFixedClipping if mechanism == "server" else \
        fs.DifferentialPrivacyClientSideFixedClipping
    assert isinstance(s, kind) and isinstance(s.strategy, fs.FedAvg)
    assert s.clipping_norm == cfg.update_clip and s.num_sampled_clients == 3
    assert epsilon_after(cfg, 5) <= 8.0 + 1e-6 and epsilon_after(cfg, 5) > 7.0  # spends the target, not far below


def _tensors(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "unet" / "diffusion_pytorch_model.safetensors"))


@pytest.fixture(scope="module")
def plain_run(data, tmp_path_factory):
    from sdguard.train.federated import simulate

    out = tmp_path_factory.mktemp("plain") / "out"
    return out, simulate(**{**BASE, "dataset": str(data), "out": str(out), "clients": 3, "rounds": 2})


def test_simulation_saves_the_final_aggregate_and_the_union_of_members(plain_run, data):
    """Flower's own SD example saves the adapter captured before training; here the saved UNet
    must give exactly the loss the clients measured on the final global tensors."""
    from sdguard.train.finetune import TrainConfig, make_accelerator
    from sdguard.train.finetune_run import FineTuneRun

    out, report = plain_run
    rounds = report.results["round_log"]
    assert [r["aggregated"] for r in rounds] == [True, True] and all(r["replies"] == 3 for r in rounds)
    members = [json.loads(line) for line in (out / "members.jsonl").read_text().splitlines()]
    assert sorted(m["row"] for m in members) == list(range(36))
    assert sum(s["records"] for s in report.results["shares"]) == 36
    saved = _tensors(out)
    run = FineTuneRun(TrainConfig(model=str(out), dataset=str(data), out=str(out / "x"), trainable=["attention"],
                                  steps=1, samples=0), make_accelerator("no"), progress=False)
    run.prepare()
    assert run.eval_loss() == pytest.approx(rounds[-1]["eval_loss"], rel=1e-4)
    # round 0: the clients' loss of the starting tensors is the base model's, measured alike
    base_run = FineTuneRun(TrainConfig(model=MODEL, dataset=str(data), out=str(out / "y"), trainable=["attention"],
                                       steps=1, samples=0), make_accelerator("no"), progress=False)
    base_run.prepare()
    assert report.results["eval_loss_initial"] == pytest.approx(base_run.eval_loss(), rel=1e-4)
    assert report.results["eval_loss_initial"] != pytest.approx(rounds[-1]["eval_loss"], rel=1e-6)
    from sdguard.models.adapter import DiffusionModel

    before = DiffusionModel.load(MODEL).unet.state_dict()
    moved = [k for k in saved if "attn" in k and not np.allclose(saved[k].numpy(), before[k].numpy())]
    assert moved, "the saved UNet is the base one"
    assert (out / "rounds.jsonl").is_file() and (out / "report.html").is_file()


def test_clients_can_keep_their_manifests(data, tmp_path):
    """--no-share-manifests: the server learns only record counts; no members.jsonl is written
    (an empty one would read as "no members" to a membership audit) and the report says so."""
    from sdguard.train.federated import simulate

    out = tmp_path / "kept"
    report = simulate(**{**BASE, "dataset": str(data), "out": str(out), "clients": 3, "rounds": 1, "local_steps": 1,
                         "eval_records": 0, "share_manifests": False, "samples": 2})
    assert not (out / "members.jsonl").exists() and not (out / "nonmembers.jsonl").exists()
    assert sum(c["records"] for c in report.results["shares"]) == 36 and report.results["members"] == 36
    assert report.results["manifests_shared"] is False
    assert any("kept their manifests" in line for line in report.summary)
    rows = json.loads((out / "report.json").read_text())
    assert "file_name" not in json.dumps(rows["results"])  # no record of a client reached the report


def test_a_federated_lora_is_saved_trained_and_loads_as_a_model_spec(data, tmp_path):
    """The case Flower's Stable Diffusion example gets wrong: with --trainable lora the saved
    adapter must be the final aggregate -- its fused model gives the clients' final global loss."""
    from sdguard.models.adapter import DiffusionModel
    from sdguard.train.federated import simulate
    from sdguard.train.finetune import TrainConfig, make_accelerator
    from sdguard.train.finetune_run import FineTuneRun

    out = tmp_path / "lora"
    report = simulate(**{**BASE, "dataset": str(data), "out": str(out), "clients": 2, "rounds": 2,
                         "trainable": ["lora"], "lr": 1e-2})
    assert (out / "pytorch_lora_weights.safetensors").is_file() and (out / "lora.json").is_file()
    run = FineTuneRun(TrainConfig(model=str(out), dataset=str(data), out=str(out / "x"), trainable=["attention"],
                                  steps=1, samples=0), make_accelerator("no"), progress=False)
    run.prepare()  # the LoRA folder is a model spec: base + the adapter, fused
    last = report.results["round_log"][-1]["eval_loss"]
    assert run.eval_loss() == pytest.approx(last, rel=1e-4)
    assert report.results["eval_loss_initial"] != pytest.approx(last, rel=1e-6)
    fused, base = DiffusionModel.load(str(out)).unet.state_dict(), DiffusionModel.load(MODEL).unet.state_dict()
    assert any(not np.allclose(fused[k].numpy(), base[k].numpy()) for k in base)


def test_a_federation_checkpoint_restores_the_last_aggregate_and_refuses_another_run(data, tmp_path):
    """Each round's aggregate is checkpointed (safetensors + JSON); a resumed server starts from
    it with the rounds and clients recorded, and a run with other settings is refused."""
    import torch

    from sdguard.core.errors import StateError
    from sdguard.train.federated.server import FederatedServer

    cfg = _cfg(data, tmp_path, rounds=3)
    stage = tmp_path / "stage"
    stage.mkdir()
    first = FederatedServer(cfg, stage)
    first.clients = [{"node": 7, "partition": 0, "members": [{"row": 0}], "nonmembers": [], "skipped": []}]
    with torch.no_grad():
        for p in first.trainable.params.values():
            p.add_(0.25)
    first.checkpoint({"round": 1, "aggregated": True, "failed": []}, first.arrays())
    after = {k: p.detach().clone() for k, p in first.trainable.params.items()}
    again = FederatedServer(cfg, stage)
    assert not all(torch.equal(again.trainable.params[k], v) for k, v in after.items())  # a fresh base
    assert again.restore() == 1
    assert all(torch.equal(again.trainable.params[k], v) for k, v in after.items())
    assert again.clients == first.clients and again.rounds[0]["round"] == 1
    with pytest.raises(StateError, match="--resume"):
        FederatedServer(cfg.model_copy(update={"lr": 5e-4}), stage).restore()


def test_fedprox_term_holds_the_clients_near_the_global_model(data, tmp_path):
    """FedProx (Li et al. 2020): a large proximal mu shrinks the clients' updates against mu 0 (the
    same data, seeds and 4 local steps, unclipped); the update norms are the report's."""
    from sdguard.train.federated import simulate

    norms = {}
    for mu in (0.0, 1e4):
        report = simulate(**{**BASE, "dataset": str(data), "out": str(tmp_path / f"mu{mu:g}"), "clients": 3,
                             "rounds": 1, "local_steps": 4, "strategy": "fedprox", "proximal_mu": mu,
                             "eval_records": 0, "clip_norm": 0})
        assert report.results["proximal_mu"] == mu
        norms[mu] = report.results["round_log"][0]["update_norm_median"]
    assert 0 < norms[1e4] < 0.5 * norms[0.0], norms


@pytest.mark.parametrize("mode", ["server", "client", "local"])
def test_client_level_dp_noise_has_the_published_scale(mode, data, tmp_path):
    """One round, updates clipped to a tiny bound: what moved the global tensors is the mechanism's
    Gaussian noise, whose per-coordinate std must be the published one -- sigma x C / n for
    Flower's server- and client-side fixed clipping (McMahan et al. 2018), and LocalDpMod's
    ``2C sqrt(2 ln(1.25/delta)) / epsilon`` per client, averaged over n clients with equal weights."""
    import math

    import torch

    from sdguard.models.adapter import DiffusionModel
    from sdguard.train.federated import simulate

    n, clip = 3, 1e-4
    budget = {"update_noise": 1.0} if mode != "local" else {"client_epsilon": 10.0}
    out = tmp_path / mode
    report = simulate(**{**BASE, "dataset": str(data), "out": str(out), "clients": n, "rounds": 1, "local_steps": 1,
                         "eval_records": 0, "client_dp": mode, "update_clip": clip, **budget})
    row = report.results["round_log"][0]
    assert row["aggregated"] and row["epsilon"] is not None and row["epsilon"] > 0
    assert (out / "privacy.json").is_file() and report.results["privacy"]["unit"].startswith("client")
    base = DiffusionModel.load(MODEL).unet.state_dict()
    saved = _tensors(out)
    moved = {k: (saved[k].float() - base[k].float()).flatten() for k in saved if not torch.equal(saved[k], base[k])}
    assert moved and all("attn" in k for k in moved)  # only the trainable subset changed
    std = float(torch.cat(list(moved.values())).std())
    cfg = _cfg(data, tmp_path, client_dp=mode, update_clip=clip, **budget)
    if mode == "local":
        expected = 2 * clip * math.sqrt(2 * math.log(1.25 / cfg.delta)) / 10.0 / math.sqrt(n)
    else:
        expected = 1.0 * clip / n
    assert 0.8 * expected < std < 1.25 * expected, (std, expected)


def test_dp_sgd_on_every_client_reports_each_clients_epsilon_per_round(data, tmp_path):
    """--dp: `sdguard train`'s DP-SGD (Opacus) on every client over its rounds x local steps; each
    client's record-level epsilon after each round is an accountant's for (sigma, its sampling rate
    batch / its records, rounds done x local steps) -- checked against Opacus's own accountant."""
    from opacus.accountants import create_accountant

    from sdguard.train.federated import simulate

    out = tmp_path / "dpsgd"
    report = simulate(**{**BASE, "dataset": str(data), "out": str(out), "clients": 3, "rounds": 2, "eval_records": 0,
                         "dp": True, "noise_multiplier": 1.0, "delta": 1e-3})
    rounds = report.results["round_log"]
    assert all(r["aggregated"] and len(r["record_dp"]) == 3 for r in rounds)
    assert rounds[1]["record_epsilon"] > rounds[0]["record_epsilon"] > 0
    records = {str(c["node"]): c["records"] for c in report.results["shares"]}
    for r in rounds:
        for node, (eps, sigma, q) in r["record_dp"].items():
            assert sigma == 1.0 and q == pytest.approx(4 / records[node])
            acc = create_accountant("prv")
            acc.history = [(1.0, 4 / records[node], r["round"] * 2)]
            assert eps == pytest.approx(acc.get_epsilon(1e-3), rel=1e-3)
    privacy = json.loads((out / "privacy.json").read_text())
    assert privacy["unit"] == "image" and len(privacy["clients"]) == 3
    assert privacy["epsilon"] == pytest.approx(rounds[-1]["record_epsilon"])
    from sdguard.models.adapter import DiffusionModel

    base, saved = DiffusionModel.load(MODEL).unet.state_dict(), _tensors(out)
    assert any(not np.allclose(saved[k].numpy(), base[k].numpy()) for k in saved if "attn" in k)


def test_secagg_plus_aggregate_equals_plain_fedavg(plain_run, data, tmp_path):
    from sdguard.train.federated import simulate

    out, _ = plain_run
    report = simulate(**{**BASE, "dataset": str(data), "out": str(tmp_path / "sec"), "clients": 3, "rounds": 2,
                         "secagg": True})
    assert all(r["aggregated"] and r.get("secagg") for r in report.results["round_log"])
    plain, secure = _tensors(out), _tensors(tmp_path / "sec")
    diff = max(float((plain[k] - secure[k]).abs().max()) for k in plain)
    moved = max(float((plain[k] - _tensors(out)[k]).abs().max()) for k in plain)
    assert diff < 1e-4 and moved == 0.0


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_superlink_and_three_supernodes_survive_a_killed_node(data, tmp_path):
    """A real deployment on loopback: `federate serve`, 3 x `federate client`, `federate run`; one
    SuperNode is SIGKILLed while it trains in the round, which aggregates the other two
    (--min-clients 2) and names it, once, under its own node id."""
    from sdguard.train.federated.deploy import free_port

    sdguard = str(Path(sys.executable).parent / "sdguard")
    env = dict(os.environ, OMP_NUM_THREADS="1", SDGUARD_NO_PROGRESS="1")
    port, procs, logs = free_port(), {}, {}

    def spawn(name, *args):
        logs[name] = tmp_path / f"{name}.log"
        procs[name] = subprocess.Popen([sdguard, "federate", *map(str, args)], env=env, stdout=open(logs[name], "wb"),
                                       stderr=subprocess.STDOUT, start_new_session=True)

    try:
        spawn("link", "serve", "--port", port)
        deadline = time.monotonic() + 60
        while not _port_open(port):
            assert time.monotonic() < deadline and procs["link"].poll() is None, "the SuperLink did not start"
            time.sleep(0.2)
        for i in range(3):
            spawn(f"node{i}", "client", "--superlink", f"127.0.0.1:{port}", "--partition-id", i, "--num-partitions", 3)
        out = tmp_path / "out"
        spawn("run", "run", MODEL, "--dataset", data, "--out", out, "--clients", 3, "--rounds", 1, "--local-steps", 2,
              "--batch-size", 4, "--trainable", "attention", "--samples", 0, "--min-clients", 2, "--round-timeout", 40,
              "--eval-records", 0, "--superlink", f"127.0.0.1:{port}")
        killed, deadline = False, time.monotonic() + 400
        while procs["run"].poll() is None:
            assert time.monotonic() < deadline, "the federated run did not end"
            if not killed and logs["node2"].read_text(errors="ignore").count("Receiving: train message") >= 1:
                os.killpg(procs["node2"].pid, signal.SIGKILL)  # the SuperNode and its ClientApp process
                killed = True
            time.sleep(0.3)
        assert procs["run"].returncode == 0, logs["run"].read_text()[-2000:]
        assert killed
        report = json.loads((out / "report.json").read_text())
        (row,) = report["results"]["round_log"]
        assert len(row["failed"]) == 1, row  # the killed node, once, under its own id (not the SuperLink's)
        assert row["failed"][0]["node"] not in (0, 1), row
        assert "no reply" in row["failed"][0]["reason"] or "unavailable" in row["failed"][0]["reason"].lower()
        if row["aggregated"]:
            assert row["replies"] >= 2
        else:
            assert "not updated" in row["note"]
        from sdguard.models.adapter import DiffusionModel

        assert DiffusionModel.load(str(out)).unet is not None
        assert any(r["aggregated"] for r in report["results"]["round_log"])
    finally:
        for p in procs.values():
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(10)


def test_a_superlink_that_does_not_answer_is_one_sentence(run_cli, data, tmp_path):
    from sdguard.train.federated.deploy import free_port

    dead = f"127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    code, _out, err = run_cli("federate", "run", MODEL, "--dataset", data, "--out", tmp_path / "o", "--superlink", dead)
    assert code == 2 and "--superlink" in err and "does not answer" in err
    code, _out, err = run_cli("federate", "client", "--superlink", dead)
    assert code == 2 and "does not answer" in err
    assert time.monotonic() - t0 < 30


def test_cli_refuses_more_clients_than_records(run_cli, data, tmp_path):
    code, _out, err = run_cli("federate", "simulate", MODEL, "--dataset", data, "--out", tmp_path / "o",
                              "--clients", 500)
    assert code == 2 and "--clients" in err and "36 training record" in err
    assert not (tmp_path / "o").exists()


def test_dp_delta_must_be_below_one_over_the_smallest_client(data, tmp_path):
    from sdguard.train.federated import simulate

    with pytest.raises(InputError, match=r"^--delta 0.1 must be below 1/12"):
        simulate(**{**BASE, "dataset": str(data), "out": str(tmp_path / "o"), "clients": 3, "dp": True,
                    "noise_multiplier": 1.0, "delta": 0.1})
    assert not (tmp_path / "o").exists()
