"""Writing an edited copy of a dataset in its own format: some records left out, captions and
images replaced, metadata fields removed; everything else as it was.

:func:`rewrite_dataset` takes the opened source dataset and, per record to keep, a
:class:`RecordEdit` (the new caption, and the file with the new image bytes or None for the
original's). What "the same format" means per format:

- ``imagefolder``: ``metadata.jsonl`` (or ``metadata.csv``) of the same name with the records'
  other fields, images at the same relative paths;
- ``captions``: each table (CSV or parquet) of the same name with the same columns, images at the
  same paths relative to the table's folder;
- ``webdataset``: each shard of the same name, every member of a kept sample in its order
  (``KEY.txt`` the new caption, ``KEY.json`` with its caption fields replaced, other members as
  they were);
- ``parquet-images``: each file of the same name and schema, image bytes and captions replaced.

Every caption field of a record (``text``, ``caption``, ``prompt``, ... in metadata rows and in a
webdataset sample's JSON) gets the new caption, so no copy of the old one survives in a side
field; ``drop_fields`` are removed from rows and sample JSON (img2dataset keeps the source EXIF in
``exif``).
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import tarfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from ...core.errors import require
from .base import CAPTION_COLUMNS, Dataset
from .folder import read_csv, read_jsonl


@dataclass(frozen=True)
class RecordEdit:
    """What a kept record becomes: its caption, and its image bytes (a file) or None (unchanged)."""

    text: str
    image: Path | None = None


def edit_fields(obj: dict, text: str, drop_fields: Iterable[str]) -> dict:
    """``obj`` with every caption field that held text set to ``text`` and ``drop_fields`` removed."""
    drop = set(drop_fields)
    out = {k: v for k, v in obj.items() if k not in drop}
    for key in CAPTION_COLUMNS:
        if isinstance(out.get(key), str):
            out[key] = text
    return out


def rewrite_dataset(ds: Dataset, out: Path, edits: Mapping[int, RecordEdit], *,
                    drop_fields: Iterable[str] = ()) -> dict:
    """Write the records of ``ds`` named in ``edits`` (by row), edited, into ``out`` in ``ds``'s
    format; returns the files written (``{"files": [...], "records": n}``)."""
    out.mkdir(parents=True, exist_ok=True)
    drop = [f for f in drop_fields if f]
    writer = {"imagefolder": _imagefolder, "captions": _caption_tables, "webdataset": _webdataset,
              "parquet-images": _parquet_images}[ds.format]
    files = writer(ds, out, edits, drop)
    return {"files": files, "records": len(edits)}


def _image_bytes(ds: Dataset, row: int, edit: RecordEdit) -> bytes | None:
    if edit.image is not None:
        return edit.image.read_bytes()
    return next(ds.image_bytes([row]))[1]


def _copy_image(ds: Dataset, row: int, edit: RecordEdit, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if edit.image is not None:
        shutil.copyfile(edit.image, dest)
        return
    data = next(ds.image_bytes([row]))[1]
    if data is not None:
        dest.write_bytes(data)


def _write_rows(path: Path, rows: list[dict], columns: list[str] | None) -> None:
    """Rows as JSON lines (``.jsonl``) or CSV with ``columns`` (``.csv``/``.tsv``)."""
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        return
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=columns or [], delimiter="\t" if path.suffix == ".tsv" else ",",
                       extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    path.write_text(buf.getvalue(), encoding="utf-8")


def _imagefolder(ds, out: Path, edits, drop) -> list[str]:
    meta = ds.metadata
    columns, rows = read_csv(meta) if meta.suffix == ".csv" else (None, list(read_jsonl(meta)))
    kept = []
    for r in sorted(edits):
        kept.append(edit_fields(rows[r], edits[r].text, drop))
        _copy_image(ds, r, edits[r], out / ds.file_names[r])
    _write_rows(out / meta.name, kept, [c for c in columns if c not in drop] if columns else None)
    return [meta.name]


def _caption_tables(ds, out: Path, edits, drop) -> list[str]:
    written, start, names = [], 0, ds.entries().file_names
    for f in ds.files:
        if f.suffix.lower() == ".parquet":
            n = _rewrite_parquet(f, out / f.name, start, edits, drop, ds._impl.text_column, None)
        else:
            columns, rows = read_csv(f)
            kept = [edit_fields(rows[i], edits[start + i].text, drop) for i in range(len(rows)) if start + i in edits]
            _write_rows(out / f.name, kept, [c for c in columns if c not in drop])
            n = len(rows)
        for r in (r for r in sorted(edits) if start <= r < start + n):
            name = names[r]
            if name:
                _copy_image(ds, r, edits[r], out / Path(name))
        written.append(f.name)
        start += n
    return written


def _parquet_images(ds, out: Path, edits, drop) -> list[str]:
    start = 0
    for f in ds.files:
        start += _rewrite_parquet(f, out / f.name, start, edits, drop, ds.text_column, (ds, ds.image_column))
    return [f.name for f in ds.files]


def _rewrite_parquet(src: Path, dest: Path, start: int, edits, drop, text_column: str, images) -> int:
    """Rewrite one parquet file (rows ``start ..`` of the dataset); returns its number of rows.
    ``images``: ``(dataset, image column)`` when the file holds the image bytes."""
    pa = require("pyarrow", "scale", "writing parquet datasets")
    pq = require("pyarrow.parquet", "scale", "writing parquet datasets")
    table = pq.read_table(src)
    keep = [i for i in range(table.num_rows) if start + i in edits]
    table = table.take(pa.array(keep, pa.int64())).drop_columns([c for c in drop if c in table.column_names])
    data = table.to_pydict()
    for j, i in enumerate(keep):
        edit = edits[start + i]
        for key in CAPTION_COLUMNS:
            if key in data and (key == text_column or isinstance(data[key][j], str)):
                data[key][j] = edit.text
        if images is not None and edit.image is not None:
            ds, column = images
            value = edit.image.read_bytes()
            old = data[column][j]
            data[column][j] = {**old, "bytes": value} if isinstance(old, dict) else value
    pq.write_table(pa.Table.from_pydict(data, schema=table.schema), dest)
    return pq.ParquetFile(src).metadata.num_rows


def _webdataset(ds, out: Path, edits, drop) -> list[str]:
    from .webdataset import TAR_ERRORS, _read_shard

    start = 0
    for shard in ds.shards:
        samples = _read_shard(shard, Counter())
        row_of = {key: start + i for i, key in enumerate(samples)}
        with tarfile.open(shard, "r:*") as src, tarfile.open(out / shard.name, "w") as dst:
            for info in src:
                if not info.isfile():
                    continue
                base = info.name.rsplit("/", 1)[-1]
                key = info.name[: len(info.name) - len(base)] + base.split(".", 1)[0]
                row = row_of.get(key)
                if row is None or row not in edits:
                    continue
                ext = base.split(".", 1)[1].lower() if "." in base else ""
                image = samples[key].get("image")
                if image is not None and info.name == image.name:
                    data = _image_bytes(ds, row, edits[row])
                elif ext == "txt":
                    data = edits[row].text.encode("utf-8")
                elif ext == "json":
                    try:
                        obj = json.loads(src.extractfile(info).read())
                    except (ValueError, *TAR_ERRORS):
                        obj = None
                    data = (json.dumps(edit_fields(obj, edits[row].text, drop), ensure_ascii=False).encode("utf-8")
                            if isinstance(obj, dict) else src.extractfile(info).read())
                else:
                    data = src.extractfile(info).read()
                if data is None:
                    continue
                new = tarfile.TarInfo(info.name)
                new.size, new.mtime, new.mode = len(data), info.mtime, info.mode
                dst.addfile(new, io.BytesIO(data))
        start += len(samples)
    return [s.name for s in ds.shards]
