"""The Flower ClientApp of ``sdguard federate``: each client fine-tunes the trainable subset on its
own records with the ``sdguard train`` loop and sends back only those tensors.

A client's records: its SuperNode's ``dataset`` node config (a real deployment, where every node
has its own data), else the run's ``--dataset``; split by ``--partition`` into the node config's
``num-partitions`` (Flower's simulation engine sets it and ``partition-id`` for every virtual node;
a SuperNode is given them with ``--node-config``). Per round, a client takes the global tensors,
runs ``--local-steps`` optimizer steps (a fresh AdamW, the learning-rate schedule of the whole
run), and replies with its tensors, its mean training loss and its record count (FedAvg's weight;
under client-level DP every client weighs the same, as DP-FedAvg's sensitivity bound assumes).
With ``--strategy fedprox`` the gradient of Li et al. 2020's proximal term ``mu/2 |w - w_global|^2``
is added to every step's. Evaluate messages get the loss of the global tensors over the client's
records with fixed draws (:meth:`~sdguard.train.finetune_run.FineTuneRun.eval_loss`). A query
``members`` returns the client's record counts and, unless ``--no-share-manifests``, its members and
holdout manifests (file names and captions; the server writes their union: the auditor's
``members.jsonl``).

Client-level DP and secure aggregation are Flower's mods, chosen from the run config per message:
``fixedclipping_mod`` (``--client-dp client``), ``LocalDpMod`` (``--client-dp local``; its
sensitivity is twice the clip bound: two clipped updates differ by at most that) and
``secaggplus_mod`` (``--secagg``).
"""

from __future__ import annotations

import json
import math
import os
from collections import OrderedDict

import numpy as np
import torch

CONFIG_KEY = "sdguard-config"  # the run config entry holding the FederateConfig as JSON
_TRAINERS: dict[str, "LocalTrainer"] = {}  # one model per process and run, shared by the partitions it serves


def config_of(context, text: str | None = None):
    """The :class:`~.options.FederateConfig` of the run: ``text`` (the JSON an app was made with, in a
    simulation), else the run config's (a deployment: ``flwr run`` sends it to every node)."""
    from .options import FederateConfig

    return FederateConfig.model_validate_json(text or str(context.run_config[CONFIG_KEY]))


def client_seed(seed: int, partition_id: int) -> int:
    """The seed of client ``partition_id``'s data order and draws."""
    return (seed * 1_000_003 + (partition_id + 1) * 7_919) % (2**63 - 1)


def noise_seed(seed: int, partition_id: int, server_round: int) -> int:
    """The seed of DP-SGD's noise in round ``server_round`` of client ``partition_id`` (a client
    process may start afresh every round: a seed of the run alone would repeat the noise)."""
    return (client_seed(seed, partition_id) * 2_147_483_647 + server_round * 104_729 + 0x5EED) % (2**63 - 1)


def record_privacy(cfg, private, steps: int) -> dict:
    """A client's record-level DP-SGD spend after ``steps`` of its steps (each round ran
    ``--local-steps``; a round it was not sampled in counts as run: an upper bound)."""
    from ..private.accounting import epsilon_spent

    return {"record_epsilon": epsilon_spent(cfg.accountant, [(private.noise, private.q, steps)], cfg.delta),
            "record_noise": float(private.noise), "record_sample_rate": float(private.q)}


def params_to_arrays(params: dict):
    """The trained tensors (name -> parameter) as Flower's ArrayRecord (fp32, on the CPU)."""
    from flwr.app import Array, ArrayRecord

    return ArrayRecord(OrderedDict((k, Array(p.detach().float().cpu().numpy())) for k, p in params.items()))


def arrays_into(params: dict, arrays) -> None:
    """Flower's ``arrays`` into the parameters of the same names."""
    with torch.no_grad():
        for k, p in params.items():
            p.copy_(torch.from_numpy(np.asarray(arrays[k].numpy())).to(p.device, p.dtype))


class LocalTrainer:
    """The model, the training loop and the encoded partitions of one client process."""

    def __init__(self, cfg):
        from ..finetune import make_accelerator
        from ..finetune_run import FineTuneRun

        self.cfg = cfg.model_copy(update={"samples": 0})  # the server samples the global model
        self.acc = make_accelerator("no" if cfg.dp and cfg.mixed_precision == "auto" else cfg.mixed_precision)
        self.run = FineTuneRun(self.cfg, self.acc, progress=False)
        self.partitions: dict[tuple, tuple] = {}
        self.current = None

    def select(self, dataset_spec: str, partition_id: int, num_partitions: int) -> None:
        """Make the partition ``partition_id`` of ``num_partitions`` of ``dataset_spec`` the one trained."""
        from ...data.datasets import open_dataset
        from ...models.adapter import DiffusionModel
        from ..data import encode_members, split_holdout
        from .partitions import partition

        key = (dataset_spec, partition_id, num_partitions)
        if key == self.current:
            return
        cfg, run = self.cfg, self.run
        if key not in self.partitions:
            ds = open_dataset(dataset_spec)
            members, holdout = split_holdout(ds.entries(), cfg.holdout, cfg.seed)
            mine = members.take(partition(cfg, ds, members, num_partitions).parts[partition_id])
            held = holdout.take(list(range(partition_id, len(holdout), num_partitions)))
            if not hasattr(run, "model"):
                model = DiffusionModel.load(cfg.model, device=str(self.acc.device), dtype=torch.float32)
                run.setup(model, ds, mine, held)
                self.partitions[key] = (run.encoded, run.holdout)
            else:
                self.partitions[key] = (encode_members(run.model, ds, mine, run.size), held)
        run.use(self.partitions[key][0])
        run.holdout = self.partitions[key][1]
        run.seed = client_seed(cfg.seed, partition_id)
        if run.private is not None:  # DP-SGD was made for this partition (see trainer_for): its own batches
            run.private.sampler.seed = run.seed
        self.pid, self.current = partition_id, key

    def load(self, arrays) -> None:
        arrays_into(self.run.trainable.params, arrays)

    def arrays(self):
        return params_to_arrays(self.run.trainable.params)

    def fit(self, arrays, server_round: int, proximal_mu: float) -> dict:
        """``--local-steps`` steps from the global ``arrays`` of (1-based) ``server_round``."""
        cfg, run = self.cfg, self.run
        self.load(arrays)
        start = {k: p.detach().clone() for k, p in run.trainable.params.items()}
        run.optimizer.state.clear()  # a fresh AdamW each round: clients keep no state between rounds
        if run.private is not None:  # fresh noise for every (client, round), whichever process runs it
            run.private.generator.manual_seed(noise_seed(cfg.seed, self.pid, server_round))
        run.regularizer = None
        if proximal_mu > 0:
            def proximal() -> None:
                for k, p in run.trainable.params.items():
                    if p.grad is not None:
                        p.grad.add_(p.detach() - start[k], alpha=proximal_mu)

            run.regularizer = proximal
        for name in run.trainable.modules():
            getattr(run.model, name).train()
        first = (server_round - 1) * cfg.local_steps
        losses = [run.step(s)[0] for s in range(first, first + cfg.local_steps)]
        run.regularizer = None
        # the L2 norm of this client's update before any clipping (what --update-clip bounds)
        norm = math.sqrt(sum(float((p.detach().float() - start[k].float()).pow(2).sum())
                             for k, p in run.trainable.params.items()))
        out = {"train_loss": float(np.mean(losses)), "records": len(run.encoded.entries), "update_norm": norm}
        if run.private is not None:
            out.update(record_privacy(cfg, run.private, server_round * cfg.local_steps))
        return out


def trainer_for(context, text: str | None) -> LocalTrainer:
    """This process's trainer of the run, its partition selected for the node of ``context``."""
    cfg = config_of(context, text)
    threads = int(os.environ.get("SDGUARD_CLIENT_THREADS", "0") or 0)
    if threads:
        torch.set_num_threads(threads)
    node = context.node_config
    n = int(node.get("num-partitions", 1))
    pid = int(node.get("partition-id", 0))
    # DP-SGD (Opacus) is made for one partition's privacy units: one trainer per partition
    key = cfg.model_dump_json() + (f"|{pid}/{n}" if cfg.dp else "")
    if key not in _TRAINERS:
        _TRAINERS.clear()  # a new run: the old model goes
        _TRAINERS[key] = LocalTrainer(cfg)
    trainer = _TRAINERS[key]
    trainer.select(str(node.get("dataset", cfg.dataset)), pid, n)
    return trainer


def _mods(msg, context, call_next, text):
    """Flower's client-side DP and SecAgg+ mods, as the run config asks."""
    from flwr.client.mod import make_ffn, secaggplus_mod
    from flwr.clientapp.mod import LocalDpMod, fixedclipping_mod

    if not str(msg.metadata.message_type).startswith("train"):
        return call_next(msg, context)
    cfg = config_of(context, text)
    mods = []
    if cfg.secagg:
        mods.append(secaggplus_mod)
    if cfg.client_dp == "client":
        mods.append(fixedclipping_mod)
    elif cfg.client_dp == "local":
        mods.append(LocalDpMod(cfg.update_clip, 2 * cfg.update_clip, cfg.client_epsilon, cfg.delta))
    return make_ffn(call_next, mods)(msg, context)


def _reply(msg, **records):
    from flwr.app import Message, RecordDict

    return Message(content=RecordDict(records), reply_to=msg)


def _train(msg, context, text):
    from flwr.app import MetricRecord

    trainer = trainer_for(context, text)
    cfg = trainer.cfg
    if cfg.secagg:
        return _train_legacy(msg, trainer)
    conf = msg.content["config"]
    out = trainer.fit(msg.content["arrays"], int(conf["server-round"]) + int(conf.get("round-offset", 0)),
                      float(conf.get("proximal-mu", 0.0)))
    weight = 1 if cfg.client_dp != "off" else out["records"]
    metrics = MetricRecord({"num-examples": weight, **out})
    return _reply(msg, arrays=trainer.arrays(), metrics=metrics)


def _train_legacy(msg, trainer):
    """The train step in the legacy ``fitins``/``fitres`` records that SecAgg+ speaks (:mod:`.secure`)."""
    from flwr.app import Array, ArrayRecord, Message
    from flwr.common import (
        Code,
        FitRes,
        Status,
        ndarrays_to_parameters,
        parameters_to_ndarrays,
    )
    from flwr.compat.common import recorddict_compat as compat

    from ...core.errors import InputError
    from .secure import CLIPPING_RANGE

    fitins = compat.recorddict_to_fitins(msg.content, keep_input=True)
    names = list(trainer.run.trainable.params)
    arrays = ArrayRecord(OrderedDict((k, Array(a)) for k, a in zip(names, parameters_to_ndarrays(fitins.parameters))))
    conf = fitins.config
    out = trainer.fit(arrays, int(conf["server-round"]) + int(conf.get("round-offset", 0)),
                      float(conf.get("proximal-mu", 0.0)))
    tensors = [a.numpy() for a in trainer.arrays().values()]
    peak = max(float(np.abs(t).max()) for t in tensors)
    if peak > CLIPPING_RANGE:
        raise InputError.bad("--secagg", True, f"cannot carry a weight of magnitude {peak:.3g}: SecAgg+ clips at "
                             f"+-{CLIPPING_RANGE:g}")
    res = FitRes(Status(Code.OK, ""), ndarrays_to_parameters(tensors), out["records"],
                 out)
    return Message(compat.fitres_to_recorddict(res, keep_input=True), reply_to=msg)


def _evaluate(msg, context, text):
    from flwr.app import MetricRecord

    trainer = trainer_for(context, text)
    trainer.load(msg.content["arrays"])
    n = min(trainer.cfg.eval_records, len(trainer.run.encoded.entries))
    loss = trainer.run.eval_loss(limit=n) if n else float("nan")
    return _reply(msg, metrics=MetricRecord({"eval_loss": loss, "num-examples": n}))


def _members(msg, context, text):
    from flwr.app import ConfigRecord

    from ..data import manifest_rows

    trainer = trainer_for(context, text)
    run, share = trainer.run, trainer.cfg.share_manifests
    node = context.node_config
    return _reply(msg, manifest=ConfigRecord({
        "members": json.dumps(manifest_rows(run.encoded.entries) if share else []),
        "nonmembers": json.dumps(manifest_rows(run.holdout) if share else []),
        "records": len(run.encoded.entries), "holdout": len(run.holdout),
        "partition-id": int(node.get("partition-id", 0)), "skipped": json.dumps(run.encoded.skipped.to_dict()),
        "pid": os.getpid()}))


def make_client_app(config: str | None = None):
    """The ClientApp (``sdguard.train.federated.client:app`` reads the run config; a simulation
    makes one with its ``config`` JSON, which Ray ships to the workers with the app)."""
    from flwr.clientapp import ClientApp

    app = ClientApp(mods=[lambda msg, ctx, call_next: _mods(msg, ctx, call_next, config)])
    app.train()(lambda msg, ctx: _train(msg, ctx, config))
    app.evaluate()(lambda msg, ctx: _evaluate(msg, ctx, config))
    app.query("members")(lambda msg, ctx: _members(msg, ctx, config))
    return app


try:
    app = make_client_app()
except ImportError:  # flwr is the `fl` extra; sdguard imports this module only when it is installed
    app = None

__all__ = ["app", "make_client_app", "LocalTrainer", "config_of", "client_seed", "CONFIG_KEY", "params_to_arrays",
           "arrays_into"]
