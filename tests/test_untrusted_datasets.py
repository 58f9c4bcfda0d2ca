"""Datasets are untrusted input (DESIGN.md): records that point outside the dataset folder are
refused before their image is read, incomplete input is an error instead of a partial success, and
captions that are not text are counted. Sentinel images outside the dataset must never be decoded."""

from __future__ import annotations

import csv
import io
import json
import os
import tarfile

import numpy as np
import pytest
from PIL import Image

from sdguard.core.errors import InputError
from sdguard.data.datasets import base as dataset_base
from sdguard.data.datasets import open_dataset

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
pytest.importorskip("faiss")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SDGUARD_CACHE", str(tmp_path / "sdguard-cache"))


@pytest.fixture
def decoded(monkeypatch):
    """Every path the image decoder is asked to open (bytes are recorded as '<bytes>')."""
    seen: list[str] = []
    real = dataset_base.decode_image

    def recording(data, max_side=None):
        seen.append(os.path.realpath(data) if isinstance(data, (str, os.PathLike)) else "<bytes>")
        return real(data, max_side)

    monkeypatch.setattr(dataset_base, "decode_image", recording)
    return seen


def _png(seed: int, size: int = 16) -> bytes:
    img = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def _folder(tmp_path, n: int = 6, extra: list[dict] | None = None):
    """An imagefolder at tmp_path/a/ds with n images, extra records appended; a sentinel image
    at tmp_path/x.png (what ``../../x.png`` reaches)."""
    root = tmp_path / "a" / "ds"
    (root / "images").mkdir(parents=True)
    records = []
    for i in range(n):
        (root / "images" / f"{i}.png").write_bytes(_png(i))
        records.append({"file_name": f"images/{i}.png", "text": f"a photo number {i}"})
    records += extra or []
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    sentinel = tmp_path / "x.png"
    sentinel.write_bytes(_png(999))
    return root, sentinel


def _read_inside(decoded, root) -> bool:
    real = os.path.realpath(root) + os.sep
    return all(p == "<bytes>" or p.startswith(real) for p in decoded)


def _no_output(tmp_path, out):
    assert not out.exists() and not (out.parent / f".{out.name}.partial").exists()


# ------------------------------------------------------------------------------------------
# 1. paths stay inside the dataset folder
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../../x.png", "images/../../../x.png", "ABSOLUTE"])
def test_a_record_outside_the_folder_is_refused_by_the_cli(tmp_path, run_cli, decoded, name):
    name = str(tmp_path / "x.png") if name == "ABSOLUTE" else name
    root, sentinel = _folder(tmp_path, n=2, extra=[{"file_name": name, "text": "a photo"}])
    out = tmp_path / "out"
    code, _, err = run_cli("audit", "data", root, "--out", out)
    assert code == 2
    assert err.strip() == (f"error: DATASET {str(root)!r}: record 3 (file_name {name!r}) points outside the "
                           "dataset folder.")
    assert decoded == []  # refused when opened: nothing was read
    _no_output(tmp_path, out)


def test_a_symlinked_image_or_folder_pointing_out_is_never_read(tmp_path, run_cli, decoded):
    root, sentinel = _folder(tmp_path, n=3)
    os.symlink(sentinel, root / "images" / "link.png")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "y.png").write_bytes(_png(998))
    os.symlink(tmp_path / "elsewhere", root / "linked")
    for k, name in enumerate(["images/link.png", "linked/y.png"]):
        meta = root / "metadata.jsonl"
        lines = meta.read_text().splitlines()[:3] + [json.dumps({"file_name": name, "text": "a photo"})]
        meta.write_text("\n".join(lines) + "\n")
        out = tmp_path / f"out{k}"
        code, _, err = run_cli("audit", "data", root, "--out", out)
        assert code == 2, err
        assert f"record 4 (file_name {name!r}) points outside the dataset folder." in err
        _no_output(tmp_path, out)
    assert decoded and _read_inside(decoded, root)  # the images inside were read, nothing outside


def test_symlinks_inside_the_folder_are_fine_and_allow_symlinks_reaches_out(tmp_path, run_cli, decoded):
    root, sentinel = _folder(tmp_path, n=4, extra=[{"file_name": "alias.png", "text": "a photo alias"},
                                                   {"file_name": "sub/2.png", "text": "a photo via a folder"}])
    os.symlink("images/0.png", root / "alias.png")
    os.symlink("images", root / "sub")
    code, _, err = run_cli("audit", "data", root, "--out", tmp_path / "ok")
    assert code == 0, err
    res = json.loads((tmp_path / "ok" / "report.json").read_text())["results"]
    assert res["images"]["embedded"] == 6 and res["images"]["missing"] == res["images"]["unreadable"] == 0
    assert _read_inside(decoded, root)
    # the library option lets a symlink out through (..-paths stay refused)
    os.symlink(sentinel, root / "images" / "out.png")
    (root / "metadata.jsonl").write_text(json.dumps({"file_name": "images/out.png", "text": "t"}) + "\n")
    with pytest.raises(InputError, match="points outside"):
        list(open_dataset(root).images([0]))
    assert _read_inside(decoded, root)
    [item] = open_dataset(root, allow_symlinks=True).images([0])
    assert item.image is not None and os.path.realpath(sentinel) in decoded
    (root / "metadata.jsonl").write_text(json.dumps({"file_name": "../../x.png", "text": "t"}) + "\n")
    with pytest.raises(InputError, match="points outside"):
        open_dataset(root, allow_symlinks=True)


def test_caption_tables_and_shards_stay_inside_too(tmp_path, decoded):
    root, sentinel = _folder(tmp_path, n=1)
    table = root / "captions.csv"
    with open(table, "w", newline="") as fh:
        csv.writer(fh).writerows([["image_path", "caption"], ["images/0.png", "ok"], ["../../x.png", "bad"]])
    with pytest.raises(InputError) as err:
        open_dataset(table)
    assert str(err.value) == (f"DATASET {str(table)!r}: record 2 (image_path '../../x.png') points outside the "
                              "dataset folder.")
    pq.write_table(pa.table({"file_name": ["images/0.png", str(sentinel)], "text": ["ok", "bad"]}),
                   root / "paths.parquet")
    ds = open_dataset(root / "paths.parquet")
    with pytest.raises(InputError, match=r"record 2 \(file_name '/.*x\.png'\) points outside"):
        ds.entries()
    with pytest.raises(InputError, match="points outside"):
        list(ds.images([1]))
    # a shard of a dataset folder that is a symlink out of it
    outside_tar = tmp_path / "outside.tar"
    _tar(outside_tar, 2)
    (tmp_path / "wds").mkdir()
    os.symlink(outside_tar, tmp_path / "wds" / "00000.tar")
    with pytest.raises(InputError, match="'00000.tar' points outside the dataset folder"):
        open_dataset(tmp_path / "wds")
    assert len(open_dataset(tmp_path / "wds", allow_symlinks=True)) == 2
    assert _read_inside(decoded, root)


# ------------------------------------------------------------------------------------------
# 2. incomplete input
# ------------------------------------------------------------------------------------------


def _tar(path, n: int) -> bytes:
    with tarfile.open(path, "w") as tar:
        for i in range(n):
            for name, data in ((f"{i:06d}.png", _png(i)), (f"{i:06d}.txt", f"a photo number {i}".encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path.read_bytes()


def test_a_truncated_shard_is_refused_naming_it(tmp_path, run_cli):
    whole = _tar(tmp_path / "whole.tar", 100)
    assert len(open_dataset(tmp_path / "whole.tar")) == 100
    with tarfile.open(tmp_path / "whole.tar") as tar:
        header, end = tar.getmembers()[101].offset, (tar.getmembers(), tar.offset)[1]
    shard = tmp_path / "00000.tar"
    # cut at half its bytes (mid-member), inside a member header and right before one (where
    # tarfile stops without a word)
    for cut in (len(whole) // 2, header + 100, header):
        shard.write_bytes(whole[:cut])
        with pytest.raises(InputError) as err:
            open_dataset(shard)
        msg = str(err.value)
        assert msg.startswith(f"DATASET {str(shard)!r} is truncated or damaged at member '0000"), msg
        assert msg.endswith("; re-download it or remove it from the dataset.") and "\n" not in msg
    shard.write_bytes(whole[: len(whole) // 2])
    code, _, err = run_cli("audit", "data", shard, "--out", tmp_path / "out")
    assert code == 2 and "00000.tar" in err and "truncated" in err
    _no_output(tmp_path, tmp_path / "out")
    # cut inside the end-of-archive marker: nothing is lost, every sample reads
    shard.write_bytes(whole[: end + 600])
    assert len(open_dataset(shard)) == 100


def test_a_csv_quote_never_closed_is_refused_with_its_line(tmp_path, run_cli):
    root, _ = _folder(tmp_path, n=4)
    table = root / "captions.csv"
    lines = ["file_name,text"] + [f"images/{i % 4}.png,a photo {i}" for i in range(100)]
    lines[3] = 'images/2.png,"a caption whose quote never closes'
    table.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError) as err:
        open_dataset(table)
    assert str(err.value) == (f"DATASET {str(table)!r} line 4 opens a quoted field that is never closed (the "
                              "rest of the file would read as one field).")
    code, _, err_text = run_cli("audit", "data", table, "--out", tmp_path / "out")
    assert code == 2 and "line 4" in err_text and "captions.csv" in err_text
    # text after a closing quote is refused too, and a quoted caption with a newline is fine
    table.write_text('file_name,text\nimages/0.png,"quoted" tail\n')
    with pytest.raises(InputError, match="is not valid CSV at line 2"):
        open_dataset(table)
    table.write_text('file_name,text\nimages/0.png,"two\nlines"\nimages/1.png,ok\n')
    assert open_dataset(table).entries().texts == ["two\nlines", "ok"]


def test_invalid_utf8_names_the_file_and_line(tmp_path):
    root, _ = _folder(tmp_path, n=5)
    meta = root / "metadata.jsonl"
    lines = meta.read_bytes().split(b"\n")
    lines[3] = b'{"file_name": "images/3.png", "text": "caf\xe9"}'
    meta.write_bytes(b"\n".join(lines))
    with pytest.raises(InputError) as err:
        open_dataset(root)
    assert str(err.value) == f"DATASET {str(meta)!r} line 4 is not valid UTF-8 text."
    meta.unlink()
    (root / "metadata.csv").write_bytes(b"file_name,text\nimages/0.png,ok\nimages/1.png,ok\nimages/2.png,\xff\xfe\n")
    with pytest.raises(InputError) as err:
        open_dataset(root)
    assert str(err.value) == f"DATASET {str(root / 'metadata.csv')!r} line 4 is not valid UTF-8 text."


def test_a_dataset_whose_every_image_is_unreadable_is_an_error(tmp_path, run_cli):
    root, _ = _folder(tmp_path, n=5, extra=[{"file_name": "images/gone.png", "text": "a photo gone"}])
    for i in range(5):
        (root / "images" / f"{i}.png").write_bytes(b"not a png")
    code, _, err = run_cli("audit", "data", root, "--out", tmp_path / "out")
    assert code == 2
    assert err.startswith(f"error: DATASET {str(root)!r}: none of the 6 images to embed could be read "
                          "(1 missing, 5 unreadable; the first, 'images/0.png'"), err
    assert err.count("\n") == 1
    _no_output(tmp_path, tmp_path / "out")
    # a keyword that selects nothing is still a valid, empty report
    code, _, err = run_cli("audit", "data", root, "--keyword", "zebra", "--out", tmp_path / "empty")
    assert code == 0, err
    code, _, err = run_cli("audit", "generations", "builtin:tiny-random", "--dataset", root, "--n", "2",
                           "--steps", "2", "--out", tmp_path / "gen")
    assert code == 2 and "none of the 6 images to embed could be read" in err
    _no_output(tmp_path, tmp_path / "gen")


def test_captions_that_are_not_text_are_counted(tmp_path, run_cli):
    odd = [5, None, ["a", "list"], {"a": "dict"}, True]
    extra = [{"file_name": f"images/{i}.png", "text": v} for i, v in enumerate(odd)]
    root, _ = _folder(tmp_path, n=7)
    records = [json.loads(line) for line in (root / "metadata.jsonl").read_text().splitlines()]
    records[: len(odd)] = extra
    records[5] = {"file_name": "images/5.png"}  # no caption field at all
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    ds = open_dataset(root)
    assert ds.entries().texts[:6] == [""] * 6 and ds.entries().texts[6] == "a photo number 6"
    assert ds.describe()["issues"] == {"captions_missing": 1, "captions_not_text": 5}
    code, out, err = run_cli("audit", "data", root, "--out", tmp_path / "out")
    assert code == 0, err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["results"]["dataset"]["issues"] == {"captions_missing": 1, "captions_not_text": 5}
    line = "5 caption(s) not text (a number, null, list or object)"
    assert line in " ".join(out.split()) and line in (tmp_path / "out" / "report.html").read_text(), out
    # webdataset: a JSON caption that is a number, a .txt that is not UTF-8, a sample without caption
    with tarfile.open(tmp_path / "s.tar", "w") as tar:
        for name, data in (("0.png", _png(0)), ("0.json", b'{"caption": 7}'), ("1.png", _png(1)),
                           ("1.txt", b"caf\xe9"), ("2.png", _png(2))):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    wds = open_dataset(tmp_path / "s.tar")
    assert wds.describe()["issues"] == {"captions_missing": 1, "captions_not_text": 1, "captions_not_utf8": 1}
    # parquet: null captions
    pq.write_table(pa.table({"key": ["a", "b", "c"], "caption": ["x", None, None], "jpg": [_png(0)] * 3}),
                   tmp_path / "p.parquet")
    assert open_dataset(tmp_path / "p.parquet").describe()["issues"] == {"captions_not_text": 2}
