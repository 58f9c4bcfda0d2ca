"""``sdguard desensitize`` end to end: every dataset format in and out, the manifest, resume, bad input."""

import csv
import io
import json
import shutil
import tarfile

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

pytest.importorskip("presidio_analyzer")
skimage_data = pytest.importorskip("skimage.data")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from sdguard.core.errors import InputError  # noqa: E402
from sdguard.data.datasets import open_dataset  # noqa: E402
from sdguard.harden.desensitize import desensitize  # noqa: E402
from sdguard.harden.desensitize import run as run_module  # noqa: E402
from sdguard.harden.desensitize.faces import create_face_detector  # noqa: E402
from sdguard.harden.desensitize.metadata import metadata_labels  # noqa: E402

EMAIL = "jane.doe@example.com"
CARD = "4111 1111 1111 1111"


def _exif_gps() -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "Canon"
    exif[0x8825] = {1: "N", 2: (52.0, 31.0, 12.0), 3: "E", 4: (13.0, 24.0, 0.0)}
    return exif.tobytes()


def _encode(image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, fmt, **options)
    return buf.getvalue()


def _records() -> list[tuple[str, str, bytes | None]]:
    """(name, caption, image bytes): a face photo with GPS EXIF, a PNG with a prompt chunk, PII
    captions, three copies of one image, a corrupt image."""
    rng = np.random.default_rng(0)
    face = np.asarray(Image.fromarray(skimage_data.astronaut()).resize((256, 256)))
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "masterpiece, a photo of jane doe, Steps: 20")
    copy = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    out = [("astronaut.jpg", "an astronaut portrait, contact " + EMAIL, _encode(face, "JPEG", quality=92, exif=_exif_gps())),
           ("prompt.png", "a generated landscape", _encode(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8), "PNG",
                                                           pnginfo=info)),
           ("card.png", f"gift card {CARD} on a table", _encode(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8), "PNG")),
           ("broken.png", "a broken file", b"\x89PNG\r\n\x1a\nnot really")]
    for i in range(3):
        out.append((f"copy{i}.png", "van gogh starry night", _encode(copy, "PNG")))
    for i in range(3):
        out.append((f"plain{i}.png", f"a plain scene number {i}",
                    _encode(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8), "PNG")))
    return out


def write_imagefolder(root, records):
    (root / "images").mkdir(parents=True)
    rows = []
    for name, text, data in records:
        (root / "images" / name).write_bytes(data)
        rows.append({"file_name": f"images/{name}", "text": text, "exif": "{\"GPS\": 1}", "width": 32})
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def write_webdataset(root, records):
    root.mkdir(parents=True)
    with tarfile.open(root / "00000.tar", "w") as tar:
        for i, (name, text, data) in enumerate(records):
            ext = name.rsplit(".", 1)[1]
            members = {f"{i:05d}.{ext}": data, f"{i:05d}.txt": text.encode(),
                       f"{i:05d}.json": json.dumps({"caption": text, "exif": "x", "key": f"{i:05d}"}).encode()}
            for member, payload in members.items():
                ti = tarfile.TarInfo(member)
                ti.size = len(payload)
                tar.addfile(ti, io.BytesIO(payload))
    return root


def write_parquet(root, records):
    root.mkdir(parents=True)
    rows = [{"key": f"{i:05d}", "caption": text, "jpg": data, "exif": "x"} for i, (_, text, data) in enumerate(records)]
    pq.write_table(pa.Table.from_pylist(rows[:5]), root / "00000.parquet")
    pq.write_table(pa.Table.from_pylist(rows[5:]), root / "00001.parquet")
    return root


def write_csv(root, records):
    (root / "imgs").mkdir(parents=True)
    with open(root / "captions.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image_path", "caption", "exif"])
        for name, text, data in records:
            (root / "imgs" / name).write_bytes(data)
            w.writerow([f"imgs/{name}", text, "x"])
    return root / "captions.csv"


WRITERS = {"imagefolder": write_imagefolder, "webdataset": write_webdataset, "parquet-images": write_parquet,
           "captions": write_csv}
OPTIONS = dict(dedup="keep-one", threshold=0.99, min_cluster_size=2)


@pytest.mark.parametrize("fmt", list(WRITERS))
def test_every_format_comes_out_clean_in_its_own_format(tmp_path, fmt):
    records = _records()
    src = WRITERS[fmt](tmp_path / "in", records)
    before = {p: p.read_bytes() for p in tmp_path.joinpath("in").rglob("*") if p.is_file()}
    report = desensitize(str(src), out=str(tmp_path / "out"), **OPTIONS)
    # the input is never modified
    assert {p: p.read_bytes() for p in tmp_path.joinpath("in").rglob("*") if p.is_file()} == before
    res = report.results
    assert res["records"] == {"in": 10, "out": 7, "left_out": {"near-duplicate": 2, "unreadable image": 1}}
    assert res["pii"]["findings"] == {"CREDIT_CARD": 1, "EMAIL_ADDRESS": 1}
    assert res["faces"]["images"] == 1
    assert {"exif-gps", "png-text:parameters"} <= set(res["metadata"]["removed"])
    out = open_dataset(tmp_path / "out" / "dataset")
    assert out.format == fmt and len(out) == 7
    texts = out.entries().texts
    assert "an astronaut portrait, contact <EMAIL_ADDRESS>" in texts and "gift card <CREDIT_CARD> on a table" in texts
    assert texts.count("van gogh starry night") == 1
    detector = create_face_detector("skimage-lbp")
    blobs = {row: data for row, data, _ in out.image_bytes(range(len(out)))}
    for row, data in blobs.items():
        assert metadata_labels(data) == [], row
    face_row = next(i for i, t in enumerate(texts) if t.startswith("an astronaut"))
    assert detector(np.asarray(Image.open(io.BytesIO(blobs[face_row])).convert("RGB"))) == []
    # no copy of the personal data or of the dropped metadata field survives anywhere in the output
    for p in (tmp_path / "out").rglob("*"):
        if p.is_file():
            data = p.read_bytes()
            assert EMAIL.encode() not in data and CARD.encode() not in data and b"Steps: 20" not in data, p
    if fmt != "parquet-images":
        unchanged = next(i for i, t in enumerate(texts) if t == "a plain scene number 0")
        original = next(d for n, t, d in records if t == "a plain scene number 0")
        assert blobs[unchanged] == original  # nothing to strip: the very same bytes


def test_manifest_says_what_changed_and_the_report_shows_it(tmp_path):
    src = write_imagefolder(tmp_path / "in", _records())
    desensitize(str(src), out=str(tmp_path / "out"), **OPTIONS)
    lines = [json.loads(x) for x in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()]
    by_name = {r["file_name"]: r for r in lines}
    assert len(lines) == 10
    astro = by_name["images/astronaut.jpg"]
    assert astro["kept"] and astro["image"] == "faces anonymized" and astro["faces"]
    assert astro["entities"] == [{"entity": "EMAIL_ADDRESS", "start": 31, "end": 51, "score": astro["entities"][0]["score"],
                                  "action": "replace"}]
    assert {"exif", "exif-gps"} <= set(astro["metadata_removed"])
    assert by_name["images/broken.png"]["reason"] == "unreadable image"
    dups = [r for r in lines if r.get("reason") == "near-duplicate"]
    assert sorted(r["file_name"] for r in dups) == ["images/copy1.png", "images/copy2.png"]
    assert all(r["duplicate_of_file"] == "images/copy0.png" for r in dups)
    rows = [json.loads(x) for x in (tmp_path / "out" / "dataset" / "metadata.jsonl").read_text().splitlines()]
    assert all("exif" not in r and r["width"] == 32 for r in rows)  # --drop-field exif, the rest kept
    html = (tmp_path / "out" / "report.html").read_text()
    for title in ("Personal data in captions", "Metadata removed", "Faces", "Near-duplicates left out",
                  "Records left out for their image"):
        assert title in html
    assert EMAIL not in html and EMAIL not in (tmp_path / "out" / "report.json").read_text()
    assert not (tmp_path / "out" / ".records").exists()


def test_drop_policy_and_diversified_duplicates(tmp_path):
    src = write_imagefolder(tmp_path / "in", _records())
    report = desensitize(str(src), out=str(tmp_path / "out"), pii=["replace", "CREDIT_CARD=drop"], dedup="cap:2",
                         diversify="number-add", threshold=0.99, min_cluster_size=2, face_action="off")
    texts = open_dataset(tmp_path / "out" / "dataset").entries().texts
    assert not any(t.startswith("gift card") for t in texts)
    assert report.results["records"]["left_out"] == {"near-duplicate": 1, "personal data (drop policy)": 1,
                                                     "unreadable image": 1}
    copies = [t for t in texts if "starry" in t]
    assert len(copies) == 2 and len(set(copies)) == 2 and all(len(t.split()) == 6 for t in copies)
    assert report.results["diversified"] == 2 and report.results["faces"]["images"] == 0


def test_an_interrupted_run_resumes_to_the_same_result(tmp_path, monkeypatch):
    src = write_imagefolder(tmp_path / "in", _records())
    desensitize(str(src), out=str(tmp_path / "whole"), **OPTIONS)
    real, calls = run_module._record, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 6:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(run_module, "_record", interrupted)
    with pytest.raises(KeyboardInterrupt):
        desensitize(str(src), out=str(tmp_path / "out"), **OPTIONS)
    assert not (tmp_path / "out").exists()
    with pytest.raises(InputError, match="--resume"):
        desensitize(str(src), out=str(tmp_path / "out"), **OPTIONS)
    monkeypatch.setattr(run_module, "_record", real)
    calls.clear()
    monkeypatch.setattr(run_module, "_record", lambda *a, **k: calls.append(1) or real(*a, **k))
    desensitize(str(src), out=str(tmp_path / "out"), resume=True, **OPTIONS)
    assert len(calls) == 5  # the five records done before were not redone
    whole, resumed = (tmp_path / "whole" / "manifest.jsonl"), (tmp_path / "out" / "manifest.jsonl")
    assert whole.read_text() == resumed.read_text()
    for p in (tmp_path / "whole" / "dataset").rglob("*"):
        if p.is_file():
            assert p.read_bytes() == (tmp_path / "out" / "dataset" / p.relative_to(tmp_path / "whole" / "dataset")).read_bytes()
    # another run's staging folder is refused
    shutil.rmtree(tmp_path / "out")


def test_clusters_from_an_audit_and_of_another_dataset(tmp_path, run_cli):
    src = write_imagefolder(tmp_path / "in", _records())
    code, _, err = run_cli("audit", "data", src, "--out", tmp_path / "audit", "--threshold", "0.99",
                           "--min-cluster-size", "2")
    assert code == 0, err
    report = desensitize(str(src), out=str(tmp_path / "out"), dedup="keep-one", dedup_from=str(tmp_path / "audit"))
    assert report.results["records"]["left_out"]["near-duplicate"] == 2
    other = write_imagefolder(tmp_path / "other", _records()[::-1])
    with pytest.raises(InputError, match="--dedup-from .* is of another dataset"):
        desensitize(str(other), out=str(tmp_path / "out2"), dedup="keep-one", dedup_from=str(tmp_path / "audit"))


@pytest.mark.parametrize("args, message", [
    (["--entity", "SSN"], "--entity 'SSN' is not a known entity type"),
    (["--pii", "scramble"], "--pii 'scramble' is not a policy"),
    (["--dedup", "keep-two"], "--dedup 'keep-two' is not a deduplication policy"),
    (["--face-detector", "yolo"], "--face-detector 'yolo' is not a known face detector"),
    (["--dedup-from", "x"], "--dedup-from 'x' is given without --dedup or --diversify"),
    (["--face-margin", "3"], "--face-margin"),
])
def test_bad_options_are_one_sentence_and_exit_2(tmp_path, run_cli, args, message):
    src = write_imagefolder(tmp_path / "in", _records()[:2])
    code, _, err = run_cli("desensitize", src, "--out", tmp_path / "out", *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_output_inside_the_input_and_a_missing_dataset(tmp_path, run_cli):
    src = write_imagefolder(tmp_path / "in", _records()[:2])
    code, _, err = run_cli("desensitize", src, "--out", src / "clean")
    assert code == 2 and "--out" in err and "DATASET" in err, err
    code, _, err = run_cli("desensitize", tmp_path / "nowhere", "--out", tmp_path / "out")
    assert code == 2 and "nowhere" in err, err
