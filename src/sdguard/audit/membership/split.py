"""The records of a membership audit: members and non-members read, checked and split.

``--members`` / ``--nonmembers`` are each a manifest (``members.jsonl`` / ``nonmembers.jsonl`` of
``sdguard train --holdout``: ``row``, ``file_name``, ``text`` per line) resolved against a dataset, or
a dataset folder given directly (every record of it, any format :func:`open_dataset` reads), so the
non-members may come from another dataset. A manifest's dataset is ``--dataset``, else the
``config.dataset`` of the ``report.json`` beside the manifest (``sdguard train`` records it there).
The caption of a record is the manifest's ``text`` (what the model was trained on), or the dataset's.

Refused, each with one sentence naming the argument and its value: a manifest that cannot be read
or names files its dataset lacks, an empty set, a record that is both a member and a non-member
(the same file of the same dataset), and fewer records than the calibration and evaluation halves
need. A non-member whose image and caption equal a member's in another file is not refused: it is
a copy, counted in the report and put with the non-members that copy a member (:mod:`.groups`).

:func:`calibration_split` halves members and non-members, per group, with a seed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...core.errors import InputError
from ...core.io import read_json_lines
from ...data.datasets.base import Dataset, Entries

#: records each of members and non-members need: two per half and group at least
MIN_RECORDS = 8


@dataclass
class RecordSet:
    """Members or non-members: where they came from, their dataset and their entries."""

    argument: str  # --members or --nonmembers
    source: str  # what the user gave
    dataset: Dataset
    entries: Entries
    kind: str  # "manifest" or "dataset"

    def describe(self) -> dict:
        return {"source": self.source, "kind": self.kind, "dataset": str(self.dataset.path),
                "format": self.dataset.format, "records": len(self.entries)}


def manifest_dataset(argument: str, manifest: Path, dataset: str | None) -> str:
    """The dataset a manifest's records belong to: ``--dataset``, else the ``config.dataset`` of the
    ``report.json`` beside it."""
    if dataset is not None:
        return dataset
    report = manifest.parent / "report.json"
    try:
        recorded = json.loads(report.read_text(encoding="utf-8"))["config"]["dataset"]
    except (OSError, ValueError, KeyError, TypeError):
        recorded = None
    if not isinstance(recorded, str) or not recorded:
        raise InputError.bad(argument, str(manifest), "is a manifest and no dataset is known for it (no readable "
                             "report.json of `sdguard train` beside it names one); pass --dataset")
    if not Path(recorded).is_absolute() and not Path(recorded).exists() and (manifest.parent / recorded).exists():
        recorded = str(manifest.parent / recorded)
    return recorded


def read_records(argument: str, source: str, dataset: str | None) -> RecordSet:
    """Members or non-members from ``source`` (a manifest or a dataset folder), checked."""
    from ...data.datasets import open_dataset

    path = Path(source)
    if path.is_dir():
        ds = open_dataset(path)
        entries = ds.entries()
        kind = "dataset"
    elif path.is_file():
        rows = read_manifest_rows(argument, path)
        where = manifest_dataset(argument, path, dataset)
        try:
            ds = open_dataset(where)
        except InputError as exc:
            raise InputError.bad("--dataset", where, f"(the dataset of {argument} {source!r}) cannot be opened: {exc}") \
                from None
        entries = resolve_manifest(argument, path, rows, ds)
        kind = "manifest"
    else:
        raise InputError.bad(argument, source, "does not exist (give a members.jsonl manifest or a dataset folder)")
    if not len(entries):
        raise InputError.bad(argument, source, "holds no record")
    if len(entries) < MIN_RECORDS:
        raise InputError.bad(argument, source, f"holds {len(entries)} record(s); the calibration and evaluation "
                             f"halves need at least {MIN_RECORDS}")
    return RecordSet(argument, source, ds, entries, kind)


def read_manifest_rows(argument: str, path: Path) -> list[dict]:
    """The lines of a manifest, each a JSON object with a non-empty ``file_name``."""
    rows = []
    for k, obj in read_json_lines(path, argument, "a manifest holds one JSON record per line: row, file_name, text"):
        if not isinstance(obj.get("file_name"), str) or not obj["file_name"]:
            raise InputError.bad(argument, str(path), f"line {k} has no file_name")
        rows.append(obj)
    return rows


def resolve_manifest(argument: str, path: Path, rows: list[dict], ds: Dataset) -> Entries:
    """The dataset entries a manifest names (its ``row`` when it still holds that file, else the
    file name), captioned with the manifest's ``text``; a file the dataset lacks is an error."""
    every = ds.entries()
    by_name: dict[str, int] = {}
    for i, name in enumerate(every.file_names):
        by_name.setdefault(name, i)
    index, texts, missing = [], [], []
    for obj in rows:
        row, name = obj.get("row"), obj["file_name"]
        i = row if isinstance(row, int) and 0 <= row < len(every) and every.file_names[row] == name else by_name.get(name)
        if i is None:
            missing.append(name)
            continue
        index.append(i)
        text = obj.get("text")
        texts.append(text if isinstance(text, str) else every.texts[i])
    if missing:
        raise InputError.bad(argument, str(path), f"names {len(missing)} file(s) the dataset {str(ds.path)!r} lacks "
                             f"(e.g. {missing[0]!r})")
    taken = every.take(index)
    taken.texts = texts
    return taken


def check_disjoint(members: RecordSet, nonmembers: RecordSet) -> None:
    """A record that is both a member and a non-member (the same file of the same dataset) is refused."""
    if Path(members.dataset.path).resolve() != Path(nonmembers.dataset.path).resolve():
        return
    both = sorted(set(members.entries.file_names) & set(nonmembers.entries.file_names))
    if both:
        raise InputError.bad("--nonmembers", nonmembers.source, f"shares {len(both)} record(s) with --members "
                             f"(e.g. {both[0]!r}); a record is either a member or a non-member")


def identical_pairs(member_images: np.ndarray, member_texts: list[str], non_images: np.ndarray,
                    non_texts: list[str]) -> np.ndarray:
    """Per non-member: whether a member has the same pixels (at the model's size) and the same caption."""
    import hashlib

    def key(img: np.ndarray, text: str) -> str:
        return hashlib.sha256(np.ascontiguousarray(img).tobytes() + b"\0" + " ".join(text.split()).encode()).hexdigest()

    seen = {key(i, t) for i, t in zip(member_images, member_texts)}
    return np.array([key(i, t) in seen for i, t in zip(non_images, non_texts)], bool)


def calibration_split(labels: np.ndarray, groups: np.ndarray, seed: int) -> np.ndarray:
    """A boolean mask of the calibration half: each (label, group) stratum is shuffled with ``seed``
    and its first half (rounded down) is for calibration, the rest for evaluation."""
    calib = np.zeros(len(labels), bool)
    rng = np.random.default_rng([seed, 0xCA11])
    for lab in (True, False):
        for g in np.unique(groups):
            idx = np.flatnonzero((labels == lab) & (groups == g))
            idx = idx[rng.permutation(len(idx))]
            calib[idx[: len(idx) // 2]] = True
    return calib


__all__ = ["MIN_RECORDS", "RecordSet", "read_records", "read_manifest_rows", "resolve_manifest", "check_disjoint",
           "identical_pairs", "calibration_split", "manifest_dataset"]
