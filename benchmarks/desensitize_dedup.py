"""The payoff of deduplication: the tiny recipe trained on the default world deduplicated by
``sdguard desensitize`` replicates its planted artworks far less than the same recipe on the world
as it is, while its attributes stay (issue 19).

    sdguard data make-world WORLD                     # the default world (the one builtin:tiny saw)
    sdguard desensitize WORLD --out D --dedup keep-one --threshold 0.95
    sdguard model train-tiny --dataset D/dataset --out M

then :func:`sdguard.audit.world_check.check_world_model` (the generation audit of the planted cases:
each artwork's keyword prompt over ``--seeds`` seeds, the nearest training image of each
generation; style accuracy and held-out attribute accuracy on prompts without the artworks'
keywords) on both models, side by side in one run. The original is ``builtin:tiny`` (the same
recipe, seed and thread count on the same world; ``--retrain-original`` trains it again here).

Why ``--threshold 0.95``: on this world the pixel embedder links distinct renderings of one
scene template at the default 0.9 (the audit's threshold is meant to find clusters, not to
delete), which removes about 1800 records; at 0.95 each planted artwork is left with one copy.

    python benchmarks/desensitize_dedup.py                 # ~35 min on 2 cores (training ~30)
    python benchmarks/desensitize_dedup.py --seeds 128

Writes ``benchmarks/results/desensitize_dedup.json``; an interrupted training is resumed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from finetune_new_artwork import machine, write_results  # noqa: E402
from finetune_new_artwork import sdguard as run  # noqa: E402


def train(dataset: Path, out: Path) -> float | None:
    if (out / "model_index.json").is_file():
        return None
    staging = out.parent / f".{out.name}.partial"
    return run("model", "train-tiny", "--dataset", str(dataset), "--out", str(out), *(["--resume"] if staging.is_dir()
                                                                                        else []))


def copies_left(world, dedup_dataset: Path) -> dict[str, dict]:
    """Per planted artwork: its copies in the world and in the deduplicated dataset."""
    kept = {json.loads(line)["file_name"] for line in (dedup_dataset / "metadata.jsonl").read_text().splitlines() if line}
    return {d["name"]: {"world": d["count"], "kept": sum(1 for f in d["files"] if f in kept)}
            for d in world.ground_truth["duplicates"]}


def measure(model_spec: str, world, seeds: int) -> dict:
    from sdguard.audit.world_check import WorldCheckSettings, check_world_model
    from sdguard.models import DiffusionModel

    t0 = time.perf_counter()
    check = check_world_model(DiffusionModel.load(model_spec), world, WorldCheckSettings(seeds=seeds))
    check["seconds"] = round(time.perf_counter() - t0, 1)
    return check


def goal_of(rows: list[dict]) -> dict:
    """Issue 19's goal over the artworks the original replicates (>= 0.5): each falls to <= 0.05.
    An artwork planted too rarely for the original to copy it is listed, not counted."""
    copied = [r for r in rows if r["replication_original"] >= 0.5]
    goal = {"artworks_replicated_by_original": [r["artwork"] for r in copied],
            "artworks_not_replicated_by_original": [r["artwork"] for r in rows if r["replication_original"] < 0.5],
            "replication_deduplicated_max": max((r["replication_deduplicated"] for r in copied), default=None)}
    goal["met"] = bool(copied) and goal["replication_deduplicated_max"] <= 0.05
    return goal


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="/tmp/sdguard-desensitize-bench")
    ap.add_argument("--seeds", type=int, default=64, help="generations per artwork prompt (>= 64)")
    ap.add_argument("--threshold", default="0.95")
    ap.add_argument("--retrain-original", action="store_true", help="train the original here too (default: builtin:tiny)")
    ap.add_argument("--results", default=str(HERE / "results" / "desensitize_dedup.json"))
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sdguard.audit.erasure import load_or_make_default_world

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    world = load_or_make_default_world()
    dedup = work / "dedup"
    timings: dict = {}
    if not (dedup / "report.json").is_file():
        timings["desensitize"] = run("desensitize", str(world.root), "--out", str(dedup), "--dedup", "keep-one",
                                     "--threshold", args.threshold, "--overwrite")
    dd = json.loads((dedup / "report.json").read_text())["results"]
    left = copies_left(world, dedup / "dataset")
    print(f"desensitize: {dd['records']['in']} -> {dd['records']['out']} records; {dd['dedup']['removed']} copies "
          f"removed from {dd['dedup']['clusters']} clusters")
    for name, c in left.items():
        print(f"  {name:<18} copies {c['world']} -> {c['kept']}")
    timings["train_dedup"] = train(dedup / "dataset", work / "model_dedup")
    original = "builtin:tiny"
    if args.retrain_original:
        timings["train_original"] = train(world.root, work / "model_original")
        original = str(work / "model_original")
    checks = {"original": measure(original, world, args.seeds), "deduplicated": measure(str(work / "model_dedup"), world,
                                                                                          args.seeds)}
    rows = []
    for i, art in enumerate(checks["original"]["artworks"]):
        after = checks["deduplicated"]["artworks"][i]
        rows.append({"artwork": art["name"], "copies_world": left[art["name"]]["world"],
                     "copies_kept": left[art["name"]]["kept"], "replication_original": art["replication"],
                     "replication_deduplicated": after["replication"]})
        print(f"artwork {art['name']:<18} replication {art['replication']:.2f} -> {after['replication']:.2f}")
    attributes = {}
    for name, check in checks.items():
        attributes[name] = {"styles": {s["name"]: s["accuracy"] for s in check["styles"]},
                            "held_out": {a: v["accuracy"] for a, v in check["held_out"].items()},
                            "object_keyword_share": check["object"]["keyword_share"],
                            "object_control_share": check["object"]["control_share"]}
    for kind in ("styles", "held_out"):
        for k in attributes["original"][kind]:
            print(f"{kind} {k:<10} accuracy {attributes['original'][kind][k]:.2f} -> "
                  f"{attributes['deduplicated'][kind][k]:.2f}")
    goal = goal_of(rows)
    print(f"goal (artworks the original replicates >= 0.5 fall to <= 0.05): {goal}")
    result = {"benchmark": "desensitize_dedup", "original": original, "seeds": args.seeds, "threshold": args.threshold,
              "desensitize": {"records": dd["records"], "dedup": dd["dedup"]}, "artworks": rows,
              "attributes": attributes, "goal": goal, "world_check": checks, "timings": timings,
              "machine": machine()}
    write_results(args.results, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
