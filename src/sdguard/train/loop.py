"""The parts of a diffusion training loop that every recipe shares.

The fine-tuning loop (:mod:`sdguard.train.finetune_run`) and the tiny model's recipe
(:mod:`sdguard.train.tiny`) are built from them: the warm-up + cosine learning-rate schedule, the
warm-up of the weights' exponential moving average, the loss log a person can follow while it
runs, and the checkpoint of a whole training state (modules, optimizers, random generator and
the loop's JSON state) through :mod:`sdguard.core.state`: safetensors and JSON that never run
code, refused with one sentence when corrupt or written by another run.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Mapping

import torch

from ..core.io import atomic_write_text
from ..core.state import load_checkpoint, restoring, save_checkpoint

LOG_FILE = "training_log.jsonl"


def cosine_lr(step: int, total: int, warmup: int = 100) -> float:
    """The learning-rate factor at ``step`` of ``total``: linear warm-up over ``warmup`` steps,
    then a cosine from 1 down to 0.1."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup))) * 0.9 + 0.1


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = lr


def ema_decay(step: int, decay: float) -> float:
    """The EMA decay at ``step``: ``decay`` once warmed up, less at first so that the average
    does not keep the random initialisation."""
    return min(decay, (1 + step) / (10 + step))




def log_row(state: dict, folder: Path, row: dict, t_start: float) -> None:
    """Keep ``row`` in ``state["log"]`` (the loss curve, saved with the checkpoint) and append it
    to ``folder/training_log.jsonl``, a live log a person can follow (``tail -f``)."""
    row["seconds"] = round(time.perf_counter() - t_start, 1)
    state["log"].append(row)
    with open(Path(folder) / LOG_FILE, "a") as fh:
        fh.write(json.dumps(row) + "\n")


def write_log(folder: Path, rows: list[dict]) -> None:
    """Rewrite the log from the rows kept (a resumed run appended rows a crash had cut short)."""
    atomic_write_text(Path(folder) / LOG_FILE, "".join(json.dumps(r) + "\n" for r in rows))



def save_train_state(folder: Path, name: str, key: dict, *, modules: Mapping[str, torch.nn.Module],
                     optimizers: Mapping[str, torch.optim.Optimizer], gen: torch.Generator, state: dict) -> None:
    """Checkpoint ``name`` in ``folder``: the state dicts of ``modules`` and ``optimizers``, the
    generator's state and the loop's JSON ``state``, for the run identified by ``key``."""
    save_checkpoint(folder, name, key=key, state={
        "modules": {k: m.state_dict() for k, m in modules.items()},
        "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
        "rng": gen.get_state(), "state": state})


def load_train_state(folder: Path, name: str, key: dict, *, modules: Mapping[str, torch.nn.Module],
                     optimizers: Mapping[str, torch.optim.Optimizer], gen: torch.Generator,
                     argument: str = "--resume") -> Any | None:
    """Restore what :func:`save_train_state` saved into ``modules``, ``optimizers`` and ``gen``
    and return the loop's state; ``None`` (nothing restored) when there is no checkpoint.

    Raises :class:`~sdguard.core.errors.StateError` naming the file when the checkpoint is
    corrupt, another run's (its ``key`` differs) or holds entries these modules do not have.
    """
    saved = load_checkpoint(folder, name, key=key, argument=argument)
    if saved is None:
        return None
    with restoring(folder, name, argument):  # a record that does not fit: one sentence, not a traceback
        for k, m in modules.items():
            m.load_state_dict(saved["modules"][k])
        for k, o in optimizers.items():
            o.load_state_dict(saved["optimizers"][k])
        gen.set_state(saved["rng"])
        return saved["state"]


__all__ = ["LOG_FILE", "cosine_lr", "set_lr", "ema_decay", "log_row", "write_log", "save_train_state",
           "load_train_state"]
