"""The plan of a generation replication audit (``prompts.json`` in its staging folder) and the
check that a ``--resume`` continues the same run.

The generations of an interrupted run are kept chunk by chunk; a resume reuses them only when
the run is the same: the same weights (the model's fingerprint, whatever folder they are in), the
same training data (the dataset's fingerprint: format, location, size and time of its index
files), every setting that changes results (``run_key()``) and the same prompts. Anything else
is refused with one sentence naming what differs, before the training set is embedded
(:func:`check_identity`) or, for the prompts, before anything is generated (:func:`record_plan`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from ..core.config import RunConfig, argument_name
from ..core.errors import StateError
from ..core.io import atomic_write_text
from ..core.state import fingerprint_shown, first_difference, other_run

PLAN = "prompts.json"


def run_identity(cfg: RunConfig, model_fingerprint: str, dataset_fingerprint: str) -> dict[str, Any]:
    """What a resumed run must share with the interrupted one (the model's spec is left out: its
    fingerprint names the weights wherever they are)."""
    config = {k: v for k, v in cfg.run_key().items() if k != "model"}
    return {"model": model_fingerprint, "dataset": dataset_fingerprint, "config": config}


def _read_plan(stage: Path, name: str = PLAN) -> dict | None:
    path = stage / name
    if not path.is_file():
        return None
    try:
        plan = json.loads(path.read_text("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        plan = None
    if not isinstance(plan, dict):
        raise StateError.bad("--resume", str(path), "is not a readable plan of an interrupted audit; rerun without "
                             "--resume")
    return plan


def check_identity(stage: Path, cfg: RunConfig, identity: dict[str, Any], plan_file: str = PLAN) -> None:
    """Refuse (:class:`~sdguard.core.errors.StateError`) to continue the run in ``stage`` when its
    model, dataset or a setting differs from ``identity`` (as recorded in ``plan_file``, by
    :func:`record_plan` or, for another command, by its own writer); nothing to check in a fresh folder."""
    plan = _read_plan(stage, plan_file)
    if plan is None:
        return
    for part in ("model", "dataset"):
        if plan.get(part) != identity[part]:
            there, now = fingerprint_shown(plan.get(part)), fingerprint_shown(identity[part])
            raise other_run(cfg.out, f"the {part}", there, now)
    theirs = plan.get("config")
    if theirs != identity["config"]:
        if not isinstance(theirs, dict):
            raise other_run(cfg.out, "the settings", "none recorded", "the settings given")
        path, there, now = first_difference(theirs, identity["config"])
        raise other_run(cfg.out, argument_name(type(cfg), path.split(".")[0]), repr(there), repr(now))


def record_plan(stage: Path, cfg: RunConfig, identity: dict[str, Any], prompts: Sequence[dict]) -> None:
    """Write the plan; a resumed run's prompts must be the interrupted run's (the first that
    differs is named)."""
    prompts = json.loads(json.dumps(list(prompts)))  # as they read back from the file
    old = _read_plan(stage)
    if old is not None:
        check_identity(stage, cfg, identity)
        theirs = old.get("prompts") if isinstance(old.get("prompts"), list) else []
        if theirs != prompts:
            k = next((i for i, (a, b) in enumerate(zip(theirs, prompts)) if a != b), min(len(theirs), len(prompts)))
            raise other_run(cfg.out, f"prompt {k + 1} of the plan", _prompt_at(theirs, k), _prompt_at(prompts, k))
    atomic_write_text(stage / PLAN, json.dumps({**identity, "prompts": prompts}, indent=2))


def _prompt_at(prompts: Sequence[Any], k: int) -> str:
    return repr(prompts[k].get("prompt")) if k < len(prompts) and isinstance(prompts[k], dict) else "no prompt"


__all__ = ["PLAN", "run_identity", "check_identity", "record_plan"]
