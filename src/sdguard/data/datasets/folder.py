"""The imagefolder format (images beside ``metadata.jsonl`` or ``metadata.csv``) and CSV reading.

Metadata is untrusted input: invalid UTF-8, a malformed JSON line or CSV that does not parse (a
quoted field never closed would otherwise swallow the rest of the file as one caption) is refused
with one sentence naming the file and line.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from pathlib import Path
from typing import Iterator

from ...core.errors import InputError
from .base import InMemoryDataset, caption_of
from .paths import RecordPaths


class ImageFolder(InMemoryDataset):
    """A folder of images with ``metadata.jsonl`` (or ``metadata.csv``): ``file_name``, ``text``.

    Every ``file_name`` must stay inside the folder (:mod:`.paths`; ``allow_symlinks`` permits
    symlinks that point outside)."""

    format = "imagefolder"

    def __init__(self, path: str | Path, *, allow_symlinks: bool = False):
        path = Path(path)
        meta = path if path.is_file() else next(
            (path / n for n in ("metadata.jsonl", "metadata.csv") if (path / n).is_file()), path / "metadata.jsonl")
        self.root, self.metadata = meta.parent, meta
        self.paths = RecordPaths(path, allow_symlinks)
        rows = read_csv(meta)[1] if meta.suffix == ".csv" else list(read_jsonl(meta))
        super().__init__(path, [], [])
        for k, obj in enumerate(rows, 1):
            name = obj.get("file_name")
            if not isinstance(name, str) or not name:
                raise InputError.bad("DATASET", str(meta), f"entry {k} has no file_name")
            self.paths.relative(k, "file_name", name)
            self._file_names.append(name)
            self._texts.append(caption_of(obj, self.issues))

    def _index_files(self) -> list[Path]:
        return [self.metadata]

    def column(self, name: str, rows, argument: str = "--group-column") -> list:
        """``name`` of each record at ``rows``, read again from the metadata file (kept out of memory
        otherwise); a record without it is an error naming ``argument``."""
        meta = read_csv(self.metadata)[1] if self.metadata.suffix == ".csv" else list(read_jsonl(self.metadata))
        out = []
        for r in rows:
            value = meta[int(r)].get(name)
            if value is None or value == "":
                raise InputError.bad(argument, name, f"is missing from record {int(r) + 1} of {self.metadata}")
            out.append(value)
        return out

    def _sources(self, rows):
        for r in rows:
            yield r, self.paths.resolve(r + 1, "file_name", self._file_names[r], self.root)


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise _unreadable(path, exc) from None


def _unreadable(path: Path, exc: OSError) -> InputError:
    return InputError.bad("DATASET", str(path), f"cannot be read ({exc.strerror or exc})")


def _not_utf8(path: Path, line: int) -> InputError:
    return InputError.bad("DATASET", str(path), f"line {line} is not valid UTF-8 text")


def read_jsonl(path: Path) -> Iterator[dict]:
    """The JSON objects of ``path``, one per non-blank line (refused naming the line otherwise)."""
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise _unreadable(path, exc) from None
    with fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                line = (raw.removeprefix(codecs.BOM_UTF8) if lineno == 1 else raw).decode("utf-8")
            except UnicodeDecodeError:
                raise _not_utf8(path, lineno) from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError; deep nesting recurses
                why = getattr(exc, "msg", None) or type(exc).__name__
                raise InputError.bad("DATASET", str(path), f"has a malformed JSON line {lineno} ({why})") from None
            if not isinstance(obj, dict):
                raise InputError.bad("DATASET", str(path), f"line {lineno} is not a JSON object")
            yield obj


def read_csv(path: Path) -> tuple[list[str], list[dict]]:
    """``(columns, rows)`` of a CSV (or ``.tsv``) file; a row holds the fields it has (a short row
    lacks the last columns). Strict parsing: a quoted field never closed, text after a closing
    quote, or invalid UTF-8 is refused with the file and line."""
    data = _read_bytes(path).removeprefix(codecs.BOM_UTF8)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _not_utf8(path, data[: exc.start].count(b"\n") + 1) from None
    first = text[: text.find("\n")] if "\n" in text else text
    delimiter = "\t" if path.suffix.lower() == ".tsv" or ("\t" in text[:8192] and "," not in first) else ","
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    rows, start = [], 1
    try:
        columns = [c for c in (reader.fieldnames or []) if isinstance(c, str)]
        start = reader.line_num + 1
        for row in reader:
            rows.append({k: v for k, v in row.items() if isinstance(k, str) and v is not None})
            start = reader.line_num + 1
    except csv.Error as exc:
        if "unexpected end of data" in str(exc):
            raise InputError.bad("DATASET", str(path), f"line {start} opens a quoted field that is never "
                                 "closed (the rest of the file would read as one field)") from None
        raise InputError.bad("DATASET", str(path), f"is not valid CSV at line {start} ({exc})") from None
    return columns, rows
