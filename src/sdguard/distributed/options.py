"""Where the heavy per-image work runs: ``--backend local|ray`` and the Ray cluster (declared once, here).

A command that generates or embeds mixes :class:`BackendOptions` into its config. ``local`` runs in
the command's own process; ``ray`` sends the work out in chunks to Ray workers (:mod:`.cluster`,
:mod:`.generation`, :mod:`.embedding`) and writes each chunk's result itself, in the same files the
local backend writes, so results and checkpoints are the same whichever backend made them, and a
resumed run may switch backend.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import model_validator

from ..core.config import RunConfig, option
from ..core.errors import InputError

BACKENDS = ("local", "ray")


class BackendOptions(RunConfig):
    """``--backend``, ``--ray-address``, ``--workers``, ``--worker-gpus``: where generation and embedding run."""

    #: the backend changes where the work runs, not what it computes: a resumed run may change it
    backend_fields: ClassVar[frozenset[str]] = frozenset({"backend", "ray_address", "workers", "worker_gpus"})
    presentation_fields: ClassVar[frozenset[str]] = RunConfig.presentation_fields | backend_fields

    backend: Literal[BACKENDS] = option("local", help="where generation and embedding run: local (this process) "  # type: ignore[valid-type]
                                        "or ray (Ray workers, across GPUs and nodes; the ray extra of sdguard)")
    ray_address: str | None = option(None, help="the Ray cluster to join (auto, HOST:PORT or ray://HOST:PORT; "
                                     "default: start a local one on this machine)")
    workers: int | None = option(None, ge=1, le=100_000, help="Ray workers (actors), each holding the model "
                                 "(default: one per GPU of the cluster, else one per 2 CPUs)")
    worker_gpus: float | None = option(None, ge=0.0, le=8.0, help="GPUs each Ray worker holds (default 1 where the "
                                       "cluster has GPUs, else 0)")

    @model_validator(mode="after")
    def _ray_only(self) -> "BackendOptions":
        if self.backend != "ray":
            for name in ("ray_address", "workers", "worker_gpus"):
                if getattr(self, name) is not None:
                    flag = "--" + name.replace("_", "-")
                    raise InputError.bad(flag, getattr(self, name), "is used only with --backend ray")
        return self


__all__ = ["BACKENDS", "BackendOptions"]
