"""``sdguard federate simulate``: every client on this machine, in Flower's simulation engine.

Flower's ``run_simulation`` (Ray backend) starts one virtual SuperNode per client, runs the
ServerApp in a thread of this process and the ClientApps in Ray workers; ``--workers`` of them at
once (:func:`resources`: each given ``cpu_count / workers`` CPUs and torch threads and, on a GPU
machine, ``gpus / workers`` of the GPUs: by default one worker per GPU, since every worker holds
a model and its optimizer). Each worker keeps one model and the encoded partitions it has served
(see :mod:`.client`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from typing import Any

from ...core.config import build
from ...core.errors import InputError, require
from .options import FederateConfig


def simulate(*args: Any, progress: bool | None = None, **values: Any):
    """Federated fine-tuning of ``model`` over ``--clients`` simulated clients (``simulate(model,
    dataset, out, clients=10, rounds=5)`` or ``simulate(FederateConfig(...))``); returns the report."""
    cfg = build(FederateConfig, args, values)
    require("flwr", "fl", "federated training")
    require("ray", "fl", "Flower's simulation engine (pip install 'flwr[simulation]')")
    preflight(cfg)
    from flwr.simulation import run_simulation

    from .client import make_client_app
    from .server import make_server_app

    text = cfg.model_dump_json()
    outcome: dict = {}
    backend, env = resources(cfg)
    logging.getLogger("flwr").setLevel(logging.WARNING)
    with _environment(env), warnings.catch_warnings():
        # Ray's note on a future default for actors with num_gpus=0 (resources() asks for GPUs explicitly)
        warnings.filterwarnings("ignore", message="Tip: In future versions of Ray")
        run_simulation(server_app=make_server_app(text, outcome, progress), client_app=make_client_app(text),
                       num_supernodes=cfg.clients, backend_name="ray", backend_config=backend)
    if "error" in outcome:
        raise outcome["error"]
    if "report" not in outcome:
        from .rounds import FederationError

        raise FederationError("the simulation ended without a result (see Flower's log above)")
    return outcome["report"]


def resources(cfg, cpus: int | None = None, gpus: int | None = None) -> tuple[dict, dict]:
    """Flower's Ray ``backend_config`` and the workers' environment: ``--workers`` clients at once
    (default: one per GPU, else one per CPU), each with its share of the CPUs (and torch threads)
    and of the GPUs. Ray hides every GPU from an actor that asks for none, so on a GPU machine
    each worker must ask for its share or the clients would train on the CPU."""
    import torch

    cpus = (os.cpu_count() or 1) if cpus is None else cpus
    gpus = torch.cuda.device_count() if gpus is None else gpus
    workers = min(cfg.workers or gpus or cpus, cfg.clients)
    per_cpu = max(1, cpus // workers)
    per_gpu = min(1.0, gpus / workers) if gpus else 0.0
    # Ray's local workers inherit this process's environment (Flower sets Ray's runtime_env itself)
    env = {"SDGUARD_CLIENT_THREADS": str(per_cpu), "OMP_NUM_THREADS": str(per_cpu), "FLWR_TELEMETRY_ENABLED": "0"}
    backend = {"client_resources": {"num_cpus": per_cpu, "num_gpus": per_gpu},
               "init_args": {"num_cpus": workers * per_cpu, "num_gpus": gpus, "include_dashboard": False,
                             "log_to_driver": False}}
    return backend, env


@contextlib.contextmanager
def _environment(values: dict):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def preflight(cfg) -> None:
    """The checks a run can make before any process starts: the dataset opens and ``--partition``
    leaves every client a record (each with one sentence; the model is checked by the server,
    which loads it first)."""
    from ...data.datasets import open_dataset
    from ..data import split_holdout
    from .partitions import partition

    ds = open_dataset(cfg.dataset)
    members, _ = split_holdout(ds.entries(), cfg.holdout, cfg.seed)
    smallest = min(len(p) for p in partition(cfg, ds, members).parts)
    if cfg.dp and cfg.delta >= 1.0 / smallest:  # DP-SGD on each client: delta below 1/its records
        raise InputError.bad("--delta", cfg.delta, f"must be below 1/{smallest} = {1 / smallest:.3g}: the smallest "
                             f"client trains on {smallest} record(s) under --dp")


__all__ = ["simulate", "preflight", "resources"]
