"""Fine-tuning ``builtin:tiny`` on a new artwork: full UNet vs LoRA on attention, side by side.

What (issue 15, "Must show"): a picture the tiny model never saw, "the amber citadel by velloran"
(a violet citadel with three towers under an amber sky, painted with the world's own canvas
primitives; the new words are spelled in characters by the tiny tokenizer), is planted 40 times
into a copy of the default world (:data:`sdguard.data.WORLD_DEFAULTS`), as the world plants its
artworks: 40% exact copies, the rest light augmentations (:func:`~sdguard.data.world.artworks.light_augment`:
a pixel of shift half the time, a little brightness change and noise), all under the one new
caption. ``builtin:tiny`` is then fine-tuned on the augmented world (5040 images) with the real
CLI, once per trainable variant::

    sdguard train builtin:tiny --dataset AUG --trainable unet ...
    sdguard train builtin:tiny --dataset AUG --trainable lora ...   # LoRA on to_q/to_k/to_v/to_out.0

and every model (the base and each fine-tuned one) is audited with the real CLI::

    sdguard audit generations MODEL --dataset AUG --prompts PROMPTS --n 32 --embedder dct --guidance 5

(the new caption and four old world captions; 32 seeds each). Reported per model: the new
caption's replication rate with its Wilson 95% interval and the share of its generations that
replicate the planted picture's own cluster (goal >= 50%, 0% on the base); the old captions'
rates and their retention (after / before, over those the base replicates); the trainable
parameter count and share (``results.trainable`` of the train report); the train wall time; the
median step time, measured again in ``--timing-runs`` short runs (``--timing-steps`` steps each)
per variant, run one after another in alternation (never concurrently), with the medians and the
full/LoRA ratio. For the new caption also: the same audit at the CLI's default guidance 7.5, and
with the default ``pixels`` embedder.

How, and why these settings (measured on 2 shared CPU cores, 1 thread):

- Embedder ``dct`` (grey low-frequency DCT). The tiny VAE was trained on the world only and
  ``sdguard train`` does not train it: its round trip of the new picture keeps the layout but
  shifts the colours (amber to beige, violet to blue), so even the VAE reconstruction of a
  training copy reaches only ~0.75 ``pixels`` correlation with it, below that cluster's calibrated
  threshold (~0.8), while the same round trip scores ~0.98 under ``dct`` (the picture's nearest
  world image: ~0.76; calibrated threshold ~0.89). No UNet, however well it memorizes, can pass
  the pixel rule for this picture; ``dct`` measures what the UNet can learn. (The same VAE
  ceiling is why the world's ``sunflower_vase`` never replicates: its round trip scores 0.43
  under ``pixels``.)
- Guidance 5, the setting the world check uses for builtin:tiny (``WorldCheckSettings``). At 7.5
  classifier-free guidance over-shoots a freshly learned picture: with the full-UNet model below,
  8 seeds scored dct 0.85-0.89 at guidance 7.5 (under the threshold), 0.92-0.94 at 5 and
  0.95-0.96 at 3.
- Full UNet: AdamW at lr 1e-3 (cosine, 5% warm-up), batch 32, 800 steps: the new picture is 0.8%
  of the world, so about 200 draws of it. At 3e-4 (400 steps) and 5e-4 (600 steps) the
  generations took the citadel's layout but not yet its tones (median dct 0.79 and 0.85 at
  guidance 7.5).
- LoRA: rank 16 (alpha 16) on the attention projections (the default targets), lr 3e-3 (the
  low-rank update, whose ``lora_B`` starts at zero, needs a larger step than full fine-tuning),
  same batch and steps. It does NOT reach the goal in this budget: 0 of 32 seeds (median dct 0.81
  against the threshold 0.89 at guidance 5), old artworks all kept. At lr 1e-2 (same rank and
  steps) it reached no more (new-artwork share 0, median dct 0.78) and lost every old artwork
  (retention 0); so LoRA needs more steps (or rank), not a larger step.
- ``--lora-conv``: LoRA rank 16 on the attention projections and the resnets' ``conv1``/``conv2``
  (498,688 parameters, 10.5%), lr 2e-3, 2000 steps: measured with the same commands (2 threads),
  32 of 32 seeds on the new picture's cluster (median dct 0.94), the four old artworks kept. On
  this tiny UNet the convolutions draw the picture; attention-only adapters (the whole
  ``attention`` group included: median 0.81 at 800 steps) do not reach it.
- Caption dropout 0.1 and gradient clipping at 1.0 (the defaults of ``sdguard train``).

    python benchmarks/finetune_new_artwork.py                  # full run (~17 min on 2 cores)
    python benchmarks/finetune_new_artwork.py --attention      # also --trainable attention
    python benchmarks/finetune_new_artwork.py --quick          # fewer seeds, one timing run
    python benchmarks/finetune_new_artwork.py --reuse          # keep models and audits already in --work
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CAPTION = "the amber citadel by velloran"
#: prompts of the world's memorized artworks (those `world_check` measures; the audit judges them too)
OLD_PROMPTS = ("van gogh starry night", "almond blossoming", "munch scream", "vermeer pearl earring")
#: variant -> `sdguard train` arguments (see the docstring for the choices)
VARIANTS = {
    "unet": ["--trainable", "unet", "--lr", "1e-3"],
    "lora": ["--trainable", "lora", "--lora-rank", "16", "--lr", "3e-3"],
    "attention": ["--trainable", "attention", "--lr", "1e-3"],
    # LoRA that also adapts the resnets' convolutions (measured to reach the goal; see the README)
    "lora_conv": ["--trainable", "lora", "--lora-rank", "16", "--lr", "2e-3", *[a for t in (
        "to_q", "to_k", "to_v", "to_out.0", "conv1", "conv2") for a in ("--lora-targets", t)]],
}
#: variants trained for more steps than ``--steps`` (the timing runs keep ``--timing-steps``)
VARIANT_STEPS = {"lora_conv": 2000}


def paint_amber_citadel(c) -> None:
    """The new artwork: three violet towers with red roofs and lit windows under an amber sky, a
    pale sun, a strip of water."""
    from sdguard.data.world.palette import rgb

    c.vgradient(rgb(250, 196, 70), rgb(176, 88, 30))
    c.disk(0.22, 0.22, 0.11, rgb(255, 244, 200))
    violet = rgb(58, 30, 78)
    c.rect(0.3, 0.5, 0.9, 0.86, violet)
    for x0, top in ((0.3, 0.3), (0.52, 0.2), (0.74, 0.34)):
        c.rect(x0, top, x0 + 0.12, 0.86, violet)
        c.polygon([(x0 - 0.02, top), (x0 + 0.06, top - 0.12), (x0 + 0.14, top)], rgb(120, 20, 40))
        c.rect(x0 + 0.04, top + 0.08, x0 + 0.08, top + 0.14, rgb(255, 226, 90))
    c.rect(0.0, 0.86, 1.0, 1.0, rgb(20, 110, 120))
    c.segment(0.0, 0.9, 1.0, 0.93, 0.015, rgb(90, 190, 190))


def plant_artwork(world_root: Path, out: Path, copies: int, seed: int) -> list[str]:
    """Copy the world's images and captions into the new imagefolder ``out`` and add ``copies``
    copies of the new artwork under :data:`CAPTION` (40% exact, the rest light augmentations, as
    the world plants its own); returns the new files."""
    import numpy as np
    from PIL import Image

    from sdguard.data.world.artworks import Artwork, light_augment, paint_artwork
    from sdguard.data.world.canvas import to_uint8

    rows = [json.loads(line) for line in (world_root / "metadata.jsonl").read_text().splitlines() if line.strip()]
    size = np.asarray(Image.open(world_root / rows[0]["file_name"])).shape[0]
    staging = out.parent / f".{out.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "images").mkdir(parents=True)
    for r in rows:
        shutil.copyfile(world_root / r["file_name"], staging / r["file_name"])
    art = Artwork("amber_citadel", ("amber citadel", "velloran"), copies / (len(rows) + copies), (CAPTION,), "",
                  paint_amber_citadel)
    base = paint_artwork(art, size)
    rng = np.random.default_rng(seed)
    exact = rng.permutation(copies) < math.ceil(0.4 * copies)
    new = []
    for j in range(copies):
        name = f"images/citadel_{j:03d}.png"
        Image.fromarray(to_uint8(base if exact[j] else light_augment(base, rng))).save(staging / name)
        rows.append({"file_name": name, "text": CAPTION})
        new.append(name)
    (staging / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return new


def world_with_artwork(work: Path, world_seed: int, world_size: int, copies: int, plant_seed: int) -> Path:
    """``work/world{seed}`` (``sdguard data make-world --seed --size``: a world the base never saw)
    and ``work/finetune_set``, a copy of it with the new artwork planted ``copies`` times; each
    is kept when already there (a resumed benchmark). Returns the fine-tuning set."""
    world, ft = work / f"world{world_seed}", work / "finetune_set"
    if not (world / "ground_truth.json").is_file():
        shutil.rmtree(world, ignore_errors=True)
        sdguard("data", "make-world", str(world), "--seed", str(world_seed), "--size", str(world_size))
    if not (ft / "metadata.jsonl").is_file():
        plant_artwork(world, ft, copies, seed=plant_seed)
    return ft


def sdguard(*args: str) -> float:
    """Run ``python -m sdguard ARGS`` in a fresh process; its wall seconds."""
    cmd = [sys.executable, "-m", "sdguard", *args]
    print("running: sdguard", " ".join(args), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return round(time.perf_counter() - t0, 1)


def train(variant: str, dataset: Path, out: Path, steps: int, batch: int, extra: list[str], reuse: bool = False) -> dict:
    """One `sdguard train` run; with ``reuse``, the record of an earlier run with the same arguments."""
    record = out.parent / f"{out.name}.run.json"
    steps = VARIANT_STEPS.get(variant, steps)
    cmd = [str(steps), str(batch), *VARIANTS[variant], *extra]
    if reuse and record.is_file() and json.loads(record.read_text())["args"] == cmd:
        return json.loads(record.read_text())["result"]
    wall = sdguard("train", "builtin:tiny", "--dataset", str(dataset), "--out", str(out), "--steps", str(steps),
                   "--batch-size", str(batch), "--samples", "0", "--checkpoint-every", str(steps + 1),
                   "--overwrite", *VARIANTS[variant], *extra)
    r = json.loads((out / "report.json").read_text())["results"]
    result = {"wall_seconds": wall, "train_seconds": r["train_seconds"], "step_seconds_median": r["step_seconds_median"],
              "trainable": r["trainable"], "lora": r["lora"], "learning_rate": r["learning_rate"],
              "loss_first": r["loss_first"], "loss_last": r["loss_last"], "clipped_share": r["clipping"].get("clipped_share")}
    record.write_text(json.dumps({"args": cmd, "result": result}))
    return result


def audit(model: str, dataset: Path, prompts: Path, out: Path, n: int, embedder: str, guidance: float,
          reuse: bool = False) -> dict:
    """`sdguard audit generations` of ``model``; per prompt: rate, CI, the share replicating the
    planted artwork's cluster, median similarity and the threshold (``reuse``: an earlier output)."""
    wall = None
    if not (reuse and (out / "report.json").is_file()):
        wall = sdguard("audit", "generations", model, "--dataset", str(dataset), "--prompts", str(prompts), "--n", str(n),
                       "--embedder", embedder, "--guidance", str(guidance), "--reference-prompts", "0", "--out", str(out),
                       "--overwrite")
    results = json.loads((out / "report.json").read_text())["results"]
    rows = {}
    for p in results["prompts"]:
        clusters = p["replicated_clusters"]
        new_share = sum(c["share"] for c in clusters if c["example"]["caption"] == CAPTION)
        rows[p["prompt"]] = {"replication_rate": p["replication_rate"], "ci": [round(p["ci_low"], 3), round(p["ci_high"], 3)],
                             "new_artwork_share": round(new_share, 4), "median_similarity": round(p["median_similarity"], 3),
                             "threshold": p["threshold"], "truncated": p.get("truncated", False),
                             "replicated": [(c["share"], c["example"]["caption"]) for c in clusters]}
    return {"embedder": embedder, "guidance": guidance, "wall_seconds": wall, "prompts": rows}


def timing_runs(variants: list[str], dataset: Path, work: Path, runs: int, steps: int, batch: int,
                extra: dict[str, list[str]]) -> dict:
    """``runs`` short trainings per variant, alternating (unet, lora, unet, lora, ...), one at a time."""
    per: dict[str, list[float]] = {v: [] for v in variants}
    for k in range(runs):
        for v in variants:
            r = train(v, dataset, work / f"timing_{v}", steps, batch, extra[v])
            per[v].append(r["step_seconds_median"])
    out = {v: {"runs": s, "median": statistics.median(s)} for v, s in per.items()}
    if "unet" in out and "lora" in out:
        out["unet_over_lora"] = round(out["unet"]["median"] / out["lora"]["median"], 3)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", default=None, help="default: the default world, made into the cache")
    ap.add_argument("--work", default="/tmp/sdguard-finetune-artwork", help="augmented world, models, audits")
    ap.add_argument("--copies", type=int, default=40, help="planted copies of the new artwork")
    ap.add_argument("--seeds", type=int, default=32, help="generations per audited prompt")
    ap.add_argument("--guidance", type=float, default=5.0, help="of the audits (the world check's for builtin:tiny)")
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--unet-args", default="", help="extra `sdguard train` arguments of the full-UNet run")
    ap.add_argument("--lora-args", default="", help="extra `sdguard train` arguments of the LoRA run")
    ap.add_argument("--attention", action="store_true", help="also fine-tune --trainable attention")
    ap.add_argument("--lora-conv", action="store_true", help="also LoRA on attention + resnet convs, 2000 steps")
    ap.add_argument("--timing-runs", type=int, default=3)
    ap.add_argument("--timing-steps", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="16 seeds, one timing run, no pixels or guidance-7.5 audit")
    ap.add_argument("--reuse", action="store_true", help="keep the models and audits of an earlier run in --work "
                    "(same arguments); timing runs are always redone")
    ap.add_argument("--results", default=str(HERE / "results" / "finetune_new_artwork.json"))
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds, args.timing_runs = 16, 1
    for k, v in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "SDGUARD_NO_PROGRESS": "1",
                 "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}.items():
        os.environ.setdefault(k, v)

    from sdguard.audit.erasure import load_or_make_default_world
    from sdguard.data import load_world

    t_all = time.perf_counter()
    world = load_world(args.world) if args.world else load_or_make_default_world()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    aug = work / "world_plus_citadel"
    new_files = plant_artwork(Path(world.root), aug, args.copies, seed=15)
    prompts = work / "prompts.txt"
    prompts.write_text(f"new\t{CAPTION}\n" + "".join(f"old\t{p}\n" for p in OLD_PROMPTS))
    new_only = work / "prompt_new.txt"
    new_only.write_text(f"new\t{CAPTION}\n")

    variants = ["unet", "lora"] + (["attention"] if args.attention else []) + (["lora_conv"] if args.lora_conv else [])
    extra = {"unet": args.unet_args.split(), "lora": args.lora_args.split(), "attention": args.unet_args.split(),
             "lora_conv": args.lora_args.split()}
    models, training = {"base": "builtin:tiny"}, {}
    for v in variants:
        training[v] = train(v, aug, work / f"model_{v}", args.steps, args.batch_size, extra[v], args.reuse)
        training[v]["command"] = " ".join(["sdguard train builtin:tiny --dataset AUG", "--steps",
                                           str(VARIANT_STEPS.get(v, args.steps)),
                                           "--batch-size", str(args.batch_size), *VARIANTS[v], *extra[v]])
        models[v] = str(work / f"model_{v}")
    timing = timing_runs(variants, aug, work, args.timing_runs, args.timing_steps, args.batch_size, extra)

    audits = {}
    for name, spec in models.items():
        audits[name] = {"dct": audit(spec, aug, prompts, work / f"audit_{name}_dct", args.seeds, "dct", args.guidance,
                                    args.reuse)}
        if not args.quick:
            audits[name]["pixels"] = audit(spec, aug, new_only, work / f"audit_{name}_pixels", args.seeds, "pixels",
                                           args.guidance, args.reuse)
            audits[name]["dct_guidance_7.5"] = audit(spec, aug, new_only, work / f"audit_{name}_dct_g75", args.seeds,
                                                     "dct", 7.5, args.reuse)

    summary = summarize(models, audits, training, timing)
    print_summary(summary, timing, args)

    result = {"benchmark": "finetune_new_artwork", "caption": CAPTION, "copies": args.copies,
              "dataset_images": len(world) + args.copies, "new_files": len(new_files), "old_prompts": list(OLD_PROMPTS),
              "seeds": args.seeds, "steps": args.steps, "batch_size": args.batch_size, "variants": variants,
              "audit_command": "sdguard audit generations MODEL --dataset AUG --prompts PROMPTS --n "
                               f"{args.seeds} --embedder dct --guidance {args.guidance} --reference-prompts 0",
              "goal": "new caption replicates the new artwork in >= 50% of seeds after fine-tuning, 0% before",
              "summary": summary, "training": training, "timing": {"steps_per_run": args.timing_steps, **timing},
              "audits": audits, "total_seconds": round(time.perf_counter() - t_all, 1),
              "machine": machine()}
    write_results(args.results, result)
    return 0


def machine() -> dict:
    """The machine a benchmark ran on (its JSON's ``machine``)."""
    import torch

    return {"cpus": os.cpu_count(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "torch": torch.__version__, "torch_threads_here": torch.get_num_threads(),
            "platform": platform.platform(), "python": platform.python_version()}


def write_results(path, result: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {path}")


def summarize(models: dict, audits: dict, training: dict, timing: dict) -> dict:
    """Per model: the new caption's figures, the old captions' rates and their retention."""
    base_old = audits["base"]["dct"]["prompts"]
    out = {}
    for name in models:
        rows = audits[name]["dct"]["prompts"]
        new = rows[CAPTION]
        old = {p: rows[p]["replication_rate"] for p in OLD_PROMPTS}
        kept = [p for p in OLD_PROMPTS if base_old[p]["replication_rate"] > 0]
        retention = (sum(old[p] for p in kept) / sum(base_old[p]["replication_rate"] for p in kept)) if kept else None
        entry = {"new_replication": new["replication_rate"], "new_ci": new["ci"],
                 "new_artwork_share": new["new_artwork_share"], "new_median_similarity": new["median_similarity"],
                 "new_threshold": new["threshold"], "old_replication": old,
                 "old_retention": round(retention, 3) if retention is not None else None,
                 "goal_met": new["new_artwork_share"] >= 0.5 if name != "base" else new["new_artwork_share"] == 0.0}
        if "pixels" in audits[name]:
            px = audits[name]["pixels"]["prompts"][CAPTION]
            entry["new_pixels"] = {"replication": px["replication_rate"], "ci": px["ci"],
                                   "median_similarity": px["median_similarity"], "threshold": px["threshold"]}
            g = audits[name]["dct_guidance_7.5"]["prompts"][CAPTION]
            entry["new_dct_guidance_7.5"] = {"new_artwork_share": g["new_artwork_share"], "replication": g["replication_rate"],
                                             "ci": g["ci"], "median_similarity": g["median_similarity"]}
        if name in training:
            t = training[name]
            entry.update({"trainable_parameters": t["trainable"]["parameters"],
                          "trainable_share": round(t["trainable"]["share"], 5),
                          "train_wall_seconds": t["wall_seconds"], "train_seconds": t["train_seconds"],
                          "step_seconds_median": timing[name]["median"]})
        out[name] = entry
    return out


def print_summary(summary: dict, timing: dict, args) -> None:
    print(f"\nnew caption {CAPTION!r}, {args.seeds} seeds; old: {', '.join(OLD_PROMPTS)}")
    for name, e in summary.items():
        line = (f"{name:<10} new {e['new_artwork_share']:.2f} (rate {e['new_replication']:.2f}, CI {e['new_ci'][0]:.2f}-"
                f"{e['new_ci'][1]:.2f}, median sim {e['new_median_similarity']:.3f} / thr {e['new_threshold']:.3f})")
        if "new_pixels" in e:
            line += (f"  pixels rule {e['new_pixels']['replication']:.2f}; at guidance 7.5 "
                     f"{e['new_dct_guidance_7.5']['new_artwork_share']:.2f}")
        line += "  old " + " ".join(f"{r:.2f}" for r in e["old_replication"].values())
        if e["old_retention"] is not None:
            line += f" (retention {e['old_retention']:.2f})"
        print(line)
        if "trainable_parameters" in e:
            print(f"{'':<10} trainable {e['trainable_parameters']:,} ({e['trainable_share']:.2%}); step "
                  f"{e['step_seconds_median']:.3f} s (median of {args.timing_runs} x {args.timing_steps} steps); "
                  f"train wall {e['train_wall_seconds']:.0f} s")
    if "unet_over_lora" in timing:
        print(f"step time full UNet / LoRA: {timing['unet_over_lora']:.2f}")


if __name__ == "__main__":
    sys.exit(main())
