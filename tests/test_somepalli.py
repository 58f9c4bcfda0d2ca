"""`sdguard audit generations --rule somepalli`: SSCD with DCR's preprocessing, top-1 similarity over
the whole training set, replicated when > 0.5 (Somepalli et al. 2023, github.com/somepago/DCR)."""


import numpy as np
import pytest

from sdguard.audit.somepalli import replicated
from sdguard.core.errors import InputError
from sdguard.embed import create_embedder
from sdguard.embed.sscd import dcr_preprocess


@pytest.fixture(scope="module")
def sscd_file(tmp_path_factory):
    """A tiny TorchScript module in place of the released SSCD file: mean-centred 8 x 8 average-pooled pixels."""
    torch = pytest.importorskip("torch")

    class Net(torch.nn.Module):
        def forward(self, x):
            y = torch.nn.functional.adaptive_avg_pool2d(x, 8).flatten(1)
            return y - y.mean(dim=1, keepdim=True)

    path = tmp_path_factory.mktemp("sscd") / "sscd_tiny.torchscript.pt"
    torch.jit.script(Net()).save(str(path))
    return path


def test_dcr_preprocessing_resizes_the_short_side_crops_the_centre_and_maps_to_minus_one_one():
    wide = np.full((300, 600, 3), 255, np.uint8)
    wide[:, :150] = wide[:, 450:] = (255, 0, 0)  # outside the centre crop once the short side is 256
    x = dcr_preprocess(wide)
    assert x.shape == (3, 224, 224) and x.dtype == np.float32
    assert np.allclose(x, 1.0)  # white -> 1 after Normalize(0.5, 0.5); the red margins are cropped away
    tall = np.zeros((600, 300, 3), np.uint8)
    tall[280:320] = 255  # a white band across the middle survives the crop
    y = dcr_preprocess(tall)
    assert y.shape == (3, 224, 224) and y.min() == -1.0 and y.max() == 1.0
    assert np.allclose(y[:, 0], -1.0) and np.allclose(y[:, 112], 1.0)
    assert dcr_preprocess(np.zeros((32, 32, 3), np.uint8)).shape == (3, 224, 224)


def test_the_rule_is_strictly_above_one_half_unless_a_threshold_is_given():
    sims = np.array([0.2, 0.5, 0.5001, 0.9])
    flags, t = replicated(sims)
    assert t == 0.5 and flags.tolist() == [False, False, True, True]
    flags, t = replicated(sims, 0.8)
    assert t == 0.8 and flags.tolist() == [False, False, False, True]


def test_somepalli_mode_judges_top1_over_the_whole_training_set(sscd_file, tmp_path, monkeypatch):
    from captioned_shapes import write_shapes_dataset

    from sdguard.audit.generation_replication import audit_generations
    from sdguard.data.datasets import open_dataset

    monkeypatch.setenv("SDGUARD_CACHE", str(tmp_path / "cache"))
    data = write_shapes_dataset(tmp_path / "shapes")  # its one near-duplicate cluster is the artwork's copies
    out = tmp_path / "run"
    report = audit_generations("builtin:tiny-random", str(data), out=str(out), rule="somepalli",
                               embedder=f"sscd:{sscd_file}", n=3, batch_size=3, steps=1, top_clusters=1, controls=0,
                               reference_prompts=0)
    res = report.results
    assert res["rule"]["name"] == "somepalli" and res["rule"]["threshold"] == 0.5
    assert res["rule"]["embedder"]["preprocessing"] == "dcr"
    # an independent top-1 over every training image, with DCR's preprocessing
    emb = create_embedder(f"sscd:{sscd_file}", preprocessing="dcr")
    ds = open_dataset(data)
    train = emb.embed([im for im in ds.load(ds.entries().rows)])
    # generations whose nearest training image lies outside their prompt's cluster: where the
    # calibrated rule (against the cluster's members) and the published one (against all) differ
    assert any(r["cluster"] is not None and r["nearest_in_cluster_share"] < 1 for r in res["prompts"])
    for k, row in enumerate(res["prompts"]):
        gen = np.concatenate([np.load(p)["embeddings"] for p in sorted((out / "generations").glob(f"p{k:04d}_*.npz"))])
        top1 = (gen @ train.T).max(1)
        assert row["rule"] == "somepalli" and row["threshold"] == 0.5
        assert row["replication_rate"] == pytest.approx(float(np.mean(top1 > 0.5)))
        assert row["max_similarity"] == pytest.approx(float(top1.max()), abs=1e-5)
    assert "rule somepalli" in (out / "report.html").read_text()


def test_somepalli_rule_needs_the_sscd_embedder(run_cli, small_world, sscd_file, tmp_path):
    code, _, stderr = run_cli("audit", "generations", "builtin:tiny-random", "--dataset", small_world, "--rule",
                              "somepalli", "--out", tmp_path / "o")
    line = " ".join(stderr.split())
    assert code == 2 and "--rule 'somepalli'" in line and "--embedder sscd:FILE" in line, line
    assert not (tmp_path / "o").exists()
    with pytest.raises(InputError, match="preprocessing 'nope' is not one of release, dcr"):
        create_embedder(f"sscd:{sscd_file}", preprocessing="nope")
