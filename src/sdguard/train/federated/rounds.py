"""The record of a federated run's rounds: a wrapper strategy around the (DP-wrapped) one.

Flower's strategies log a round's replies and failures but keep only the aggregated metrics.
:class:`RoundRecorder` wraps the strategy unchanged (as Flower's own DP wrappers do) and keeps, per
round, which nodes were sampled, which replied, which failed and why, the clients' losses, whether
the model was updated, and the client-level epsilon spent so far; after each round it calls
``on_round`` (the server's checkpoint). Before sampling it waits at most ``--round-timeout`` for
enough connected nodes, so a federation that lost its clients ends with a sentence, not a hang.
"""

from __future__ import annotations

import math
import time

from flwr.serverapp.strategy import Strategy

from ...core.errors import SdguardError

#: a client's record-level DP-SGD figures in its train reply (see client.record_privacy)
RECORD_DP = ("record_epsilon", "record_noise", "record_sample_rate")


class FederationError(SdguardError):
    """The federation could not go on (too few clients answered within the timeout)."""


def wait_for_nodes(grid, needed: int, timeout: float, what: str) -> list[int]:
    """The connected node ids once at least ``needed`` are (polled each 0.5 s for ``timeout`` s)."""
    deadline = time.monotonic() + timeout
    while len(nodes := list(grid.get_node_ids())) < needed:
        if time.monotonic() > deadline:
            raise FederationError(f"{what}: {len(nodes)} client(s) connected within --round-timeout {timeout:g} s, "
                                  f"{needed} needed")
        time.sleep(0.5)
    return nodes


def reply_error(msg) -> str | None:
    if not msg.has_error():
        return None
    err = msg.error
    return f"{getattr(err, 'reason', err)} (code {getattr(err, 'code', '?')})"


def _replied_for(reply, sent) -> int:
    """The node a reply answers for. An error the SuperLink writes itself (a node that stopped sending
    heartbeats) comes from the SuperLink's own node id, so it is matched to the message it answers."""
    to = getattr(reply.metadata, "reply_to_message_id", "")
    for m in sent:
        if to and m.metadata.__dict__.get("_message_id") == to:
            return m.metadata.dst_node_id
    return reply.metadata.src_node_id


class RoundRecorder(Strategy):
    """A Flower strategy that delegates to ``inner`` and records every round (see the module).
    Under central client-level DP a round is released only if every sampled client replied: the
    noise is calibrated to the sampled count (Flower's strict accounting rule)."""

    def __init__(self, inner, cfg, offset: int = 0, epsilon_at=None, on_round=None):
        super().__init__()
        self.inner, self.cfg, self.offset = inner, cfg, offset
        self.epsilon_at, self.on_round = epsilon_at, on_round
        self.rounds: list[dict] = []
        self._sent: dict[int, list] = {}

    def summary(self) -> None:
        self.inner.summary()

    def configure_train(self, server_round, arrays, config, grid):
        wait_for_nodes(grid, self.cfg.needed, self.cfg.round_timeout, f"round {server_round + self.offset}")
        messages = list(self.inner.configure_train(server_round, arrays, config, grid))
        self._sent[server_round] = messages  # the grid sets their message ids in place when it pushes them
        return messages

    def aggregate_train(self, server_round, replies):
        replies = list(replies)
        sent = self._sent.pop(server_round, [])
        sampled = [m.metadata.dst_node_id for m in sent]
        ok = [m for m in replies if not m.has_error()]
        failed = {_replied_for(m, sent): reply_error(m) for m in replies if m.has_error()}
        answered = {_replied_for(m, sent) for m in replies}
        for node in sampled:
            if node not in answered:
                failed[node] = f"no reply within --round-timeout {self.cfg.round_timeout:g} s"
        row = {"round": server_round + self.offset, "sampled": len(sampled), "replies": len(ok),
               "failed": [{"node": int(n), "reason": r} for n, r in failed.items()], "aggregated": False}
        arrays, metrics = None, None
        needed = len(sampled) if self.cfg.client_dp in ("server", "client") else self.cfg.needed
        if len(ok) >= needed:
            arrays, metrics = self.inner.aggregate_train(server_round, ok)
        row["aggregated"] = arrays is not None
        if not row["aggregated"]:
            row["note"] = (f"{len(ok)} of {len(sampled)} sampled client(s) replied, {needed} needed: the "
                           f"model was not updated" if len(ok) < needed else
                           "the strategy did not aggregate (see the server log)")
        row.update(reply_figures({str(m.metadata.src_node_id): m.content["metrics"] for m in ok
                                  if "metrics" in m.content}))
        released = sum(1 for r in self.rounds if r["aggregated"]) + row["aggregated"]
        row["epsilon"] = self.epsilon_at(released) if self.epsilon_at is not None else None
        self.rounds.append(row)
        if self.on_round is not None:
            self.on_round(row, arrays)
        return arrays, metrics

    def configure_evaluate(self, server_round, arrays, config, grid):
        return self.inner.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round, replies):
        replies = [m for m in replies if not m.has_error()]
        if self.rounds and self.rounds[-1]["round"] == server_round + self.offset:
            self.rounds[-1]["eval_loss"], self.rounds[-1]["eval_records"] = global_loss(replies)
        return self.inner.aggregate_evaluate(server_round, replies)


def reply_figures(metrics: dict) -> dict:
    """A round's figures from its clients' train metrics (node -> metrics, either API's): their
    losses and mean, the median update norm before any clipping and, under ``--dp``, each node's
    (epsilon so far, noise multiplier, sampling rate) with the largest epsilon."""
    losses = {node: float(m["train_loss"]) for node, m in metrics.items()}
    norms = sorted(float(m["update_norm"]) for m in metrics.values() if "update_norm" in m)
    out = {"train_loss": sum(losses.values()) / len(losses) if losses else None, "client_losses": losses,
           "update_norm_median": norms[len(norms) // 2] if norms else None}  # the upper median
    spent = {node: [float(m[k]) for k in RECORD_DP] for node, m in metrics.items() if "record_epsilon" in m}
    if spent:
        out["record_dp"], out["record_epsilon"] = spent, max(v[0] for v in spent.values())
    return out


def global_loss(replies) -> tuple[float | None, int]:
    """The clients' ``eval_loss`` replies weighted by their records: (the loss, the records)."""
    pairs = [(float(m.content["metrics"]["eval_loss"]), float(m.content["metrics"]["num-examples"]))
             for m in replies if not m.has_error() and "metrics" in m.content]
    pairs = [(v, w) for v, w in pairs if w > 0 and math.isfinite(v)]
    total = sum(w for _, w in pairs)
    return (sum(v * w for v, w in pairs) / total if total else None), int(total)


__all__ = ["RoundRecorder", "FederationError", "wait_for_nodes", "global_loss", "reply_figures"]
