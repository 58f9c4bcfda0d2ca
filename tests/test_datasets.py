"""Dataset readers (imagefolder, webdataset, parquet with image bytes, caption tables) and the
caption filter (whole words, AND/OR, long captions, DuckDB = Python)."""

from __future__ import annotations

import csv
import io
import json
import tarfile

import numpy as np
import pytest
from PIL import Image

from sdguard.core.errors import InputError
from sdguard.data.captions import (
    MAX_TOKENS,
    STOP_WORDS,
    WORD_CHARS,
    KeywordFilter,
    caption_vocabulary,
    count_tokens,
    estimate_tokens,
    filter_captions,
    filter_parquet,
    frequent_words,
    normalize_text,
    tokenizer_pieces,
)
from sdguard.data.datasets import FORMATS, SkipCounter, detect_format, open_dataset

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

CAPTIONS = [
    "The Starry Night by Van Gogh",
    "van gogh, sunflowers in a vase",
    "a nightly view of the city",
    "VAN-GOGH self portrait",
    "vangogh fan art",
    "a red circle on the left",
    "Café au lait near a van",
    "starry sky over the sea",
]


def _image(seed: int, size: int = 16) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def _png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def imagefolder(tmp_path):
    root = tmp_path / "folder"
    (root / "images").mkdir(parents=True)
    lines = []
    for i, text in enumerate(CAPTIONS):
        name = f"images/{i:03d}.png"
        Image.fromarray(_image(i)).save(root / name)
        lines.append(json.dumps({"file_name": name, "text": text}))
    (root / "images" / "003.png").write_bytes(b"not a png at all")  # corrupt
    lines.append(json.dumps({"file_name": "images/missing.png", "text": "van gogh lost painting"}))
    (root / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return root


def _count(ds, rows):
    skipped = SkipCounter()
    images = []
    for item in ds.images(rows):
        if item.image is None:
            skipped.add(str(item.row), item.error, item.detail)
        else:
            images.append(item.image)
    return images, skipped


def test_imagefolder_entries_images_and_skips(imagefolder):
    ds = open_dataset(imagefolder)
    assert ds.format == "imagefolder" and len(ds) == len(CAPTIONS) + 1
    entries = ds.entries()
    assert entries.file_names[0] == "images/000.png" and entries.texts[0] == CAPTIONS[0]
    images, skipped = _count(ds, entries.rows)
    assert len(images) == len(CAPTIONS) - 1
    assert (skipped.missing, skipped.unreadable) == (1, 1)
    assert np.array_equal(images[0], _image(0))
    # the metadata file itself is accepted as the dataset path
    assert len(open_dataset(imagefolder / "metadata.jsonl")) == len(ds)


def test_keyword_filter_whole_words_and_or(imagefolder):
    ds = open_dataset(imagefolder)
    gogh = ds.entries(KeywordFilter(("van gogh",)))
    assert gogh.texts == [CAPTIONS[0], CAPTIONS[1], CAPTIONS[3], "van gogh lost painting"]
    both = ds.entries(KeywordFilter(("van gogh", "starry")))
    assert both.texts == [CAPTIONS[0]]
    either = ds.entries(KeywordFilter(("night", "starry"), any=True))
    assert either.texts == [CAPTIONS[0], CAPTIONS[7]]  # "nightly" is not "night"
    assert ds.entries(KeywordFilter(("CAFÉ",))).texts == [CAPTIONS[6]]
    assert len(ds.entries(KeywordFilter(("zebra",)))) == 0
    with pytest.raises(InputError):
        KeywordFilter(("!!",))


def test_duckdb_filter_equals_python(tmp_path):
    texts = CAPTIONS + ["", "Van\tGogh!", "gogh van", "über Straße", "x_van gogh_y", "1999 van gogh 2000", None]
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"caption": texts, "k": list(range(len(texts)))}), path)
    for keywords, any_ in [(("van gogh",), False), (("van", "night"), True), (("starry", "sky"), False),
                           (("straße",), False), (("1999",), False), (("gogh",), False)]:
        flt = KeywordFilter(keywords, any_)
        expected = [i for i, t in enumerate(texts) if flt.matches(t)]
        got = filter_parquet(path, flt, text_column="caption", columns=["k"])
        assert got.column("row").to_pylist() == expected, keywords
        assert got.column("k").to_pylist() == expected


def test_duckdb_filter_agrees_with_the_python_filter_at_scale(tmp_path):
    # speed is measured in benchmarks/, not asserted here (a shared machine's clock is no test)
    rng = np.random.default_rng(0)
    vocab = np.array("a red blue photo of the van gogh starry night sunflower vase dog on table".split())
    n = 200_000
    caps = [" ".join(row) for row in vocab[rng.integers(0, len(vocab), (n, 10))]]
    path = tmp_path / "big.parquet"
    pq.write_table(pa.table({"TEXT": caps}), path)
    got = filter_parquet(path, ["van gogh", "starry night"], text_column="TEXT").column("row").to_pylist()
    flt = KeywordFilter(("van gogh", "starry night"))
    sample = rng.choice(n, 20_000, replace=False)
    assert sorted(set(got) & set(sample.tolist())) == sorted(int(i) for i in sample if flt.matches(caps[i]))
    assert got and all(flt.matches(caps[i]) for i in got[:200])


def test_long_captions_dropped_and_counted():
    long = " ".join(["word"] * 80)
    texts = ["van gogh short", f"van gogh {long}", "other"]
    res = filter_captions(texts, ["van gogh"])
    assert res.matched == 2 and res.dropped_long == 1 and res.kept == [0]
    assert filter_captions(texts, ["van gogh"], max_tokens=None).kept == [0, 1]
    # the estimate counts words and punctuation plus start/end: a lower bound of CLIP's count
    assert estimate_tokens("a, b!") == 6
    assert estimate_tokens(" ".join(["w"] * (MAX_TOKENS - 2))) == MAX_TOKENS


def test_exact_token_count_with_a_tokenizer():
    from sdguard.models.components import build_tokenizer

    tok = build_tokenizer(["van", "gogh", "starry", "night"], max_length=MAX_TOKENS)
    texts = ["van gogh starry night", "van zzz"]
    exact = count_tokens(texts, tok)
    assert exact[0] == 6  # four words + start + end
    assert exact[1] > estimate_tokens(texts[1])  # an unknown word is spelled in characters
    assert all(e >= g for e, g in zip(exact, count_tokens(texts)))


def test_frequent_words_remove_stop_words():
    texts = ["the starry night by van gogh", "starry night, van gogh", "a van in the night"]
    top = frequent_words(texts, 3)
    assert [w["word"] for w in top] == ["night", "van", "gogh"]
    assert top[0]["count"] == 3 and top[0]["share"] == 1.0
    assert not {w["word"] for w in frequent_words(texts, 20)} & STOP_WORDS
    assert normalize_text("  Van-GOGH!! ") == "van gogh"


def test_caption_vocabulary_holds_the_words_the_tokenizer_looks_up():
    from sdguard.models.components import build_tokenizer

    caption = "Aldora's crimson Lighthouse, 2 towers!"
    texts = [caption, "the café by the sea", "the sea at night", None, "the sea"]
    vocabulary = caption_vocabulary(texts)
    assert vocabulary == sorted(vocabulary) and set("".join(vocabulary)) <= set(WORD_CHARS)
    # lower-cased, split as CLIP's tokenizer splits; words with other letters and punctuation left out
    assert {"aldora", "'s", "lighthouse", "2", "towers", "sea"} <= set(vocabulary)
    assert not {"café", "caf", ",", "!", "aldora's"} & set(vocabulary)
    tokenizer = build_tokenizer(vocabulary)  # every word is in the tokenizer's characters
    words_seen = [t for t in tokenizer.tokenize(caption) if t.endswith("</w>")]
    assert words_seen == [w + "</w>" for w in tokenizer_pieces(caption) if w in vocabulary]
    assert len(words_seen) == 6  # each caption word one token
    # the words found in the most captions first ("the" and "sea": 3 each), then alphabetically
    assert caption_vocabulary(texts, max_words=3) == ["'s", "sea", "the"]


def test_webdataset_shards(tmp_path):
    shard_dir = tmp_path / "wds"
    shard_dir.mkdir()
    for s in range(2):
        with tarfile.open(shard_dir / f"{s:05d}.tar", "w") as tar:
            for k in range(3):
                key = f"{s:05d}{k:04d}"
                members = {f"{key}.png": _png(_image(10 * s + k)), f"{key}.txt": f"van gogh shard {s} item {k}".encode()}
                if s == 1 and k == 2:
                    members = {f"{key}.jpg": b"garbage", f"{key}.json": json.dumps({"caption": "broken van gogh"}).encode()}
                for name, data in members.items():
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    ds = open_dataset(shard_dir)
    assert ds.format == "webdataset" and len(ds) == 6
    entries = ds.entries(KeywordFilter(("van gogh",)))
    assert len(entries) == 6 and entries.texts[-1] == "broken van gogh"
    assert entries.file_names[0] == "00000.tar/000000000.png"
    images, skipped = _count(ds, entries.rows)
    assert len(images) == 5 and skipped.unreadable == 1
    assert np.array_equal(images[4], _image(11))
    assert len(open_dataset(shard_dir / "00000.tar")) == 3


def test_parquet_with_image_bytes(tmp_path):
    rows = [{"key": f"k{i}", "caption": CAPTIONS[i], "jpg": _png(_image(i))} for i in range(len(CAPTIONS))]
    rows[2]["jpg"] = None  # img2dataset keeps failed downloads with no bytes
    rows[5]["jpg"] = b"\x00\x01corrupt"
    folder = tmp_path / "pq"
    folder.mkdir()
    # two files, several row groups
    pq.write_table(pa.Table.from_pylist(rows[:5]), folder / "00000.parquet", row_group_size=2)
    pq.write_table(pa.Table.from_pylist(rows[5:]), folder / "00001.parquet", row_group_size=2)
    assert detect_format(folder) == "parquet-images"
    ds = open_dataset(folder)
    assert len(ds) == len(CAPTIONS)
    entries = ds.entries(KeywordFilter(("van gogh", "starry"), any=True))
    assert entries.file_names == ["k0", "k1", "k3", "k7"]
    every = ds.entries()
    images, skipped = _count(ds, every.rows)
    assert (skipped.missing, skipped.unreadable) == (1, 1)
    loaded = ds.load([7, 0, 3])
    assert np.array_equal(loaded[0], _image(7)) and np.array_equal(loaded[1], _image(0))
    # a metadata column (what `train --dp --group-column` groups by), across files and row groups
    assert ds.column("key", [7, 0, 3]) == ["k7", "k0", "k3"]
    with pytest.raises(InputError, match="--group-column 'user' is not a column"):
        ds.column("user", [0])


def test_caption_tables_csv_and_parquet(tmp_path):
    (tmp_path / "imgs").mkdir()
    for i in range(4):
        Image.fromarray(_image(i)).save(tmp_path / "imgs" / f"{i}.png")
    with open(tmp_path / "captions.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image_path", "caption"])
        for i in range(4):
            w.writerow([f"imgs/{i}.png", CAPTIONS[i]])
        w.writerow(["imgs/none.png", "van gogh nowhere"])
    ds = open_dataset(tmp_path / "captions.csv")
    assert ds.format == "captions" and len(ds) == 5
    entries = ds.entries(KeywordFilter(("van gogh",)))
    images, skipped = _count(ds, entries.rows)
    assert len(images) == 3 and skipped.missing == 1
    pq.write_table(pa.table({"file_name": [f"imgs/{i}.png" for i in range(4)], "text": CAPTIONS[:4]}),
                   tmp_path / "captions.parquet")
    ds2 = open_dataset(tmp_path / "captions.parquet")
    assert ds2.format == "captions"
    e2 = ds2.entries(KeywordFilter(("van gogh",)))
    assert e2.file_names == ["imgs/0.png", "imgs/1.png", "imgs/3.png"]
    assert np.array_equal(ds2.load(e2.rows)[2], _image(3))


def test_unknown_format_lists_the_formats(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError) as err:
        open_dataset(tmp_path)
    for name in FORMATS:
        assert name in str(err.value)
    with pytest.raises(InputError, match="known format"):
        open_dataset(tmp_path / "notes.txt")
    with pytest.raises(InputError, match="does not exist"):
        open_dataset(tmp_path / "nothing-here")
    pq.write_table(pa.table({"TEXT": ["a"], "URL": ["http://x"]}), tmp_path / "meta.parquet")
    with pytest.raises(InputError, match="image"):
        open_dataset(tmp_path / "meta.parquet")


def test_fingerprint_changes_with_metadata(imagefolder):
    first = open_dataset(imagefolder).fingerprint()
    assert open_dataset(imagefolder).fingerprint() == first
    meta = imagefolder / "metadata.jsonl"
    meta.write_text(meta.read_text() + json.dumps({"file_name": "images/000.png", "text": "again"}) + "\n")
    assert open_dataset(imagefolder).fingerprint() != first
