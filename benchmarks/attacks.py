"""UnlearnDiffAtk (Zhang et al. 2023, as published: real tokens, a text prompt) beside the
soft-prompt attack (white-box, continuous embeddings) against ESD-x and UCE erasures of
``builtin:tiny``.

The erasures are those of ``benchmarks/erasure.py`` (its concepts, preserve list and settings:
ESD-x 250 iterations at lr 5e-4 with its retain term at weight 30; UCE one edit per concept with
24 scene captions preserved), seed 0. For each erased concept, the targets are the first
``--targets`` images in which the original model showed it (same prompts and seeds as the
audit); both attacks search an adversarial prompt per target against the erased model's
diffusion loss on that image and generate from the target's seed. What is measured, per attack,
method and concept: the attack success rate (targets whose attacked image shows the concept, or
whose plain prompt already did), the rate of the adversarial prompts alone, the plain prompt's
rate, and for UnlearnDiffAtk the text prompts found. The soft-prompt attack optimises over a
superset of UnlearnDiffAtk's search space (every real prompt is an embedding), so it is expected
to succeed at least as often; UnlearnDiffAtk is also judged once per timestep (it stops at its
first success), the soft-prompt attack once at the end.

    python benchmarks/attacks.py                        # the published 50 timesteps x 40 iterations
    python benchmarks/attacks.py --timesteps 10 --steps 10 --targets 4   # quicker (UnlearnDiffAtk only)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from erasure import ERASE, PRESERVE, fitted_detector  # noqa: E402  (the erasure benchmark's concepts and preserve list)

ATTACK_NAMES = ("unlearndiffatk", "soft-prompt")


def erase_model(name: str, original, preserve: list[str], scenes: list[str]):
    """An erased copy of ``original``: the erasure benchmark's ESD-x run or its two UCE edits."""
    from sdguard.harden.erasure import get_method

    model = original.copy()
    if name == "uce":
        for k, concept in enumerate(ERASE):
            o = dict(expand_preserve=True) if k == 0 else dict(expand=True, expand_preserve=True)
            get_method("uce", **o).run(model, [concept], preserve=preserve + scenes + ERASE[:k], seed=0)
    else:
        get_method("esd-x", iterations=250, lr=5e-4, ddim_steps=10, batch_size=1, preserve_weight=30.0,
                   preserve_batch=8).run(model, ERASE, preserve=preserve, seed=0)
    return model


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", type=int, default=8, help="images of each concept attacked")
    ap.add_argument("--steps", type=int, default=40, help="UnlearnDiffAtk's iterations per timestep (published 40)")
    ap.add_argument("--soft-steps", type=int, default=60, help="the soft-prompt attack's steps (its default 60)")
    ap.add_argument("--timesteps", type=int, default=50, help="UnlearnDiffAtk's timesteps (published 50)")
    ap.add_argument("--n", type=int, default=8, help="images per prompt")
    ap.add_argument("--denoise-steps", type=int, default=20)
    ap.add_argument("--methods", nargs="+", default=["uce", "esd-x"])
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "attacks.json"))
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from sdguard.audit.erasure import (
        AuditErasureConfig,
        attack_concept,
        load_or_make_default_world,
        measure,
        resolve_concept,
        scene_prompts,
    )
    from sdguard.models import load_model

    t_all = time.perf_counter()
    world = load_or_make_default_world()
    original = load_model("builtin:tiny")
    probes, detector = fitted_detector(world, original, attributes=False)
    utility_texts = {p for p, _ in scene_prompts(world, 16)}
    scenes = [p for p, _ in scene_prompts(world, 48, seed=11) if p not in utility_texts][:24]
    concepts = [resolve_concept(c, world, prompts_per_concept=3, n=args.n) for c in ERASE]
    gen = dict(steps=args.denoise_steps, guidance=7.5, batch_size=32)
    base = {c.text: measure(original, c, detector, **gen) for c in concepts}
    rows: dict = {}
    for method in args.methods:
        t0 = time.perf_counter()
        model = erase_model(method, original, list(PRESERVE), scenes)
        after = {c.text: measure(model, c, detector, **gen) for c in concepts}
        print(f"{method}: erased in {time.perf_counter() - t0:.0f}s; presence "
              + ", ".join(f"{c.text} {base[c.text].rate:.0%} -> {after[c.text].rate:.0%}" for c in concepts))
        rows[method] = {}
        for name in ATTACK_NAMES:
            cfg = AuditErasureConfig(original="builtin:tiny", erased=method, concepts=ERASE, out="unused", attack=name,
                                     attack_steps=args.steps if name == "unlearndiffatk" else args.soft_steps,
                                     attack_timesteps=args.timesteps,
                                     attack_targets=args.targets, steps=args.denoise_steps, guidance=7.5,
                                     batch_size=32)
            rows[method][name] = {}
            for c in concepts:
                t1 = time.perf_counter()
                entry, _ = attack_concept(model, c, base[c.text], after[c.text], detector, cfg)
                entry["seconds"] = time.perf_counter() - t1
                rows[method][name][c.text] = entry
                print(f"  {entry['method']:55s} {c.text:22s} success {entry['attack_success_rate']:.0%} "
                      f"(adversarial prompt {entry['adversarial_prompt_rate']:.0%}, plain {entry['no_attack_rate']:.0%}, "
                      f"{entry['targets']} targets, {entry['seconds']:.0f}s)")
                for r in entry.get("prompts_found", []):
                    print(f"      seed {r['seed']}: {r['adversarial_prompt']!r} ({'back' if r['success'] else 'not back'})")
    weaker = {m: {c: rows[m]["unlearndiffatk"][c]["attack_success_rate"] <= rows[m]["soft-prompt"][c]["attack_success_rate"]
                  for c in ERASE} for m in rows}
    print(f"UnlearnDiffAtk's success rate <= the soft-prompt attack's: {json.dumps(weaker)}")
    result = {"benchmark": "attacks", "model": "builtin:tiny", "erase": ERASE, "settings": vars(args),
              "original_presence": {k: m.rate for k, m in base.items()}, "results": rows,
              "unlearndiffatk_at_most_soft_prompt": weaker,
              "machine": {"python": platform.python_version(), "threads": torch.get_num_threads(),
                          "platform": platform.platform()},
              "total_seconds": time.perf_counter() - t_all}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=float) + "\n")
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
