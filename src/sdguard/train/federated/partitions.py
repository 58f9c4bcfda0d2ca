"""How a dataset is split over federated clients: iid, or non-iid by a caption keyword, a metadata
column (a style, an owner) or a near-duplicate cluster, so that one client holds a planted artwork.

The split is a pure function of the members, the scheme and the seed: the server (for the report)
and every client (for its own share) compute the same one. In a real deployment each SuperNode
usually has its own data and no split is made (see :mod:`.client`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...core.errors import InputError


@dataclass
class Partition:
    """``parts[c]``: the positions (in the members) of client ``c``'s records."""

    scheme: str
    parts: list[np.ndarray]
    key_mask: np.ndarray | None = None  # the records the non-iid key selects (keyword, largest cluster)
    info: dict = field(default_factory=dict)

    def describe(self) -> dict:
        total = sum(len(p) for p in self.parts)
        rows = []
        for c, p in enumerate(self.parts):
            row = {"client": c, "records": int(len(p)), "share": round(len(p) / total, 4) if total else 0.0}
            if self.key_mask is not None:
                row["key_records"] = int(self.key_mask[p].sum())
            rows.append(row)
        return {"scheme": self.scheme, "clients": rows, **self.info}


def _iid(positions: np.ndarray, n: int, seed: int) -> list[np.ndarray]:
    order = np.random.default_rng([seed, 0xF1D]).permutation(positions)
    return [np.sort(p) for p in np.array_split(order, n)]


def _greedy(units: list[np.ndarray], n: int, first: np.ndarray | None = None) -> list[np.ndarray]:
    """Whole units onto clients, largest first, each to the least loaded (``first`` on client 0)."""
    parts: list[list[int]] = [[] for _ in range(n)]
    if first is not None:
        parts[0].extend(first.tolist())
    for u in sorted(units, key=lambda u: (-len(u), int(u[0]))):
        c = min(range(n), key=lambda k: (len(parts[k]), k))
        parts[c].extend(u.tolist())
    return [np.sort(np.asarray(p, np.int64)) for p in parts]


def partition(cfg, dataset, members, n: int | None = None) -> Partition:
    """Split ``members`` (:class:`~sdguard.data.datasets.Entries`) over ``n`` clients (default
    ``cfg.clients``) by ``cfg.partition``; a client left without a record is an :class:`InputError`."""
    n = cfg.clients if n is None else n
    kind, arg = cfg.partition_scheme()
    m = len(members)
    if n > m:
        raise InputError.bad("--clients", n, f"exceeds the {m} training record(s): every client needs one")
    everyone = np.arange(m)
    if kind == "iid":
        result = Partition("iid", _iid(everyone, n, cfg.seed))
    elif kind == "keyword":
        from ...data.captions import KeywordFilter

        mask = np.asarray(KeywordFilter((arg,)).mask(members.texts), bool)
        if not mask.any():
            raise InputError.bad("--partition", cfg.partition, f"matches no caption of the {m} training records")
        rest = _iid(everyone[~mask], n, cfg.seed)
        rest[0] = np.sort(np.concatenate([everyone[mask], rest[0]]))
        result = Partition(cfg.partition, rest, mask, {"key": arg, "key_records": int(mask.sum())})
    elif kind == "column":
        values = [str(v) for v in dataset.column(arg, members.rows, argument="--partition")]
        groups: dict[str, list[int]] = {}
        for i, v in enumerate(values):
            groups.setdefault(v, []).append(i)
        if len(groups) < n:
            raise InputError.bad("--partition", cfg.partition, f"has {len(groups)} distinct value(s), fewer than "
                                 f"--clients ({n}): each value's records stay on one client")
        result = Partition(cfg.partition, _greedy([np.asarray(g) for g in groups.values()], n),
                           info={"key": arg, "values": len(groups)})
    else:
        from ...audit.generation_replication import clusters_from_audit

        labels, words, info = clusters_from_audit(arg, members, argument="--partition")
        ids, counts = np.unique(labels[labels >= 0], return_counts=True)
        if not len(ids) or counts.max() < 2:
            raise InputError.bad("--partition", cfg.partition, "has no near-duplicate cluster among the training "
                                 "records (were they audited from this dataset?)")
        big = int(ids[np.argmax(counts)])
        mask = labels == big
        units = [everyone[labels == c] for c in ids if c != big]
        units += [np.asarray([i]) for i in everyone[labels < 0]]
        result = Partition(cfg.partition, _greedy(units, n, first=everyone[mask]), mask,
                           {"key": f"cluster {big}", "key_words": words.get(big, [])[:5],
                            "key_records": int(mask.sum()), "clusters": int(len(ids)), **info})
    empty = [c for c, p in enumerate(result.parts) if not len(p)]
    if empty:
        raise InputError.bad("--clients", n, f"leaves client(s) {empty[:5]} without a record under --partition "
                             f"{cfg.partition}")
    return result


__all__ = ["Partition", "partition"]
