"""`sdguard train --dp` (issue 17): Opacus's per-sample gradients against batches of one, the DP
step's clipping and noise against a hand-made reference, group units, the accountants against
Google's dp-accounting, BatchMemoryManager's split, resume, privacy.json and `sdguard info`, and
bad input refused before training starts."""

from __future__ import annotations

import json
import math

import pytest
import torch

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing")

pytest.importorskip("opacus")
pytest.importorskip("peft")

from sdguard.train.finetune import TrainConfig, make_accelerator  # noqa: E402
from sdguard.train.finetune_run import FineTuneRun  # noqa: E402
from sdguard.train.private import epsilon_spent, solve_noise  # noqa: E402

MODEL = "builtin:tiny-random"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """40 images of tests/other_world.py with a ``user`` column: records of one caption share a user."""
    from other_world import write_other_world

    root = tmp_path_factory.mktemp("dp") / "data"
    write_other_world(root, n=40, seed=2)
    meta = [json.loads(line) for line in (root / "metadata.jsonl").read_text().splitlines()]
    users = {t: f"user{i}" for i, t in enumerate(dict.fromkeys(m["text"] for m in meta))}
    for m in meta:
        m["user"] = users[m["text"]]
    (root / "metadata.jsonl").write_text("".join(json.dumps(m) + "\n" for m in meta))
    return root


def _run(data, tmp_path, **values) -> FineTuneRun:
    base = dict(model=MODEL, dataset=str(data), out=str(tmp_path / "out"), trainable=["attention"], steps=3,
                batch_size=8, samples=0, dp=True, noise_multiplier=1.0, delta=1e-3, lr=1e-3)
    cfg = TrainConfig(**{**base, **values})
    run = FineTuneRun(cfg, make_accelerator("no"), progress=False)
    run.prepare()
    tmp_path.mkdir(parents=True, exist_ok=True)
    run.stage = tmp_path
    return run


def _one_record_grads(run, step: int, position: int, record: int) -> list[torch.Tensor]:
    """The slow reference: the plain gradient of one record's loss (a batch of one)."""
    trainer = run.private
    for p in trainer.params:
        p.grad, p.grad_sample = None, None
    wrapped, run.wrapped = run.wrapped, {"unet": run.model.unet}  # the plain UNet, not Opacus's wrapper
    try:
        pred, target = run.micro_batch(step, [position], [record])
        torch.nn.functional.mse_loss(pred.float(), target.float()).backward()
    finally:
        run.wrapped = wrapped
    grads = [p.grad.detach().clone() for p in trainer.params]
    for p in trainer.params:
        p.grad, p.grad_sample = None, None
    return grads


def _rows(run, step: int, units: list[int]) -> list[torch.Tensor]:
    """Per-unit gradient rows the DP step hands Opacus for ``units`` (no optimizer step)."""
    trainer = run.private
    trainer._chunk(step, units, 0, [], [])
    rows = [(torch.cat(p.grad_sample) if isinstance(p.grad_sample, list) else p.grad_sample).clone()
            for p in trainer.params]
    for p in trainer.params:
        p.grad, p.grad_sample = None, None
    return rows


@pytest.mark.parametrize("mode", ["hooks", "functorch", "ew"])
def test_per_sample_gradients_equal_batches_of_one(mode, data, tmp_path):
    run = _run(data, tmp_path, grad_sample_mode=mode)
    units = [0, 5, 11, 17]
    rows = _rows(run, 2, units)
    for k, u in enumerate(units):
        ref = _one_record_grads(run, 2, k, u)
        err = max(float((r[k] - g).abs().max()) for r, g in zip(rows, ref))
        scale = max(float(g.abs().max()) for g in ref)
        assert scale > 0 and err < 1e-4 * scale + 1e-7, (mode, u, err, scale)


def test_ghost_clipping_norms_equal_the_norms_of_batches_of_one(data, tmp_path):
    run = _run(data, tmp_path, trainable=["lora"], grad_sample_mode="ghost")
    trainer, units = run.private, [1, 4, 9]
    norms: list[float] = []
    trainer._chunk(1, units, 0, [], norms)
    trainer.optimizer.zero_grad(set_to_none=True)
    ref = [float(torch.stack([g.norm() for g in _one_record_grads(run, 1, k, u)]).norm()) for k, u in enumerate(units)]
    assert len(norms) == len(units)
    for got, want in zip(norms, ref):
        assert want > 0 and abs(got - want) < 1e-3 * want, (norms, ref)


def test_a_group_gradient_is_the_sum_of_its_records_even_past_the_physical_batch(data, tmp_path):
    run = _run(data, tmp_path, privacy_unit="group", group_column="user", grad_accum=4)  # physical batch: 2
    trainer = run.private
    big = max(range(trainer.units.count), key=lambda u: len(trainer.units.members[u]))
    small = next(u for u in range(trainer.units.count) if len(trainer.units.members[u]) == 1)
    assert len(trainer.units.members[big]) > trainer.physical  # the group needs several passes
    rows = _rows(run, 0, [big, small])
    position = 0
    for k, u in enumerate([big, small]):
        ref = None
        for i in trainer.units.members[u]:
            g = _one_record_grads(run, 0, position, int(i))
            ref = g if ref is None else [a + b for a, b in zip(ref, g)]
            position += 1
        err = max(float((r[k] - g).abs().max()) for r, g in zip(rows, ref))
        scale = max(float(g.abs().max()) for g in ref)
        assert err < 1e-4 * scale + 1e-7, (u, err, scale)


def test_the_dp_step_clips_each_unit_then_adds_noise_of_std_sigma_c(data, tmp_path):
    c = 0.05  # below the units' gradient norms: every unit is clipped
    run = _run(data, tmp_path, max_grad_norm=c, privacy_unit="group", group_column="user")
    trainer, opt = run.private, run.private.optimizer
    units = list(range(trainer.units.count))[:5]
    rows = _rows(run, 0, units)
    norms = torch.stack([r.flatten(1).norm(dim=1) for r in rows], 1).norm(dim=1)
    assert bool((norms > c).all()), norms
    want = [(r * (c / (norms + 1e-6)).view(-1, *[1] * (r.dim() - 1))).sum(0) / opt.expected_batch_size for r in rows]
    for sigma in (0.0, 2.0):
        opt.noise_multiplier = sigma
        trainer._chunk(0, units, 0, [], [])
        opt.signal_skip_step(do_skip=False)
        assert opt.pre_step()
        got = [p.grad.detach().clone() for p in trainer.params]
        opt.zero_grad(set_to_none=True)
        diff = torch.cat([(g - w).flatten() for g, w in zip(got, want)]) * opt.expected_batch_size
        if sigma == 0:
            assert float(diff.abs().max()) < 1e-5 * c, float(diff.abs().max())
        else:  # N(0, sigma^2 C^2) on every coordinate of the sum
            assert abs(float(diff.std()) / (sigma * c) - 1) < 0.05 and abs(float(diff.mean())) < 0.01 * sigma * c


def test_physical_batches_give_the_same_training_as_one_and_resume_is_exact(data, tmp_path):
    from sdguard.core.state import load_checkpoint

    whole = _run(data, tmp_path / "a", steps=4)
    whole.fit()
    split = _run(data, tmp_path / "b", steps=4, grad_accum=4)  # Poisson batches in physical batches of 2
    split.fit()
    a, b = whole.trainable.params, split.trainable.params
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4), k
    assert whole.private.state["units_per_step"] == split.private.state["units_per_step"]
    # resume: 2 steps, a checkpoint, a new run restored from it, 2 more steps
    first = _run(data, tmp_path / "c", steps=4)
    first.state["step"] = 0
    for s in range(2):
        first.step(s)
        first.state["step"] = s + 1
    first.save()
    assert load_checkpoint(tmp_path / "c", "finetune_state", key=first.key) is not None
    second = _run(data, tmp_path / "c", steps=4)
    second.restore()
    assert second.state["step"] == 2 and second.private.engine.accountant.history == first.private.engine.accountant.history
    second.fit()
    for k in a:
        assert torch.equal(second.trainable.params[k], a[k]), k
    assert math.isclose(second.private.epsilon(), whole.private.epsilon(), rel_tol=1e-9)


def test_accountants_agree_with_google_dp_accounting():
    dpa = pytest.importorskip("dp_accounting")
    from dp_accounting import pld, rdp
    from opacus.accountants.rdp import RDPAccountant

    for sigma, q, steps, delta in [(1.1, 0.01, 1000, 1e-5), (0.8, 0.05, 200, 1e-5), (2.0, 0.2, 50, 1e-6)]:
        event = dpa.SelfComposedDpEvent(dpa.PoissonSampledDpEvent(q, dpa.GaussianDpEvent(sigma)), steps)
        google_rdp = rdp.RdpAccountant(orders=list(RDPAccountant.DEFAULT_ALPHAS)).compose(event).get_epsilon(delta)
        ours_rdp = epsilon_spent("rdp", [(sigma, q, steps)], delta)
        assert abs(ours_rdp - google_rdp) < 0.005 * google_rdp, (sigma, q, steps, ours_rdp, google_rdp)
        google_pld = pld.PLDAccountant(value_discretization_interval=1e-3).compose(event).get_epsilon(delta)
        ours_prv = epsilon_spent("prv", [(sigma, q, steps)], delta)
        assert abs(ours_prv - google_pld) < 0.03 * google_pld + 0.01, (sigma, q, steps, ours_prv, google_pld)
        assert ours_prv < ours_rdp  # the tight accountant is below the RDP bound
    # GDP: Opacus's central-limit accountant against the mu-GDP duality of Dong, Roth & Su (2019)
    from scipy.stats import norm

    sigma, q, steps, delta = 1.0, 0.02, 2000, 1e-5
    mu = q * math.sqrt(steps * (math.exp(sigma ** -2) - 1))
    eps = epsilon_spent("gdp", [(sigma, q, steps)], delta)
    assert abs(norm.cdf(-eps / mu + mu / 2) - math.exp(eps) * norm.cdf(-eps / mu - mu / 2) - delta) < 1e-6


@pytest.mark.parametrize("accountant", ["prv", "rdp", "gdp"])
def test_the_solved_noise_spends_the_target_and_no_more(accountant):
    sigma = solve_noise(4.0, 1e-5, 0.02, 500, accountant)
    spent = epsilon_spent(accountant, [(sigma, 0.02, 500)], 1e-5)
    assert 3.9 < spent <= 4.0, (sigma, spent)
    assert epsilon_spent(accountant, [(sigma * 0.8, 0.02, 500)], 1e-5) > 4.0  # less noise would overspend


def test_cli_train_dp_writes_privacy_json_and_info_shows_it(data, run_cli, tmp_path):
    """Groups from `sdguard audit data`'s clusters: each cluster one unit, each other image its own."""
    import pyarrow.parquet as pq

    code, _, err = run_cli("audit", "data", data, "--out", tmp_path / "aud")
    assert code == 0, err
    labels = pq.read_table(tmp_path / "aud" / "clusters.parquet").to_pydict()["cluster_id"]
    clusters, alone = len({c for c in labels if c >= 0}), sum(c < 0 for c in labels)
    assert clusters >= 1 and max(labels.count(c) for c in set(labels) if c >= 0) > 1
    out = tmp_path / "lora"
    code, _, err = run_cli("train", MODEL, "--dataset", data, "--out", out, "--trainable", "lora", "--steps", "6",
                           "--batch-size", "8", "--samples", "0", "--dp", "--target-epsilon", "4", "--delta", "1e-3",
                           "--accountant", "rdp", "--privacy-unit", "group", "--groups", tmp_path / "aud")
    assert code == 0, err
    record = json.loads((out / "privacy.json").read_text())
    assert 3.8 < record["epsilon"] <= 4.0 and record["accountant"] == "rdp" and record["unit"] == "group"
    units = clusters + alone
    assert record["units"] == units and math.isclose(record["sample_rate"], 1 / math.ceil(units / 8))
    assert record["steps"] == 6 and record["noise_multiplier"] > 0.3
    report = json.loads((out / "report.json").read_text())
    assert report["results"]["privacy"]["epsilon"] == record["epsilon"]
    assert [c[0] for c in report["results"]["privacy"]["epsilon_curve"]][-1] == 6
    assert "Differential privacy" in (out / "report.html").read_text()
    code, text, err = run_cli("info", out, "--json")
    assert code == 0 and json.loads(text)["privacy"]["epsilon"] == record["epsilon"], err
    code, text, _ = run_cli("info", out)
    assert "-DP per group" in text


BAD = [
    (["--target-epsilon", "0"], "--target-epsilon"),
    (["--target-epsilon", "-1"], "--target-epsilon"),
    (["--target-epsilon", "2", "--delta", "0.05"], "--delta"),  # 40 images: delta must be below 1/40
    (["--target-epsilon", "0.001", "--accountant", "rdp", "--delta", "1e-5"], "--target-epsilon"),
    (["--target-epsilon", "2", "--trainable", "text_encoder"], "--trainable"),
    (["--target-epsilon", "2", "--mixed-precision", "bf16"], "--mixed-precision"),
    ([], "--dp"),  # neither --target-epsilon nor --noise-multiplier
    (["--target-epsilon", "2", "--privacy-unit", "group"], "--privacy-unit"),
    (["--target-epsilon", "2", "--privacy-unit", "group", "--group-column", "nope"], "--group-column"),
    (["--target-epsilon", "2", "--privacy-unit", "group", "--group-column", "user", "--grad-sample-mode", "ghost"],
     "--grad-sample-mode"),
    (["--target-epsilon", "2", "--groups", "x"], "--groups"),
]


@pytest.mark.parametrize("extra,named", BAD)
def test_bad_dp_input_gets_one_sentence_before_training(extra, named, data, run_cli, tmp_path):
    code, _, err = run_cli("train", MODEL, "--dataset", data, "--out", tmp_path / "o", "--dp", "--steps", "5",
                           "--samples", "0", *extra)
    assert code == 2 and named in err and len(err.strip().splitlines()) == 1, err
    assert not any(tmp_path.iterdir())


def test_dp_options_without_dp_are_refused(data, run_cli, tmp_path):
    code, _, err = run_cli("train", MODEL, "--dataset", data, "--out", tmp_path / "o", "--target-epsilon", "3")
    assert code == 2 and "--target-epsilon" in err and "only with --dp" in err, err
