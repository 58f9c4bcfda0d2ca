"""The dataset building blocks: entries, images, skip counts and the :class:`Dataset` base classes."""

from __future__ import annotations

import hashlib
import io
import json
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Iterator, Sequence

import numpy as np

from ...core.errors import InputError
from ..captions import KeywordFilter

#: the formats :func:`open_dataset` reads, with what each looks like
FORMATS: dict[str, str] = {
    "imagefolder": "a folder with images and metadata.jsonl (file_name, text) or metadata.csv",
    "webdataset": "img2dataset webdataset output: a .tar shard or a folder of .tar shards (KEY.jpg + KEY.txt)",
    "parquet-images": "img2dataset parquet output: .parquet file(s) with image bytes (jpg/png/webp/image) and captions",
    "captions": "a caption table (.csv or .parquet) with an image path column (file_name/image_path/path) "
                "and a caption column (text/caption/prompt)",
}

CAPTION_COLUMNS = ("text", "caption", "txt", "prompt", "TEXT", "CAPTION")

MISSING, UNREADABLE = "missing", "unreadable"

#: why a record's caption reads as "" (counted per reason in ``Dataset.issues`` and the reports)
CAPTION_ISSUES = {
    "captions_not_text": "caption(s) not text (a number, null, list or object)",
    "captions_missing": "record(s) without a caption",
    "captions_not_utf8": "caption(s) not valid UTF-8 (read with replacement characters)",
}


def formats_sentence() -> str:
    return "; ".join(f"{name} ({what})" for name, what in FORMATS.items())


@dataclass
class Entries:
    """Entries of a dataset: their positions (``rows``), names and captions, in dataset order."""

    rows: np.ndarray
    file_names: list[str]
    texts: list[str]

    def __len__(self) -> int:
        return len(self.rows)

    def take(self, index: Sequence[int]) -> "Entries":
        index = list(index)
        return Entries(self.rows[index] if len(index) else self.rows[:0], [self.file_names[i] for i in index],
                       [self.texts[i] for i in index])


@dataclass
class LoadedImage:
    """One entry's image (``uint8`` H x W x 3 RGB) or why it could not be read."""

    row: int
    image: np.ndarray | None
    error: str | None = None  # None, "missing" or "unreadable"
    detail: str = ""


@dataclass
class SkipCounter:
    """Counts of images that could not be read, with a few examples for the report."""

    missing: int = 0
    unreadable: int = 0
    examples: list[dict] = field(default_factory=list)
    max_examples: int = 20

    def add(self, file_name: str, error: str, detail: str = "") -> None:
        if error == MISSING:
            self.missing += 1
        else:
            self.unreadable += 1
        if len(self.examples) < self.max_examples:
            self.examples.append({"file_name": file_name, "error": error, "detail": detail[:200]})

    @property
    def total(self) -> int:
        return self.missing + self.unreadable

    def to_dict(self) -> dict:
        return {"missing": self.missing, "unreadable": self.unreadable, "examples": self.examples}


def decode_image(data: bytes | str | Path, max_side: int | None = None) -> np.ndarray:
    """Decode an image file or bytes to ``uint8`` RGB; ``max_side`` shrinks large images on load
    (JPEG decodes at a reduced scale directly). Raises ``FileNotFoundError`` or another error."""
    from PIL import Image

    src = io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else data
    with Image.open(src) as im:
        if max_side:
            im.draft("RGB", (max_side, max_side))
        im = im.convert("RGB")
        if max_side and max(im.size) > max_side:
            im.thumbnail((max_side, max_side), Image.BILINEAR)
        return np.asarray(im, dtype=np.uint8).copy()


def _load(row: int, source, max_side: int | None) -> LoadedImage:
    if source is None:
        return LoadedImage(row, None, MISSING, "no image for this entry")
    try:
        return LoadedImage(row, decode_image(source, max_side))
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
        return LoadedImage(row, None, MISSING, str(exc))
    except Exception as exc:  # noqa: BLE001 - PIL raises many kinds for corrupt files
        return LoadedImage(row, None, UNREADABLE, f"{type(exc).__name__}: {exc}")


def _stat_key(paths: Sequence[Path]) -> list:
    out = []
    for p in paths:
        try:
            st = p.stat()
            out.append([str(p.resolve()), st.st_size, st.st_mtime_ns])
        except OSError:
            out.append([str(p), None, None])
    return out


class Dataset(ABC):
    """A captioned image dataset: ``entries()`` (optionally keyword-filtered) and their images."""

    format: ClassVar[str] = ""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.issues: Counter = Counter()  # CAPTION_ISSUES reason -> records

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def entries(self, where: KeywordFilter | None = None) -> Entries:
        """The entries whose caption passes ``where`` (all entries without it), in dataset order."""

    @abstractmethod
    def _sources(self, rows: Sequence[int]) -> Iterator[tuple[int, object]]:
        """(row, path or bytes or None) for ``rows``, in the given order."""

    @abstractmethod
    def _index_files(self) -> list[Path]:
        """The files whose change means the dataset changed (for cache fingerprints)."""

    def images(self, rows: Sequence[int], *, max_side: int | None = None) -> Iterator[LoadedImage]:
        """The images of ``rows`` in order; unreadable ones come with ``error`` set. A record whose
        path leaves the dataset folder raises :class:`InputError` before anything is read
        (:mod:`.paths`)."""
        for row, source in self._sources([int(r) for r in rows]):
            yield _load(row, source, max_side)

    def image_bytes(self, rows: Sequence[int]) -> Iterator[tuple[int, bytes | None, str]]:
        """The image files' bytes of ``rows`` in order, undecoded: ``(row, bytes, "")``, or
        ``(row, None, why)`` when there is no file to read (the record names none, or it is gone)."""
        for row, source in self._sources([int(r) for r in rows]):
            if source is None:
                yield row, None, "no image for this entry"
            elif isinstance(source, (bytes, bytearray, memoryview)):
                yield row, bytes(source), ""
            else:
                try:
                    yield row, Path(source).read_bytes(), ""
                except OSError as exc:
                    yield row, None, f"{type(exc).__name__}: {exc.strerror or exc}"

    def load(self, rows: Sequence[int], *, max_side: int | None = None) -> list[np.ndarray | None]:
        return [item.image for item in self.images(rows, max_side=max_side)]

    def column(self, name: str, rows: Sequence[int], argument: str = "--group-column") -> list:
        """The values of metadata column ``name`` at ``rows`` (e.g. a user id). Formats without
        per-record metadata columns raise :class:`InputError` naming ``argument``."""
        raise InputError.bad(argument, name, f"cannot be read: the {self.format} format has no metadata columns")

    def fingerprint(self) -> str:
        """Identifies this dataset's content for caches: format, location, index files' size/mtime."""
        key = json.dumps({"format": self.format, "path": str(self.path.resolve()),
                          "files": _stat_key(self._index_files())}, sort_keys=True)
        return hashlib.sha256(key.encode()).hexdigest()[:24]

    def describe(self) -> dict:
        """Path, format, number of entries and ``issues``: records counted per CAPTION_ISSUES reason."""
        return {"path": str(self.path), "format": self.format, "entries": len(self),
                "issues": {k: int(v) for k, v in sorted(self.issues.items()) if v}}


class InMemoryDataset(Dataset):
    """Captions held in Python lists; filtered with :meth:`KeywordFilter.matches`."""

    def __init__(self, path: str | Path, file_names: list[str], texts: list[str]):
        super().__init__(path)
        self._file_names, self._texts = file_names, texts

    def __len__(self) -> int:
        return len(self._file_names)

    @property
    def file_names(self) -> list[str]:
        return self._file_names

    @property
    def texts(self) -> list[str]:
        return self._texts

    def entries(self, where: KeywordFilter | None = None) -> Entries:
        if where is None or not where.keywords:
            idx = list(range(len(self)))
        else:
            idx = [i for i, t in enumerate(self._texts) if where.matches(t)]
        return Entries(np.asarray(idx, np.int64), [self._file_names[i] for i in idx], [self._texts[i] for i in idx])


def caption_of(obj: dict, issues: Counter | None = None) -> str:
    """The first caption field of ``obj`` that is text; "" (counted in ``issues``) when the caption
    fields hold only numbers, null, lists or objects, or there is none."""
    present = False
    for key in CAPTION_COLUMNS:
        if key in obj:
            value = obj[key]
            if isinstance(value, str):
                return value
            present = True
    if issues is not None:
        issues["captions_not_text" if present else "captions_missing"] += 1
    return ""


def issues_sentence(issues: dict) -> str | None:
    """A summary line for a report from ``describe()["issues"]`` (None when there is nothing to say)."""
    parts = [f"{n} {CAPTION_ISSUES.get(k, k)}" for k, n in issues.items() if n]
    return "dataset: " + "; ".join(parts) + " (matched as empty captions)" if parts else None
