"""Federated fine-tuning with Flower (``sdguard federate``): the ClientApp (:mod:`.client`) runs
the ``sdguard train`` loop on a client's records, the ServerApp (:mod:`.server`) aggregates with
FedAvg/FedProx, wrapped in Flower's DP wrappers or SecAgg+ (:mod:`.secure`), records each round
(:mod:`.rounds`) and saves the global model; :mod:`.partitions` splits a dataset over simulated
clients; :mod:`.simulation` runs them on one machine, :mod:`.deploy` on SuperLink/SuperNode processes."""

from .options import FederateConfig
from .simulation import simulate

__all__ = ["FederateConfig", "simulate"]
