"""Parquet with image bytes (img2dataset output) and caption tables of image paths (CSV or parquet)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ...core.errors import InputError, SdguardError, reason, require
from ..captions import KeywordFilter, duckdb_connect, filter_parquet, parquet_list_sql
from .base import CAPTION_COLUMNS, Dataset, Entries, InMemoryDataset, formats_sentence
from .folder import read_csv
from .paths import RecordPaths

PATH_COLUMNS = ("file_name", "image_path", "image", "path", "filepath", "file", "filename", "img_path")
BYTES_COLUMNS = ("jpg", "jpeg", "png", "webp", "image", "img", "image_bytes", "bytes")
KEY_COLUMNS = ("key", "file_name", "id", "image_id")


def _pick(columns: Sequence[str], candidates: Sequence[str]) -> str | None:
    lower = {c.lower(): c for c in columns}
    for cand in candidates:
        if cand in columns:
            return cand
        if cand.lower() in lower:
            return lower[cand.lower()]
    return None


def _damaged(path: Path, exc: Exception) -> InputError:
    return InputError.bad("DATASET", str(path), f"is not a readable parquet file ({reason(exc)})")


def parquet_file(path: Path):
    """``pyarrow.parquet.ParquetFile(path)``, or :class:`InputError` naming a damaged file."""
    pq = require("pyarrow.parquet", "scale", "reading parquet datasets")
    try:
        return pq.ParquetFile(path)
    except SdguardError:
        raise
    except Exception as exc:  # noqa: BLE001 - pyarrow raises ArrowInvalid, OSError, ...
        raise _damaged(path, exc) from None


class _ParquetBase(Dataset):
    """Parquet files whose captions are filtered in DuckDB."""

    def __init__(self, path: str | Path, files: list[Path], text_column: str, extra: Sequence[str]):
        super().__init__(path)
        self.files, self.text_column, self._extra = files, text_column, [c for c in extra if c]
        self._counts = [parquet_file(f).metadata.num_rows for f in files]
        self._offsets = np.cumsum([0] + self._counts)
        self._starts: dict[int, np.ndarray] = {}
        self._group_cache: tuple | None = None

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def _index_files(self) -> list[Path]:
        return list(self.files)

    def _query(self, where: KeywordFilter | None):
        try:
            return filter_parquet(self.files, where or KeywordFilter(), text_column=self.text_column,
                                  columns=self._extra)
        except SdguardError:
            raise
        except Exception as exc:  # noqa: BLE001 - duckdb.Error on damaged or mismatched files
            raise _damaged(self.path, exc) from None

    def describe(self) -> dict:
        """As :meth:`Dataset.describe`; null captions count as ``captions_not_text`` (one DuckDB scan)."""
        if "captions_not_text" not in self.issues:
            col = self.text_column.replace('"', '""')
            try:
                nulls = duckdb_connect().execute(f'SELECT count(*) - count("{col}") FROM '
                                                 f"read_parquet({parquet_list_sql(self.files)})").fetchone()[0]
            except SdguardError:
                raise
            except Exception as exc:  # noqa: BLE001
                raise _damaged(self.path, exc) from None
            self.issues["captions_not_text"] = int(nulls or 0)
        return super().describe()

    def column(self, name: str, rows, argument: str = "--group-column") -> list:
        """``name`` of each record at ``rows`` (a column of the parquet files)."""
        if name not in parquet_file(self.files[0]).schema_arrow.names:
            raise InputError.bad(argument, name, f"is not a column of {self.files[0]}")
        values = self._column_values([int(r) for r in rows], name)
        missing = next((int(r) for r in rows if values[int(r)] is None), None)
        if missing is not None:
            raise InputError.bad(argument, name, f"is null in record {missing + 1}")
        return [values[int(r)] for r in rows]

    def _locate(self, row: int) -> tuple[int, int]:
        f = int(np.searchsorted(self._offsets, row, side="right") - 1)
        return f, row - int(self._offsets[f])

    def _group_starts(self, f: int) -> np.ndarray:
        starts = self._starts.get(f)
        if starts is None:
            meta = parquet_file(self.files[f]).metadata
            starts = self._starts[f] = np.cumsum([0] + [meta.row_group(g).num_rows for g in range(meta.num_row_groups)])
        return starts

    def _column_values(self, rows: Sequence[int], column: str) -> dict[int, object]:
        """Values of ``column`` at ``rows``, reading each needed row group once (the last one read
        stays cached, so consecutive batches of one row group do not read it again)."""
        import pyarrow as pa

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
                try:
                    col = parquet_file(self.files[f]).read_row_group(g, columns=[column]).column(0)
                except SdguardError:
                    raise
                except Exception as exc:  # noqa: BLE001 - damaged pages
                    raise _damaged(self.files[f], exc) from None
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
        self.image_column = bytes_column(schema)
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


def bytes_column(schema) -> str | None:
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
    """A table of captions with image paths (CSV in memory, parquet filtered in DuckDB); every path
    must stay inside the table's folder (:mod:`.paths`; ``allow_symlinks`` permits symlinks out)."""

    format = "captions"

    def __init__(self, path: str | Path, files: list[Path], *, allow_symlinks: bool = False):
        super().__init__(path)
        self.files = files
        self.root = files[0].parent
        paths = RecordPaths(path, allow_symlinks)
        if files[0].suffix.lower() == ".parquet":
            self._impl: Dataset = _PathParquet(path, files, parquet_file(files[0]).schema_arrow.names, paths)
        else:
            self._impl = _PathList(path, paths)
            for f in files:
                self._impl.add_table(f)
        self.issues = self._impl.issues

    def __len__(self) -> int:
        return len(self._impl)

    def entries(self, where=None) -> Entries:
        return self._impl.entries(where)

    def _sources(self, rows):
        return self._impl._sources(rows)

    def _index_files(self) -> list[Path]:
        return list(self.files)

    def describe(self) -> dict:
        return {**super().describe(), "issues": self._impl.describe()["issues"]}


class _PathList(InMemoryDataset):
    """The rows of CSV caption tables: a path (relative to its table's folder) and a caption."""

    def __init__(self, path, paths: RecordPaths):
        super().__init__(path, [], [])
        self.paths = paths
        self._tables: list[tuple[Path, str]] = []  # (folder, path column) of each table
        self._table_of: list[int] = []  # per row

    def add_table(self, f: Path) -> None:
        cols, rows = read_csv(f)
        pcol, tcol = _pick(cols, PATH_COLUMNS), _pick(cols, CAPTION_COLUMNS)
        if rows and (pcol is None or tcol is None):
            raise InputError.bad("DATASET", str(f), "is a table without an image path column "
                                 f"({'/'.join(PATH_COLUMNS[:4])}) and a caption column "
                                 f"({'/'.join(CAPTION_COLUMNS[:3])}); known formats: {formats_sentence()}")
        self._tables.append((f.parent, pcol))
        for row in rows:
            name = row.get(pcol) or ""
            if name:
                self.paths.relative(len(self._file_names) + 1, pcol, name)
            if row.get(tcol) is None:
                self.issues["captions_missing"] += 1
            self._file_names.append(name)
            self._texts.append(row.get(tcol) or "")
            self._table_of.append(len(self._tables) - 1)

    def _index_files(self):  # pragma: no cover - the owning CaptionTable answers
        return []

    def _sources(self, rows):
        for r in rows:
            name = self._file_names[r]
            root, column = self._tables[self._table_of[r]]
            yield r, self.paths.resolve(r + 1, column, name, root) if name else None


class _PathParquet(_ParquetBase):
    def __init__(self, path, files, names, paths: RecordPaths):
        self.path_column = _pick(names, PATH_COLUMNS)
        text = _pick(names, CAPTION_COLUMNS)
        if self.path_column is None or text is None:
            raise InputError.bad("DATASET", str(path), "is a parquet table without image bytes, image paths "
                                 f"({'/'.join(PATH_COLUMNS[:4])}) or captions ({'/'.join(CAPTION_COLUMNS[:3])}); "
                                 f"known formats: {formats_sentence()}")
        super().__init__(path, files, text, [self.path_column])
        self.paths = paths
        self._names: dict[int, str] = {}

    def entries(self, where=None) -> Entries:
        table = self._query(where)
        rows = np.asarray(table.column("row").to_numpy(zero_copy_only=False), np.int64)
        names = [n if isinstance(n, str) else "" for n in table.column(self.path_column).to_pylist()]
        for r, name in zip(rows.tolist(), names):
            if name:
                self.paths.relative(r + 1, self.path_column, name)
        self._names.update(zip(rows.tolist(), names))
        return Entries(rows, names, [t or "" for t in table.column("text").to_pylist()])

    def _sources(self, rows):
        missing = [r for r in rows if r not in self._names]
        if missing:
            self._names.update(self._column_values(missing, self.path_column))
        root = self.files[0].parent
        for r in rows:
            name = self._names.get(r)
            name = name if isinstance(name, str) else ""
            yield r, self.paths.resolve(r + 1, self.path_column, name, root) if name else None
