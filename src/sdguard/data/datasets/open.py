"""Opening a dataset: detecting its format from the path and reading it with the right class."""

from __future__ import annotations

from pathlib import Path

from ...core.errors import InputError, reason, require
from .base import FORMATS, Dataset, formats_sentence
from .folder import ImageFolder
from .parquet import CaptionTable, ParquetImages, bytes_column
from .paths import check_files_inside
from .webdataset import WebDataset


def detect_format(path: str | Path) -> str:
    """The format of ``path`` (a key of :data:`FORMATS`), or :class:`InputError` listing the formats."""
    return _resolve(Path(path))[0]


def _no_format(path: Path, why: str = "") -> InputError:
    return InputError(f"DATASET {str(path)!r} is in no known format{(' (' + why + ')') if why else ''}; "
                      f"the formats are: {formats_sentence()}.")


def _resolve(path: Path, allow_symlinks: bool = False) -> tuple[str, list[Path]]:
    if not path.exists():
        raise InputError.bad("DATASET", str(path), "does not exist")
    if path.is_dir():
        meta = [path / n for n in ("metadata.jsonl", "metadata.csv") if (path / n).is_file()]
        if meta:
            check_files_inside(path, meta, allow_symlinks)
            return "imagefolder", []
        tars = sorted(path.glob("*.tar"))
        if tars:
            check_files_inside(path, tars, allow_symlinks)
            return "webdataset", tars
        parquets = sorted(path.glob("*.parquet"))
        if parquets:
            check_files_inside(path, parquets, allow_symlinks)
            return _parquet_kind(path, parquets), parquets
        csvs = sorted(list(path.glob("*.csv")) + list(path.glob("*.tsv")))
        if csvs:
            check_files_inside(path, csvs, allow_symlinks)
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
        raise _no_format(path, f"{files[0].name} is not a readable parquet file: {reason(exc)}") from None
    return "parquet-images" if bytes_column(schema) else "captions"


def open_dataset(path: str | Path, format: str | None = None, *, allow_symlinks: bool = False) -> Dataset:
    """Open a dataset in any of :data:`FORMATS`; ``format`` forces one, otherwise it is detected.

    A dataset is untrusted input (:mod:`sdguard.data.datasets.paths`): a record whose image path is
    absolute, climbs out with ``..`` or resolves outside the dataset folder through a symlink, and a
    shard or table of a dataset folder that is a symlink out of it, are refused with an
    :class:`InputError` naming them, before anything behind them is read. Symlinks inside the folder
    are fine; ``allow_symlinks=True`` also permits symlinks that point outside (a library option,
    not on the command line yet).
    """
    path = Path(path)
    if format is not None and format not in FORMATS:
        raise InputError.bad("--format", format, f"is not a dataset format; choose one of {', '.join(FORMATS)}")
    kind, files = _resolve(path, allow_symlinks)
    if format is not None and format != kind:
        if format == "captions" and kind == "parquet-images":
            kind = "captions"
        else:
            raise InputError.bad("DATASET", str(path), f"looks like {kind}, not {format}")
    if kind == "imagefolder":
        return ImageFolder(path, allow_symlinks=allow_symlinks)
    if kind == "webdataset":
        return WebDataset(path)
    if kind == "parquet-images":
        pq = require("pyarrow.parquet", "scale", "reading parquet datasets")
        return ParquetImages(path, files, pq.read_schema(files[0]))
    return CaptionTable(path, files, allow_symlinks=allow_symlinks)
