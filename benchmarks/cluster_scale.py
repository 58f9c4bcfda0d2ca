"""Near-duplicate clustering at scale: 100k and 1M 512-d embeddings on the machine's cores.

Random unit vectors (what unrelated images look like to an embedder) plus planted groups of
near-duplicates of known membership (pairwise cosine similarity about 0.85-0.97), clustered at a
fixed threshold with the approximate ``ivf`` search of :mod:`sdguard.audit.clustering`
(Webster 2023 ran the same kind of search with faiss over LAION-2B), against an exact
brute-force reference measured in the same run:

- 100k: exact faiss ``IndexFlatIP`` range search of every vector against all; the approximate
  clustering is compared with the exact one pair by pair and cluster by cluster.
- 1M: the exact reference is restricted to the planted vectors (their exact range search
  against all 1M vectors), which holds every pair of every planted group.

Reported per size: time of the approximate clustering (index, pairs, components), peak memory
(``ru_maxrss`` of a fresh process per run, and the tracemalloc peak of the clustering), CPU time
(on a machine shared with other work, CPU time per thread estimates the wall time on free cores), recall of
the exact pairs, recall of the planted groups (share recovered whole, as one cluster with
nothing else in it), and the exact reference's time. Goal (issue 4): 1M in under 2 minutes at
recall >= 0.99 on 2 cores.

``--world DIR`` also runs the Must-show of issue 4 on a synthetic world (``sdguard data
make-world``): precision/recall of the planted duplicate groups, top words, and co-occurrence
shares against ``ground_truth.json``.

    python benchmarks/cluster_scale.py                    # 100k and 1M
    python benchmarks/cluster_scale.py --sizes 200000     # one size
    python benchmarks/cluster_scale.py --world /tmp/world # add the world check

Figures are printed and written to ``benchmarks/results/cluster_scale.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "cluster_scale.json"


def make_data(n: int, dim: int, groups: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` unit vectors; the first ones are ``groups`` planted groups (sizes 2-40) whose pairwise
    cosine similarity lies around 0.85-0.97 (the position of a vector plays no part in the search).
    Returns (x, group id or -1)."""
    rng = np.random.default_rng(seed)
    x = np.empty((n, dim), np.float32)
    for s in range(0, n, 65536):
        x[s : s + 65536] = rng.standard_normal((min(65536, n - s), dim), dtype=np.float32)
    truth = np.full(n, -1, np.int64)
    pos = 0
    sizes = np.clip(rng.geometric(0.15, groups) + 1, 2, 40)
    for g, k in enumerate(sizes):
        c = rng.standard_normal(dim).astype(np.float32)
        c /= np.linalg.norm(c)
        sigma = rng.uniform(0.12, 0.28)  # pairwise similarity about 1 / (1 + sigma^2)
        x[pos : pos + k] = c + sigma * rng.standard_normal((k, dim), dtype=np.float32) / np.sqrt(dim)
        truth[pos : pos + k] = g
        pos += k
    for s in range(0, n, 65536):  # in place, in chunks: no second copy of the data
        x[s : s + 65536] /= np.linalg.norm(x[s : s + 65536], axis=1, keepdims=True)
    return x, truth


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _cpu_seconds() -> float:
    """CPU time of this process (all threads): on a machine shared with other work, cpu / threads
    is what the wall time would be on free cores."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _pair_keys(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    return np.unique(lo.astype(np.int64) * n + hi)


def run_worker(n: int, dim: int, groups: int, threshold: float, threads: int, nlist: int | None, nprobe: int,
               exact: str) -> dict:
    import faiss

    from sdguard.audit.clustering import EdgeSet, IVFIndex, rank_components

    faiss.omp_set_num_threads(threads)
    t0 = time.perf_counter()
    x, truth = make_data(n, dim, groups)
    t_data = time.perf_counter() - t0
    rss_data = _maxrss_mb()

    # ---- the approximate clustering (what `audit data` runs for large sets)
    load_before = os.getloadavg()[0]
    tracemalloc.start()
    cpu0 = _cpu_seconds()
    t0 = time.perf_counter()
    index = IVFIndex(x, nlist=nlist, nprobe=nprobe, threads=threads)
    t_index = time.perf_counter() - t0
    t1 = time.perf_counter()
    sample = np.sort(np.random.default_rng(1).choice(n, size=min(n, 10_000), replace=False))
    index.nearest(sample)  # the histogram sample the audit also reads
    t_nearest = time.perf_counter() - t1
    t1 = time.perf_counter()
    edges = EdgeSet(n)
    found_a, found_b = [], []
    for a, b, nodes in index.pairs(threshold, compress=False):  # raw pairs, to compare them with the exact ones
        edges.add(a, b, nodes)
        found_a.append(a)
        found_b.append(b)
    t_pairs = time.perf_counter() - t1
    t1 = time.perf_counter()
    labels, sizes = rank_components(edges.components())
    t_components = time.perf_counter() - t1
    total = time.perf_counter() - t0
    cpu = _cpu_seconds() - cpu0
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_after = _maxrss_mb()
    approx_pairs = _pair_keys(np.concatenate(found_a), np.concatenate(found_b), n) if found_a else np.zeros(0, np.int64)

    # ---- planted groups recovered whole (one cluster, nothing else in it)
    planted = truth >= 0
    whole = 0
    n_groups = int(truth.max()) + 1
    for g in range(n_groups):
        lab = np.unique(labels[truth == g])
        if len(lab) == 1 and lab[0] >= 0 and (labels == lab[0]).sum() == (truth == g).sum():
            whole += 1
    # planted pairs in the same cluster
    same, total_pairs = 0, 0
    for g in range(n_groups):
        lab = labels[truth == g]
        k = len(lab)
        total_pairs += k * (k - 1) // 2
        _, counts = np.unique(lab[lab >= 0], return_counts=True)
        same += int((counts * (counts - 1) // 2).sum())

    # ---- exact reference
    t0 = time.perf_counter()
    ref = faiss.IndexFlatIP(dim)
    ref.add(x)
    radius = float(np.nextafter(np.float32(threshold), np.float32(-2)))
    queries = np.arange(n) if exact == "all" else np.flatnonzero(planted)
    ref_a, ref_b = [], []
    for s in range(0, len(queries), 2048):
        q = queries[s : s + 2048]
        lims, _, ids = ref.range_search(x[q], radius)
        qi = np.repeat(q, np.diff(lims.astype(np.int64)))
        keep = ids != qi
        ref_a.append(qi[keep])
        ref_b.append(ids[keep].astype(np.int64))
    t_exact = time.perf_counter() - t0
    exact_pairs = _pair_keys(np.concatenate(ref_a), np.concatenate(ref_b), n)
    if exact == "all":
        considered = approx_pairs
    else:  # only pairs touching a planted vector can be checked against the restricted reference
        lo, hi = approx_pairs // n, approx_pairs % n
        considered = approx_pairs[planted[lo] | planted[hi]]
    hit = np.isin(exact_pairs, considered, assume_unique=True).sum()
    false = np.setdiff1d(considered, exact_pairs, assume_unique=True).size
    result = {
        "n": n, "dim": dim, "threads": threads, "threshold": threshold,
        "planted_groups": n_groups, "planted_vectors": int(planted.sum()),
        "index": index.info, "data_seconds": round(t_data, 2),
        "seconds": {"total": round(total, 2), "index": round(t_index, 2), "nearest_sample": round(t_nearest, 2),
                    "pairs": round(t_pairs, 2), "components": round(t_components, 2), "cpu": round(cpu, 2),
                    "cpu_per_thread": round(cpu / threads, 2)},
        "load_average_before": round(load_before, 2),
        "memory_mb": {"data": round(x.nbytes / 2**20, 1), "rss_after_data": round(rss_data, 1),
                      "rss_peak": round(rss_after, 1), "clustering_traced_peak": round(traced_peak / 2**20, 1)},
        "clusters": int(len(sizes)),
        "recall": {
            "exact_pairs": int(len(exact_pairs)), "pairs_found": int(hit),
            "pair_recall_vs_exact": round(float(hit / max(1, len(exact_pairs))), 5),
            "pairs_not_in_exact": int(false),
            "planted_groups_whole": round(whole / max(1, n_groups), 5),
            "planted_pair_recall": round(same / max(1, total_pairs), 5),
        },
        "exact_reference": {"scope": "all vectors" if exact == "all" else "planted vectors against all",
                            "queries": int(len(queries)), "seconds": round(t_exact, 2)},
    }
    if exact == "all":  # cluster-level agreement with the exact clustering
        ex = EdgeSet(n)
        ex.add(exact_pairs // n, exact_pairs % n)
        ex_labels, ex_sizes = rank_components(ex.components())
        agree = 0
        for k in range(len(ex_sizes)):
            lab = np.unique(labels[ex_labels == k])
            if len(lab) == 1 and lab[0] >= 0 and sizes[lab[0]] == ex_sizes[k]:
                agree += 1
        result["recall"]["exact_clusters_reproduced"] = round(agree / max(1, len(ex_sizes)), 5)
        result["exact_reference"]["clusters"] = int(len(ex_sizes))
    return result


def run_world(root: str) -> dict:
    """The Must-show of issue 4 on a world folder (default embedder and threshold)."""
    import pyarrow.parquet as pq

    from sdguard.audit.dataset_replication import audit_data, score_groups

    truth = json.loads((Path(root) / "ground_truth.json").read_text())
    out = Path(tempfile.mkdtemp(prefix="sdguard-world-bench-"))
    rows = {"world": str(root), "seed": truth.get("seed"), "size": truth.get("size"), "duplicates": [],
            "cooccurrence": [], "spread": []}
    t0 = time.perf_counter()
    for g in truth["duplicates"]:
        rep = audit_data(root, g["keywords"], out=out / g["name"], overwrite=True, progress=False)
        tab = pq.read_table(out / g["name"] / "clusters.parquet").to_pydict()
        s = score_groups(tab["file_name"], tab["cluster_id"], {g["name"]: g["files"]})[0]
        cluster = next((c for c in rep.results["clusters"] if c["cluster_id"] == s["cluster_id"]), None)
        top = [w["word"] for w in cluster["top_words"]] if cluster else []
        words = [w for k in g["keywords"] for w in k.split()]
        rows["duplicates"].append({"name": g["name"], "size": len(g["files"]), "precision": round(s["precision"], 4),
                                   "recall": round(s["recall"], 4), "keywords_in_top_words": all(w in top for w in words),
                                   "top_words": top[:6], "threshold": rep.results["threshold"]["value"],
                                   "threshold_source": rep.results["threshold"]["source"]})
    rep = audit_data(root, [], out=out / "all", overwrite=True, progress=False)
    tab = pq.read_table(out / "all" / "clusters.parquet").to_pydict()
    planted = {g["name"]: g["files"] for g in truth["duplicates"]}
    rows["whole_world"] = [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in s.items()}
                           for s in score_groups(tab["file_name"], tab["cluster_id"], planted)]
    for kind, cases in (("cooccurrence", truth["cooccurrence"]), ("spread", truth["spread"])):
        for c in cases:
            kws = c["keywords"] if kind == "cooccurrence" else [c["keyword"]]
            co = audit_data(root, kws, out=out / kind, overwrite=True, progress=False).results["cooccurrence"]
            rows[kind].append({"keywords": kws, "truth": round(c["dominant_share"], 4),
                               "measured": round(co["dominant_share"], 4),
                               "difference_points": round(100 * abs(co["dominant_share"] - c["dominant_share"]), 2)})
    rows["seconds"] = round(time.perf_counter() - t0, 1)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=[100_000, 1_000_000])
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--groups", type=int, default=None, help="planted groups (default: n / 500, at most 1000)")
    ap.add_argument("--threshold", type=float, default=0.8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--nlist", type=int, default=None)
    ap.add_argument("--nprobe", type=int, default=8)
    ap.add_argument("--exact-all-up-to", type=int, default=200_000,
                    help="sizes up to this get the all-pairs exact reference, larger ones the planted-only one")
    ap.add_argument("--world", default=None, help="also check the Must-show on this world folder")
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.worker:  # one size in a fresh process, so peak memory is its own
        n = args.sizes[0]
        groups = args.groups or min(1000, max(10, n // 500))
        exact = "all" if n <= args.exact_all_up_to else "planted"
        print(json.dumps(run_worker(n, args.dim, groups, args.threshold, args.threads, args.nlist, args.nprobe, exact)))
        return 0

    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), OPENBLAS_NUM_THREADS=str(args.threads))
    results = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "threads": args.threads,
                           "python": platform.python_version()}, "runs": []}
    for n in args.sizes:
        cmd = [sys.executable, __file__, "--worker", "--sizes", str(n), "--dim", str(args.dim),
               "--threshold", str(args.threshold), "--threads", str(args.threads), "--nprobe", str(args.nprobe),
               "--exact-all-up-to", str(args.exact_all_up_to)]
        if args.groups:
            cmd += ["--groups", str(args.groups)]
        if args.nlist:
            cmd += ["--nlist", str(args.nlist)]
        print(f"== n={n:,} d={args.dim} threads={args.threads}", flush=True)
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            return proc.returncode
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        results["runs"].append(r)
        s, m, rc = r["seconds"], r["memory_mb"], r["recall"]
        print(f"  ivf nlist={r['index']['nlist']} nprobe={r['index']['nprobe']}: {s['total']:.1f} s "
              f"(index {s['index']:.1f}, pairs {s['pairs']:.1f}, components {s['components']:.2f}), "
              f"{r['clusters']} clusters; CPU {s['cpu']:.1f} s = {s['cpu_per_thread']:.1f} s per thread; "
              f"load average before {r['load_average_before']}")
        print(f"  memory: data {m['data']:.0f} MB, peak RSS {m['rss_peak']:.0f} MB "
              f"(after data {m['rss_after_data']:.0f}), clustering traced peak {m['clustering_traced_peak']:.0f} MB")
        print(f"  recall vs exact pairs {rc['pair_recall_vs_exact']:.4f} ({rc['pairs_found']}/{rc['exact_pairs']}), "
              f"planted groups whole {rc['planted_groups_whole']:.4f}, planted pairs {rc['planted_pair_recall']:.4f}"
              + (f", exact clusters reproduced {rc['exact_clusters_reproduced']:.4f}"
                 if "exact_clusters_reproduced" in rc else ""))
        print(f"  exact reference ({r['exact_reference']['scope']}): {r['exact_reference']['seconds']:.1f} s", flush=True)
    if args.world:
        print(f"== world {args.world}", flush=True)
        w = run_world(args.world)
        results["world"] = w
        for d in w["duplicates"]:
            print(f"  {d['name']:16s} size {d['size']:4d}  P {d['precision']:.3f}  R {d['recall']:.3f}  "
                  f"keywords in top words: {d['keywords_in_top_words']}  "
                  f"threshold {d['threshold']} ({d['threshold_source']})")
        for kind in ("cooccurrence", "spread"):
            for c in w[kind]:
                print(f"  {kind} {' + '.join(c['keywords'])}: truth {c['truth']:.3f}, measured {c['measured']:.3f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
