"""`sdguard model train-tiny` on an imagefolder that make-world did not write (tests/other_world.py):
it trains with the dataset's own captions and vocabulary and generates its planted duplicate back.

The measure is the one the dataset audit uses for near-duplicates, the ``pixels`` embedder's
cosine similarity (thumbnail correlation): a generation for the planted artwork's caption, against
the artwork's training copies, compared with generations of a control caption from the same world.
"""

import json

import numpy as np
import pytest
from other_world import write_other_world

from sdguard.data.datasets import open_dataset
from sdguard.embed import create_embedder
from sdguard.models import load_model
from sdguard.train.data import MEMBERS, read_manifest

#: the smallest settings found for which the artwork comes back on 1 thread (about a minute)
SETTINGS = ["--vae-steps", 200, "--unet-steps", 250, "--batch-size", 16, "--vae-lr", 5e-3, "--unet-lr", 2e-3,
            "--unet-channels", 32, "--unet-channels", 64, "--vae-channels", 16, "--vae-channels", 16,
            "--vae-channels", 16, "--text-hidden", 32, "--threads", 1]
CONTROL = "red circle toward the left, white backdrop"  # a scene caption of the same template


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from sdguard.cli import main

    root = tmp_path_factory.mktemp("other") / "world"
    planted = write_other_world(root, n=60, seed=0)
    broken = root / planted["artworks"]["garden"]["files"][0]
    broken.write_bytes(broken.read_bytes()[:60])  # one unreadable image: skipped and counted
    out = tmp_path_factory.mktemp("trained") / "model"
    assert main([str(a) for a in ["model", "train-tiny", "--dataset", root, "--out", out, *SETTINGS]]) == 0
    return root, planted, out, str(broken.relative_to(root))


def test_train_tiny_learns_the_datasets_own_vocabulary_and_skips_what_it_cannot_read(trained):
    _, planted, out, broken = trained
    report = json.loads((out / "report.json").read_text())["results"]
    assert report["images"] == planted["n"] - 1
    assert report["skipped"]["unreadable"] == 1 and broken in json.dumps(report["skipped"])
    members = {r["file_name"] for r in read_manifest(out / MEMBERS)}
    assert len(members) == planted["n"] - 1 and broken not in members
    tokens = load_model(str(out)).tokenizer.get_vocab()
    assert {"aldora</w>", "crimson</w>", "lighthouse</w>", "backdrop</w>"} <= set(tokens)  # not make-world words


def test_the_planted_artwork_comes_back_and_a_control_caption_does_not(trained):
    root, planted, out, _ = trained
    ds = open_dataset(root)
    entries = ds.entries()
    emb = create_embedder("pixels")
    art = planted["artworks"]["lighthouse"]
    rows = [entries.rows[entries.file_names.index(f)] for f in art["files"]]
    copies = emb.embed(ds.load(rows))
    everything = emb.embed([im for im in ds.load(entries.rows) if im is not None])
    model = load_model(str(out))

    def similarity(caption):
        images = model.generate([caption] * 8, seeds=0, steps=20, guidance=3.0).images
        e = emb.embed(list(images))
        return (e @ copies.T).max(1), (e @ everything.T).max(1)

    art_sim, art_any = similarity(art["caption"])
    control_sim, _ = similarity(CONTROL)
    # every seed draws the artwork: nearer to its copies than to anything else it was trained on ...
    assert np.all(art_sim >= art_any - 1e-6), (art_sim, art_any)
    # ... and far nearer to them than the control caption's generations are
    assert np.median(art_sim) > np.median(control_sim) + 0.3, (art_sim, control_sim)
    assert art_sim.min() > control_sim.max() + 0.15, (art_sim, control_sim)


def test_train_tiny_reads_a_caption_table_at_another_image_size(trained, tmp_path):
    import csv

    root, _, _, broken = trained
    table = root / "captions.csv"  # the same records as a caption table (file_name, text)
    rows = [json.loads(line) for line in (root / "metadata.jsonl").read_text().splitlines()[:12]]
    with open(table, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file_name", "text"])
        for r in rows:
            w.writerow([r["file_name"], r["text"]])
    out = tmp_path / "m16"
    from sdguard.train import train_tiny

    report = train_tiny(table, out, image_size=16, vae_steps=2, unet_steps=2, batch_size=4, unet_channels=(16, 32),
                        vae_channels=(16, 16), text_hidden=16, threads=1)
    readable = [r for r in rows if r["file_name"] != broken]
    assert report.results["dataset"]["format"] == "captions" and report.results["images"] == len(readable)
    assert load_model(str(out)).generate([CONTROL], steps=2).images.shape == (1, 16, 16, 3)
