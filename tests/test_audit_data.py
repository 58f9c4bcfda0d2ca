"""`sdguard audit data`: clustering (exact vs IVF, threshold suggestion, components), the command
function and CLI with its bad inputs, and the Must-show on the synthetic world."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from sdguard.audit.clustering import (
    EdgeSet,
    _spanning,
    cluster_embeddings,
    rank_components,
    suggest_threshold,
)
from sdguard.audit.dataset_replication import audit_data, cooccurrence, score_groups
from sdguard.cli import main as cli_main
from sdguard.core.errors import InputError
from sdguard.report import load_report

pq = pytest.importorskip("pyarrow.parquet")
pytest.importorskip("faiss")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SDGUARD_CACHE", str(tmp_path / "sdguard-cache"))


def _planted(n=3000, d=64, groups=40, noise=0.25, seed=0):
    """Random unit vectors plus planted groups of near-duplicates (pairwise cosine about 0.94)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    truth = np.full(n, -1)
    pos = 0
    for g in range(groups):
        k = int(rng.integers(2, 12))
        c = rng.standard_normal(d)
        c /= np.linalg.norm(c)
        x[pos : pos + k] = c + noise * rng.standard_normal((k, d)) / np.sqrt(d)
        truth[pos : pos + k] = g
        pos += k
    perm = rng.permutation(n)
    return x[perm], truth[perm]


def _same_partition(labels, truth):
    for g in np.unique(truth[truth >= 0]):
        got = np.unique(labels[truth == g])
        if len(got) != 1 or got[0] < 0 or (labels == got[0]).sum() != (truth == g).sum():
            return False
    return (labels[truth < 0] == -1).all()


def test_exact_and_ivf_recover_planted_groups():
    x, truth = _planted()
    exact = cluster_embeddings(x, method="exact")
    ivf = cluster_embeddings(x, method="ivf", nlist=32, nprobe=4)
    assert exact.method == "exact" and ivf.method == "ivf"
    assert _same_partition(exact.labels, truth) and _same_partition(ivf.labels, truth)
    # the threshold came from the histogram: between unrelated images and copies
    assert exact.threshold.source == "histogram" and 0.4 < exact.threshold.value < 0.9
    # ranked by size
    assert list(exact.sizes) == sorted(exact.sizes, reverse=True)
    assert all((exact.labels == k).sum() == s for k, s in enumerate(exact.sizes))


def test_given_threshold_and_default_fallback():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((500, 32)).astype(np.float32)  # no copies at all
    c = cluster_embeddings(x, default_threshold=0.93)
    assert c.threshold.source == "default" and c.threshold.value == 0.93 and c.n_clusters == 0
    assert (c.labels == -1).all()
    c = cluster_embeddings(x, threshold=0.2)
    assert c.threshold.source == "given" and c.n_clusters > 0
    with pytest.raises(InputError):
        cluster_embeddings(x, threshold=1.5)


def test_threshold_suggestion_ignores_a_sparse_low_tail():
    rng = np.random.default_rng(2)
    nn = np.concatenate([rng.normal(0.9, 0.02, 500), [0.2, 0.25, 0.3]])  # bulk + outliers, no copy mode
    null = rng.normal(0.6, 0.1, 5000)
    choice = suggest_threshold(nn, 0.95, null=null)
    assert choice.source == "default"
    nn = np.concatenate([rng.normal(0.3, 0.03, 500), rng.uniform(0.96, 1.0, 20)])
    choice = suggest_threshold(nn, 0.95, null=rng.normal(0.0, 0.05, 5000))
    assert choice.source == "histogram" and 0.45 < choice.value < 0.95


def test_components_and_spanning_forest():
    rng = np.random.default_rng(3)
    n = 400
    a, b = rng.integers(0, n, 300), rng.integers(0, n, 300)
    ref = EdgeSet(n)
    ref.add(a, b)
    sa, sb = _spanning(a, b)
    small = EdgeSet(n)
    small.add(sa, sb)
    assert len(sa) < len(a)
    la, _ = rank_components(ref.components())
    lb, _ = rank_components(small.components())
    assert np.array_equal(la, lb)
    labels, sizes = rank_components(np.array([5, 5, 1, 2, 2, 2, 7]))
    assert labels.tolist() == [1, 1, -1, 0, 0, 0, -1] and sizes.tolist() == [3, 2]


def test_cooccurrence_and_scores():
    labels = np.array([0, 0, 0, 1, 1, -1, -1, 2, 2, -1])
    co = cooccurrence(labels)
    assert co["dominant_share"] == pytest.approx(0.3) and co["largest_sizes"] == [3, 2, 2]
    aside = cooccurrence(labels, exclude=[0])
    assert aside["dominant_cluster"] in (1, 2) and aside["dominant_share"] == pytest.approx(0.2)
    assert cooccurrence(np.array([-1, -1]))["dominant_share"] == pytest.approx(0.5)
    s = score_groups(["a", "b", "c", "d"], [0, 0, 0, -1], {"g": ["a", "b", "d"]})[0]
    assert s["precision"] == pytest.approx(2 / 3) and s["recall"] == pytest.approx(2 / 3)


def _blob_image(seed: int, size: int = 32) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = np.zeros((size, size, 3), np.float32)
    for _ in range(6):
        cx, cy, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.08, 0.3)
        img += np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / r**2)[..., None] * rng.uniform(0, 150, 3)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture
def small_world(tmp_path):
    """60 images: one picture copied 12x under 'mona lisa' captions, one copied 5x under 'lisa',
    the rest distinct; one corrupt image and one missing."""
    root = tmp_path / "small"
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines, groups = [], {"mona": [], "other": []}
    base, other = _blob_image(1000), _blob_image(2000)
    for i in range(60):
        name = f"images/{i:03d}.png"
        if i < 12:
            img = np.clip(base + rng.normal(0, 3, base.shape), 0, 255).astype(np.uint8)
            text, g = f"the mona lisa painting number {i}", "mona"
        elif i < 17:
            img, text, g = other, f"lisa in a garden {i}", "other"
        else:
            img, text, g = _blob_image(i), f"a garden photo of lisa {i}" if i % 2 else f"a city photo {i}", None
        Image.fromarray(img).save(root / name)
        if g:
            groups[g].append(name)
        lines.append({"file_name": name, "text": text})
    (root / "images" / "051.png").write_bytes(b"broken")
    lines.append({"file_name": "images/gone.png", "text": "lisa missing"})
    lines.append({"file_name": "images/long.png", "text": "lisa " + "very " * 90 + "long"})
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return root, groups


def test_audit_data_outputs(small_world, tmp_path):
    root, groups = small_world
    out = tmp_path / "out"
    report = audit_data(root, ["lisa"], out=out)
    for name in ("report.json", "report.html", "clusters.parquet"):
        assert (out / name).is_file()
    data = load_report(out)
    res = data["results"]
    assert data["command"] == "audit data" and data["config"]["keywords"] == ["lisa"]
    assert res["filter"]["dropped_long"] == 1
    assert res["images"]["missing"] == 1 and res["images"]["unreadable"] == 1
    table = pq.read_table(out / "clusters.parquet").to_pydict()
    assert {"file_name", "cluster_id"} <= set(table)
    scores = {s["group"]: s for s in score_groups(table["file_name"], table["cluster_id"], groups)}
    assert scores["mona"]["precision"] >= 0.95 and scores["mona"]["recall"] >= 0.95
    assert scores["other"]["precision"] >= 0.95 and scores["other"]["recall"] >= 0.95
    top = res["clusters"][0]
    assert top["size"] == 12 and {"mona", "lisa", "painting"} <= {w["word"] for w in top["top_words"][:5]}
    assert res["cooccurrence"]["dominant_share"] == pytest.approx(12 / res["images"]["embedded"])
    assert res["cooccurrence"]["largest_sizes"][:2] == [12, 5]
    html = (out / "report.html").read_text()
    assert "Cluster #1" in html and "data:image/png;base64" in html
    assert report.summary and any("co-occurrence" in s for s in report.summary)
    # the largest cluster set aside as a catch-all
    aside = audit_data(root, ["lisa"], out=tmp_path / "aside", set_aside_largest=True).results
    assert aside["catch_all"]["size"] == 12 and aside["clusters"][0]["size"] == 5
    assert aside["cooccurrence"]["dominant_size"] == 5


def _cli(capsys, *args):
    code = cli_main([str(a) for a in args])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_cli_runs_and_handles_bad_input(small_world, tmp_path, capsys):
    root, _ = small_world
    code, out, err = _cli(capsys, "audit", "data", root, "--keyword", "mona lisa", "--keyword", "painting",
                          "--out", tmp_path / "a")
    assert code == 0, err
    assert "report.html" in out and "12" in out
    # a keyword that matches nothing: a clear message and a valid, empty report
    code, out, err = _cli(capsys, "audit", "data", root, "--keyword", "zebra", "--out", tmp_path / "z")
    assert code == 0, err
    assert "no caption" in out and "zebra" in out
    empty = load_report(tmp_path / "z")["results"]
    assert empty["filter"]["matched"] == 0 and empty["clusters"] == [] and empty["cooccurrence"]["entries"] == 0
    assert pq.read_table(tmp_path / "z" / "clusters.parquet").num_rows == 0
    # a path in no known format: exit 2 and the formats listed
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.txt").write_text("x")
    code, out, err = _cli(capsys, "audit", "data", tmp_path / "junk", "--keyword", "x", "--out", tmp_path / "j")
    assert code == 2 and "imagefolder" in err and "webdataset" in err and "parquet" in err
    assert not (tmp_path / "j").exists()
    # a threshold outside (0, 1]
    for bad in ("1.5", "0", "-0.2"):
        code, out, err = _cli(capsys, "audit", "data", root, "--keyword", "lisa", "--threshold", bad,
                              "--out", tmp_path / "t")
        assert code == 2 and "--threshold" in err
    # an unknown embedder
    code, _, err = _cli(capsys, "audit", "data", root, "--embedder", "nope", "--out", tmp_path / "e")
    assert code == 2 and "pixels" in err
    # an existing output folder needs --overwrite
    code, _, err = _cli(capsys, "audit", "data", root, "--keyword", "lisa", "--out", tmp_path / "a")
    assert code == 2 and "--overwrite" in err


def test_same_clusters_from_every_format(small_world, tmp_path):
    """The small world as img2dataset parquet and as webdataset shards gives the same clusters."""
    import io
    import tarfile

    pa = pytest.importorskip("pyarrow")
    root, _ = small_world
    lines = [json.loads(line) for line in (root / "metadata.jsonl").read_text().splitlines()]
    rows = []
    for r in lines:
        path = root / r["file_name"]
        rows.append({"key": r["file_name"], "caption": r["text"], "png": path.read_bytes() if path.exists() else None})
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "world.parquet", row_group_size=16)
    with tarfile.open(tmp_path / "00000.tar", "w") as tar:
        for i, r in enumerate(rows):
            for name, data in ((f"{i:06d}.png", r["png"]), (f"{i:06d}.txt", r["caption"].encode())):
                if data is None:
                    continue
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))

    def sizes(path, name):
        res = audit_data(path, ["lisa"], out=tmp_path / name, grid_clusters=0).results
        return [c["size"] for c in res["clusters"]], res["cooccurrence"]["dominant_share"], res["images"]

    ref = sizes(root, "folder")
    pq_sizes = sizes(tmp_path / "world.parquet", "parquet")
    wds_sizes = sizes(tmp_path / "00000.tar", "wds")
    assert pq_sizes[:2] == ref[:2] and wds_sizes[:2] == ref[:2]
    for images in (pq_sizes[2], wds_sizes[2]):
        assert images["missing"] == 1 and images["unreadable"] == 1


def test_corrupt_images_are_counted_not_fatal(small_world, tmp_path):
    root, _ = small_world
    res = audit_data(root, ["garden"], any=True, out=tmp_path / "c", threshold=0.9).results
    assert res["images"]["unreadable"] == 1  # images/051.png, a "lisa ... garden" entry
    table = pq.read_table(tmp_path / "c" / "clusters.parquet").to_pydict()
    status = dict(zip(table["file_name"], table["status"]))
    assert status["images/051.png"] == "unreadable"
    assert table["cluster_id"][table["file_name"].index("images/051.png")] == -1


# ---------------------------------------------------------------------------------------------
# Must show, on the synthetic world (a small one here; the default world is checked by
# benchmarks/cluster_scale.py --world)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from sdguard.data.world import make_world

    root = tmp_path_factory.mktemp("world") / "w"
    make_world(root, seed=11, size=1000)
    return root, json.loads((root / "ground_truth.json").read_text())


def test_world_duplicates_words_and_cooccurrence(world, tmp_path):
    root, truth = world
    for group in truth["duplicates"]:
        res_report = audit_data(root, group["keywords"], out=tmp_path / group["name"], grid_clusters=0)
        table = pq.read_table(tmp_path / group["name"] / "clusters.parquet").to_pydict()
        score = score_groups(table["file_name"], table["cluster_id"], {group["name"]: group["files"]})[0]
        assert score["precision"] >= 0.95 and score["recall"] >= 0.95, (group["name"], score)
        cluster = next(c for c in res_report.results["clusters"] if c["cluster_id"] == score["cluster_id"])
        top = {w["word"] for w in cluster["top_words"]}
        assert {w for k in group["keywords"] for w in k.split()} <= top, (group["name"], top)
    for case in truth["cooccurrence"]:
        co = audit_data(root, case["keywords"], out=tmp_path / "co", grid_clusters=0).results["cooccurrence"]
        assert abs(co["dominant_share"] - case["dominant_share"]) <= 0.05, (case, co)
    for case in truth["spread"]:
        co = audit_data(root, [case["keyword"]], out=tmp_path / "spread", grid_clusters=0).results["cooccurrence"]
        assert abs(co["dominant_share"] - case["dominant_share"]) <= 0.05, (case, co)


@pytest.mark.parametrize("method,options", [("sharded", {"shard_size": 700, "k": 16}), ("hnsw", {"k": 16})])
def test_knn_search_methods_find_the_exact_clusters(method, options):
    """Planted groups of near-duplicates among random vectors (issue 23): the sharded search, whose
    shards cut groups apart and whose top-k lists are merged, and the HNSW graph give the exact
    search's clusters; the sharded top-k equals the exact top-k."""
    from sdguard.audit.clustering import cluster_embeddings
    from sdguard.audit.sharded_search import ShardedIndex

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(150, 48)).astype(np.float32)
    x = np.concatenate([centres[rng.integers(0, 150, 1500)] + 0.03 * rng.normal(size=(1500, 48)).astype(np.float32),
                        rng.normal(size=(2500, 48)).astype(np.float32)])
    x = x[rng.permutation(len(x))]
    exact = cluster_embeddings(x, 0.95, method="exact")
    other = cluster_embeddings(x, 0.95, method=method, **options)
    assert other.method == method and exact.n_clusters >= 140
    assert other.n_clusters == exact.n_clusters
    pairs = lambda c: {tuple(sorted(np.flatnonzero(c.labels == k))) for k in range(c.n_clusters)}  # noqa: E731
    assert pairs(other) == pairs(exact)
    if method == "sharded":
        from sdguard.audit.clustering import normalize_rows

        y = normalize_rows(x)
        s, ids = ShardedIndex(y, shard_size=700, k=8).knn()
        ref = np.sort(y @ y.T, axis=1)[:, ::-1][:, :8]
        assert np.allclose(s, ref, atol=1e-5)
