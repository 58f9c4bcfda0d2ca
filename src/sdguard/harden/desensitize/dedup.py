"""Near-duplicate removal: ``sdguard audit data``'s clusters, one image (or K) kept per cluster.

Duplicated training images are what diffusion models regurgitate (Carlini et al. 2023, "Extracting
Training Data from Diffusion Models"; Somepalli et al. 2023a/b), and deduplicating the training
set is the first mitigation both recommend. The clusters are those of ``sdguard audit data`` over
every record (no keyword filter, no caption-length filter): computed here with the same search
options, or read from an audit's ``clusters.parquet`` (``--dedup-from``), checked against the
dataset so that the clusters of another dataset are never applied. In each cluster the first
``K`` members in dataset order are kept (the order is the one thing every format has), the rest
are left out and named in the manifest with the record they duplicate. The output's
``clusters.parquet`` holds rows, names and cluster ids, not the captions (the input's).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...core.errors import InputError, reason, require
from ...core.io import atomic_write_json

CLUSTERS_FILE = "clusters.parquet"
SOURCE_FILE = ".clusters_source.json"  # a resumed run reads what the clusters were computed with


@dataclass
class DedupPlan:
    """Cluster id per dataset row (-1: none), which rows stay, and where the clusters came from."""

    labels: np.ndarray
    keep: np.ndarray
    source: dict = field(default_factory=dict)

    def first_of(self) -> dict[int, int]:
        """The first kept row of every cluster (what a removed copy duplicates)."""
        out: dict[int, int] = {}
        for r in np.flatnonzero(self.keep & (self.labels >= 0)).tolist():
            out.setdefault(int(self.labels[r]), r)
        return out

    def kept_in_cluster(self) -> dict[int, int]:
        ids, counts = np.unique(self.labels[self.keep & (self.labels >= 0)], return_counts=True)
        return dict(zip(ids.tolist(), counts.tolist()))

    def summary(self) -> dict:
        clustered = self.labels >= 0
        return {**self.source, "clusters": int(len(np.unique(self.labels[clustered]))),
                "clustered_records": int(clustered.sum()), "removed": int((~self.keep).sum())}


def select(labels: np.ndarray, keep_per_cluster: int | None) -> np.ndarray:
    """Rows kept when at most ``keep_per_cluster`` members of each cluster stay (the first ones)."""
    keep = np.ones(len(labels), bool)
    if keep_per_cluster is None:
        return keep
    seen: dict[int, int] = {}
    for r, k in enumerate(labels.tolist()):
        if k >= 0:
            seen[k] = seen.get(k, 0) + 1
            keep[r] = seen[k] <= keep_per_cluster
    return keep


def read_clusters(path: Path, names: list[str], argument: str) -> np.ndarray:
    """Cluster id per dataset row from a ``clusters.parquet`` of ``sdguard audit data``; refused
    when its rows do not name this dataset's records."""
    pq = require("pyarrow.parquet", "scale", "reading clusters.parquet")
    if not path.is_file():
        raise InputError.bad(argument, str(path.parent), f"holds no {CLUSTERS_FILE} (an `sdguard audit data` output "
                             "folder does)")
    try:
        table = pq.read_table(path, columns=["row", "file_name", "cluster_id"]).to_pydict()
    except Exception as exc:  # noqa: BLE001 - pyarrow raises ArrowInvalid, KeyError, OSError
        why = reason(exc)
        raise InputError.bad(argument, str(path), f"is not a clusters table of `sdguard audit data` ({why})") from None
    labels = np.full(len(names), -1, np.int64)
    for row, name, k in zip(table["row"], table["file_name"], table["cluster_id"]):
        if row is None or not 0 <= row < len(names) or names[row] != name:
            here = names[row] if row is not None and 0 <= row < len(names) else "no record"
            raise InputError.bad(argument, str(path), f"is of another dataset: its row {row} is {name!r}, this "
                                 f"dataset's is {here!r}")
        labels[row] = -1 if k is None else int(k)
    return labels


def write_plan_clusters(path: Path, labels: np.ndarray, names: list[str]) -> None:
    """The clusters as ``clusters.parquet`` (row, file_name, cluster_id) without the captions: they
    are the input's, personal data included."""
    pa = require("pyarrow", "scale", "writing clusters.parquet")
    pq = require("pyarrow.parquet", "scale", "writing clusters.parquet")
    pq.write_table(pa.table({"row": np.arange(len(names), dtype=np.int64), "file_name": names,
                             "cluster_id": labels.astype(np.int64)}), path)


def compute_clusters(cfg, ds, report, *, progress: bool | None = None) -> tuple[np.ndarray, dict]:
    """Cluster every record with ``cfg``'s search options (``sdguard audit data``'s computation);
    returns the labels per row and what was used."""
    from ...audit.dataset_replication import (
        ClusterOptions,
        DataAuditConfig,
        compute_data_audit,
    )
    from ...embed import create_embedder

    require("faiss", "scale", "near-duplicate clustering")
    audit_cfg = DataAuditConfig(dataset=cfg.dataset, out=cfg.out, max_tokens=None,
                                **{f: getattr(cfg, f) for f in ClusterOptions.model_fields})
    emb = create_embedder(cfg.embedder, **cfg.embedder_options)
    result = compute_data_audit(audit_cfg, ds, emb, report, progress=progress)
    labels = np.full(len(ds), -1, np.int64)
    labels[np.asarray(result.entries.rows, np.int64)] = result.labels
    return labels, {"from": "computed", "embedder": result.embedder, "threshold": result.clustering.threshold.to_dict()
                    | {"histogram": None}, "method": result.clustering.method}


def plan_dedup(cfg, ds, report, stage: Path, *, progress: bool | None = None) -> DedupPlan | None:
    """The plan of ``cfg`` (None when neither ``--dedup`` nor ``--diversify`` needs clusters). A
    resumed run reads the clusters it wrote before (``stage/clusters.parquet``)."""
    if not cfg.needs_clusters:
        return None
    names = ds.entries().file_names
    if cfg.dedup_from is not None:
        labels = read_clusters(Path(cfg.dedup_from) / CLUSTERS_FILE, names, "--dedup-from")
        source = {"from": str(cfg.dedup_from)}
        write_plan_clusters(stage / CLUSTERS_FILE, labels, names)
    elif (stage / CLUSTERS_FILE).is_file() and (stage / SOURCE_FILE).is_file():
        labels = read_clusters(stage / CLUSTERS_FILE, names, "--resume")
        source = json.loads((stage / SOURCE_FILE).read_text())
    else:
        with report.timer("clusters"):
            labels, source = compute_clusters(cfg, ds, report, progress=progress)
        write_plan_clusters(stage / CLUSTERS_FILE, labels, names)
        atomic_write_json(stage / SOURCE_FILE, source)
    return DedupPlan(labels, select(labels, cfg.keep_per_cluster), source)
