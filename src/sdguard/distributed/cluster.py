"""Joining or starting a Ray cluster, and a pool of actors that survives losing one.

:func:`connect` joins ``--ray-address`` (or starts a local cluster on this machine) once per
process; :class:`ChunkPool` keeps a set of actors busy with chunks of work. An actor that dies
(a killed worker process, a lost node) is restarted by Ray (``max_restarts``) and its unfinished
calls are retried (``max_task_retries``); a chunk whose call still fails is queued again, first,
for the next free actor, at most :data:`ATTEMPTS` times. The pool yields each chunk's result once, so a result is never
counted twice however often its chunk was run.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterable, Iterator

from ..core.errors import InputError, require

ATTEMPTS = 4  # a chunk given to a (restarted or other) actor at most this many times
IN_FLIGHT = 2  # calls queued per actor, so it never waits for the driver between chunks


def _reachable(address: str) -> None:
    """Refuse a ``HOST:PORT`` (or ``ray://HOST:PORT``) nothing answers on within 5 s (Ray itself would
    retry for minutes)."""
    import socket

    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise InputError.bad("--ray-address", address, "is not auto, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise InputError.bad("--ray-address", address, f"could not be reached ({exc.strerror or exc}); start the "
                             "cluster with `ray start --head` or give its address") from None


def connect(address: str | None):
    """The ``ray`` module, connected: to ``address``, or to a local cluster started here."""
    # Ray's own default from its next versions (CUDA_VISIBLE_DEVICES left alone for actors without GPUs)
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    ray = require("ray", "ray", "the Ray backend")
    if not ray.is_initialized():
        if address and address != "auto":
            _reachable(address)
        env = {"env_vars": {"HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "0"),
                            "TRANSFORMERS_VERBOSITY": "error", "DIFFUSERS_VERBOSITY": "error"}}
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False,
                     runtime_env=env, ignore_reinit_error=True)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise InputError.bad("--ray-address", address or "a local cluster", f"could not be joined ({exc})") from None
    return ray


def worker_count(ray, workers: int | None, worker_gpus: float | None) -> tuple[int, float]:
    """``(actors, GPUs per actor)``: as given, else one actor per GPU, else one per 2 CPUs."""
    res = ray.cluster_resources()
    gpus = float(res.get("GPU", 0))
    per = worker_gpus if worker_gpus is not None else (1.0 if gpus else 0.0)
    if workers is None:
        workers = int(gpus // per) if per else max(1, int(res.get("CPU", 1) // 2))
    return max(1, workers), per


class ChunkPool:
    """Actors of ``actor_cls`` (a ``ray.remote`` class) made with ``args``; :meth:`map` runs
    ``method`` over chunks and yields ``(chunk, result)`` in the order they finish."""

    def __init__(self, ray, actor_cls, args: tuple, *, workers: int, gpus: float, cpus: float = 1.0):
        self.ray = ray
        options = dict(num_cpus=cpus, num_gpus=gpus, max_restarts=-1, max_task_retries=-1)
        self.actors = [actor_cls.options(**options).remote(*args) for _ in range(workers)]

    def map(self, method: str, chunks: Iterable[Any], call_args: Callable[[Any], tuple]) -> Iterator[tuple[Any, Any]]:
        ray = self.ray
        pending = list(enumerate(chunks))
        attempts: dict[int, int] = {}
        running: dict[Any, tuple[int, Any, int]] = {}  # object ref -> (chunk index, chunk, actor index)

        def submit(actor: int) -> None:
            i, chunk = pending.pop(0)
            running[getattr(self.actors[actor], method).remote(*call_args(chunk))] = (i, chunk, actor)

        for _ in range(IN_FLIGHT):
            for actor in range(len(self.actors)):
                if pending:
                    submit(actor)
        while running:
            ready, _ = ray.wait(list(running), num_returns=1)
            i, chunk, actor = running.pop(ready[0])
            try:
                result = ray.get(ready[0])
            except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError, ray.exceptions.ObjectLostError):
                attempts[i] = attempts.get(i, 1) + 1
                if attempts[i] > ATTEMPTS:
                    raise
                pending.insert(0, (i, chunk))  # redone first, by the restarted actor
            else:
                yield chunk, result
            if pending:
                submit(actor)

    def close(self) -> None:
        for a in self.actors:
            self.ray.kill(a)
        self.actors = []


__all__ = ["ATTEMPTS", "ChunkPool", "connect", "worker_count"]
