"""Federated fine-tuning (``sdguard federate simulate``) against centralized training, audited.

What (issue 18, "Must show"): ``builtin:tiny`` is fine-tuned, with the real CLI, on data it never
saw: a world of ``sdguard data make-world --seed 1 --size 500`` plus the new picture of
``finetune_new_artwork.py``, "the amber citadel by velloran", planted 100 times (40% exact copies,
the rest light augmentations, one caption): 600 records, the citadel a sixth of them. Models::

    sdguard train builtin:tiny --dataset FT --out C --steps S --batch-size 10B COMMON        # centralized
    sdguard federate simulate builtin:tiny --dataset FT --out F --clients 10 --rounds R \\
        --local-steps K --batch-size B COMMON                                              # iid
    sdguard federate simulate ... --partition keyword:citadel                              # non-iid
    sdguard federate simulate ... --partition keyword:citadel --client-dp server \\
        --client-epsilon E --update-clip C                                                 # non-iid, DP

with ``R x K = S``: every client runs the centralized run's steps, on a tenth of its batch, so a
round-step of the federation draws as many records as a centralized step (the same data, steps
and records seen; FedAvg then averages the ten clients' updates each ``K`` steps). ``COMMON`` is
``--trainable unet --lr 1e-3`` (the full UNet: the subset that learns the citadel in 100 steps,
``dp_privacy_utility.py``). Under ``--partition keyword:citadel`` all 100 copies are on client 0
(with its tenth of the other records).

Figures:

- the training loss of every model, measured the same way: the mean MSE of the saved weights over
  every record with each record's noise and timestep fixed (``FineTuneRun.eval_loss``, the number
  the federated clients report as the global loss); the federated/centralized ratio (goal: within
  10%); the loss of the base model for scale;
- replication of the planted artwork: ``sdguard audit generations M --dataset FT --prompts P --n
  SEEDS --embedder dct --guidance 5`` (why ``dct`` and 5: ``finetune_new_artwork.py``); the share
  of the citadel caption's generations that replicate its own cluster, with the Wilson interval;
- under client-level DP: the epsilon after each round (the report's ``round_log``), the noise
  multiplier, the clip and the clients' median update norm (before clipping) per round.

Client-level DP and 10 clients. Flower's server-side fixed clipping adds Gaussian noise of std
``sigma x C / n`` to every coordinate of the mean of ``n`` clipped updates (norm <= ``C``): with
the full UNet's d = 4.3e6 coordinates, the signal per coordinate is at most ``C / sqrt(d)``,
some ``200 sigma`` times below the noise at n = 10, whatever ``C``. So at any useful epsilon the
DP model is the base plus noise of std ``sigma sqrt(R) C / n`` per coordinate: with ``C`` at the
clients' update norm that noise destroys the model, with a small ``C`` the model stays the base.
The benchmark runs both (``--dp-clips``: a multiple of the non-DP run's median update norm) and
reports the loss next to the replication, so the drop in memorization is read with its cost.
DP-FedAvg (McMahan et al. 2018) is useful with thousands of clients per round.

    python benchmarks/federated.py                 # ~16 min on 2 cores; resumable (--work)
    python benchmarks/federated.py --fresh         # delete --work first
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from finetune_new_artwork import (  # noqa: E402
    CAPTION,
    audit,
    machine,
    sdguard,
    world_with_artwork,
    write_results,
)

WORLD_SEED, WORLD_SIZE, COPIES = 1, 500, 100
COMMON = ["--trainable", "unet", "--lr", "1e-3", "--samples", "0"]
KEY = "citadel"


def build_data(work: Path) -> tuple[Path, Path]:
    ft = world_with_artwork(work, WORLD_SEED, WORLD_SIZE, COPIES, plant_seed=18)
    prompts = work / "prompts.txt"
    prompts.write_text(f"new\t{CAPTION}\n")
    return ft, prompts


def models(args) -> dict[str, list[str]]:
    """name -> its command line after the model and ``--dataset FT --out M``."""
    fed = ["federate", "simulate", "--clients", str(args.clients), "--rounds", str(args.rounds), "--local-steps",
           str(args.local_steps), "--batch-size", str(args.batch_size), "--workers", str(args.workers)]
    steps = args.rounds * args.local_steps
    out = {"centralized": ["train", "--steps", str(steps), "--batch-size", str(args.batch_size * args.clients),
                           "--checkpoint-every", str(steps + 1)],
           "fed_iid": fed,
           "fed_noniid": [*fed, "--partition", f"keyword:{KEY}"]}
    for mult in args.dp_clips:
        out[f"fed_noniid_dp_clip{mult:g}"] = [*fed, "--partition", f"keyword:{KEY}", "--client-dp", "server",
                                              "--client-epsilon", f"{args.epsilon:g}", "--update-clip", "CLIP"]
    return out


def run(name: str, cmd: list[str], ft: Path, out: Path) -> dict:
    """Train ``name`` (unless its report is there); its wall time and report results."""
    record = out.parent / f"{name}.run.json"
    if record.is_file() and json.loads(record.read_text())["cmd"] == cmd and (out / "report.json").is_file():
        return json.loads(record.read_text())
    head, rest = (cmd[:2], cmd[2:]) if cmd[0] == "federate" else (cmd[:1], cmd[1:])
    wall = sdguard(*head, "builtin:tiny", "--dataset", str(ft), "--out", str(out), *COMMON, *rest, "--overwrite")
    entry = {"cmd": cmd, "wall_seconds": wall}
    record.write_text(json.dumps(entry))
    return entry


def fixed_loss(model: str, ft: Path, scratch: Path) -> float:
    """The loss of ``model`` over every record of ``ft``, each record's draws fixed (seed 0)."""
    from sdguard.train.finetune import TrainConfig, make_accelerator
    from sdguard.train.finetune_run import FineTuneRun

    r = FineTuneRun(TrainConfig(model=model, dataset=str(ft), out=str(scratch), trainable=["unet"], steps=1,
                                samples=0), make_accelerator("no"), progress=False)
    r.prepare()
    return r.eval_loss()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="/tmp/sdguard-federated")
    ap.add_argument("--fresh", action="store_true")
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--local-steps", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=4, help="a client's batch (centralized: x --clients)")
    ap.add_argument("--workers", type=int, default=2, help="clients trained at once")
    ap.add_argument("--epsilon", type=float, default=8.0, help="client-level epsilon over --rounds")
    ap.add_argument("--dp-clips", type=float, nargs="*", default=[1.0, 0.01, 0.001],
                    help="DP runs' --update-clip as multiples of the non-DP non-iid run's median update norm")
    ap.add_argument("--seeds", type=int, default=16, help="generations of the audited prompt")
    ap.add_argument("--results", default=str(HERE / "results" / "federated.json"))
    args = ap.parse_args(argv)
    for k, v in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "SDGUARD_NO_PROGRESS": "1",
                 "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}.items():
        os.environ.setdefault(k, v)
    work = Path(args.work)
    if args.fresh:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    from sdguard.audit.stats import wilson_interval

    t_all = time.perf_counter()
    ft, prompts = build_data(work)

    runs, reports, clip_base = {}, {}, None
    for name, cmd in models(args).items():
        if "CLIP" in cmd:
            cmd = [f"{clip_base * float(name.rsplit('clip', 1)[1]):.6g}" if a == "CLIP" else a for a in cmd]
        runs[name] = run(name, cmd, ft, work / name)
        reports[name] = json.loads((work / name / "report.json").read_text())["results"]
        if name == "fed_noniid":
            norms = [r["update_norm_median"] for r in reports[name]["round_log"] if r.get("update_norm_median")]
            clip_base = statistics.median(norms)

    losses = {"base": fixed_loss("builtin:tiny", ft, work / "scratch")}
    for name in runs:
        losses[name] = fixed_loss(str(work / name), ft, work / "scratch")
    audits = {name: audit(spec, ft, prompts, work / f"audit_{name}", args.seeds, "dct", 5.0, reuse=True)
              for name, spec in {"base": "builtin:tiny", **{n: str(work / n) for n in runs}}.items()}

    summary = {}
    for name in audits:
        row = audits[name]["prompts"][CAPTION]
        hits = round(row["new_artwork_share"] * args.seeds)
        entry = {"loss": round(losses[name], 5), "citadel_share": row["new_artwork_share"],
                 "citadel_ci": [round(v, 3) for v in wilson_interval(hits, args.seeds)],
                 "replication_rate_any_cluster": row["replication_rate"],
                 "median_similarity": row["median_similarity"], "threshold": row["threshold"]}
        if name in runs:
            rep = reports[name]
            entry["wall_seconds"] = runs[name]["wall_seconds"]
            entry["command"] = "sdguard " + " ".join(runs[name]["cmd"][:2] if runs[name]["cmd"][0] == "federate" else
                                                     runs[name]["cmd"][:1]) + " builtin:tiny --dataset FT --out M " \
                + " ".join([*COMMON, *(runs[name]["cmd"][2:] if runs[name]["cmd"][0] == "federate" else
                                       runs[name]["cmd"][1:])])
            if "round_log" in rep:
                entry["rounds"] = [{k: r.get(k) for k in ("round", "replies", "aggregated", "train_loss", "eval_loss",
                                                          "update_norm_median", "epsilon")} for r in rep["round_log"]]
                entry["shares"] = rep["shares"]
                entry["privacy"] = rep.get("privacy")
                entry["report_eval_loss_last"] = rep.get("eval_loss_last")
        summary[name] = entry
    ratio = losses["fed_iid"] / losses["centralized"]
    result = {"benchmark": "federated", "caption": CAPTION, "world_seed": WORLD_SEED, "world_size": WORLD_SIZE,
              "copies": COPIES, "clients": args.clients, "rounds": args.rounds, "local_steps": args.local_steps,
              "client_batch": args.batch_size, "centralized_batch": args.batch_size * args.clients,
              "epsilon": args.epsilon, "dp_clip_multiples": args.dp_clips, "median_update_norm_noniid": clip_base,
              "seeds": args.seeds, "loss_ratio_fed_iid_over_centralized": round(ratio, 4),
              "loss_goal_met": abs(ratio - 1) <= 0.10, "summary": summary,
              "total_seconds": round(time.perf_counter() - t_all, 1), "machine": machine()}
    print(f"\nfixed-draw training loss (600 records) and citadel replication ({args.seeds} seeds, dct, guidance 5):")
    for name, e in summary.items():
        eps = (e.get("privacy") or {}).get("epsilon")
        print(f"  {name:<24} loss {e['loss']:.4f}  citadel {e['citadel_share']:.2f} (CI {e['citadel_ci'][0]:.2f}-"
              f"{e['citadel_ci'][1]:.2f},"
              f" median dct {e['median_similarity']:.3f} / thr {e['threshold']:.3f})"
              + (f"  epsilon {eps:.3g}" if eps is not None else "") + (f"  {e['wall_seconds']:.0f} s" if "wall_seconds"
                                                                     in e else ""))
    print(f"federated iid / centralized loss: {ratio:.3f} (goal: within 10%)")
    write_results(args.results, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
