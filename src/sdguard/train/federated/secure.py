"""Secure aggregation (``--secagg``): Flower's SecAgg+ (Bell et al. 2020, "Secure Single-Server
Aggregation with (Poly)Logarithmic Complexity"; ``flwr.server.workflow.SecAggPlusWorkflow`` with
``flwr.client.mod.secaggplus_mod``). The server learns only the weighted sum of the clients'
tensors; a client's own tensors never leave it unmasked.

Which API it needs: in Flower 1.42 SecAgg+ exists only as a workflow of the *legacy* server API --
``DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(...))`` run on a ``LegacyContext`` with a legacy
strategy (``flwr.server.strategy.FedAvg``, ``configure_fit``/``aggregate_fit``); the Message-API
strategies' ``start`` has no secure-aggregation path. The ServerApp stays a Message-API
``@app.main()`` and the ClientApp's ``@app.train()`` reads and writes the legacy ``fitins``/``fitres``
records under ``--secagg`` (:mod:`.client`).

Precision: each client sends ``n_i / max_weight x tensors``, clipped to ``+-clipping_range`` and
rounded stochastically to ``quantization_range`` levels; the error of the average is about
``clients x 2 clipping_range / quantization_range / (sum n_i / max_weight)``. sdguard sets
``max_weight`` to the largest client's record count (every weight <= 1) and ``clipping_range`` to
8 (tensors of a diffusion model are well inside it), with 2^24 levels (clients x levels stay
below the 2^32 modulus up to 255 clients). A tensor beyond the range would be clipped silently:
the clients check theirs and fail the round with a sentence instead.
"""

from __future__ import annotations

from collections import OrderedDict

CLIPPING_RANGE = 8.0
QUANTIZATION_RANGE = 2**24


def secagg_start(recorder, grid, arrays, rounds: int, train_config: dict, context) -> None:
    """``rounds`` rounds of FedAvg with SecAgg+, recorded by ``recorder`` (a :class:`~.rounds.RoundRecorder`)."""
    from flwr.app import Array, ArrayRecord
    from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server import LegacyContext, ServerConfig
    from flwr.server.strategy import FedAvg as LegacyFedAvg
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

    from .rounds import reply_error, reply_figures, wait_for_nodes

    cfg, keys, sampled_in = recorder.cfg, list(arrays.keys()), {}

    class Recorded(LegacyFedAvg):
        """Legacy FedAvg whose rounds go to ``recorder`` (the SecAgg+ workflow calls it)."""

        def configure_fit(self, server_round, parameters, client_manager):
            wait_for_nodes(grid, cfg.needed, cfg.round_timeout, f"round {server_round + recorder.offset}")
            ins = super().configure_fit(server_round, parameters, client_manager)
            sampled_in[server_round] = [c.node_id for c, _ in ins]
            return ins

        def aggregate_fit(self, server_round, results, failures):
            sampled = sampled_in.pop(server_round, [])
            params, metrics = super().aggregate_fit(server_round, results, failures) if results else (None, {})
            answered = {proxy.node_id for proxy, _ in results}
            failed = [{"node": int(n), "reason": "no masked reply (dropped out of SecAgg+)"} for n in sampled
                      if n not in answered]
            failed += [{"node": -1, "reason": str(reply_error(f) if hasattr(f, "has_error") else f)} for f in failures
                       if not isinstance(f, tuple)]
            row = {"round": server_round + recorder.offset, "sampled": len(sampled), "replies": len(results),
                   "failed": failed, "aggregated": params is not None, "epsilon": None, "secagg": True,
                   **reply_figures({str(proxy.node_id): res.metrics for proxy, res in results})}
            recorder.rounds.append(row)
            new = None
            if params is not None:
                new = ArrayRecord(OrderedDict((k, Array(a)) for k, a in zip(keys, parameters_to_ndarrays(params))))
            recorder.on_round(row, new)
            return params, metrics

    max_weight = float(train_config.pop("max-weight", 1000.0))
    strategy = Recorded(fraction_fit=cfg.fraction_train, fraction_evaluate=0.0, min_fit_clients=cfg.needed,
                        min_available_clients=cfg.needed, accept_failures=False,
                        initial_parameters=ndarrays_to_parameters([a.numpy() for a in arrays.values()]),
                        on_fit_config_fn=lambda r: {**train_config, "server-round": r})
    legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=rounds,
                                                                         round_timeout=cfg.round_timeout),
                            strategy=strategy)
    workflow = SecAggPlusWorkflow(num_shares=cfg.secagg_shares, reconstruction_threshold=cfg.secagg_threshold,
                                  max_weight=max_weight, clipping_range=CLIPPING_RANGE,
                                  quantization_range=QUANTIZATION_RANGE, timeout=cfg.round_timeout)
    DefaultWorkflow(fit_workflow=workflow)(grid, legacy)


__all__ = ["secagg_start", "CLIPPING_RANGE", "QUANTIZATION_RANGE"]
