"""The imagefolder format (images beside ``metadata.jsonl`` or ``metadata.csv``) and CSV reading."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Iterator

from ...core.errors import InputError
from .base import InMemoryDataset, caption_of


class ImageFolder(InMemoryDataset):
    """A folder of images with ``metadata.jsonl`` (or ``metadata.csv``): ``file_name``, ``text``."""

    format = "imagefolder"

    def __init__(self, path: str | Path):
        path = Path(path)
        meta = path if path.is_file() else next(
            (path / n for n in ("metadata.jsonl", "metadata.csv") if (path / n).is_file()), path / "metadata.jsonl")
        self.root, self.metadata = meta.parent, meta
        names, texts = [], []
        if meta.suffix == ".csv":
            rows = list(read_csv(meta))
        else:
            rows = []
            with open(meta, encoding="utf-8") as fh:
                for lineno, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    try:
                        obj = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise InputError.bad("DATASET", str(meta),
                                             f"has a malformed JSON line {lineno} ({exc.msg})") from None
                    if not isinstance(obj, dict):
                        raise InputError.bad("DATASET", str(meta), f"line {lineno} is not a JSON object")
                    rows.append(obj)
        for k, obj in enumerate(rows, 1):
            name = obj.get("file_name")
            if not isinstance(name, str) or not name:
                raise InputError.bad("DATASET", str(meta), f"entry {k} has no file_name")
            names.append(name)
            texts.append(caption_of(obj))
        super().__init__(path, names, texts)

    def _index_files(self) -> list[Path]:
        return [self.metadata]

    def _sources(self, rows):
        for r in rows:
            yield r, self.root / self._file_names[r]


def read_csv(path: Path) -> Iterator[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        sample = fh.read(8192)
        fh.seek(0)
        delimiter = "\t" if path.suffix == ".tsv" or ("\t" in sample and "," not in sample.splitlines()[0]) else ","
        yield from csv.DictReader(fh, delimiter=delimiter)
