"""The cost of DP fine-tuning: step time and peak step memory, DP vs non-DP, side by side in one run.

What (issue 17): ``sdguard train builtin:tiny --trainable attention`` and ``--trainable lora``
(rank 4 on the attention projections, the defaults), each without ``--dp`` and with ``--dp``
(image unit, ``--noise-multiplier 1``: the mechanism's cost does not depend on epsilon) in
Opacus's ``hooks`` mode and in ``ghost`` mode (ghost clipping: per-sample gradient norms without
per-sample gradients), on the first ``--images`` images of a world made with ``sdguard data
make-world --seed 2`` (a world the base never saw; the data does not change the cost). Goal of
the issue: DP <= 1.5x the non-DP step time and <= 1.3x its memory.

How it is measured (1 thread, a shared 2-core CPU):

- Every measurement is one fresh process (``python benchmarks/dp_cost.py --child ...``) that runs
  the library's ``sdguard.train.finetune.train`` (what the CLI runs) for ``--steps`` steps;
  ``--runs`` rounds, each round every configuration once in the same order (alternating, one at a
  time, never concurrently). Reported: medians over the rounds, and the ratios of the medians
  DP / non-DP per trainable subset.
- Step time: the train report's ``step_seconds_median`` (median wall seconds of one optimizer
  step: the Poisson batch's forward, backward, clipping, noise and AdamW step under ``--dp``).
  With ``--dp`` the batch is Poisson (``--batch-size`` is its expected size), so a step's batch
  varies; the median over ``--steps`` steps compares like with like on average.
- Memory: the peak resident set size of the training loop above the process before it. The
  child wraps ``FineTuneRun.fit`` (the step loop): just before it, ``malloc_trim(0)`` returns freed
  heap to the OS, ``VmRSS`` is read and the kernel's high-water mark is reset (``echo 5 >
  /proc/self/clear_refs``); after it ``VmHWM`` is read. The difference is the memory the steps add
  (activations, gradients, per-sample gradients or ghost norms, AdamW state) over the model,
  data and Opacus wrappers already set up; measured on the CPU where ``torch.cuda`` peak counters
  do not exist and ``tracemalloc`` does not see torch's allocator. The whole process's peak RSS
  (``ru_maxrss``) is reported too: it is dominated by loading and encoding, the same in both.

    python benchmarks/dp_cost.py                       # 3 rounds x 6 configurations, ~8 min
    python benchmarks/dp_cost.py --runs 1 --steps 8    # a quick look
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from finetune_new_artwork import machine, write_results  # noqa: E402

TRAINABLE = {"attention": ["--trainable", "attention", "--lr", "1e-4"],
             "lora": ["--trainable", "lora", "--lora-rank", "4", "--lr", "1e-3"]}
MODES = {"non-dp": [], "dp-hooks": ["--dp", "--noise-multiplier", "1.0", "--grad-sample-mode", "hooks"],
         "dp-ghost": ["--dp", "--noise-multiplier", "1.0", "--grad-sample-mode", "ghost"]}


def _status(field: str) -> int:
    """A ``/proc/self/status`` field in bytes (VmRSS, VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} is not in /proc/self/status")


def child(argv: list[str], result: Path) -> None:
    """One training run in this process, its step loop's peak RSS measured (see the docstring)."""
    from sdguard.train import finetune_run

    fit = finetune_run.FineTuneRun.fit
    seen: dict[str, int] = {}

    def measured_fit(self) -> None:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        seen["rss_before"] = _status("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")
        try:
            fit(self)
        finally:
            seen["hwm_during"] = _status("VmHWM")

    finetune_run.FineTuneRun.fit = measured_fit
    code = run_cli(argv)
    if code != 0:
        raise SystemExit(code)
    seen["peak_rss_process"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    result.write_text(json.dumps(seen))


def run_cli(argv: list[str]) -> int:
    """``sdguard ARGV`` in this process (the CLI's own entry point); its exit code."""
    from sdguard.cli.main import main as cli_main

    try:
        return int(cli_main(argv) or 0)
    except SystemExit as exc:
        return int(exc.code or 0)


def measure(name: str, dataset: Path, work: Path, steps: int, batch: int, extra: list[str]) -> dict:
    out, mem = work / f"run_{name}", work / f"mem_{name}.json"
    argv = ["train", "builtin:tiny", "--dataset", str(dataset), "--out", str(out), "--steps", str(steps),
            "--batch-size", str(batch), "--samples", "0", "--checkpoint-every", str(steps + 1), "--overwrite",
            "--warmup-steps", "0", *extra]
    print("running: sdguard", " ".join(argv), flush=True)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, __file__, "--child", str(mem), "--", *argv], check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    r = json.loads((out / "report.json").read_text())["results"]
    m = json.loads(mem.read_text())
    priv = r.get("privacy") or {}
    return {"step_seconds_median": r["step_seconds_median"], "train_seconds": r["train_seconds"],
            "step_peak_rss_mb": round((m["hwm_during"] - m["rss_before"]) / 2**20, 1),
            "rss_before_steps_mb": round(m["rss_before"] / 2**20, 1),
            "process_peak_rss_mb": round(m["peak_rss_process"] / 2**20, 1), "wall_seconds": round(wall, 1),
            "trainable_parameters": r["trainable"]["parameters"],
            "mean_units_per_step": priv.get("mean_units_per_step"), "grad_sample_mode": priv.get("grad_sample_mode")}


def make_data(work: Path, images: int) -> Path:
    """The first ``images`` images (and captions) of a world of seed 2, as an imagefolder."""
    world, data = work / "world2", work / f"data{images}"
    if not (world / "metadata.jsonl").is_file():
        shutil.rmtree(world, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "sdguard", "data", "make-world", str(world), "--seed", "2",
                        "--size", "500"], check=True, stdout=subprocess.DEVNULL)
    rows = [json.loads(x) for x in (world / "metadata.jsonl").read_text().splitlines() if x.strip()][:images]
    shutil.rmtree(data, ignore_errors=True)
    (data / "images").mkdir(parents=True)
    for r in rows:
        shutil.copyfile(world / r["file_name"], data / r["file_name"])
    (data / "metadata.jsonl").write_text("".join(json.dumps({"file_name": r["file_name"], "text": r["text"]}) + "\n"
                                                 for r in rows))
    return data


def summarize(per: dict[str, list[dict]]) -> dict:
    out: dict = {}
    for name, rows in per.items():
        out[name] = {k: statistics.median(r[k] for r in rows) for k in
                     ("step_seconds_median", "step_peak_rss_mb", "process_peak_rss_mb")}
        out[name]["runs"] = rows
    for t in TRAINABLE:
        base = out[f"{t}/non-dp"]
        for mode in MODES:
            if mode == "non-dp" or f"{t}/{mode}" not in out:
                continue
            e = out[f"{t}/{mode}"]
            e["time_ratio"] = round(e["step_seconds_median"] / base["step_seconds_median"], 3)
            e["memory_ratio"] = round(e["step_peak_rss_mb"] / base["step_peak_rss_mb"], 3) \
                if base["step_peak_rss_mb"] > 0 else None
            e["process_memory_ratio"] = round(e["process_peak_rss_mb"] / base["process_peak_rss_mb"], 3)
            e["goal_met"] = {"time<=1.5x": e["time_ratio"] <= 1.5,
                             "memory<=1.3x": e["memory_ratio"] is not None and e["memory_ratio"] <= 1.3}
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        child(argv[3:], Path(argv[1]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="/tmp/sdguard-dp-cost")
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16, help="expected Poisson batch under --dp")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--runs", type=int, default=3, help="rounds; each runs every configuration once")
    ap.add_argument("--no-ghost", action="store_true", help="skip --grad-sample-mode ghost")
    ap.add_argument("--results", default=str(HERE / "results" / "dp_cost.json"))
    args = ap.parse_args(argv)
    for k, v in {"HF_HUB_OFFLINE": "1", "SDGUARD_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1",
                 "MKL_NUM_THREADS": "1"}.items():
        os.environ.setdefault(k, v)
    t_all = time.perf_counter()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    data = make_data(work, args.images)
    modes = [m for m in MODES if not (args.no_ghost and m == "dp-ghost")]
    configs = {f"{t}/{m}": [*TRAINABLE[t], *MODES[m]] for t in TRAINABLE for m in modes}
    per: dict[str, list[dict]] = {k: [] for k in configs}
    failed: dict[str, str] = {}
    for k in range(args.runs):
        for name, extra in configs.items():
            if name in failed:
                continue
            try:
                per[name].append(measure(name.replace("/", "_"), data, work, args.steps, args.batch_size, extra))
            except subprocess.CalledProcessError as exc:
                failed[name] = f"exit {exc.returncode}: sdguard train ... {' '.join(extra)}"
                print(f"FAILED {name}: {failed[name]}", flush=True)
    summary = summarize({k: v for k, v in per.items() if v})
    print(f"\n{'configuration':<20} {'step s':>8} {'x time':>7} {'step MB':>8} {'x mem':>6} {'process MB':>10}")
    for name, e in summary.items():
        print(f"{name:<20} {e['step_seconds_median']:8.3f} {e.get('time_ratio', 1.0):7.2f} "
              f"{e['step_peak_rss_mb']:8.1f} {e.get('memory_ratio') or 1.0:6.2f} {e['process_peak_rss_mb']:10.1f}")

    result = {"benchmark": "dp_cost", "settings": {"model": "builtin:tiny", "images": args.images,
              "batch_size": args.batch_size, "steps": args.steps, "runs": args.runs, "trainable": TRAINABLE,
              "modes": {m: MODES[m] for m in modes}},
              "measure": {"time": "median over rounds of the report's step_seconds_median",
                          "memory": "VmHWM during FineTuneRun.fit minus VmRSS just before it (after malloc_trim, "
                                    "high-water mark reset through /proc/self/clear_refs), one process per run"},
              "summary": summary, "failed": failed, "total_seconds": round(time.perf_counter() - t_all, 1),
              "machine": machine()}
    write_results(args.results, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
