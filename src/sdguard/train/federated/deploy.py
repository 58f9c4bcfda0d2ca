"""A real Flower deployment: ``sdguard federate serve`` (a SuperLink), ``sdguard federate client``
(a SuperNode, one per data holder) and ``sdguard federate run`` (submits the run to the SuperLink).

Flower 1.42's processes, on the venv's ``bin`` (they start ``flwr-serverapp`` and ``flwr-clientapp``
by name): ``flower-superlink`` serves its Fleet, ServerAppIo and Control APIs on one port
(``--port``, state in ``--state``); ``flower-supernode`` connects to it, giving its data holder's
``dataset`` (or ``partition-id``/``num-partitions`` of the run's dataset) as node config; every
ClientApp message runs in a fresh ``flwr-clientapp`` process (Flower's default isolation), so a
node loads the model and encodes its records once per message -- seconds for a tiny model, a
minute for Stable Diffusion (see the README). ``federate run`` writes a Flower App folder whose
components are sdguard's own apps and whose run config carries the FederateConfig (no secret is
in it), submits it with ``flwr run`` under a private ``FLWR_HOME``, then polls ``flwr ls`` until
the run ends, bounded by ``rounds x --round-timeout`` plus the start-up time. Insecure (no TLS)
is for loopback and tests; for a real network give ``flower-superlink`` its certificates
(Flower's ``--ssl-*`` options) and run it yourself.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ...core.config import RunConfig, build, option
from ...core.errors import InputError, require
from .client import CONFIG_KEY
from .options import FederateConfig


class ServeConfig(RunConfig):
    """Run a Flower SuperLink (the federation's server side) on this machine."""

    port: int = option(9093, ge=1, le=65_535, help="the SuperLink's port (Fleet, ServerAppIo and Control APIs)")
    state: str | None = option(None, help="folder of the SuperLink's database (default: in memory)")
    host: str = option("127.0.0.1", help="address to listen on (0.0.0.0: every interface)")


class NodeConfig(RunConfig):
    """Run a Flower SuperNode (one data holder) connected to a SuperLink."""

    superlink: str = option("127.0.0.1:9093", help="the SuperLink's address HOST:PORT")
    dataset: str | None = option(None, help="this node's own training data (default: the run's --dataset)")
    partition_id: int | None = option(None, ge=0, help="with --num-partitions: this node's share of the run's dataset")
    num_partitions: int | None = option(None, ge=1, help="the shares the run's dataset is split into")
    port: int = option(0, ge=0, le=65_535, help="the SuperNode's own ClientAppIo port (0: a free one)")
    connect_timeout: float = option(60.0, gt=0, le=86_400, help="seconds to keep trying to reach the SuperLink")


def flower_bin(name: str) -> str:
    """The path of Flower's executable ``name`` beside this Python's."""
    path = Path(sys.executable).parent / name
    if not path.is_file():
        found = shutil.which(name)
        if found is None:
            require("flwr", "fl", "federated deployment")
            raise InputError(f"{name} is not on PATH (install sdguard's `fl` extra in this environment)")
        return found
    return str(path)


def flower_env(home: Path | None = None) -> dict[str, str]:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               FLWR_TELEMETRY_ENABLED="0", PYTHONUNBUFFERED="1")
    if home is not None:
        env["FLWR_HOME"] = str(home)
    return env


def check_address(address: str, argument: str = "--superlink", timeout: float = 5.0) -> tuple[str, int]:
    """``(host, port)`` of ``address`` once something answers there (one sentence otherwise)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65_536:
        raise InputError.bad(argument, address, "must be HOST:PORT")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise InputError.bad(argument, address, f"does not answer ({exc.strerror or exc}): start `sdguard "
                             f"federate serve` there first") from None
    return host, int(port)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def superlink_command(cfg: ServeConfig) -> list[str]:
    cmd = [flower_bin("flower-superlink"), "--insecure", "--port", str(cfg.port), "--host", cfg.host,
           "--disable-runtime-dependency-installation"]
    if cfg.state:
        Path(cfg.state).mkdir(parents=True, exist_ok=True)
        cmd += ["--database", str(Path(cfg.state) / "superlink.db")]
    return cmd


def supernode_command(cfg: NodeConfig) -> list[str]:
    if (cfg.partition_id is None) != (cfg.num_partitions is None):
        raise InputError.bad("--partition-id", cfg.partition_id, "and --num-partitions go together")
    if cfg.partition_id is not None and cfg.partition_id >= cfg.num_partitions:
        raise InputError.bad("--partition-id", cfg.partition_id, f"must be below --num-partitions ({cfg.num_partitions})")
    node = []
    if cfg.dataset is not None:
        from ...data.datasets import open_dataset

        open_dataset(cfg.dataset)  # a bad folder is refused here, not in every round
        node.append(f"dataset={json.dumps(str(Path(cfg.dataset).resolve()))}")
    if cfg.partition_id is not None:
        node += [f"partition-id={cfg.partition_id}", f"num-partitions={cfg.num_partitions}"]
    retries = max(1, int(cfg.connect_timeout // 5))
    return [flower_bin("flower-supernode"), "--insecure", "--superlink", cfg.superlink, "--port",
            str(cfg.port or free_port()), "--max-retries", str(retries), "--max-wait-time", str(cfg.connect_timeout)] + \
        (["--node-config", " ".join(node)] if node else [])


def serve(*args: Any, **values: Any) -> int:
    """Run a SuperLink in the foreground until interrupted; returns its exit code."""
    cfg = build(ServeConfig, args, values)
    return _foreground(superlink_command(cfg), flower_env())


def node(*args: Any, **values: Any) -> int:
    """Run a SuperNode in the foreground (after checking that the SuperLink answers)."""
    cfg = build(NodeConfig, args, values)
    check_address(cfg.superlink)
    with tempfile.TemporaryDirectory(prefix="sdguard-node-") as home:
        return _foreground(supernode_command(cfg), flower_env(Path(home)))


def _foreground(cmd: list[str], env: dict) -> int:
    """Run Flower's process in this one's process group (a signal to the group stops both; SIGTERM to
    this one is passed on) and return its exit code."""
    proc = subprocess.Popen(cmd, env=env)
    previous = signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
    try:
        return proc.wait()
    except KeyboardInterrupt:  # the terminal sent SIGINT to the whole group: Flower shuts down too
        try:
            return proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)


def write_app(folder: Path, cfg: FederateConfig) -> None:
    """A Flower App folder: sdguard's ServerApp and ClientApp, the config in its run config."""
    import tomli_w

    project = {
        "build-system": {"requires": ["hatchling"], "build-backend": "hatchling.build"},
        "project": {"name": "sdguard-federate", "version": "1.0.0", "dependencies": [],
                    "description": "sdguard federated fine-tuning", "license": "Apache-2.0"},
        "tool": {"flwr": {"app": {"publisher": "sdguard",
                                  "components": {"serverapp": "sdguard.train.federated.server:app",
                                                 "clientapp": "sdguard.train.federated.client:app"},
                                  "config": {CONFIG_KEY: cfg.model_dump_json()}}}}}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pyproject.toml").write_text(tomli_w.dumps(project), encoding="utf-8")


def run_deployed(*args: Any, progress: bool | None = None, **values: Any):
    """Submit a federated run to the SuperLink at ``--superlink`` and wait for it; returns the report
    (read from ``--out``, which the ServerApp writes on the SuperLink's machine)."""
    from ...report import load_report
    from .rounds import FederationError

    cfg = build(FederateConfig, args, values)
    check_address(cfg.superlink)
    cfg = cfg.model_copy(update={"out": str(Path(cfg.out).resolve()), "dataset": str(Path(cfg.dataset).resolve())
                                 if Path(cfg.dataset).exists() else cfg.dataset})
    with tempfile.TemporaryDirectory(prefix="sdguard-federate-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        (home / "config.toml").write_text(f'[superlink]\ndefault = "sdguard"\n\n[superlink.sdguard]\n'
                                          f'address = "{cfg.superlink}"\ninsecure = true\n', encoding="utf-8")
        write_app(Path(tmp) / "app", cfg)
        env = flower_env(home)
        flwr = flower_bin("flwr")
        out = _flwr(flwr, ["run", str(Path(tmp) / "app"), "--format", "json"], env)
        if not out.get("success", True) or "run-id" not in out:
            raise FederationError(f"the SuperLink at {cfg.superlink} refused the run: {out.get('error-message', out)}")
        run_id = str(out["run-id"])
        deadline = time.monotonic() + cfg.round_timeout * (cfg.rounds + 2)
        while True:
            runs = _flwr(flwr, ["ls", "--run-id", run_id, "--format", "json"], env).get("runs") or [{}]
            status = str(runs[0].get("status", ""))
            if status.startswith("finished"):
                break
            if time.monotonic() > deadline:
                _flwr(flwr, ["stop", run_id], env)
                raise FederationError(f"run {run_id} did not finish within (--rounds + 2) x --round-timeout; it was stopped")
            time.sleep(1.0)
    if status != "finished:completed":
        raise FederationError(f"run {run_id} ended {status}: {runs[0].get('status-details') or 'see the SuperLink log'}")
    return load_report(Path(cfg.out) / "report.json")


def _flwr(flwr: str, args: list[str], env: dict) -> dict:
    try:
        proc = subprocess.run([flwr, *args], env=env, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        from .rounds import FederationError

        raise FederationError(f"`flwr {args[0]}` did not answer within 120 s") from None
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError:
        return {"success": False, "error-message": (proc.stderr or proc.stdout).strip()[-500:]}


__all__ = ["ServeConfig", "NodeConfig", "serve", "node", "run_deployed", "check_address", "write_app",
           "superlink_command", "supernode_command"]
