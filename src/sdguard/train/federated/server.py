"""The Flower ServerApp of ``sdguard federate``: the global model, the strategy, the saved result.

The server loads ``MODEL``, selects the trainable subset (adding LoRA's adapter), asks every client
for its members (a ``query.members`` message, before training, so each client's share is in the
report even if it drops out later), then runs Flower's strategy for ``--rounds``: FedAvg
(McMahan et al. 2017, "Communication-Efficient Learning of Deep Networks from Decentralized
Data") or FedProx (Li et al. 2020), wrapped -- unchanged -- in Flower's
``DifferentialPrivacyServerSideFixedClipping`` / ``...ClientSideFixedClipping`` for central
client-level DP (McMahan et al. 2018, "Learning Differentially Private Recurrent Language
Models": clip each update to ``--update-clip``, average with equal weights, add Gaussian noise of
std ``noise x clip / sampled``), then in :class:`~.rounds.RoundRecorder`. With ``--secagg`` the
rounds run through Flower's SecAgg+ workflow (:mod:`.secure`). After each round the global tensors
are checkpointed; ``--resume`` continues from the last one. The result is saved as
``sdguard train`` saves it (a diffusers folder, or base + LoRA) from the *final* aggregate, with
``members.jsonl``/``nonmembers.jsonl`` the union of the clients', ``rounds.jsonl``, ``privacy.json``
under client-level DP, and the report.

Accounting (sdguard's, per round; Flower 1.42's own accountant covers only the fixed-clipping
wrappers): a released round is one Gaussian mechanism of noise multiplier ``sigma`` on the
client-level sensitivity, composed over rounds by ``--accountant``. No amplification by sampling
is claimed (Flower samples a fixed number of clients without replacement, not Poisson; its own
accountant refuses amplification too), so ``--fraction-train`` below 1 buys no epsilon. Local DP
(``LocalDpMod``) adds std ``2C sqrt(2 ln(1.25/delta)) / epsilon`` per update; the classical bound
behind that formula holds for epsilon <= 1 only, so the report gives the epsilon the accountant
computes for the same noise (noise multiplier ``sqrt(2 ln(1.25/delta)) / epsilon``) composed over
the rounds.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import torch

from ...core.errors import InputError
from ...core.io import atomic_write_text
from ...core.progress import progress_bar
from ...core.state import load_checkpoint, remove_checkpoint, save_checkpoint
from .client import arrays_into, config_of, params_to_arrays

CHECKPOINT = "federate_state"
ROUNDS_FILE = "rounds.jsonl"


def central_noise(cfg) -> float | None:
    """The noise multiplier of central client-level DP (solved for ``--client-epsilon`` over the rounds)."""
    if cfg.client_dp not in ("server", "client"):
        return None
    if cfg.update_noise is not None:
        return cfg.update_noise
    from ..private.accounting import solve_noise

    return solve_noise(cfg.client_epsilon, cfg.delta, 1.0, cfg.rounds, cfg.accountant)


def local_noise(cfg) -> float | None:
    """LocalDpMod's noise over its sensitivity (``2 x --update-clip``): ``sqrt(2 ln(1.25/delta)) / epsilon``."""
    if cfg.client_dp != "local":
        return None
    return math.sqrt(2 * math.log(1.25 / cfg.delta)) / cfg.client_epsilon


def epsilon_after(cfg, released: int) -> float | None:
    """The client-level epsilon after ``released`` rounds (None without client-level DP)."""
    from ..private.accounting import epsilon_spent

    sigma = central_noise(cfg) if cfg.client_dp != "local" else local_noise(cfg)
    if sigma is None:
        return None
    return epsilon_spent(cfg.accountant, [(sigma, 1.0, released)] if released else [], cfg.delta)


def make_strategy(cfg):
    """FedAvg or FedProx, wrapped in Flower's fixed-clipping DP wrapper under ``--client-dp server/client``."""
    from flwr.serverapp.strategy import (
        DifferentialPrivacyClientSideFixedClipping,
        DifferentialPrivacyServerSideFixedClipping,
        FedAvg,
        FedProx,
    )

    common = dict(fraction_train=cfg.fraction_train, fraction_evaluate=1.0 if cfg.eval_records else 0.0,
                  min_train_nodes=cfg.needed, min_evaluate_nodes=1, min_available_nodes=cfg.needed)
    strategy = FedProx(proximal_mu=cfg.proximal_mu, **common) if cfg.strategy == "fedprox" else FedAvg(**common)
    sigma = central_noise(cfg)
    if cfg.client_dp == "server":
        strategy = DifferentialPrivacyServerSideFixedClipping(strategy, sigma, cfg.update_clip, cfg.sampled)
    elif cfg.client_dp == "client":
        strategy = DifferentialPrivacyClientSideFixedClipping(strategy, sigma, cfg.update_clip, cfg.sampled)
    return strategy


class FederatedServer:
    """The global model of one federated run, its rounds, and its saved result."""

    def __init__(self, cfg, stage: Path, progress: bool | None = None):
        from ...models.adapter import DiffusionModel
        from ..trainable import select

        self.cfg, self.stage, self.progress = cfg, Path(stage), progress
        # the server holds the global tensors on the CPU: on a one-GPU machine the GPU is the clients'
        # (a Stable Diffusion UNet with AdamW state is ~14 GB); it borrows the GPU only to sample
        self.model = DiffusionModel.load(cfg.model, device="cpu", dtype=torch.float32)
        self.base_fingerprint = self.model.fingerprint()
        torch.manual_seed(cfg.seed)  # LoRA's initial A: the same for a resumed run
        self.trainable = select(self.model, cfg.trainable, lora_rank=cfg.lora_rank, lora_alpha=cfg.lora_alpha,
                                lora_targets=cfg.lora_targets)
        self.key = {"recipe": "sdguard federate", **cfg.run_key(), "model_fingerprint": self.base_fingerprint}
        self.rounds: list[dict] = []
        self.clients: list[dict] = []
        self.samples_before = None
        self.bar = None  # the rounds' progress bar while they run
        self.initial_loss: float | None = None  # the global loss of the starting tensors (round 0)

    # -- the tensors ------------------------------------------------------------------------
    def arrays(self):
        return params_to_arrays(self.trainable.params)

    def load(self, arrays) -> None:
        arrays_into(self.trainable.params, arrays)

    # -- checkpoints ------------------------------------------------------------------------
    def checkpoint(self, row: dict, arrays) -> None:
        if arrays is not None:
            self.load(arrays)
        self.rounds.append(row)
        bits = [f"round {row['round']}/{self.cfg.rounds}", f"{row.get('replies', 0)}/{row.get('sampled', 0)} replied"]
        if row.get("train_loss") is not None:
            bits.append(f"loss {row['train_loss']:.4f}")
        if row.get("epsilon") is not None:
            bits.append(f"epsilon {row['epsilon']:.3g}")
        if self.bar is not None:
            self.bar.update(description="federated rounds (" + ", ".join(bits) + ")")
            self.bar.advance(1)
        atomic_write_text(self.stage / ROUNDS_FILE, "".join(json.dumps(r) + "\n" for r in self.rounds))
        if len(self.rounds) < self.cfg.rounds:
            save_checkpoint(self.stage, CHECKPOINT, key=self.key, state={
                "params": {k: p.detach() for k, p in self.trainable.params.items()},
                "rounds": json.dumps(self.rounds), "clients": json.dumps(self.clients),
                "initial_loss": json.dumps(self.initial_loss)})

    def restore(self) -> int:
        """The rounds done by an interrupted run (0 without a checkpoint)."""
        saved = load_checkpoint(self.stage, CHECKPOINT, key=self.key)
        if saved is None:
            return 0
        with torch.no_grad():
            for k, p in self.trainable.params.items():
                p.copy_(saved["params"][k])
        self.rounds = json.loads(saved["rounds"])
        self.clients = json.loads(saved["clients"])
        self.initial_loss = json.loads(saved.get("initial_loss", "null"))
        return len(self.rounds)

    # -- the run ----------------------------------------------------------------------------
    def ask_members(self, grid) -> None:
        """Every client's members and holdout (``query.members``), before the first round."""
        from flwr.app import Message, RecordDict

        from .rounds import FederationError, reply_error, wait_for_nodes

        cfg = self.cfg
        nodes = wait_for_nodes(grid, cfg.clients, cfg.round_timeout, "before the first round")
        msgs = [Message(RecordDict(), dst_node_id=n, message_type="query.members") for n in nodes]
        replies = list(grid.send_and_receive(msgs, timeout=cfg.round_timeout))
        bad = [f"node {m.metadata.src_node_id}: {reply_error(m)}" for m in replies if m.has_error()]
        if bad or len(replies) < len(nodes):
            raise FederationError(f"{len(nodes) - len(replies) + len(bad)} of {len(nodes)} client(s) could not "
                                  f"start: " + ("; ".join(bad[:3]) or "no reply within --round-timeout"))
        for m in sorted(replies, key=lambda m: int(m.content["manifest"]["partition-id"])):
            rec = m.content["manifest"]
            self.clients.append({"node": int(m.metadata.src_node_id), "partition": int(rec["partition-id"]),
                                 "members": json.loads(str(rec["members"])),
                                 "nonmembers": json.loads(str(rec["nonmembers"])),
                                 "records": int(rec["records"]), "holdout": int(rec["holdout"]),
                                 "skipped": json.loads(str(rec["skipped"]))})

    def evaluate_start(self, grid) -> None:
        """The global loss of the starting tensors on the clients (round 0, measured as every
        round's is), so the report's loss curve starts from the base."""
        from flwr.app import ConfigRecord, Message, RecordDict

        from .rounds import global_loss

        if not self.cfg.eval_records or self.rounds:
            return
        msgs = [Message(RecordDict({"arrays": self.arrays(), "config": ConfigRecord({"server-round": 0})}),
                        dst_node_id=n, message_type="evaluate") for n in grid.get_node_ids()]
        self.initial_loss = global_loss(list(grid.send_and_receive(msgs, timeout=self.cfg.round_timeout)))[0]

    def train(self, grid, start, context) -> None:
        """``--rounds`` rounds (those left after a resume) through ``start`` (the plain or SecAgg+ loop)."""
        from .rounds import RoundRecorder

        cfg = self.cfg
        done = len(self.rounds)
        if done >= cfg.rounds:
            return
        random.seed(cfg.seed * 1009 + done)  # Flower samples clients with the module's RNG
        recorder = RoundRecorder(make_strategy(cfg), cfg, offset=done, epsilon_at=lambda k: epsilon_after(
            cfg, k + sum(1 for r in self.rounds[:done] if r["aggregated"])), on_round=self.checkpoint)
        config = {"round-offset": done, "proximal-mu": cfg.proximal_mu if cfg.strategy == "fedprox" else 0.0}
        if cfg.secagg:  # every weight <= 1 (see .secure)
            config["max-weight"] = float(max(c["records"] for c in self.clients))
        with progress_bar("federated rounds", cfg.rounds, enabled=self.progress, completed=done) as self.bar:
            start(recorder, grid, self.arrays(), cfg.rounds - done, config, context)
        self.bar = None

    def finish(self):
        """The final global model saved, the manifests, the privacy record and the report."""
        from ...models.adapter import DiffusionModel
        from ..data import MEMBERS, NONMEMBERS
        from ..finetune_run import save_weights
        from ..private.record import write_privacy
        from .report import federated_report, privacy_summary

        stage, cfg = self.stage, self.cfg
        self.model.unet.eval()
        samples_after = self._samples() if self.samples_before is not None else None
        save_weights(stage, self.model, cfg)
        if cfg.share_manifests:  # else the clients kept them: no file that would read as "no members"
            for name, key in ((MEMBERS, "members"), (NONMEMBERS, "nonmembers")):
                rows = [r for c in self.clients for r in c[key]]
                atomic_write_text(stage / name, "".join(json.dumps(r) + "\n" for r in rows))
        privacy = privacy_summary(self)
        if privacy is not None:
            write_privacy(stage, privacy)
        trained = DiffusionModel.load(str(stage), device=str(self.model.device))
        trained.spec = str(cfg.out)
        report = federated_report(self, trained, samples_after, privacy)
        remove_checkpoint(stage, CHECKPOINT)
        report.write(stage)
        return report

    def sample_before(self) -> None:
        if self.cfg.samples and self.cfg.share_manifests and self.clients:
            texts = [r["text"] for c in self.clients for r in c["members"]]
            self.sample_prompts = list(dict.fromkeys(texts))[:self.cfg.samples]
            self.samples_before = self._samples()

    def _samples(self):
        gpu = torch.cuda.is_available()
        if gpu:
            self.model.pipeline.to("cuda")
        try:
            return self.model.generate(self.sample_prompts, seeds=[0] * len(self.sample_prompts),
                                       steps=self.cfg.sample_steps, batch_size=8)
        finally:
            if gpu:
                self.model.pipeline.to("cpu")
                torch.cuda.empty_cache()


def plain_start(recorder, grid, arrays, rounds: int, train_config: dict, context) -> None:
    """Flower's ``Strategy.start`` loop (no secure aggregation)."""
    from flwr.app import ConfigRecord

    recorder.start(grid=grid, initial_arrays=arrays, num_rounds=rounds, timeout=recorder.cfg.round_timeout,
                   train_config=ConfigRecord(train_config), evaluate_config=ConfigRecord(train_config))


def serve_run(cfg, grid, context, progress: bool | None = None):
    """One federated run on ``grid`` (a ServerApp's), into ``cfg.out``; returns the report."""
    from ...core.config import output_for

    start = plain_start
    if cfg.secagg:
        from .secure import secagg_start as start
    with output_for(cfg, "federate", "dataset", "model") as stage:
        server = FederatedServer(cfg, stage, progress)
        if cfg.resume:
            server.restore()
        if not server.clients:
            server.ask_members(grid)
        server.sample_before()
        server.evaluate_start(grid)
        server.train(grid, start, context)
        return server.finish()


def make_server_app(config: str | None = None, outcome: dict | None = None, progress: bool | None = None):
    """The ServerApp (``sdguard.train.federated.server:app`` reads the run config); a simulation
    makes one with its ``config`` JSON and an ``outcome`` dict that receives the report or the
    error (the simulation runs the ServerApp in a thread of the caller)."""
    from flwr.serverapp import ServerApp

    app = ServerApp()

    @app.main()
    def _main(grid, context) -> None:
        try:
            report = serve_run(config_of(context, config), grid, context, progress)
        except BaseException as exc:  # handed to the caller, which raises it
            if outcome is None:
                raise
            outcome["error"] = exc
        else:
            if outcome is not None:
                outcome["report"] = report

    return app


try:
    app = make_server_app()
except ImportError:  # flwr is the `fl` extra
    app = None

__all__ = ["app", "make_server_app", "serve_run", "FederatedServer", "make_strategy", "epsilon_after",
           "central_noise", "local_noise", "InputError"]
