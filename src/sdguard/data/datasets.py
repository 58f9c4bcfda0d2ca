"""Image-caption datasets in the formats users have (DESIGN.md, "Dataset").

- ``imagefolder``: a folder with images and ``metadata.jsonl`` (one JSON object per line with
  ``file_name`` and ``text``: the Hugging Face imagefolder convention; ``metadata.csv`` works too).
  The path may also be the ``metadata.jsonl`` file itself.
- ``webdataset``: img2dataset's webdataset output, a ``.tar`` shard or a folder of them, where the
  members of one sample share a key (``000000123.jpg``, ``000000123.txt``, ``000000123.json``).
- ``parquet-images``: img2dataset's parquet output, ``.parquet`` file(s) (or a folder of them)
  with the image bytes in a column (``jpg``, ``png``, ``webp``, ``image``, ...) beside the caption.
- ``captions``: a caption table, ``.csv`` or ``.parquet`` (or a folder of them), with a column of
  image paths (``file_name``, ``image_path``, ``path``, ...; relative to the table's folder) and a
  caption column (``text``, ``caption``, ``prompt``).

Every format reads as a :class:`Dataset`: a sequence of entries (``row``, ``file_name``,
``text``) and the images behind them. Captions are filtered where they live: in memory for
small formats, in DuckDB over parquet (see :mod:`sdguard.data.captions`), so metadata of
millions of rows never passes through Python. Images are decoded only when asked for; a missing
or unreadable image is reported per entry and counted, never fatal.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import tarfile
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Iterator, Sequence

import numpy as np

from ..core.errors import InputError, require
from .captions import KeywordFilter, filter_parquet

#: the formats :func:`open_dataset` reads, with what each looks like
FORMATS: dict[str, str] = {
    "imagefolder": "a folder with images and metadata.jsonl (file_name, text) or metadata.csv",
    "webdataset": "img2dataset webdataset output: a .tar shard or a folder of .tar shards (KEY.jpg + KEY.txt)",
    "parquet-images": "img2dataset parquet output: .parquet file(s) with image bytes (jpg/png/webp/image) and captions",
    "captions": "a caption table (.csv or .parquet) with an image path column (file_name/image_path/path) "
                "and a caption column (text/caption/prompt)",
}

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")
CAPTION_COLUMNS = ("text", "caption", "txt", "prompt", "TEXT", "CAPTION")
PATH_COLUMNS = ("file_name", "image_path", "image", "path", "filepath", "file", "filename", "img_path")
BYTES_COLUMNS = ("jpg", "jpeg", "png", "webp", "image", "img", "image_bytes", "bytes")
KEY_COLUMNS = ("key", "file_name", "id", "image_id")

MISSING, UNREADABLE = "missing", "unreadable"


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
        """The images of ``rows`` in order; unreadable ones come with ``error`` set."""
        for row, source in self._sources([int(r) for r in rows]):
            yield _load(row, source, max_side)

    def load(self, rows: Sequence[int], *, max_side: int | None = None) -> list[np.ndarray | None]:
        return [item.image for item in self.images(rows, max_side=max_side)]

    def fingerprint(self) -> str:
        """Identifies this dataset's content for caches: format, location, index files' size/mtime."""
        key = json.dumps({"format": self.format, "path": str(self.path.resolve()),
                          "files": _stat_key(self._index_files())}, sort_keys=True)
        return hashlib.sha256(key.encode()).hexdigest()[:24]

    def describe(self) -> dict:
        return {"path": str(self.path), "format": self.format, "entries": len(self)}


class _InMemoryDataset(Dataset):
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


def _pick(columns: Sequence[str], candidates: Sequence[str]) -> str | None:
    lower = {c.lower(): c for c in columns}
    for cand in candidates:
        if cand in columns:
            return cand
        if cand.lower() in lower:
            return lower[cand.lower()]
    return None


class ImageFolder(_InMemoryDataset):
    """A folder of images with ``metadata.jsonl`` (or ``metadata.csv``): ``file_name``, ``text``."""

    format = "imagefolder"

    def __init__(self, path: str | Path):
        path = Path(path)
        meta = path if path.is_file() else next(
            (path / n for n in ("metadata.jsonl", "metadata.csv") if (path / n).is_file()), path / "metadata.jsonl")
        self.root, self.metadata = meta.parent, meta
        names, texts = [], []
        if meta.suffix == ".csv":
            rows = list(_read_csv(meta))
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
            texts.append(_caption_of(obj))
        super().__init__(path, names, texts)

    def _index_files(self) -> list[Path]:
        return [self.metadata]

    def _sources(self, rows):
        for r in rows:
            yield r, self.root / self._file_names[r]


def _caption_of(obj: dict) -> str:
    for key in CAPTION_COLUMNS:
        value = obj.get(key)
        if isinstance(value, str):
            return value
    return ""


def _read_csv(path: Path) -> Iterator[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        sample = fh.read(8192)
        fh.seek(0)
        delimiter = "\t" if path.suffix == ".tsv" or ("\t" in sample and "," not in sample.splitlines()[0]) else ","
        yield from csv.DictReader(fh, delimiter=delimiter)


class WebDataset(_InMemoryDataset):
    """img2dataset webdataset shards: the members of one sample share a key (``KEY.jpg``, ``KEY.txt``)."""

    format = "webdataset"

    def __init__(self, path: str | Path):
        path = Path(path)
        self.shards = sorted(path.glob("*.tar")) if path.is_dir() else [path]
        self._members: list[tuple[int, tarfile.TarInfo | None]] = []
        self._open: dict[int, tarfile.TarFile] = {}
        names, texts = [], []
        for s, shard in enumerate(self.shards):
            try:
                tar = tarfile.open(shard, "r:*")
            except (tarfile.TarError, OSError) as exc:
                raise InputError.bad("DATASET", str(shard), f"is not a readable tar shard ({exc})") from None
            samples: dict[str, dict] = {}
            with tar:
                for info in tar:
                    if not info.isfile():
                        continue
                    base = info.name.rsplit("/", 1)[-1]
                    if "." not in base:
                        continue
                    key = info.name[: len(info.name) - len(base)] + base.split(".", 1)[0]
                    ext = base.split(".", 1)[1].lower()
                    sample = samples.setdefault(key, {})
                    if ext in IMAGE_EXTENSIONS and "image" not in sample:
                        sample["image"] = info
                    elif ext == "txt":
                        sample["text"] = tar.extractfile(info).read().decode("utf-8", "replace").strip()
                    elif ext == "json" and "json_text" not in sample:
                        try:
                            meta = json.loads(tar.extractfile(info).read())
                            sample["json_text"] = _caption_of(meta) if isinstance(meta, dict) else ""
                        except (ValueError, UnicodeDecodeError):
                            pass
            for key, sample in samples.items():
                if "image" not in sample and "text" not in sample and "json_text" not in sample:
                    continue
                info = sample.get("image")
                names.append(f"{shard.name}/{info.name if info is not None else key}")
                texts.append(sample.get("text", sample.get("json_text", "")))
                self._members.append((s, info))
        super().__init__(path, names, texts)

    def _index_files(self) -> list[Path]:
        return list(self.shards)

    def _sources(self, rows):
        for r in rows:
            s, info = self._members[r]
            if info is None:
                yield r, None
                continue
            tar = self._open.get(s)
            if tar is None:
                tar = self._open[s] = tarfile.open(self.shards[s], "r:*")
            try:
                yield r, tar.extractfile(info).read()
            except (tarfile.TarError, OSError):
                yield r, b""  # decodes as unreadable

    def close(self) -> None:
        for tar in self._open.values():
            tar.close()
        self._open.clear()

    def __del__(self):  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass


class _ParquetBase(Dataset):
    """Parquet files whose captions are filtered in DuckDB."""

    def __init__(self, path: str | Path, files: list[Path], text_column: str, extra: Sequence[str]):
        super().__init__(path)
        self.files, self.text_column, self._extra = files, text_column, [c for c in extra if c]
        pq = require("pyarrow.parquet", "scale", "reading parquet datasets")
        self._counts = [pq.ParquetFile(f).metadata.num_rows for f in files]
        self._offsets = np.cumsum([0] + self._counts)
        self._starts: dict[int, np.ndarray] = {}
        self._group_cache: tuple | None = None

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def _index_files(self) -> list[Path]:
        return list(self.files)

    def _query(self, where: KeywordFilter | None):
        return filter_parquet(self.files, where or KeywordFilter(), text_column=self.text_column,
                              columns=self._extra)

    def _locate(self, row: int) -> tuple[int, int]:
        f = int(np.searchsorted(self._offsets, row, side="right") - 1)
        return f, row - int(self._offsets[f])

    def _group_starts(self, f: int) -> np.ndarray:
        starts = self._starts.get(f)
        if starts is None:
            pq = require("pyarrow.parquet", "scale", "reading parquet datasets")
            meta = pq.ParquetFile(self.files[f]).metadata
            starts = self._starts[f] = np.cumsum([0] + [meta.row_group(g).num_rows for g in range(meta.num_row_groups)])
        return starts

    def _column_values(self, rows: Sequence[int], column: str) -> dict[int, object]:
        """Values of ``column`` at ``rows``, reading each needed row group once (the last one read
        stays cached, so consecutive batches of one row group do not read it again)."""
        import pyarrow as pa

        pq = require("pyarrow.parquet", "scale", "reading parquet datasets")
        needed: dict[tuple[int, int], list[tuple[int, int]]] = {}
        for r in rows:
            f, i = self._locate(r)
            starts = self._group_starts(f)
            g = int(np.searchsorted(starts, i, side="right") - 1)
            needed.setdefault((f, g), []).append((r, i - int(starts[g])))
        values: dict[int, object] = {}
        for (f, g), items in needed.items():
            key = (f, g, column)
            if self._group_cache is None or self._group_cache[0] != key:
                self._group_cache = None  # free the previous group first
                col = pq.ParquetFile(self.files[f]).read_row_group(g, columns=[column]).column(0)
                self._group_cache = (key, col)
            col = self._group_cache[1]
            taken = col.take(pa.array([j for _, j in items], pa.int64())).to_pylist()
            values.update(zip((r for r, _ in items), taken))
        return values


class ParquetImages(_ParquetBase):
    """img2dataset parquet output: image bytes in a column, captions filtered in DuckDB."""

    format = "parquet-images"

    def __init__(self, path: str | Path, files: list[Path], schema):
        names = schema.names
        self.image_column = _bytes_column(schema)
        text = _pick(names, CAPTION_COLUMNS)
        if text is None:
            raise InputError.bad("DATASET", str(path), f"has no caption column (one of {', '.join(CAPTION_COLUMNS[:4])})")
        self.key_column = _pick([n for n in names if n != self.image_column], KEY_COLUMNS)
        super().__init__(path, files, text, [self.key_column] if self.key_column else [])

    def entries(self, where: KeywordFilter | None = None) -> Entries:
        table = self._query(where)
        rows = np.asarray(table.column("row").to_numpy(zero_copy_only=False), np.int64)
        if self.key_column:
            keys = [str(k) if k is not None else f"row{r}" for k, r in zip(table.column(self.key_column).to_pylist(), rows)]
        else:
            keys = [self._default_name(int(r)) for r in rows]
        texts = [t or "" for t in table.column("text").to_pylist()]
        return Entries(rows, keys, texts)

    def _default_name(self, row: int) -> str:
        f, i = self._locate(row)
        return f"{self.files[f].name}#{i}"

    def _sources(self, rows):
        values = self._column_values(rows, self.image_column)
        for r in rows:
            value = values[r]
            if isinstance(value, dict):
                value = value.get("bytes")
            yield r, (bytes(value) if value is not None else None)


def _bytes_column(schema) -> str | None:
    import pyarrow as pa

    for name in schema.names:
        if name.lower() not in BYTES_COLUMNS:
            continue
        typ = schema.field(name).type
        if pa.types.is_binary(typ) or pa.types.is_large_binary(typ):
            return name
        if pa.types.is_struct(typ) and any(typ.field(i).name == "bytes" for i in range(typ.num_fields)):
            return name
    return None


class CaptionTable(Dataset):
    """A table of captions with image paths (CSV in memory, parquet filtered in DuckDB)."""

    format = "captions"

    def __init__(self, path: str | Path, files: list[Path]):
        super().__init__(path)
        self.files = files
        self.root = files[0].parent
        if files[0].suffix.lower() == ".parquet":
            pq = require("pyarrow.parquet", "scale", "reading parquet datasets")
            names = pq.read_schema(files[0]).names
            self._impl: Dataset = _PathParquet(path, files, names)
        else:
            file_names, texts, roots = [], [], []
            for f in files:
                reader = _read_csv(f)
                rows = list(reader)
                cols = list(rows[0].keys()) if rows else []
                pcol, tcol = _pick(cols, PATH_COLUMNS), _pick(cols, CAPTION_COLUMNS)
                if rows and (pcol is None or tcol is None):
                    raise InputError.bad("DATASET", str(f), "is a table without an image path column "
                                         f"({'/'.join(PATH_COLUMNS[:4])}) and a caption column "
                                         f"({'/'.join(CAPTION_COLUMNS[:3])}); known formats: {formats_sentence()}")
                for row in rows:
                    file_names.append(row.get(pcol) or "")
                    texts.append(row.get(tcol) or "")
                    roots.append(f.parent)
            self._impl = _PathList(path, file_names, texts, roots)

    def __len__(self) -> int:
        return len(self._impl)

    def entries(self, where=None) -> Entries:
        return self._impl.entries(where)

    def _sources(self, rows):
        return self._impl._sources(rows)

    def _index_files(self) -> list[Path]:
        return list(self.files)


class _PathList(_InMemoryDataset):
    def __init__(self, path, file_names, texts, roots):
        super().__init__(path, file_names, texts)
        self._roots = roots

    def _index_files(self):  # pragma: no cover - the owning CaptionTable answers
        return []

    def _sources(self, rows):
        for r in rows:
            name = self._file_names[r]
            yield r, (self._roots[r] / name) if name else None


class _PathParquet(_ParquetBase):
    def __init__(self, path, files, names):
        self.path_column = _pick(names, PATH_COLUMNS)
        text = _pick(names, CAPTION_COLUMNS)
        if self.path_column is None or text is None:
            raise InputError.bad("DATASET", str(path), "is a parquet table without image bytes, image paths "
                                 f"({'/'.join(PATH_COLUMNS[:4])}) or captions ({'/'.join(CAPTION_COLUMNS[:3])}); "
                                 f"known formats: {formats_sentence()}")
        super().__init__(path, files, text, [self.path_column])
        self._names: dict[int, str] = {}

    def entries(self, where=None) -> Entries:
        table = self._query(where)
        rows = np.asarray(table.column("row").to_numpy(zero_copy_only=False), np.int64)
        names = [n or "" for n in table.column(self.path_column).to_pylist()]
        self._names.update(zip(rows.tolist(), names))
        return Entries(rows, names, [t or "" for t in table.column("text").to_pylist()])

    def _sources(self, rows):
        missing = [r for r in rows if r not in self._names]
        if missing:
            self._names.update(self._column_values(missing, self.path_column))
        root = self.files[0].parent
        for r in rows:
            name = self._names.get(r)
            yield r, (root / name) if name else None


def detect_format(path: str | Path) -> str:
    """The format of ``path`` (a key of :data:`FORMATS`), or :class:`InputError` listing the formats."""
    return _resolve(Path(path))[0]


def _no_format(path: Path, why: str = "") -> InputError:
    return InputError(f"DATASET {str(path)!r} is in no known format{(' (' + why + ')') if why else ''}; "
                      f"the formats are: {formats_sentence()}.")


def _resolve(path: Path) -> tuple[str, list[Path]]:
    if not path.exists():
        raise InputError.bad("DATASET", str(path), "does not exist")
    if path.is_dir():
        if (path / "metadata.jsonl").is_file() or (path / "metadata.csv").is_file():
            return "imagefolder", []
        tars = sorted(path.glob("*.tar"))
        if tars:
            return "webdataset", tars
        parquets = sorted(path.glob("*.parquet"))
        if parquets:
            return _parquet_kind(path, parquets), parquets
        csvs = sorted(list(path.glob("*.csv")) + list(path.glob("*.tsv")))
        if csvs:
            return "captions", csvs
        raise _no_format(path, "a folder without metadata.jsonl, .tar shards, .parquet or .csv files")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return "imagefolder", []
    if suffix == ".tar":
        return "webdataset", [path]
    if suffix == ".parquet":
        return _parquet_kind(path, [path]), [path]
    if suffix in (".csv", ".tsv"):
        return "captions", [path]
    raise _no_format(path)


def _parquet_kind(path: Path, files: list[Path]) -> str:
    pq = require("pyarrow.parquet", "scale", "reading parquet datasets")
    try:
        schema = pq.read_schema(files[0])
    except Exception as exc:  # noqa: BLE001 - pyarrow raises ArrowInvalid and OSError
        raise _no_format(path, f"{files[0].name} is not a readable parquet file: {exc}") from None
    return "parquet-images" if _bytes_column(schema) else "captions"


def open_dataset(path: str | Path, format: str | None = None) -> Dataset:
    """Open a dataset in any of :data:`FORMATS`; ``format`` forces one, otherwise it is detected."""
    path = Path(path)
    if format is not None and format not in FORMATS:
        raise InputError.bad("--format", format, f"is not a dataset format; choose one of {', '.join(FORMATS)}")
    kind, files = _resolve(path)
    if format is not None and format != kind:
        if format == "captions" and kind == "parquet-images":
            kind = "captions"
        else:
            raise InputError.bad("DATASET", str(path), f"looks like {kind}, not {format}")
    if kind == "imagefolder":
        return ImageFolder(path)
    if kind == "webdataset":
        return WebDataset(path)
    if kind == "parquet-images":
        pq = require("pyarrow.parquet", "scale", "reading parquet datasets")
        return ParquetImages(path, files, pq.read_schema(files[0]))
    return CaptionTable(path, files)


__all__ = [
    "FORMATS", "Dataset", "Entries", "LoadedImage", "SkipCounter", "ImageFolder", "WebDataset", "ParquetImages",
    "CaptionTable", "open_dataset", "detect_format", "decode_image", "formats_sentence",
]
