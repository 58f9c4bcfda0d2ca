"""The options of federated fine-tuning (``sdguard federate``), declared once.

:class:`FederateConfig` is :class:`~sdguard.train.finetune.TrainConfig` (every training option, the
local loop's) plus the federation: clients, rounds, local steps, the partition, the strategy,
client-level DP and secure aggregation. ``--steps`` is not an option here: a client's learning-rate
schedule runs over ``--rounds`` x ``--local-steps`` steps. ``--dp`` (and its options) is
``sdguard train``'s record-level DP-SGD run on every client over those steps (each client's
epsilon in the report); ``--client-dp`` protects whole clients.
"""

from __future__ import annotations

from typing import Literal

from pydantic import model_validator

from ...core.config import option
from ...core.errors import InputError
from ..finetune import TrainConfig

CLIENT_DP = ("off", "server", "client", "local")


class FederateConfig(TrainConfig):
    """Fine-tune a model over federated clients with Flower: FedAvg/FedProx, client-level DP, SecAgg+."""

    presentation_fields = TrainConfig.presentation_fields | {"round_timeout", "superlink", "workers"}

    clients: int = option(10, ge=1, le=100_000, help="clients (partitions of --dataset); in a deployment, the "
                          "SuperNodes the server waits for")
    rounds: int = option(5, ge=1, le=100_000, help="federated rounds")
    local_steps: int = option(10, ge=1, le=1_000_000, help="optimizer steps each client runs per round, of "
                              "--batch-size records of its partition")
    steps: int = option(50, ge=1, cli=False, help="rounds x local steps (set from them)")
    partition: str = option("iid", help="how --dataset is split over the clients: iid, keyword:WORD (every caption "
                            "with WORD on client 0), column:COLUMN (each value's records on one client) or "
                            "cluster:AUDIT_DIR (each near-duplicate cluster of `sdguard audit data` on one client, the "
                            "largest on client 0)")
    strategy: Literal["fedavg", "fedprox"] = option("fedavg", help="fedavg (McMahan et al. 2017) or fedprox (Li et al. "
                                                    "2020, a proximal term in the local loss)")
    proximal_mu: float = option(0.01, ge=0, le=1e4, help="FedProx's mu")
    fraction_train: float = option(1.0, gt=0, le=1, help="share of the clients sampled each round")
    min_clients: int | None = option(None, ge=1, help="replies a round needs (default: every sampled client); a round "
                                     "with fewer is reported as failed and the model is not updated")
    round_timeout: float = option(600.0, gt=0, le=86_400, help="seconds the server waits for a round's replies")
    client_dp: Literal["off", "server", "client", "local"] = option(
        "off", help="client-level DP: server (Flower's server-side fixed clipping + Gaussian noise), client (clipping on "
        "the clients, noise on the server), local (LocalDpMod: each client clips and noises its own update) or off")
    update_clip: float = option(1.0, gt=0, le=1e6, help="with --client-dp: the L2 bound of a client's update")
    update_noise: float | None = option(None, gt=0, le=1e6, help="with --client-dp server/client: the noise multiplier "
                                        "(std over --update-clip); default: solved for --client-epsilon")
    client_epsilon: float | None = option(None, gt=0, le=1e4, help="with --client-dp server/client: the epsilon to spend "
                                          "over --rounds; with --client-dp local: the epsilon of each update")
    secagg: bool = option(False, help="secure aggregation with Flower's SecAgg+ (the server sees only the sum)")
    secagg_shares: int = option(3, ge=2, le=1000, help="with --secagg: the shares of each client's secret")
    secagg_threshold: int = option(2, ge=2, le=1000, help="with --secagg: the shares needed to reconstruct")
    share_manifests: bool = option(True, help="clients send the server their members and holdout manifests (row, "
                                   "file name, caption), whose union is members.jsonl / nonmembers.jsonl for a "
                                   "membership audit; --no-share-manifests: only their record counts (no manifests, "
                                   "no samples of training captions in the report)")
    eval_records: int = option(256, ge=0, le=1_000_000, help="records per client whose loss (fixed draws) rates the "
                               "global model each round (0: none)")
    superlink: str = option("127.0.0.1:9093", help="federate run/client: the SuperLink's address (run: its Control "
                            "API; client: its Fleet API)")
    workers: int | None = option(None, ge=1, le=1024, help="simulate: clients trained at once (default: one per GPU, "
                                 "else one per CPU)")

    @model_validator(mode="before")
    @classmethod
    def _steps(cls, values):
        if isinstance(values, dict):  # always from the two (a config copied with new rounds follows them)
            try:
                values = {**values, "steps": int(values.get("rounds", 5)) * int(values.get("local_steps", 10))}
            except (TypeError, ValueError):
                pass  # the fields' own validation names the bad value
        return values

    @model_validator(mode="after")
    def _federation(self):
        if self.dp and self.strategy == "fedprox":
            raise InputError.bad("--strategy", "fedprox", "is not supported with --dp: FedProx's proximal term would "
                                 "enter DP-SGD's per-sample gradients unclipped; use fedavg")
        if self.client_dp == "off":
            for name in ("update_noise", "client_epsilon"):
                if getattr(self, name) is not None:
                    raise InputError.bad("--" + name.replace("_", "-"), getattr(self, name), "is used only with --client-dp")
        elif self.client_dp == "local":
            if self.client_epsilon is None or self.update_noise is not None:
                raise InputError.bad("--client-dp", "local", "needs --client-epsilon E (each update's epsilon) and no "
                                     "--update-noise")
        elif (self.update_noise is None) == (self.client_epsilon is None):
            raise InputError.bad("--client-dp", self.client_dp, "needs exactly one of --client-epsilon E and "
                                 "--update-noise S")
        if self.min_clients is not None and self.min_clients > self.clients:
            raise InputError.bad("--min-clients", self.min_clients, f"exceeds --clients ({self.clients})")
        if self.secagg:
            if self.secagg_threshold > self.secagg_shares:
                raise InputError.bad("--secagg-threshold", self.secagg_threshold,
                                     f"exceeds --secagg-shares ({self.secagg_shares})")
            if self.client_dp != "off":
                raise InputError.bad("--secagg", True, f"with --client-dp {self.client_dp} is not supported: Flower 1.42's "
                                     "SecAgg+ runs on the legacy strategy API, its DP wrappers on the new one")
        self.partition_scheme()
        return self

    def partition_scheme(self) -> tuple[str, str]:
        """``(kind, argument)`` of ``--partition``."""
        kind, _, arg = self.partition.partition(":")
        if kind == "iid" and not arg:
            return kind, ""
        if kind in ("keyword", "column", "cluster") and arg.strip():
            return kind, arg.strip()
        raise InputError.bad("--partition", self.partition, "must be iid, keyword:WORD, column:COLUMN or "
                             "cluster:AUDIT_DIR")

    @property
    def sampled(self) -> int:
        """Clients sampled per round (Flower's ``max(int(n * fraction), min)``)."""
        return max(int(self.clients * self.fraction_train), self.min_clients or 1)

    @property
    def needed(self) -> int:
        return self.min_clients or self.sampled


__all__ = ["FederateConfig", "CLIENT_DP"]
