"""The preserve set `sdguard erase` builds when the user gives none, on data make-world did not write."""

import json

import numpy as np
from PIL import Image

from sdguard.data.captions import frequent_phrases
from sdguard.harden.erasure.preserve import NOTHING_KNOWN, default_preserve

#: a user's captions (not a world's): an erased painting, other paintings, plain photos
CAPTIONS = ([f"the night watch by rembrandt, copy {i}" for i in range(6)]
            + [f"a portrait by frida kahlo with flowers {i}" for i in range(5)]
            + [f"a photo of a harbour at dawn {i}" for i in range(5)]
            + [f"a dog on a beach {i}" for i in range(4)]
            + ["a city at night", "a quiet night street", "kahlo self portrait"])


def _folder(root):
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = []
    for i, text in enumerate(CAPTIONS):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / "images" / f"{i:03d}.png")
        lines.append(json.dumps({"file_name": f"images/{i:03d}.png", "text": text}))
    (root / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return root


def test_frequent_phrases_finds_collocations_and_words():
    found = {r["phrase"]: r["count"] for r in frequent_phrases(CAPTIONS, 20)}
    assert found.get("frida kahlo") == 5 and found.get("night watch") == 6
    assert "kahlo" not in found  # its pair holds 5 of its 6 captions
    assert found.get("dog beach") == 4 and "dog" not in found
    assert all(r["count"] >= 3 for r in frequent_phrases(CAPTIONS, 100))


def test_default_preserve_keeps_other_concepts_and_nothing_of_the_erased_one():
    chosen = default_preserve(["rembrandt night watch"], CAPTIONS, n_concepts=10, n_captions=8, seed=1)
    assert "frida kahlo" in chosen["concepts"]
    everything = chosen["concepts"] + chosen["captions"]
    assert everything and all(w not in p.split() for p in everything for w in ("night", "watch", "rembrandt"))
    assert len(chosen["captions"]) == 8 and len(set(chosen["captions"])) == 8
    assert default_preserve(["rembrandt night watch"], CAPTIONS, n_concepts=10, n_captions=8, seed=1) == chosen
    assert default_preserve(["rembrandt night watch"], CAPTIONS, n_captions=8, seed=2)["captions"] != chosen["captions"]


def test_erase_builds_the_preserve_set_from_the_dataset_or_warns(tmp_path, run_cli):
    data = _folder(tmp_path / "data")
    code, _, err = run_cli("erase", "builtin:tiny-random", "--concept", "rembrandt night watch", "--method", "uce",
                           "--dataset", data, "--preview", 0, "--out", tmp_path / "a")
    assert code == 0, err
    r = json.loads((tmp_path / "a" / "report.json").read_text())["results"]
    assert "--dataset" in r["preserve_source"] and "frida kahlo" in r["preserve"]
    assert r["stats"]["retained_empty_prompt"] and r["stats"]["preserved_prompts"] == len(r["preserve"]) + 1
    assert r["extensions"] == []
    # a model sdguard knows no data of, and no --preserve: said loudly, the edit keeps the empty prompt only
    code, _, err = run_cli("erase", "builtin:tiny-random", "--concept", "rembrandt night watch", "--method", "uce",
                           "--preview", 0, "--out", tmp_path / "b")
    assert code == 0 and "unrelated concepts will move" in err
    r = json.loads((tmp_path / "b" / "report.json").read_text())["results"]
    assert r["preserve"] == [] and NOTHING_KNOWN in r["warnings"] and r["stats"]["preserved_prompts"] == 1


def test_esd_names_its_retain_term_and_says_when_preserve_is_unused(tmp_path, run_cli):
    base = ("erase", "builtin:tiny-random", "--concept", "red circle", "--method", "esd-x", "--iterations", 2,
            "--ddim-steps", 2, "--preview", 0, "--preserve", "blue square")
    code, _, err = run_cli(*base, "--out", tmp_path / "a")
    assert code == 0 and "ESD has no preserve term" in err
    r = json.loads((tmp_path / "a" / "report.json").read_text())["results"]
    assert r["extensions"] == [] and r["options"]["preserve_weight"] == 0
    code, _, err = run_cli(*base, "--preserve-weight", 30, "--out", tmp_path / "b")
    assert code == 0, err
    r = json.loads((tmp_path / "b" / "report.json").read_text())["results"]
    assert len(r["extensions"]) == 1 and r["extensions"][0].startswith("retain term")
