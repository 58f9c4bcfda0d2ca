"""Local vs Ray on this machine, and what 2B images (LAION) would cost: issue 23's benchmark.

Measured side by side in one run, alternating backends, median of ``--runs`` (default 3):

- embedding: ``sdguard audit data`` of a world of ``--images`` images (pixels embedder, cache off),
  ``--backend local`` vs ``--backend ray`` (a local Ray cluster, ``--workers`` actors of one CPU each);
- generation: ``sdguard audit generations`` of builtin:tiny (one cluster's prompt suite), both backends;
- search: near-duplicate pairs of ``--vectors`` 512-d unit vectors with planted groups
  (``cluster_scale.make_data``) by every search method: exact (up to 200k), ivf, hnsw, sharded
  (4 shards); time, the resident memory the search added, recall of the exact pairs and of the
  planted groups.

- CLIP image towers (ViT-B/32, ViT-L/14) built from their configs: seconds per image on this CPU and
  forward FLOPs (what LAION's embeddings cost).

From the medians: per-million costs on this machine, and the estimate for 2 billion images
(``--gpus``, ``--gpu-tflops``: the sustained throughput assumed for one GPU worker; no GPU was
measured, so the GPU figures are the measured FLOPs over that assumption). ``--reuse`` keeps an
earlier run's measurements and redoes the CLIP costs and the estimate.

    python benchmarks/distributed.py                       # the defaults
    python benchmarks/distributed.py --images 5000 --vectors 100000 --runs 1

Figures are printed and written to ``benchmarks/results/distributed.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def embedding(world: Path, out: Path, backend: str, workers: int) -> float:
    from sdguard.audit.dataset_replication import audit_data

    extra = {"backend": "ray", "workers": workers} if backend == "ray" else {}
    t0 = time.perf_counter()
    audit_data(world, out=out, cache=False, overwrite=True, progress=False, **extra)
    return time.perf_counter() - t0


def generation(world: Path, clusters: Path, out: Path, backend: str, workers: int, n: int) -> tuple[float, int]:
    from sdguard.audit.generation_replication import audit_generations

    extra = {"backend": "ray", "workers": workers} if backend == "ray" else {}
    t0 = time.perf_counter()
    r = audit_generations("builtin:tiny", str(world), clusters=str(clusters), out=str(out), n=n, steps=25,
                          batch_size=16, top_clusters=1, controls=1, reference_prompts=0, clique_delta=0.15,
                          overwrite=True, progress=False, **extra)
    return time.perf_counter() - t0, r.results["generation"]["generated_now"]


def _pairs(index, threshold: float, n: int) -> np.ndarray:
    keys = []
    for a, b, _ in index.pairs(threshold):
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        keys.append(lo.astype(np.int64) * n + hi)
    return np.unique(np.concatenate(keys)) if keys else np.zeros(0, np.int64)


def search(n: int, threshold: float = 0.8) -> dict:
    from cluster_scale import make_data

    from sdguard.audit.clustering import EdgeSet, build_index, rank_components

    x, truth = make_data(n, 512, groups=max(10, n // 200))
    out, exact_pairs = {}, None
    for method in ("exact", "ivf", "hnsw", "sharded"):
        if method == "exact" and n > 200_000:
            continue
        rss0 = _rss_mb()
        t0 = time.perf_counter()
        opts = {"shard_size": -(-n // 4)} if method == "sharded" else {}
        index = build_index(x, method, exact_limit=0 if method != "exact" else n, threads=2, **opts)
        pairs = _pairs(index, threshold, n)
        seconds = time.perf_counter() - t0
        edges = EdgeSet(n)
        a, b = pairs // n, pairs % n
        edges.add(a, b, n)
        labels, _ = rank_components(edges.components(), 2)
        groups = [np.flatnonzero(truth == g) for g in np.unique(truth[truth >= 0])]
        whole = sum(1 for g in groups if labels[g[0]] >= 0 and (labels[g] == labels[g[0]]).all()
                    and (labels == labels[g[0]]).sum() == len(g))
        row = {"seconds": round(seconds, 2), "rss_added_mb": round(_rss_mb() - rss0, 1), "pairs": int(len(pairs)),
               "groups_recovered": round(whole / max(1, len(groups)), 4)}
        if method == "exact":
            exact_pairs = pairs
        if exact_pairs is not None and method != "exact":
            row["pair_recall"] = round(float(np.isin(exact_pairs, pairs).mean()) if len(exact_pairs) else 1.0, 4)
        out[method] = row
        del index
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=20000)
    ap.add_argument("--vectors", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--n", type=int, default=32, help="generations per prompt")
    ap.add_argument("--gpus", type=int, default=64)
    ap.add_argument("--gpu-tflops", type=float, default=100.0, help="sustained TFLOP/s of one GPU worker (assumed)")
    ap.add_argument("--reuse", action="store_true", help="keep the measured parts of an earlier --out, redo the "
                    "CLIP costs and the estimate")
    ap.add_argument("--out", default=str(HERE / "results" / "distributed.json"))
    args = ap.parse_args()

    import json

    import ray
    from finetune_new_artwork import machine, write_results

    if args.reuse:
        result = json.loads(Path(args.out).read_text())
        result["clip"] = vit_cost()
        result["estimate_2b"] = estimate(result, args)
        print(json.dumps({k: result[k] for k in ("clip", "estimate_2b")}, indent=1))
        write_results(args.out, result)
        return

    from sdguard.audit.dataset_replication import audit_data
    from sdguard.data import make_world

    tmp = Path(tempfile.mkdtemp(prefix="sdguard-dist-"))
    world = tmp / "world"
    make_world(world, seed=1, size=args.images)
    audit_data(world, ["van gogh"], out=tmp / "clusters", progress=False)
    ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1"}})
    emb = {"local": [], "ray": []}
    gen = {"local": [], "ray": []}
    images = 0
    for r in range(args.runs):
        for backend in (("local", "ray") if r % 2 == 0 else ("ray", "local")):
            emb[backend].append(embedding(world, tmp / f"emb-{backend}", backend, args.workers))
            seconds, images = generation(world, tmp / "clusters", tmp / f"gen-{backend}", backend, args.workers, args.n)
            gen[backend].append(seconds)
            print(f"run {r + 1} {backend}: embedding {emb[backend][-1]:.1f} s, generation {seconds:.1f} s", flush=True)
    ray.shutdown()
    med = {k: {b: statistics.median(v) for b, v in d.items()} for k, d in (("embedding", emb), ("generation", gen))}
    result = {"machine": machine(), "images": args.images, "generated_images": images, "runs": args.runs,
              "workers": args.workers,
              "embedding_seconds": {b: [round(s, 2) for s in v] for b, v in emb.items()},
              "generation_seconds": {b: [round(s, 2) for s in v] for b, v in gen.items()},
              "embedding_images_per_second": {b: round(args.images / s, 1) for b, s in med["embedding"].items()},
              "generation_images_per_second": {b: round(images / s, 2) for b, s in med["generation"].items()},
              "ray_over_local": {k: round(med[k]["local"] / med[k]["ray"], 3) for k in med}}
    print("searching", args.vectors, "vectors", flush=True)
    result["search"] = {str(args.vectors): search(args.vectors)}
    result["clip"] = vit_cost()
    result["estimate_2b"] = estimate(result, args)
    for k, v in result.items():
        if k != "machine":
            print(f"{k}: {v}")
    write_results(args.out, result)


def vit_cost() -> dict:
    """Seconds per 224-px image on this CPU (2 threads, batch 16, median of 3) and forward FLOPs of the
    CLIP image towers LAION was embedded with, built from their configs (random weights: the same
    compute as the released ones, which cannot be downloaded here)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    towers = {"ViT-B/32": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                               patch_size=32, projection_dim=512),
              "ViT-L/14": dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                               patch_size=14, projection_dim=768)}
    out = {}
    torch.set_num_threads(2)
    for name, c in towers.items():
        m = CLIPVisionModelWithProjection(CLIPVisionConfig(image_size=224, **c)).eval()
        x = torch.randn(16, 3, 224, 224)
        with torch.no_grad():
            with FlopCounterMode(display=False) as fc:
                m(pixel_values=x[:1])
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                m(pixel_values=x)
                times.append((time.perf_counter() - t0) / len(x))
        out[name] = {"cpu_seconds_per_image": round(statistics.median(times), 4), "gflops_per_image":
                     round(fc.get_total_flops() / 1e9, 1), "dim": c["projection_dim"]}
    return out


def estimate(result: dict, args) -> dict:
    """2 billion images (LAION-2B): embedding with CLIP ViT-L/14 and one near-duplicate search, from the
    costs measured here. Search costs are scaled from ``--vectors`` with each method's complexity:
    flat (exact, sharded) n^2, ivf n^1.5 (cells of sqrt(n) vectors), hnsw n log n."""
    import math

    n, m = 2_000_000_000, args.vectors
    vit = result["clip"]["ViT-L/14"]
    search = result["search"][str(m)]
    scale = {"exact": (n / m) ** 2, "sharded": (n / m) ** 2, "ivf": (n / m) ** 1.5,
             "hnsw": (n / m) * math.log(n) / math.log(m)}
    hours = {k: round(v["seconds"] * scale[k] / 3600, 0) for k, v in search.items() if k in scale}
    per_million = {k: round(v["seconds"] * scale[k] / (n / 1e6), 2) for k, v in search.items() if k in scale}
    gpu_s = vit["gflops_per_image"] / (args.gpu_tflops * 1e3)
    return {
        "images": n,
        "embedding": {"model": "CLIP ViT-L/14 (LAION's)", "cpu_seconds_per_image_here": vit["cpu_seconds_per_image"],
                      "this_machine_hours": round(n * vit["cpu_seconds_per_image"] / 3600, 0),
                      "gflops_per_image": vit["gflops_per_image"],
                      f"gpu_hours_at_{args.gpu_tflops:g}_sustained_tflops": round(n * gpu_s / 3600, 0),
                      f"wall_hours_on_{args.gpus}_gpus": round(n * gpu_s / 3600 / args.gpus, 1),
                      "pixels_embedder_seconds_per_million_here": round(1e6 / result["embedding_images_per_second"]["local"], 1)},
        "vectors": {"float16_tib_768d": round(n * 768 * 2 / 2**40, 2), "float32_tib_768d": round(n * 768 * 4 / 2**40, 2)},
        "search_hours_on_this_machine": hours,
        "search_seconds_per_million_at_2b": per_million,
        "assumptions": {"gpu_sustained_tflops": args.gpu_tflops, "gpus": args.gpus,
                        "search": "measured at --vectors and scaled by each method's complexity; no GPU measured"},
    }


if __name__ == "__main__":
    main()
