"""Privacy units: which training records one DP guarantee protects together.

DP-SGD protects one *record*; a picture copied 80 times is 80 records, and group privacy
(Dwork & Roth 2014, Thm 2.2) gives the picture only ``k * epsilon`` for ``k`` copies (with ``delta``
grown to ``k e^{(k-1) epsilon} delta``). ``--privacy-unit group`` makes a group of records the unit
instead: each near-duplicate cluster of ``sdguard audit data`` (its ``clusters.parquet``), or each
value of a metadata column (a user id), is one unit, and every record outside a cluster is a unit
of its own. :mod:`.engine` samples units, sums the per-record gradients of each sampled unit and
clips that sum, so one unit moves a step by at most ``--max-grad-norm`` whatever its size; the
accountant counts units. The guarantee is then (epsilon, delta)-DP with respect to adding or
removing one whole unit -- for a cluster it holds for the copies the audit found, not for a copy
it missed (a missed copy is its own unit, and the picture's protection is the group-privacy bound
over the copies left outside).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...core.errors import InputError


@dataclass
class PrivacyUnits:
    """``unit`` of every member (0..n-1), and the member positions of each unit, in order."""

    unit: np.ndarray
    members: list[np.ndarray]
    kind: str  # image | group
    source: str | None = None  # the audit folder or the column
    unmatched: int = 0  # records of the audit's table that are not members

    @property
    def count(self) -> int:
        return len(self.members)

    def records(self, units) -> list[int]:
        """The member positions of ``units``, unit after unit."""
        return [int(i) for u in units for i in self.members[int(u)]]

    def describe(self) -> dict:
        sizes = np.array([len(m) for m in self.members]) if self.members else np.zeros(0, int)
        return {"unit": self.kind, "source": self.source, "units": self.count, "records": int(len(self.unit)),
                "largest": int(sizes.max()) if len(sizes) else 0, "multi_record_units": int((sizes > 1).sum()),
                "records_in_multi_record_units": int(sizes[sizes > 1].sum()), "unmatched_audit_records": self.unmatched}


def _from_labels(labels, kind: str, source: str | None, unmatched: int = 0) -> PrivacyUnits:
    """Units from a label per member (equal labels: one unit; ``None``: a unit of its own)."""
    index: dict = {}
    unit = np.empty(len(labels), np.int64)
    for i, lab in enumerate(labels):
        key = ("own", i) if lab is None else ("label", lab)
        unit[i] = index.setdefault(key, len(index))
    members = [[] for _ in range(len(index))]
    for i, u in enumerate(unit):
        members[u].append(i)
    return PrivacyUnits(unit, [np.asarray(m, np.int64) for m in members], kind, source, unmatched)


def image_units(n: int) -> PrivacyUnits:
    return _from_labels([None] * n, "image", None)


def group_units(cfg, dataset, entries) -> PrivacyUnits:
    """The groups of ``entries`` (the members) from ``cfg.groups`` or ``cfg.group_column``."""
    if cfg.groups is not None:
        from ...audit.generation_replication import clusters_from_audit

        labels, _words, info = clusters_from_audit(cfg.groups, entries, argument="--groups")
        if not (labels >= 0).any():
            raise InputError.bad("--groups", cfg.groups, "puts none of the training records in a cluster (is it the "
                                 "audit of this dataset?)")
        return _from_labels([int(v) if v >= 0 else None for v in labels], "group", str(cfg.groups),
                            int(info.get("unmatched_files", 0)))
    values = dataset.column(cfg.group_column, entries.rows, argument="--group-column")
    return _from_labels([str(v) for v in values], "group", f"column {cfg.group_column}")


def units_for(cfg, dataset, entries) -> PrivacyUnits:
    return group_units(cfg, dataset, entries) if cfg.privacy_unit == "group" else image_units(len(entries))


__all__ = ["PrivacyUnits", "units_for", "image_units", "group_units"]
