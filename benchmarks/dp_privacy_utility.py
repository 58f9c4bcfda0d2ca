"""Privacy vs utility of DP fine-tuning (``sdguard train --dp``): epsilon x privacy unit, audited.

What (issue 17): ``builtin:tiny`` is fine-tuned on data it never saw, once without DP (epsilon
inf) and at epsilon 1, 4 and 8 with the image and the group as the privacy unit, with the real
CLI; every model (and the base) is audited with the real CLI for replication of a picture planted
100 times, membership inference and utility.

The data (seeded, rebuilt in ``--work``): a world of ``sdguard data make-world --seed 1 --size
SETTINGS.world_size`` (the world's generator with another seed: scenes, styles and the world's
five artworks, drawn anew; ``builtin:tiny`` was trained on the seed-0 world, so records of that
world would be "members" of the base already and membership would be confounded) plus the new
picture of ``benchmarks/finetune_new_artwork.py``, "the amber citadel by velloran", planted 100
times (40% exact copies, the rest light augmentations, one caption): "the 100-copy artwork".
``--holdout 0.2`` keeps a fifth of the records (the same split in every run: same ``--seed``) out
of training as non-members from the same distribution; about 20 of the citadel's copies land
there, which the membership audit reports as non-members that copy a member.

``sdguard audit data FT --out AUDIT`` on the fine-tuning set: the 100 copies must form one
cluster (recorded: the clusters holding citadel files), since ``--privacy-unit group --groups
AUDIT`` makes each cluster one privacy unit. Models::

    sdguard train builtin:tiny --dataset FT --out M --holdout 0.2 SETTINGS              # epsilon inf
    sdguard train builtin:tiny --dataset FT --out M --holdout 0.2 SETTINGS --dp --target-epsilon E
    sdguard train ... --dp --target-epsilon E --privacy-unit group --groups AUDIT       # E in 1, 4, 8

(delta 1e-5, max grad norm 1, the PRV accountant, hooks: the engine's defaults). Audits per model::

    sdguard audit generations M --dataset FT --prompts P --n SEEDS --embedder dct --guidance 5
    sdguard audit membership M --members NODP/members.jsonl --nonmembers NODP/nonmembers.jsonl

the first with the citadel's caption and four captions of the world's own artworks (``dct`` and
guidance 5: why, in ``finetune_new_artwork.py``); the citadel's figure is the share of its
generations that replicate its own cluster (with its Wilson 95% interval); the world's artworks
are judged by the audit's own clusters. Membership: the ``loss`` and ``pia`` attacks at their
defaults, AUC and TPR at 1% FPR with bootstrap intervals on the evaluation half, overall and per
group (the duplicated members -- the citadel's copies and the world's artworks -- and the
single-copy members against clean non-members). Utility: attribute accuracy (shape, colour,
position probes of :class:`sdguard.audit.erasure.WorldProbes`, fitted on the default world as the
base's autoencoder renders it) of generations of 16 unrelated scene captions of the default world
x 4 seeds (:func:`~sdguard.audit.erasure.scene_prompts`, :func:`~sdguard.audit.erasure.attribute_accuracy`),
at the audit's guidance.

Settings and why (measured on 2 shared CPU cores, 1 thread, with the same commands):

- Data: world size 1000 + 100 copies (1100 records, 880 members, 220 non-members): the
  evaluation half then holds ~110 non-members, enough to resolve TPR at 1% FPR; the citadel is
  9% of the records. ``sdguard audit data`` (pixels) puts all 100 copies in one cluster.
- ``--trainable attention`` (648,576 parameters, DP-LDM's subset), AdamW lr 1e-3, batch 32,
  300 steps, caption dropout 0.1: the same for every model, only the DP arguments change. A first
  full grid at 200 steps (``results/dp_privacy_utility_200steps.json``) did not replicate the
  citadel even without DP (2 of 32 seeds), so the premise failed there; at 300 steps (the results
  file) the non-DP model and the epsilon-8 models of both units were run (``--only``). Non-DP
  attention replicates the citadel (measured: 300 steps on this data, 16 seeds: 16/16, median
  dct 0.94 vs threshold 0.91; 100 steps on a 600-record version with the citadel at 1/6: 15/16).
  LoRA rank 4 (lr 3e-3, 100 steps, 600-record version) did not (0/16, median 0.81), as in
  ``finetune_new_artwork.py``. The full UNet replicates too (100 steps, 600 records: 16/16) but
  under DP costs 2.75x per step (1.32 s vs 0.48 s) and did no better (below).
- Why DP fails to learn the picture at these scales (measured, 16 seeds, the 600-record
  version, image unit): full UNet, 100 steps, epsilon 8 (sigma 0.78): 0/16 at lr 1e-3 (median dct
  0.68, below the base's 0.88), 3e-4 (0.85) and 1e-4 (0.87); even sigma 0.2 (epsilon 209, lr
  1e-3): 0/16 (0.69) while the loss fell (0.249 to 0.221). Attention, epsilon 8: 0/16 at 100
  steps (600 records, 0.82), at 300 steps on this data (sigma 0.74, 0.62) and at batch 64 (sigma
  1.04, 0.62). With batch B the noise on each coordinate of the mean gradient is sigma/B ~ 0.02,
  some hundred times the per-coordinate signal of a 10^5-10^6-parameter subset; AdamW normalizes
  every coordinate, so the updates are mostly noise. DP-diffusion work uses batches of thousands.
- ``--noise-multiplier 0.01`` (to check the mechanism without noise) was killed by the kernel at
  23 GB: Opacus's PRV accountant builds a grid of ~2e8 points for tiny sigma.

    python benchmarks/dp_privacy_utility.py            # all 8 models (~40 min at --seeds 16); resumable
    python benchmarks/dp_privacy_utility.py --fresh    # delete --work first
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from finetune_new_artwork import (
    CAPTION,
    OLD_PROMPTS,
    audit,
    machine,
    sdguard,
    world_with_artwork,
    write_results,
)

WORLD_SEED, WORLD_SIZE, COPIES, HOLDOUT = 1, 1000, 100, 0.2
#: `sdguard train` arguments of every model (DP adds its own)
TRAIN = ["--trainable", "attention", "--lr", "1e-3", "--steps", "300", "--batch-size", "32"]
EPSILONS = (1.0, 4.0, 8.0)
UNITS = ("image", "group")
MIA_ATTACKS = ("loss", "pia")
UTILITY_PROMPTS, UTILITY_SEEDS = 16, 4


def models(extra_epsilons=()) -> dict[str, list[str] | None]:
    """name -> the DP arguments (``[]``: no DP; ``None``: the base, not trained)."""
    out: dict[str, list[str] | None] = {"base": None, "eps_inf": []}
    for unit in UNITS:
        for eps in (*EPSILONS, *extra_epsilons):
            out[f"eps_{eps:g}_{unit}"] = ["--dp", "--target-epsilon", f"{eps:g}", "--privacy-unit", unit]
    return out


def build_data(work: Path) -> tuple[Path, Path]:
    """The world of seed 1, the citadel planted into a copy of it, the prompts file."""
    ft = world_with_artwork(work, WORLD_SEED, WORLD_SIZE, COPIES, plant_seed=17)
    prompts = work / "prompts.txt"
    prompts.write_text(f"new\t{CAPTION}\n" + "".join(f"old\t{p}\n" for p in OLD_PROMPTS))
    return ft, prompts


def data_audit(ft: Path, out: Path) -> dict:
    """`sdguard audit data` of the fine-tuning set; which clusters hold the citadel's copies."""
    import pyarrow.parquet as pq

    if not (out / "report.json").is_file():
        sdguard("audit", "data", str(ft), "--out", str(out), "--overwrite")
    t = pq.read_table(out / "clusters.parquet", columns=["file_name", "cluster_id"]).to_pydict()
    cid = dict(zip(t["file_name"], t["cluster_id"]))
    citadel = [f for f in cid if Path(f).name.startswith("citadel_")]
    held = {}
    for f in citadel:
        held[cid[f]] = held.get(cid[f], 0) + 1
    res = json.loads((out / "report.json").read_text())["results"]
    sizes = sorted((sum(1 for v in cid.values() if v == c) for c in set(cid.values()) if c >= 0), reverse=True)
    return {"citadel_copies_found": len(citadel), "citadel_clusters": {str(k): v for k, v in held.items()},
            "citadel_in_one_cluster": len(held) == 1 and -1 not in held, "clusters": len(sizes),
            "largest_clusters": sizes[:8], "threshold": res.get("threshold", {}).get("value")}


def train(name: str, dp: list[str], ft: Path, groups: Path, work: Path) -> dict:
    """One `sdguard train` run (skipped when its folder has a report.json); its figures."""
    out = work / f"model_{name}"
    extra = ["--groups", str(groups)] if "group" in dp else []
    steps = TRAIN[TRAIN.index("--steps") + 1]
    if not (out / "report.json").is_file():
        sdguard("train", "builtin:tiny", "--dataset", str(ft), "--out", str(out), "--holdout", str(HOLDOUT),
                "--seed", "0", "--samples", "0", "--checkpoint-every", str(int(steps) + 1), "--overwrite",
                *TRAIN, *dp, *extra)
    r = json.loads((out / "report.json").read_text())["results"]
    p = r.get("privacy") or {}
    keep = ("epsilon", "target_epsilon", "delta", "accountant", "noise_multiplier", "sample_rate", "steps", "unit",
            "units", "records", "largest", "multi_record_units", "records_in_multi_record_units",
            "mean_units_per_step", "max_grad_norm", "clipped_share_median", "unit_norm_median", "grad_sample_mode")
    return {"command": " ".join(["sdguard train builtin:tiny --dataset FT --holdout", str(HOLDOUT), *TRAIN, *dp,
                                 *(["--groups", "AUDIT"] if extra else [])]),
            "train_seconds": r["train_seconds"], "step_seconds_median": r["step_seconds_median"],
            "members": r["members"], "nonmembers": r["nonmembers"], "loss_first": r["loss_first"],
            "loss_last": r["loss_last"], "privacy": {k: p[k] for k in keep if k in p} or None}


def membership(model: str, split: Path, out: Path, seed_count: int = 0) -> dict:
    """`sdguard audit membership` of ``model`` on the split of ``split`` (the non-DP model's folder)."""
    if not (out / "report.json").is_file():
        sdguard("audit", "membership", model, "--members", str(split / "members.jsonl"), "--nonmembers",
                str(split / "nonmembers.jsonl"), *[a for x in MIA_ATTACKS for a in ("--attack", x)],
                "--out", str(out), "--overwrite")
    res = json.loads((out / "report.json").read_text())["results"]
    out_rows = {"split_check_auc": res["split_check"]["auc"], "split": res["split"]["evaluation"]}
    for name, a in res["attacks"].items():
        row = {"auc": a["auc"], "auc_ci": a["auc_ci"], "tpr_at_1pct_fpr": a["tpr_at_0_01_fpr"],
               "tpr_at_1pct_fpr_ci": a["tpr_at_0_01_fpr_ci"], "tpr_resolvable": a["tpr_at_0_01_fpr_resolvable"],
               "chosen": a["chosen"], "calibrated": a["calibrated_threshold"], "groups": {}}
        for g, r in res["groups"]["by_attack"][name].items():
            row["groups"][g] = {k: r[k] for k in ("members", "nonmembers", "auc", "auc_ci", "tpr_at_0_01_fpr",
                                                  "flagged", "flagged_share") if k in r}
        out_rows[name] = row
    return out_rows


def utility(model: str, out: Path, world, probes, guidance: float) -> dict:
    """Attribute accuracy of the model's generations of unrelated scene captions (cached in ``out``)."""
    if out.is_file():
        return json.loads(out.read_text())
    from sdguard.audit.erasure import attribute_accuracy, scene_prompts
    from sdguard.models import DiffusionModel

    scenes = scene_prompts(world, UTILITY_PROMPTS)
    texts = [p for p, _ in scenes for _ in range(UTILITY_SEEDS)]
    truth = [t for _, t in scenes for _ in range(UTILITY_SEEDS)]
    seeds = [j for _ in scenes for j in range(UTILITY_SEEDS)]
    m = DiffusionModel.load(model)
    t0 = time.perf_counter()
    acc = attribute_accuracy(probes, m.generate(texts, seeds, steps=25, guidance=guidance).images, truth)
    row = {**{k: round(v, 4) for k, v in acc.items()}, "images": len(texts), "seconds": round(time.perf_counter() - t0, 1)}
    out.write_text(json.dumps(row))
    return row


def summary_row(gen: dict, mia: dict, util: dict, tr: dict | None) -> dict:
    new = gen["prompts"][CAPTION]
    p = (tr or {}).get("privacy") or {}
    from sdguard.audit.stats import wilson_interval

    n = gen["seeds"]
    k = round(new["new_artwork_share"] * n)
    return {"epsilon_target": p.get("target_epsilon", None if tr is None else "inf"), "epsilon": p.get("epsilon"),
            "noise_multiplier": p.get("noise_multiplier"), "sample_rate": p.get("sample_rate"), "unit": p.get("unit"),
            "units": p.get("units"), "new_artwork_share": new["new_artwork_share"],
            "new_artwork_ci": [round(v, 3) for v in wilson_interval(k, n)],
            "new_median_similarity": new["median_similarity"], "new_threshold": new["threshold"],
            "old_artworks": {q: gen["prompts"][q]["replication_rate"] for q in OLD_PROMPTS},
            "mia": {a: {"auc": mia[a]["auc"], "auc_ci": mia[a]["auc_ci"], "tpr_at_1pct_fpr": mia[a]["tpr_at_1pct_fpr"],
                        "tpr_at_1pct_fpr_ci": mia[a]["tpr_at_1pct_fpr_ci"],
                        "duplicated_auc": mia[a]["groups"].get("duplicated", {}).get("auc"),
                        "single_auc": mia[a]["groups"].get("single", {}).get("auc")} for a in MIA_ATTACKS},
            "utility": util["mean"], "train_seconds": (tr or {}).get("train_seconds"),
            "loss_last": (tr or {}).get("loss_last")}


def print_table(summary: dict) -> None:
    print(f"\n{'model':<16} {'eps':>5} {'sigma':>6} {'q':>6} {'units':>5} {'citadel [CI]':>17} {'old artworks':>20} "
          f"{'MIA loss AUC [CI]':>20} {'TPR@1%':>6} {'dup AUC':>7} {'single':>6} {'util':>5} {'train s':>7}")
    for name, e in summary.items():
        m = e["mia"]["loss"]
        eps = "-" if e["epsilon"] is None else f"{e['epsilon']:.2f}"
        f = (lambda v, d=3: "-" if v is None else f"{v:.{d}f}")
        print(f"{name:<16} {eps:>5} {f(e['noise_multiplier'], 2):>6} {f(e['sample_rate'], 4):>6} {e['units'] or '-':>5} "
              f"{e['new_artwork_share']:5.2f} [{e['new_artwork_ci'][0]:.2f},{e['new_artwork_ci'][1]:.2f}] "
              f"{' '.join(f'{v:.2f}' for v in e['old_artworks'].values()):>20} "
              f"{m['auc']:.3f} [{m['auc_ci'][0]:.2f},{m['auc_ci'][1]:.2f}] {m['tpr_at_1pct_fpr']:6.3f} "
              f"{f(m['duplicated_auc']):>7} {f(m['single_auc']):>6} {e['utility']:5.3f} {f(e['train_seconds'], 0):>7}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="/tmp/sdguard-dp-privacy-utility", help="data, models and audits (resumable)")
    ap.add_argument("--seeds", type=int, default=32, help="generations per audited prompt")
    ap.add_argument("--guidance", type=float, default=5.0, help="of the generation audit and the utility images")
    ap.add_argument("--only", action="append", default=None, help="only this model (repeat; base and eps_inf are "
                    "always kept)")
    ap.add_argument("--extra-epsilon", type=float, action="append", default=[],
                    help="also train at this epsilon, both units (repeat for several)")
    ap.add_argument("--fresh", action="store_true", help="delete --work first")
    ap.add_argument("--results", default=str(HERE / "results" / "dp_privacy_utility.json"))
    args = ap.parse_args(argv)
    for k, v in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "SDGUARD_NO_PROGRESS": "1",
                 "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}.items():
        os.environ.setdefault(k, v)
    work = Path(args.work)
    if args.fresh:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    ft, prompts = build_data(work)
    groups = work / "audit_data"
    data = data_audit(ft, groups)
    print(f"audit data: citadel copies in clusters {data['citadel_clusters']} (one cluster: "
          f"{data['citadel_in_one_cluster']}); {data['clusters']} clusters, largest {data['largest_clusters']}",
          flush=True)
    todo = {k: v for k, v in models(args.extra_epsilon).items() if args.only is None or k in args.only or k in ("base", "eps_inf")}
    training, failed = {}, {}
    for name, dp in todo.items():
        if dp is None:
            continue
        try:
            training[name] = train(name, dp, ft, groups, work)
        except subprocess.CalledProcessError as exc:
            failed[name] = f"sdguard train exited {exc.returncode}: {' '.join(dp)}"
            print(f"FAILED {name}: {failed[name]}", flush=True)
    split = work / "model_eps_inf"  # every run has the same split (same --seed and --holdout); checked below
    same_split = {n: (work / f"model_{n}" / "members.jsonl").read_bytes() == (split / "members.jsonl").read_bytes()
                  for n in training}

    from sdguard.audit.erasure import WorldProbes, load_or_make_default_world
    from sdguard.models import DiffusionModel

    world0 = load_or_make_default_world()
    probes = WorldProbes(world0, fit_images=2000, render=DiffusionModel.load("builtin:tiny"))
    audits, summary = {}, {}
    for name in todo:
        if name != "base" and name not in training:
            continue
        spec = "builtin:tiny" if name == "base" else str(work / f"model_{name}")
        gen = audit(spec, ft, prompts, work / f"generations_{name}", args.seeds, "dct", args.guidance, reuse=True)
        gen["seeds"] = args.seeds
        mia = membership(spec, split, work / f"membership_{name}")
        util = utility(spec, work / f"utility_{name}.json", world0, probes, args.guidance)
        audits[name] = {"generations": gen, "membership": mia, "utility": util}
        summary[name] = summary_row(gen, mia, util, training.get(name))
        print(f"{name}: citadel {summary[name]['new_artwork_share']:.2f}, MIA loss AUC "
              f"{mia['loss']['auc']:.3f}, utility {util['mean']:.3f}", flush=True)
    print_table(summary)

    result = {"benchmark": "dp_privacy_utility", "protocol": {
        "world": {"seed": WORLD_SEED, "size": WORLD_SIZE}, "new_artwork": {"caption": CAPTION, "copies": COPIES},
        "holdout": HOLDOUT, "train": TRAIN, "epsilons": [*EPSILONS, *args.extra_epsilon], "units": list(UNITS), "delta": 1e-5,
        "seeds": args.seeds, "guidance": args.guidance, "old_prompts": list(OLD_PROMPTS), "mia_attacks": list(MIA_ATTACKS),
        "utility": {"prompts": UTILITY_PROMPTS, "seeds": UTILITY_SEEDS, "world": "default (seed 0)"},
        "audit_command": f"sdguard audit generations MODEL --dataset FT --prompts P --n {args.seeds} --embedder dct "
                         f"--guidance {args.guidance} --reference-prompts 0"},
        "data_audit": data, "same_split": same_split, "summary": summary, "training": training, "failed": failed,
        "audits": audits, "total_seconds": round(time.perf_counter() - t_all, 1),
        "machine": machine()}
    write_results(args.results, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
