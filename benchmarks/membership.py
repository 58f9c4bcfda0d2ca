"""Membership inference on ``builtin:tiny`` fine-tuned with ``--holdout``: every attack at its
defaults, on a matched and on a shifted split, against the base model as a control.

What (issue 16, "Must show", at a larger scale than the test): a world of ``tests/other_world.py``
(``--records`` images: random shapes, two textured artworks duplicated 15% and 4% of the world,
near-identical plain scenes 8%; nothing of it in builtin:tiny's training world) is written,
``builtin:tiny`` is fine-tuned on it with 30% held out (full UNet, ``--lr``, ``--steps`` of 16), and::

    sdguard audit membership MODEL --members MODEL/members.jsonl --nonmembers MODEL/nonmembers.jsonl

runs with the defaults (loss over t in 100..700 with 2 draws, SecMI_stat t=140 k=10, PIA t=200
p=4), then the same on ``builtin:tiny`` (never trained on these records: the control), and once
with non-members from another seed and another palette (red and blue swapped, darker: the shifted
split, whose report must carry the warning), and once with SecMI and PIA at t=500 (SecMI's
interval 50), the timesteps where the loss attack finds this model's members. Printed and written to
``benchmarks/results/membership.json``: per model and attack the evaluation-half AUC and TPR at 1%
and 0.1% FPR with 95% bootstrap intervals, the calibrated threshold's TPR/FPR, UNet evaluations per
record and seconds; per group (duplicated, single-copy members, non-members that copy a member);
the blind check's AUC and verdict. Wall times are single runs on shared CPU cores (1 thread): rough.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))


def figures(report) -> dict:
    res = report.results
    out = {"split_check": {k: res["split_check"][k] for k in ("auc", "auc_ci", "shifted", "by_features")},
           "warnings": res["warnings"], "split": res["split"], "groups": res["groups"], "attacks": {}}
    for name, a in res["attacks"].items():
        out["attacks"][name] = {k: v for k, v in a.items() if k != "roc"}
    return out


def show(label: str, fig: dict) -> None:
    c = fig["split_check"]
    print(f"{label}: blind AUC {c['auc']:.3f} [{c['auc_ci'][0]:.2f}, {c['auc_ci'][1]:.2f}] "
          f"{'SHIFTED' if c['shifted'] else 'matched'}")
    for name, a in fig["attacks"].items():
        cal = a["calibrated_threshold"]
        print(f"  {name:6s} {a['chosen']:8s} AUC {a['auc']:.3f} [{a['auc_ci'][0]:.2f}, {a['auc_ci'][1]:.2f}]  "
              f"TPR@1% {a['tpr_at_0_01_fpr']:.3f} [{a['tpr_at_0_01_fpr_ci'][0]:.2f}, {a['tpr_at_0_01_fpr_ci'][1]:.2f}]  "
              f"TPR@0.1% {a['tpr_at_0_001_fpr']:.3f}  calibrated TPR/FPR {cal['evaluation_tpr']:.3f}/"
              f"{cal['evaluation_fpr']:.3f}  {a['unet_evaluations_per_record']} evals/record  {a['seconds']:.0f}s")
        for group, r in fig["groups"]["by_attack"][name].items():
            if "auc" in r:
                print(f"      {group:12s} {r['members']:4d} vs {r['nonmembers']:4d}: AUC {r['auc']:.3f} "
                      f"[{r['auc_ci'][0]:.2f}, {r['auc_ci'][1]:.2f}]  TPR@1% {r['tpr_at_0_01_fpr']:.3f} "
                      f"[{r['tpr_at_0_01_fpr_ci'][0]:.2f}, {r['tpr_at_0_01_fpr_ci'][1]:.2f}]")
            elif r.get("flagged_share") is not None:
                print(f"      non-members that copy a member: {r['flagged']}/{r['nonmembers']} flagged "
                      f"({r['flagged_share']:.0%})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=600, help="records of the world (30%% held out)")
    ap.add_argument("--steps", type=int, default=600, help="fine-tuning steps of 16 records")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--shifted-records", type=int, default=200, help="non-members of the shifted split")
    ap.add_argument("--work", default="/tmp/sdguard-membership-benchmark", help="scratch folder (emptied)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "membership.json"))
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import shutil

    import torch
    from other_world import write_other_world

    from sdguard.audit.membership import audit_membership
    from sdguard.train import train

    t_all = time.perf_counter()
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    write_other_world(work / "world", n=args.records, seed=5)
    model = work / "model"
    t0 = time.perf_counter()
    train("builtin:tiny", str(work / "world"), str(model), holdout=0.3, steps=args.steps, batch_size=16, lr=args.lr,
          warmup_steps=max(1, args.steps // 20), samples=0, progress=False)
    train_seconds = time.perf_counter() - t0
    print(f"fine-tuned in {train_seconds:.0f}s ({args.steps} steps of 16 on {args.records} records, 30% held out)")
    members, nonmembers = str(model / "members.jsonl"), str(model / "nonmembers.jsonl")
    runs = {}
    from other_world import recoloured_world

    shifted = str(recoloured_world(work / "other", args.shifted_records, 9))
    high_t = dict(attacks=["secmi", "pia"], secmi_t=500, secmi_interval=50, pia_t=500)
    for label, spec, non, extra in (("trained", str(model), nonmembers, {}),
                                    ("base (control)", "builtin:tiny", nonmembers, {}),
                                    ("trained, shifted split", str(model), shifted, {}),
                                    ("trained, SecMI and PIA at t=500", str(model), nonmembers, high_t)):
        t0 = time.perf_counter()
        folder = "".join(ch if ch.isalnum() else "_" for ch in label)
        report = audit_membership(spec, members, non, out=str(work / folder), dataset=str(work / "world"),
                                  progress=False, **extra)
        runs[label] = {**figures(report), "seconds": time.perf_counter() - t0}
        show(label, runs[label])
    result = {"benchmark": "membership", "settings": vars(args), "train_seconds": train_seconds, "runs": runs,
              "machine": {"python": platform.python_version(), "threads": torch.get_num_threads(),
                          "platform": platform.platform()},
              "total_seconds": time.perf_counter() - t_all}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=float) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
