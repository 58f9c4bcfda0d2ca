"""ESD-x on a model loaded in fp16 against the same model in fp32, side by side on ``builtin:tiny``
(issue 14): a GPU loads Stable Diffusion in fp16, and ESD trains it in float32 master weights and
writes it back in fp16 (:mod:`sdguard.harden.erasure.esd`).

Both runs erase "van gogh starry night" with the tests' short setting (120 iterations, lr 5e-4,
8 DDIM steps, seed 0). Reported per run: whether every weight is finite, the relative change of
the cross-attention weights, and the presence of the erased artwork and of a kept one (munch
scream) before and after. The fp16 model's weights are measured as they are written (fp16),
generated in float32 on the CPU (half-precision generation is slow there; the weights are the
same). One run each (ESD's draws are seeded; the figures are not timings).

    python benchmarks/esd_fp16.py
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from erasure import fitted_detector  # noqa: E402  (the erasure benchmark's probes and detector)

ARTWORK, KEPT = "van gogh starry night", "munch scream"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=120)
    ap.add_argument("--n", type=int, default=8, help="images per prompt")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "esd_fp16.json"))
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from sdguard.audit.erasure import (
        load_or_make_default_world,
        measure,
        resolve_concept,
    )
    from sdguard.harden.erasure import get_method
    from sdguard.models import load_model

    world = load_or_make_default_world()
    original = load_model("builtin:tiny")
    _, detector = fitted_detector(world, original, attributes=False)
    concepts = [resolve_concept(c, world, prompts_per_concept=4, n=args.n) for c in (ARTWORK, KEPT)]
    gen = dict(steps=20, guidance=7.5, batch_size=32)

    def presence(model) -> dict[str, float]:
        return {c.text: measure(model, c, detector, **gen).rate for c in concepts}

    base = presence(original)
    rows = {}
    for dtype in (torch.float32, torch.float16):
        model = load_model("builtin:tiny", dtype=dtype)
        before = {k: p.detach().float().clone() for k, p in model.unet.named_parameters() if ".attn2." in k}
        t0 = time.perf_counter()
        get_method("esd-x", iterations=args.iterations, lr=5e-4, ddim_steps=8).run(model, [ARTWORK], seed=0)
        seconds = time.perf_counter() - t0
        after = {k: p.detach() for k, p in model.unet.named_parameters() if ".attn2." in k}
        finite = all(bool(torch.isfinite(p).all()) for p in after.values())
        change = float(sum((after[k].float() - before[k]).norm() for k in after) / sum(v.norm() for v in before.values()))
        dtype_written = str(next(iter(after.values())).dtype)
        model.to_dtype(torch.float32)
        rows[str(dtype)] = {"finite": finite, "relative_change": change, "dtype_written": dtype_written,
                            "seconds": seconds, "presence": presence(model)}
        print(f"{dtype}: finite {finite}, weights written as {dtype_written}, relative change {change:.4f}, "
              + ", ".join(f"{k} {base[k]:.0%} -> {v:.0%}" for k, v in rows[str(dtype)]["presence"].items()))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "esd_fp16", "original": base, "runs": rows, "settings": vars(args)},
                              indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
