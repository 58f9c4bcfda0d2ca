"""The erasure audit's two presence rules on the same models and prompts: the world's probes vs the
caption rule it applies to any other dataset.

``builtin:tiny`` before and after a UCE edit of "van gogh starry night" (Gandikota et al. 2024),
audited twice with the same prompts and seeds: once on the default world (presence of the artwork
= nearest world image is a copy of it at pixel cosine >= 0.6; of a style = the world's style
probe), once on a copy of the same images and captions without the world's ground truth, which the
audit reads as a user's dataset (presence = the nearest training image is one whose caption names
the concept, or a near-duplicate of one; :mod:`sdguard.audit.erasure.captioned`). Prints both and
writes ``benchmarks/results/erasure_captioned.json``.

    python benchmarks/erasure_captioned.py
    python benchmarks/erasure_captioned.py --n 16 --embedder pixels:16
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ERASE = "van gogh starry night"
KEEP = ["hokusai", "munch scream"]


def plain_copy(world_root: Path, dest: Path) -> Path:
    """The world's images and ``metadata.jsonl`` only: an imagefolder that make-world did not write."""
    dest.mkdir(parents=True)
    shutil.copy(world_root / "metadata.jsonl", dest / "metadata.jsonl")
    for line in (world_root / "metadata.jsonl").read_text().splitlines():
        name = json.loads(line)["file_name"]
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(world_root / name, dest / name)
    return dest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=8, help="images per prompt")
    ap.add_argument("--prompts-per-concept", type=int, default=4)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--embedder", default=None, help="the caption rule's embedder (default: pixels)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "erasure_captioned.json"))
    args = ap.parse_args(argv)

    from sdguard.audit.erasure import audit_erasure, load_or_make_default_world
    from sdguard.harden.erasure import erase

    world = load_or_make_default_world()
    tmp = Path(tempfile.mkdtemp(prefix="erasure-captioned-"))
    try:
        plain = plain_copy(Path(world.root), tmp / "plain")
        erased = tmp / "erased"
        erase("builtin:tiny", [ERASE], "uce", out=str(erased), preview=0, progress=False)
        common = dict(n=args.n, prompts_per_concept=args.prompts_per_concept, steps=args.steps, attack="none",
                      utility_prompts=0, progress=False)
        out: dict = {"erase": ERASE, "keep": KEEP, "method": "uce", "settings": common, "rules": {}}
        for label, dataset, extra in (("world", world.root, {}), ("captions", plain, {"embedder": args.embedder})):
            t0 = time.perf_counter()
            rep = audit_erasure("builtin:tiny", str(erased), [ERASE], KEEP, dataset=str(dataset),
                                out=str(tmp / f"audit-{label}"), **{k: v for k, v in extra.items() if v}, **common)
            res = rep.results
            rows = {text: {"role": role, "original": e["original"], "erased": e["erased"], "rule": e["rule"]}
                    for role in ("efficacy", "retention") for text, e in res[role].items()}
            out["rules"][label] = {"seconds": round(time.perf_counter() - t0, 1), "concepts": rows}
            for text, r in rows.items():
                base = r["rule"].get("base_rate")
                print(f"{label:9s} {r['role']:9s} {text:22s} {r['original']:.2f} -> {r['erased']:.2f}  "
                      f"({r['rule']['name']}" + (f", base rate {base:.3f}" if base is not None else "") + ")")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2, default=str))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
