"""UCE's retain set side by side on ``builtin:tiny`` (issue 14): the empty prompt retained or not,
and the preserve set a user gets from the default command line.

Two groups of edits, each measured in the same run on the same prompts and seeds:

1. the erasure benchmark's UCE setup (``benchmarks/erasure.py``: "van gogh starry night" then
   "monet", one edit each, preserving the other artworks and styles with their art templates and
   24 scene captions, conflicting captions left out) with the paper code's retain set
   ``[''] + preserve`` (``retain_empty``, sdguard's default since issue 14) and without it (the
   earlier default);
2. the README's command line, ``sdguard erase builtin:tiny --concept "van gogh starry night"
   --method uce --out erased``: as it ran before issue 14 (no preserve list, no empty prompt), with
   the empty prompt only (what a model sdguard knows no data of gets) and as it runs now (the
   empty prompt and the default preserve set of :mod:`sdguard.harden.erasure.preserve`, built
   from the world builtin:tiny was trained on).

For each: presence of the erased and kept concepts as a share of the original model's (efficacy,
goal <= 10%; retention, goal >= 90%) and utility (attribute accuracy on 16 unrelated scene
prompts x 4 seeds). UCE is deterministic, so one run per edit; the JSON goes to
``benchmarks/results/uce_defaults.json``.

    python benchmarks/uce_defaults.py
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from erasure import ERASE, KEEP, PRESERVE, fitted_detector, utility_of  # noqa: E402  (the erasure benchmark's)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=8, help="images per prompt")
    ap.add_argument("--prompts-per-concept", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "uce_defaults.json"))
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from sdguard.audit.erasure import (
        load_or_make_default_world,
        measure,
        resolve_concept,
        scene_prompts,
    )
    from sdguard.harden.erasure import get_method
    from sdguard.harden.erasure.preserve import default_preserve
    from sdguard.models import load_model

    t_all = time.perf_counter()
    world = load_or_make_default_world()
    original = load_model("builtin:tiny")
    probes, detector = fitted_detector(world, original)
    kw = dict(prompts_per_concept=args.prompts_per_concept, n=args.n)
    concepts = [resolve_concept(c, world, **kw) for c in ERASE + KEEP]
    gen = dict(steps=args.steps, guidance=7.5, batch_size=32)
    utility, utility_texts = utility_of(world, probes)
    scene_keep = [p for p, _ in scene_prompts(world, 48, seed=11) if p not in utility_texts][:24]

    def evaluate(model) -> dict:
        rates = {c.text: measure(model, c, detector, **gen).rate for c in concepts}
        return {"presence": rates, "utility": utility(model, **gen)}

    def benchmark_setup(retain_empty: bool):
        def edit(model):
            for k, concept in enumerate(ERASE):
                o = dict(expand_preserve=True, drop_conflicting=True, retain_empty=retain_empty)
                if k:
                    o["expand"] = True
                get_method("uce", **o).run(model, [concept], preserve=PRESERVE + scene_keep + ERASE[:k])
        return edit

    def command_line(retain_empty: bool, preserve: list[str]):
        def edit(model):
            get_method("uce", retain_empty=retain_empty).run(model, [ERASE[0]], preserve=preserve)
        return edit

    chosen = default_preserve([ERASE[0]], world.texts, seed=0)
    default_set = chosen["concepts"] + chosen["captions"]
    edits = {
        "benchmark setup, without the empty prompt (before)": benchmark_setup(False),
        "benchmark setup, with the empty prompt (after)": benchmark_setup(True),
        "command line before issue 14 (no preserve, no empty prompt)": command_line(False, []),
        "command line, the empty prompt only (no data known)": command_line(True, []),
        "command line now (the empty prompt and the default preserve set)": command_line(True, default_set),
    }
    base = evaluate(original)
    print("original: " + ", ".join(f"{k} {v:.0%}" for k, v in base["presence"].items()) + f"; utility {base['utility']:.0%}")
    rows = {}
    for name, edit in edits.items():
        model = original.copy()
        edit(model)
        r = evaluate(model)
        r["ratio"] = {k: (v / base["presence"][k] if base["presence"][k] else None) for k, v in r["presence"].items()}
        rows[name] = r
        print(f"{name}: " + ", ".join(f"{k} {v:.0%}" for k, v in r["ratio"].items() if v is not None)
              + f"; utility {r['utility']:.0%}")
    result = {"benchmark": "uce_defaults", "model": "builtin:tiny", "erase": ERASE, "keep": KEEP,
              "default_preserve_set": default_set, "settings": vars(args), "original": base, "edits": rows,
              "total_seconds": time.perf_counter() - t_all}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
