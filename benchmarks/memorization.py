"""Fast memorization detection vs the generation audit, and inference-time mitigation, on builtin:tiny.

What (issue 16, "Must show"): the prompts of the world's planted artworks (31 captions) against
200 plain scene captions of the same world (``--suite world``; the threshold is calibrated on 200
other scene captions at 1% FPR), all run through the real CLI:

1. Detection, one run per setting::

       sdguard audit memorization builtin:tiny --suite world --detector D [...]

   - ``wen`` as published (the sampler's first step, 1 generation; 2 UNet evaluations);
   - ``wen --timestep 100`` (the extension: pure noise scored at a low-noise timestep; 2
     evaluations) and with ``--generations 2`` (4);
   - ``anisotropy`` as published (4 evaluations) and with ``--anisotropy-weight -100`` (the
     extension: the alignment term dominates, with the sign it has on this model).
   AUC with its bootstrap interval, TPR at 1% FPR, UNet evaluations and seconds per prompt.
   Seconds are the median of ``--runs`` runs of the scoring alone, run one after another.
2. The generation audit of the same 231 prompts (``sdguard audit generations --prompts FILE --n N
   --embedder dct``, ``N`` seeds each, 25 steps): the replication rate is its memorization score
   (ties broken by the median similarity); its AUC, TPR at 1% FPR, UNet evaluations (``N`` x 25 x
   2) and seconds per prompt, side by side with detection: the ratios.
3. Mitigation: the first caption of each artwork and 8 scene captions, ``--n 32`` seeds, audited
   without mitigation, with ``--mitigate wen --mitigate-from`` the ``wen --timestep 100`` detection
   run (images at or above its threshold optimized down to its ordinary median), and with Wen's
   single target (``--mitigate-target`` = that median: every image above it optimized): each
   artwork's replication rate, and the utility cost: the world probes' shape, colour and position
   accuracy on the scene prompts' generations, and the share of their images left untouched.

Figures go to stdout and ``benchmarks/results/memorization.json``. Run with 1-2 threads, nothing
else running: ``PYTHONPATH=src python benchmarks/memorization.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SDGUARD = [sys.executable, "-m", "sdguard"]
DETECTION = {
    "wen (published: first step)": ["--detector", "wen"],
    "wen --timestep 100": ["--detector", "wen", "--timestep", "100"],
    "wen --timestep 100 --generations 2": ["--detector", "wen", "--timestep", "100", "--generations", "2"],
    "anisotropy (published)": ["--detector", "anisotropy"],
    "anisotropy --anisotropy-weight -100": ["--detector", "anisotropy", "--anisotropy-weight", "-100"],
}


def cli(*args) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "SDGUARD_NO_PROGRESS": "1", "PYTHONPATH": str(ROOT / "src")}
    subprocess.run([*SDGUARD, *map(str, args)], check=True, env=env, stdout=subprocess.DEVNULL)


def report(folder: Path) -> dict:
    return json.loads((folder / "report.json").read_text())


def detection(tmp: Path, world: Path, runs: int) -> dict:
    out = {}
    for name, args in DETECTION.items():
        seconds = []
        for r in range(runs):
            folder = tmp / f"det{len(out)}_{r}"
            cli("audit", "memorization", "builtin:tiny", "--suite", "world", "--dataset", world, "--out", folder, *args)
            rep = report(folder)
            det = next(iter(rep["results"]["detectors"].values()))
            seconds.append(det["seconds_per_prompt"])
        m = det["metrics"]
        out[name] = {"auc": m["auc"], "auc_ci": m["auc_ci"], "tpr_at_1pct_fpr": m["tpr_at_0_01_fpr"],
                     "tpr_at_1pct_fpr_ci": m["tpr_at_0_01_fpr_ci"], "at_threshold": m.get("at_threshold"),
                     "unet_evaluations_per_prompt": det["unet_evaluations_per_prompt"],
                     "seconds_per_prompt_median": statistics.median(seconds), "seconds_runs": seconds,
                     "folder": str(tmp / f"det{len(out)}_0")}
        print(f"{name:40s} AUC {m['auc']:.3f} [{m['auc_ci'][0]:.3f}, {m['auc_ci'][1]:.3f}]  TPR@1%FPR "
              f"{m['tpr_at_0_01_fpr']:.2f}  {det['unet_evaluations_per_prompt']} evals  "
              f"{statistics.median(seconds) * 1000:.1f} ms/prompt", flush=True)
    return out


def generation_audit(tmp: Path, world: Path, scored: dict, n: int) -> dict:
    from sdguard.audit.stats import roc_auc, tpr_at_fpr

    prompts = tmp / "all_prompts.txt"
    rows = scored["results"]["prompts"]
    prompts.write_text("".join(f"user\t{r['prompt']}\n" for r in rows))
    folder = tmp / "generations"
    t0 = time.perf_counter()
    cli("audit", "generations", "builtin:tiny", "--dataset", world, "--prompts", prompts, "--n", n,
        "--reference-prompts", 0, "--embedder", "dct", "--out", folder)
    wall = time.perf_counter() - t0
    rep = report(folder)
    by = {p["prompt"]: p["replication_rate"] + 1e-3 * p["median_similarity"] for p in rep["results"]["prompts"]}
    s = np.array([by[r["prompt"]] for r in rows])
    y = np.array([r["label"] == "memorized" for r in rows])
    gen_seconds = rep["timings"]["generate"] + rep["timings"]["analyse"]
    out = {"n": n, "steps": 25, "auc": roc_auc(s, y), "tpr_at_1pct_fpr": tpr_at_fpr(s, y, 0.01),
           "unet_evaluations_per_prompt": n * 25 * 2, "seconds_per_prompt": gen_seconds / len(rows),
           "wall_seconds": wall}
    print(f"{'generation audit (' + str(n) + ' seeds)':40s} AUC {out['auc']:.3f}  TPR@1%FPR {out['tpr_at_1pct_fpr']:.2f}  "
          f"{out['unet_evaluations_per_prompt']} evals  {out['seconds_per_prompt'] * 1000:.0f} ms/prompt", flush=True)
    return out


def _scene_images(folder: Path, first: int, count: int) -> np.ndarray:
    """The stored generations of prompts ``first .. first + count - 1``, every chunk, in seed order."""
    out = []
    for k in range(first, first + count):
        for chunk in sorted((folder / "generations").glob(f"p{k:04d}_s*.npz")):
            with np.load(chunk) as z:
                out.append(z["images"])
    return np.concatenate(out)


def mitigation(tmp: Path, world: Path, detection_folder: str, n: int) -> dict:
    from sdguard.audit.erasure.measure import attribute_accuracy, scene_prompts
    from sdguard.audit.erasure.probes import WorldProbes
    from sdguard.data.world import load_world
    from sdguard.data.world.artworks import ARTWORKS
    from sdguard.models import DiffusionModel

    w = load_world(world)
    scenes = scene_prompts(w, 8, seed=1)
    arts = [a.captions[0] for a in ARTWORKS]
    prompts = tmp / "mitigation_prompts.txt"
    prompts.write_text("".join(f"user\t{p}\n" for p in arts + [s for s, _ in scenes]))
    probes = WorldProbes(w, 2000, 0, render=DiffusionModel.load("builtin:tiny"))
    truth = [t for _, t in scenes for _ in range(n)]
    median = report(Path(detection_folder))["results"]["detectors"]["wen"]["threshold"]["ordinary_median"]
    variants = {"none": [],
                "--mitigate-from (threshold -> ordinary median)": ["--mitigate", "wen", "--mitigate-from",
                                                                   detection_folder],
                "--mitigate-target = ordinary median (Wen's single target)": [
                    "--mitigate", "wen", "--mitigate-target", f"{median:.6g}", "--mitigate-timestep", "100"]}
    out: dict = {}
    for k, (name, extra) in enumerate(variants.items()):
        folder = tmp / f"mitigation_{k}"
        cli("audit", "generations", "builtin:tiny", "--dataset", world, "--prompts", prompts, "--n", n,
            "--reference-prompts", 0, "--embedder", "dct", "--out", folder, *extra)
        rep = report(folder)
        rates = {p["prompt"]: p["replication_rate"] for p in rep["results"]["prompts"]}
        images = _scene_images(folder, len(arts), len(scenes))
        row = {"artworks": {a: rates[a] for a in arts}, "scene_accuracy": attribute_accuracy(probes, images, truth),
               "seconds_generate": rep["timings"]["generate"]}
        if k == 0:
            base = images
        else:
            row["scene_images_untouched"] = float(np.mean(np.all((images == base).reshape(len(images), -1), 1)))
            row["mitigation"] = {k2: v for k2, v in rep["results"]["generation"]["mitigation"].items() if k2 != "prompts"}
        out[name] = row
        acc = row["scene_accuracy"]
        print(f"{name}: " + ", ".join(f"{a.split(' by ')[0][:22]} {r:.2f}" for a, r in row["artworks"].items())
              + f"; scene attribute accuracy {acc['mean']:.3f} (shape {acc['shape']:.2f}, colour {acc['color']:.2f}, "
              f"position {acc['position']:.2f})" + (f"; {row['scene_images_untouched']:.0%} of scene images untouched"
                                                      if k else "") + f"; generation {row['seconds_generate']:.0f} s",
              flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3, help="detection runs per setting (median seconds)")
    ap.add_argument("--n", type=int, default=32, help="seeds per prompt of the generation audits")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "memorization.json"))
    ap.add_argument("--mitigation-only", action="store_true", help="redo the mitigation part only (one detection "
                    "run for its threshold), keeping the other figures of --out")
    args = ap.parse_args()
    from sdguard.data import WORLD_DEFAULTS, make_world

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        world = tmp / "world"
        make_world(world, **WORLD_DEFAULTS)
        if args.mitigation_only:
            folder = tmp / "det"
            cli("audit", "memorization", "builtin:tiny", "--suite", "world", "--dataset", world, "--out", folder,
                *DETECTION["wen --timestep 100"])
            result = json.loads(Path(args.out).read_text())
            result["mitigation"] = mitigation(tmp, world, str(folder), args.n)
            Path(args.out).write_text(json.dumps(result, indent=2))
            print(f"wrote {args.out}")
            return
        det = detection(tmp, world, args.runs)
        scored = report(Path(det["wen --timestep 100"]["folder"]))
        gen = generation_audit(tmp, world, scored, args.n)
        best = det["wen --timestep 100"]
        ratios = {"unet_evaluations": gen["unet_evaluations_per_prompt"] / best["unet_evaluations_per_prompt"],
                  "seconds": gen["seconds_per_prompt"] / best["seconds_per_prompt_median"]}
        print(f"wen --timestep 100 vs the generation audit: {ratios['unet_evaluations']:.0f}x fewer UNet evaluations, "
              f"{ratios['seconds']:.0f}x less time per prompt; AUC {best['auc']:.3f} vs {gen['auc']:.3f}")
        mit = mitigation(tmp, world, best["folder"], args.n)
        for v in det.values():
            v.pop("folder")
    result = {"detection": det, "generation_audit": gen, "ratios_wen_timestep_100_vs_generation_audit": ratios,
              "mitigation": mit, "threads": int(os.environ.get("OMP_NUM_THREADS", "0") or 0)}
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
