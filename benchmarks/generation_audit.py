"""Generation audit throughput vs. a plain diffusers loop, side by side, on builtin:tiny.

1. images per second of `DiffusionModel.generate` (the audit's generator: per-image seeds,
   batching) against a plain `StableDiffusionPipeline.__call__` loop at the same settings
   (same batch size, steps, guidance), alternated over several repeats; medians and their ratio;
2. the wall time of a full 500-seed generation audit of one prompt (`audit_generations`).

The audit also generates its reference prompts (8 x min(n, 64) seeds) to calibrate the clique
distance: for a one-prompt audit that is half the images again (most audits have 20+ prompts).

Run: python benchmarks/generation_audit.py [--repeats 7] [--n 500]
Writes benchmarks/results/generation_audit.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("SDGUARD_NO_PROGRESS", "1")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--n", type=int, default=500)
    args = ap.parse_args()

    from sdguard.audit.generation_replication import audit_generations
    from sdguard.data import WORLD_DEFAULTS, make_world
    from sdguard.models import load_model

    model = load_model("builtin:tiny")
    pipe = model.pipeline
    prompt = "van gogh starry night"
    def run_ours(r: int) -> float:
        t = time.perf_counter()
        model.generate([prompt] * args.batch, seeds=r * args.batch, steps=args.steps, guidance=7.5, batch_size=args.batch)
        return args.batch / (time.perf_counter() - t)

    def run_plain(r: int) -> float:
        t = time.perf_counter()
        with torch.no_grad():
            pipe([prompt] * args.batch, num_inference_steps=args.steps, guidance_scale=7.5, height=32, width=32,
                 generator=torch.Generator().manual_seed(r), output_type="np")
        return args.batch / (time.perf_counter() - t)

    run_ours(0), run_plain(0)  # warm-up, not counted
    ours, plain = [], []
    for r in range(args.repeats):  # alternated, and the order swapped every repeat, so neither always goes first
        if r % 2 == 0:
            ours.append(run_ours(r)), plain.append(run_plain(r))
        else:
            plain.append(run_plain(r)), ours.append(run_ours(r))
    result = {"batch": args.batch, "steps": args.steps, "repeats": args.repeats,
              "audit_generate_images_per_s": statistics.median(ours),
              "plain_pipeline_images_per_s": statistics.median(plain),
              "ratio_ours_over_plain": statistics.median(o / p for o, p in zip(ours, plain))}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["SDGUARD_CACHE"] = str(Path(tmp) / "cache")
        make_world(Path(tmp) / "world", **WORLD_DEFAULTS)
        prompts = Path(tmp) / "prompts.txt"
        prompts.write_text(prompt + "\n")
        t = time.perf_counter()
        rep = audit_generations("builtin:tiny", str(Path(tmp) / "world"), prompts=str(prompts), n=args.n,
                                batch_size=args.batch, steps=args.steps, out=str(Path(tmp) / "audit"))
        result["full_audit_seconds"] = round(time.perf_counter() - t, 1)
        result["full_audit_n"] = args.n
        result["full_audit_timings"] = rep.timings
        result["full_audit_replication"] = rep.results["prompts"][0]["replication_rate"]
        result["full_audit_clique"] = rep.results["prompts"][0]["clique_size"]
        result["full_audit_clique_delta"] = rep.results["clique"]
        result["full_audit_generations"] = rep.results["generation"]  # the prompt's n plus the reference prompts
    out = Path(__file__).parent / "results" / "generation_audit.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
