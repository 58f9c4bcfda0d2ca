"""The published memorization-detection protocol on a real Stable Diffusion checkpoint (a GPU run).

Wen et al. 2024 and Asthana & Belagiannis 2026 evaluate on the 500 captions Stable Diffusion v1 is
known to reproduce (Webster 2023) against non-memorized captions (COCO). ``--suite sdv1-500``
ships both (``src/sdguard/data/prompts/``): 500 memorized captions, 500 COCO captions scored and
500 other COCO captions to calibrate the 1% FPR threshold on. This script runs, through the CLI::

    sdguard audit memorization MODEL --suite sdv1-500 --detector wen [--generations 4 --scored-steps K]
    sdguard audit memorization MODEL --suite sdv1-500 --detector anisotropy

and prints AUC, TPR@1%FPR, UNet evaluations and seconds per prompt next to the published figures
(Wen et al. Table 1, SD v1.4: first step, 1 generation AUC 0.960 / TPR@1%FPR 0.76, up to 0.999 /
0.99 with 4 generations; anisotropy: AUC 0.992-0.999, TPR@1%FPR 0.93-0.98). It needs the model's
weights (a hub id where the hub is reachable, or a local folder) and, in practice, a GPU: on a CPU
a 512-pixel SD UNet pass takes seconds, 2000 prompts x 4 evaluations hours. Not run in CI.

    python benchmarks/memorization_sd.py --model CompVis/stable-diffusion-v1-4 --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {
    "wen, 1 generation, first step": ["--detector", "wen"],
    "wen, 4 generations, first step": ["--detector", "wen", "--generations", "4"],
    "wen, 4 generations, first 10 steps": ["--detector", "wen", "--generations", "4", "--scored-steps", "10"],
    "anisotropy, 1 generation": ["--detector", "anisotropy"],
}
PUBLISHED = {"wen, 1 generation, first step": "AUC 0.960, TPR@1%FPR 0.76 (Wen et al., SD v1.4)",
             "anisotropy, 1 generation": "AUC 0.992-0.999, TPR@1%FPR 0.93-0.98 (Asthana & Belagiannis)"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="any model spec (hub id or folder of SD v1.x / v2.x)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--limit", type=int, default=None, help="at most this many prompts of each label")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "memorization_sd.json"))
    args = ap.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as d:
        for k, (name, extra) in enumerate(SETTINGS.items()):
            folder = Path(d) / str(k)
            cmd = [sys.executable, "-m", "sdguard", "audit", "memorization", args.model, "--suite", "sdv1-500",
                   "--out", str(folder), *extra, *(["--device", args.device] if args.device else []),
                   *(["--limit", str(args.limit)] if args.limit else [])]
            subprocess.run(cmd, check=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
            det = next(iter(json.loads((folder / "report.json").read_text())["results"]["detectors"].values()))
            m = det["metrics"]
            results[name] = {"auc": m["auc"], "auc_ci": m["auc_ci"], "tpr_at_1pct_fpr": m["tpr_at_0_01_fpr"],
                             "unet_evaluations_per_prompt": det["unet_evaluations_per_prompt"],
                             "seconds_per_prompt": det["seconds_per_prompt"], "published": PUBLISHED.get(name)}
            print(f"{name:40s} AUC {m['auc']:.3f} TPR@1%FPR {m['tpr_at_0_01_fpr']:.2f} "
                  f"({det['unet_evaluations_per_prompt']} evals, {det['seconds_per_prompt']:.3f} s/prompt)"
                  + (f"   published: {PUBLISHED[name]}" if name in PUBLISHED else ""), flush=True)
    Path(args.out).write_text(json.dumps({"model": args.model, "results": results}, indent=2))


if __name__ == "__main__":
    main()
