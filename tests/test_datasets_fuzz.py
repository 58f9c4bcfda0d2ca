"""Fuzzing the dataset readers: whatever bytes a dataset holds, opening it and reading its entries and
images either works or raises InputError (one sentence, exit 2), never another exception."""

from __future__ import annotations

import io
import json
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdguard.core.errors import InputError
from sdguard.data.captions import KeywordFilter
from sdguard.data.datasets import open_dataset

hypothesis = pytest.importorskip("hypothesis")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)


def _png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((4, 4, 3), seed % 256, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _exercise(path: Path) -> None:
    """Open ``path`` and read everything a command would; only InputError may come out."""
    try:
        ds = open_dataset(path)
        entries = ds.entries()
        assert len(entries) <= len(ds)
        for item in ds.images(entries.rows[:40], max_side=64):
            assert item.image is not None or item.error in ("missing", "unreadable")
        ds.entries(KeywordFilter(("a",)))
        ds.describe()
        ds.fingerprint()
    except InputError as exc:
        assert str(exc).endswith(".") and "\n" not in str(exc).strip(), str(exc)


def _folder(files: dict[str, bytes]) -> None:
    """A dataset folder holding ``files`` and one good image, exercised and removed."""
    with tempfile.TemporaryDirectory(prefix="sdguard-fuzz-") as tmp:
        root = Path(tmp)
        (root / "images").mkdir()
        (root / "images" / "0.png").write_bytes(_png(0))
        for name, data in files.items():
            (root / name).write_bytes(data)
        _exercise(root)


def _mutate(data: bytes, cut: float, flips: list[tuple[float, int]]) -> bytes:
    out = bytearray(data[: max(1, int(len(data) * cut))])
    for where, value in flips:
        out[int(where * (len(out) - 1))] = value
    return bytes(out)


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                      max_size=3), max_leaves=8)
names = st.sampled_from(["images/0.png", "../x.png", "/etc/hostname", "images/../images/0.png", "", ".", "images",
                         "a\x00b.png", "metadata.jsonl", "ä/ö.png", "x" * 300]) | st.text(max_size=30)
records = st.fixed_dictionaries({}, optional={"file_name": names | json_values, "text": json_values,
                                              "caption": json_values})
flips = st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), max_size=6)


@FUZZ
@given(st.one_of(st.binary(max_size=600),
                 st.lists(records.map(lambda r: json.dumps(r).encode()) | st.binary(max_size=40), max_size=8)
                 .map(b"\n".join)))
def test_metadata_jsonl(data):
    _folder({"metadata.jsonl": data})


@FUZZ
@given(st.text(max_size=400), st.sampled_from(["metadata.csv", "captions.csv", "captions.tsv"]),
       st.sampled_from(["", "file_name,text\n", "image_path\tcaption\n", 'file_name,text\nimages/0.png,"']))
def test_csv_tables(text, name, header):
    _folder({name: (header + text).encode("utf-8", "surrogatepass")})


def _valid_tar(n: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for i in range(n):
            for member, data in ((f"{i:04d}.png", _png(i)), (f"{i:04d}.txt", b"a caption"),
                                 (f"{i:04d}.json", b'{"caption": 1}')):
                info = tarfile.TarInfo(member)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


TAR = _valid_tar(6)


@FUZZ
@given(st.one_of(st.binary(max_size=2000),
                 st.builds(_mutate, st.just(TAR), st.floats(0, 1), flips)))
def test_webdataset_shards(data):
    _folder({"00000.tar": data})


def _valid_parquet(images: bool) -> bytes:
    columns = {"key": ["a", "b", None], "caption": ["a photo", None, "x"]}
    columns.update({"jpg": [_png(1), b"junk", None]} if images else {"file_name": ["images/0.png", "images/gone.png", None]})
    buf = io.BytesIO()
    pq.write_table(pa.table(columns), buf, row_group_size=2)
    return buf.getvalue()


PARQUETS = [_valid_parquet(True), _valid_parquet(False)]


@FUZZ
@given(st.one_of(st.binary(max_size=2000),
                 st.builds(_mutate, st.sampled_from(PARQUETS), st.floats(0.5, 1), flips)))
def test_parquet_files(data):
    _folder({"data.parquet": data})


def test_a_library_message_with_newlines_stays_one_sentence():
    """pyarrow's messages end in a newline ("Couldn't deserialize thrift: ... Invalid data\n"); the
    fuzzer found one inside a dataset error (a truncated parquet file)."""
    from sdguard.core.errors import InputError

    text = str(InputError.bad("DATASET", "/d", "is not a readable parquet file (Invalid data\n); try again"))
    assert "\n" not in text and text == "DATASET '/d' is not a readable parquet file (Invalid data ); try again."


def test_library_messages_become_one_line():
    """pyarrow's "Couldn't deserialize thrift: ... Invalid data\\n" (found by the parquet fuzzer)."""
    from sdguard.core.errors import reason

    assert reason(OSError("Couldn't deserialize thrift: TProtocolException: Invalid data\n")) == \
        "Couldn't deserialize thrift: TProtocolException: Invalid data"
    assert reason(ValueError("\n\n  second line  \nthird")) == "second line"
    assert reason(KeyError()) == "KeyError" and len(reason(ValueError("x" * 500))) == 200
