"""Generation replication audit: ``sdguard audit generations``.

The model half of the memorization study of Somepalli et al. 2023 ("Diffusion Art or Digital
Forgery?", CVPR; "Understanding and Mitigating Copying in Diffusion Models", NeurIPS), with the
extraction test of Carlini et al. 2023 ("Extracting Training Data from Diffusion Models"):

1. Prompts: for each near-duplicate cluster of the training data (from an ``audit data`` output,
   or found here), the five prompt kinds of the study built from the cluster's captions
   (:mod:`sdguard.audit.prompt_suites`), control prompts, and optionally prompts that name an
   object keyword; or the user's prompt file.
2. For each prompt, N generations from seeds ``seed .. seed+N-1`` (500 by default, as in the
   study), batched; each batch is stored as soon as it is made, so ``resume`` continues a run that
   was killed without redoing finished images.
3. Replication: a generation replicates when its embedding's cosine similarity to a member of the
   prompt's cluster (or, for prompts without a cluster, to its nearest training image, through a
   faiss index) reaches a threshold: the one given, or one calibrated per cluster from the training
   data (between the similarities of known duplicates and of each member's nearest non-duplicate;
   for prompts without a cluster, that of the nearest image's cluster, and outside clusters the
   clustering threshold).
   Rates come with Wilson 95% intervals.
4. Extraction without training data: the largest clique of near-identical generations under the
   tiled l2 distance; a prompt is flagged when it reaches 10 (Carlini et al.). The distance is
   given, or calibrated on the generations of reference prompts (ordinary training captions that
   are not audited) so that it means "near-identical for this model" at its image size
   (:func:`sdguard.audit.extraction.calibrate_delta`).
5. The text similarity of each prompt to its nearest training caption (the model's text encoder).
6. Object-level replication: a detector's rate among generations of object-keyword prompts vs.
   control prompts and in the keyword's training images, with Fisher's exact test.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..core.config import ResumableConfig, build, option
from ..data.captions import frequent_words
from ..data.datasets import open_dataset
from ..core.errors import InputError, require
from ..core.io import atomic_write_bytes, atomic_write_text, output_dir
from ..core.progress import progress_bar
from ..report import Report, auto_scale, make_grid, png_bytes
from .extraction import CLIQUE_FLAG, DEFAULT_DELTA, calibrate_delta, extraction_clique
from .prompt_suites import KINDS, PromptSpec, cluster_suite, control_prompts, read_prompt_file, reference_prompts
from .stats import fisher_greater, wilson_interval

THUMB = 64  # generations are kept at most THUMB x THUMB for cliques and grids


class GenerationAuditConfig(ResumableConfig):
    """Generation replication audit: replication over many seeds per prompt kind, objects, cliques."""

    model: str = option(positional=True, help="the model to audit (any model spec)")
    dataset: str = option(help="its training data (any dataset format)")
    clusters: str | None = option(None, help="an `sdguard audit data` output folder")
    prompts: str | None = option(None, help="a prompt file (one per line; KIND<TAB>PROMPT)")
    n: int = option(500, flag="--n", ge=1, le=100_000, help="generations per prompt (seeds seed..seed+n-1)")
    seed: int = option(0, ge=0, le=2**63 - 1, help="first seed")
    steps: int = option(25, ge=1, le=1000, help="denoising steps")
    guidance: float = option(7.5, ge=0.0, le=100.0, help="classifier-free guidance scale")
    batch_size: int = option(16, ge=1, le=4096, help="images per forward pass")
    embedder: str = option("pixels", help="pixels, dct, clip[:MODEL] or sscd:FILE")
    threshold: float | None = option(None, gt=0.0, le=1.0, help="replication threshold (default: calibrated per "
                                     "cluster)")
    top_clusters: int = option(3, ge=1, le=1000, help="clusters to build prompt suites for")
    controls: int = option(4, ge=0, le=1000, help="control prompts")
    object_keyword: str | None = option(None, help="a keyword whose images hold an object, e.g. astronaut")
    object_name: str | None = option(None, flag="--object", help="the object, e.g. flag")
    detector: str | None = option(None, help="object detector: world or clip:MODEL")
    clique_delta: float | None = option(None, gt=0.0, help="tiled l2 distance of near-identical generations "
                                        "(default: calibrated on reference prompts, at most Carlini et al.'s 0.15)")
    reference_prompts: int = option(8, ge=0, le=1000, help="ordinary captions generated to calibrate the clique "
                                    "distance (0: Carlini et al.'s 0.15)")
    device: str | None = option(None, help="cpu, cuda, mps (default: best available)")


# ------------------------------------------------------------------------------------------
# training side: embeddings, clusters, thresholds
# ------------------------------------------------------------------------------------------


def _training_embeddings(ds, emb, progress):
    from ..embed import EmbeddingCache, embed_dataset

    entries = ds.entries()
    store = EmbeddingCache.for_dataset(ds, emb)
    vectors, status = embed_dataset(ds, entries, emb, cache=store, progress=progress)
    return entries, vectors, status == 0


def _clusters_from_audit(audit_dir: str, entries) -> tuple[np.ndarray, dict[int, list[str]], dict]:
    """Cluster labels per entry and top words per cluster from an ``audit data`` output folder."""
    folder = Path(audit_dir)
    pq = require("pyarrow.parquet", "scale", "reading clusters.parquet")
    if not (folder / "clusters.parquet").is_file() or not (folder / "report.json").is_file():
        raise InputError.bad("--clusters", audit_dir, "is not an `sdguard audit data` output (clusters.parquet and report.json expected)")
    table = pq.read_table(folder / "clusters.parquet", columns=["file_name", "cluster_id"]).to_pydict()
    index = {f: i for i, f in enumerate(entries.file_names)}
    labels = np.full(len(entries), -1, np.int64)
    unknown = 0
    for f, c in zip(table["file_name"], table["cluster_id"]):
        if f in index:
            labels[index[f]] = c
        else:
            unknown += 1
    report = json.loads((folder / "report.json").read_text())
    words = {int(c["cluster_id"]): [w["word"] for w in c["top_words"]] for c in report["results"].get("clusters", [])}
    return labels, words, {"source": str(folder), "unmatched_files": unknown,
                           "threshold": report["results"].get("threshold", {}).get("value")}


def _clusters_here(vectors, ok, texts, emb, threshold, seed):
    from .clustering import cluster_embeddings

    c = cluster_embeddings(vectors[ok], threshold, default_threshold=emb.default_threshold, seed=seed)
    labels = np.full(len(vectors), -1, np.int64)
    labels[ok] = c.labels
    words = {}
    for k in range(c.n_clusters):
        idx = np.flatnonzero(labels == k)
        words[k] = [w["word"] for w in frequent_words((texts[i] for i in idx), 10)]
    return labels, words, {"source": "clustered here", "threshold": c.threshold.value}


def calibrate_threshold(members: np.ndarray, vectors: np.ndarray, ok: np.ndarray) -> dict:
    """A replication threshold for one cluster from the training data.

    Positives: each member's similarity to its nearest other member (known duplicates).
    Negatives: each member's similarity to its nearest training image outside the cluster.
    The threshold is halfway between the 5th percentile of positives and the 95th of negatives.
    """
    m = vectors[members]
    sims_in = m @ m.T
    np.fill_diagonal(sims_in, -2)
    pos = sims_in.max(1)
    outside = np.ones(len(vectors), bool)
    outside[members] = False
    outside &= ok
    neg = np.full(len(members), -1.0, np.float32)
    rest = np.flatnonzero(outside)
    for s in range(0, len(rest), 8192):
        block = vectors[rest[s:s + 8192]]
        neg = np.maximum(neg, (m @ block.T).max(1))
    lo, hi = float(np.quantile(pos, 0.05)), float(np.quantile(neg, 0.95))
    return {"value": round((lo + hi) / 2, 4), "source": "calibrated", "duplicates_q05": round(lo, 4),
            "non_duplicates_q95": round(hi, 4), "separated": lo > hi}


# ------------------------------------------------------------------------------------------
# generation with checkpoints
# ------------------------------------------------------------------------------------------


def _thumb(images: np.ndarray) -> np.ndarray:
    if images.shape[1] <= THUMB:
        return images
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(im).resize((THUMB, THUMB), Image.BOX)) for im in images])


def _chunk_path(stage: Path, k: int, start: int) -> Path:
    return stage / "generations" / f"p{k:04d}_s{start:06d}.npz"


REFERENCE_SEEDS = 64  # generations per reference prompt (at most n): enough for a distance quantile


def _seeds_of(spec: PromptSpec, cfg: GenerationAuditConfig) -> int:
    return min(cfg.n, REFERENCE_SEEDS) if spec.kind == "reference" else cfg.n


def _generate_all(model, specs: list[PromptSpec], cfg: GenerationAuditConfig, emb, stage: Path, progress) -> dict:
    """Generate, embed and store every prompt's images chunk by chunk; returns counters."""
    chunks = [(k, s, min(cfg.batch_size, _seeds_of(spec, cfg) - s))
              for k, spec in enumerate(specs) for s in range(0, _seeds_of(spec, cfg), cfg.batch_size)]
    done = [c for c in chunks if _chunk_path(stage, c[0], c[1]).is_file()]
    made = 0
    with progress_bar("generating", sum(c[2] for c in chunks), enabled=progress,
                      completed=sum(c[2] for c in done)) as bar:
        for k, start, count in chunks:
            path = _chunk_path(stage, k, start)
            if path.is_file():
                continue
            gen = model.generate([specs[k].prompt] * count, seeds=cfg.seed + start, steps=cfg.steps,
                                 guidance=cfg.guidance, batch_size=cfg.batch_size)
            buf = _npz(images=_thumb(gen.images), embeddings=emb.embed(list(gen.images)),
                       seeds=np.asarray(gen.seeds, np.int64))
            atomic_write_bytes(path, buf)
            made += count
            bar.advance(count)
    return {"generated_now": made, "reused": sum(c[2] for c in done)}


def _npz(**arrays) -> bytes:
    import io

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _load_prompt(stage: Path, k: int, cfg: GenerationAuditConfig, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    images, embs = [], []
    for start in range(0, cfg.n if n is None else n, cfg.batch_size):
        with np.load(_chunk_path(stage, k, start)) as z:
            images.append(z["images"])
            embs.append(z["embeddings"])
    return np.concatenate(images), np.concatenate(embs)


# ------------------------------------------------------------------------------------------
# the audit
# ------------------------------------------------------------------------------------------


def _select_prompts(cfg, entries, labels, words, rng, fits=None) -> list[PromptSpec]:
    if cfg.prompts:
        return read_prompt_file(cfg.prompts)
    sizes = np.bincount(labels[labels >= 0]) if (labels >= 0).any() else np.zeros(0, int)
    order = [int(c) for c in np.argsort(-sizes, kind="stable") if sizes[c] >= 2 and words.get(int(c))]
    chosen = order[: cfg.top_clusters]
    specs: list[PromptSpec] = []
    exclude: set[str] = set()
    outside = [t for t, l in zip(entries.texts, labels) if l < 0]
    for c in chosen:
        idx = np.flatnonzero(labels == c)
        top = words[c]
        exclude |= set(top[:4])
        specs += cluster_suite(c, [entries.texts[i] for i in idx], top, outside, rng, fits=fits)
    if cfg.object_keyword:
        exclude.add(cfg.object_keyword.lower())
        kw = cfg.object_keyword.lower()
        with_kw = sorted({t for t in entries.texts if kw in t.lower().split()})
        if not with_kw:
            raise InputError.bad("--object-keyword", cfg.object_keyword, "occurs in no caption of the dataset")
        pick = rng.choice(len(with_kw), size=min(4, len(with_kw)), replace=False)
        specs += [PromptSpec(with_kw[i], "object", None, [kw]) for i in sorted(pick)]
    specs += control_prompts(outside or entries.texts, exclude, cfg.controls, rng)
    if not specs:
        raise InputError.bad("DATASET", cfg.dataset, "has no near-duplicate cluster to build prompts from; pass --prompts FILE")
    return specs


def _reference_specs(cfg, entries, labels, specs) -> list[PromptSpec]:
    """Reference prompts for the clique distance (none when the distance is given)."""
    if cfg.clique_delta is not None:
        return []
    outside = [t for t, l in zip(entries.texts, labels) if l < 0] or list(entries.texts)
    exclude = {w for s in specs for w in s.keywords}
    return reference_prompts(outside, exclude, {s.prompt for s in specs}, cfg.reference_prompts,
                             np.random.default_rng([cfg.seed, 1]))


def audit_generations(*args: Any, progress: bool | None = None, **values: Any) -> Report:
    """Audit a model for replication of ``dataset``'s images over many seeds (see the module docstring);
    ``audit_generations(GenerationAuditConfig(...))`` or ``audit_generations(model, dataset, out=..., ...)``.

    Writes ``report.json`` (``results.prompts``: one entry per prompt with ``prompt``, ``kind``,
    ``n``, ``replication_rate``, ``ci_low``, ``ci_high``, ``clique_size``, ...), ``report.html``,
    ``prompts.json`` and the generations' thumbnails and embeddings (``generations/``).
    ``clique_delta=None`` calibrates the clique distance on ``reference_prompts`` ordinary
    captions, ``min(n, 64)`` seeds each (``results.clique``); with no reference prompt it is
    Carlini et al.'s 0.15.
    """
    from ..embed import create_embedder
    from ..models import DiffusionModel

    cfg = build(GenerationAuditConfig, args, values)
    if cfg.object_keyword and not cfg.detector:
        raise InputError.bad("--detector", None, "is needed with --object-keyword (world or clip:MODEL)")
    faiss = require("faiss", "scale", "searching the training set")
    report = Report("audit generations", cfg)
    rng = np.random.default_rng(cfg.seed)
    with report.timer("open"):
        ds = open_dataset(cfg.dataset)
        emb = create_embedder(cfg.embedder)
        m = DiffusionModel.load(cfg.model, device=cfg.device)
    report.add_model("model", m)
    with output_dir(cfg.out, overwrite=cfg.overwrite, resume=cfg.resume) as stage:
        with report.timer("embed_training"):
            entries, vectors, ok = _training_embeddings(ds, emb, progress)
        with report.timer("clusters"):
            if cfg.clusters:
                labels, words, cinfo = _clusters_from_audit(cfg.clusters, entries)
            else:  # also for a prompt file: its generations are judged at their nearest cluster's threshold
                labels, words, cinfo = _clusters_here(vectors, ok, entries.texts, emb, cfg.threshold, cfg.seed)
        max_tokens = int(m.tokenizer.model_max_length)
        specs = _select_prompts(cfg, entries, labels, words, rng, fits=lambda p: m.token_count(p) <= max_tokens)
        specs += _reference_specs(cfg, entries, labels, specs)
        plan = {"config": cfg.run_key(), "prompts": [s.to_dict() for s in specs]}
        plan_path = stage / "prompts.json"
        if plan_path.is_file() and json.loads(plan_path.read_text()) != plan:
            raise InputError.bad("--resume", cfg.out, "holds a run with other settings or prompts; start it anew with --overwrite")
        atomic_write_text(plan_path, json.dumps(plan, indent=2))
        with report.timer("generate"):
            counters = _generate_all(m, specs, cfg, emb, stage, progress)
        with report.timer("analyse"):
            _analyse(report, cfg, m, ds, entries, vectors, ok, labels, cinfo, specs, stage, faiss)
        report.results["generation"] = counters
        report.results["images_per_second"] = round(counters["generated_now"] / max(report.timings["generate"], 1e-9), 3)
        report.artifacts = ["prompts.json", "generations/"]
        report.write(stage)
    return report


def _analyse(report, cfg, model, ds, entries, vectors, ok, labels, cinfo, specs, stage, faiss) -> None:
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(np.where(ok[:, None], vectors, 0).astype(np.float32))
    global_t = cfg.threshold if cfg.threshold is not None else (cinfo.get("threshold") or 0.9)
    thresholds: dict[int, dict] = {}

    def cluster_threshold(c: int) -> float:
        if c not in thresholds:
            thresholds[c] = ({"value": cfg.threshold, "source": "given"} if cfg.threshold is not None
                             else calibrate_threshold(np.flatnonzero((labels == c) & ok), vectors, ok))
        return thresholds[c]["value"]
    caption_feats = model.text_features(entries.texts) if len(entries) <= 200_000 else None
    prompt_feats = model.text_features([s.prompt for s in specs])
    delta = _clique_delta(cfg, specs, stage)
    report.results["clique"] = delta
    rows, kept_images = [], {}
    for k, spec in enumerate(specs):
        if spec.kind == "reference":
            continue
        images, e = _load_prompt(stage, k, cfg)
        sim_all, nn_all = index.search(e.astype(np.float32), 1)
        sim_all, nn_all = sim_all[:, 0], nn_all[:, 0]
        if spec.cluster is not None:
            members = np.flatnonzero((labels == spec.cluster) & ok)
            t = cluster_threshold(spec.cluster)
            sims_c = e @ vectors[members].T
            best = sims_c.max(1)
            nearest = members[sims_c.argmax(1)]
            hits = best >= t
        else:
            # against the whole training set: each generation's nearest training image, at the
            # threshold of that image's cluster (calibrated), or the global one outside clusters
            best, nearest = sim_all, nn_all
            t_each = np.array([cluster_threshold(int(c)) if c >= 0 else global_t for c in labels[nn_all]])
            hits = best >= t_each
            t = float(np.median(t_each))
        lo, hi = wilson_interval(int(hits.sum()), len(hits))
        clique = extraction_clique(images, delta=delta["value"])
        row = {"prompt": spec.prompt, "kind": spec.kind, "cluster": spec.cluster, "n": int(len(hits)),
               "replication_rate": float(hits.mean()), "ci_low": lo, "ci_high": hi, "threshold": float(t),
               "max_similarity": float(best.max()), "median_similarity": float(np.median(best)),
               "clique_size": clique["clique_size"], "clique_exact": clique["exact"],
               "extraction_flagged": clique["flagged"],
               "nearest_in_cluster_share": float(np.mean(labels[nn_all] == spec.cluster)) if spec.cluster is not None else None}
        if caption_feats is not None:
            tsim = caption_feats @ prompt_feats[k]
            j = int(tsim.argmax())
            row["caption_similarity"] = float(tsim[j])
            row["nearest_caption"] = entries.texts[j]
        rows.append(row)
        kept_images[k] = (images, nearest, best)
    report.results["clusters"] = {**cinfo, "thresholds": {str(c): v for c, v in thresholds.items()},
                                  "global_threshold": float(global_t)}
    report.results["prompts"] = rows
    kinds = {}
    for kind in list(KINDS) + ["object", "control", "user"]:
        sel = [r for r in rows if r["kind"] == kind]
        if sel:
            kinds[kind] = {"prompts": len(sel), "mean_replication": float(np.mean([r["replication_rate"] for r in sel])),
                           "flagged_by_clique": sum(r["extraction_flagged"] for r in sel)}
    report.results["kinds"] = kinds
    if cfg.object_keyword:
        report.results["object"] = _object_rates(cfg, ds, entries, specs, stage)
    _render(report, cfg, ds, entries, rows, kept_images)


def _clique_delta(cfg, specs, stage) -> dict:
    if cfg.clique_delta is not None:
        return {"value": cfg.clique_delta, "source": "given"}
    refs = [k for k, s in enumerate(specs) if s.kind == "reference"]
    if not refs or cfg.n < 2:
        return {"value": DEFAULT_DELTA, "source": "published (Carlini et al.): no reference prompt to calibrate on"}
    out = calibrate_delta([_load_prompt(stage, k, cfg, _seeds_of(specs[k], cfg))[0] for k in refs])
    out["prompts"] = [specs[k].prompt for k in refs]
    return out


def _object_rates(cfg, ds, entries, specs, stage) -> dict:
    from .objects import create_detector

    det = create_detector(cfg.detector, dataset=cfg.dataset, object_name=cfg.object_name)

    def share(kind: str) -> tuple[int, int]:
        found = total = 0
        for k, s in enumerate(specs):
            if s.kind == kind:
                images, _ = _load_prompt(stage, k, cfg)
                d = det.detect(images)
                found, total = found + int(d.sum()), total + len(d)
        return found, total

    kw_hits, kw_n = share("object")
    ctl_hits, ctl_n = share("control")
    kw = cfg.object_keyword.lower()
    rows = [i for i, t in enumerate(entries.texts) if kw in t.lower().split()]
    train_imgs = [im for im in ds.load(entries.rows[rows]) if im is not None]
    train_hits = int(det.detect(np.stack(train_imgs)).sum()) if train_imgs else 0
    return {"keyword": cfg.object_keyword, "object": cfg.object_name, "detector": cfg.detector,
            "keyword_share": kw_hits / max(1, kw_n), "keyword_n": kw_n,
            "keyword_ci": wilson_interval(kw_hits, kw_n),
            "control_share": ctl_hits / max(1, ctl_n), "control_n": ctl_n,
            "control_ci": wilson_interval(ctl_hits, ctl_n),
            "training_share": train_hits / max(1, len(train_imgs)), "training_n": len(train_imgs),
            "fisher_p": fisher_greater(kw_hits, kw_n, ctl_hits, ctl_n) if kw_n and ctl_n else None}


def _render(report, cfg, ds, entries, rows, kept_images) -> None:
    from ..report.plots import bar_plot

    labels = [f"{i}:{r['kind']}" for i, r in enumerate(rows)]
    report.section("Replication per prompt",
                   f"Share of {cfg.n} generations (seeds {cfg.seed}..{cfg.seed + cfg.n - 1}) whose {cfg.embedder} "
                   "embedding reaches the replication threshold, with Wilson 95% intervals.",
                   table=[{k: r.get(k) for k in ("prompt", "kind", "n", "replication_rate", "ci_low", "ci_high",
                                                  "threshold", "clique_size", "caption_similarity")} for r in rows],
                   figures=[(bar_plot(labels, [r["replication_rate"] for r in rows], title="replication rate per prompt",
                                      ylabel="share of generations", errors=([r["ci_low"] for r in rows],
                                                                             [r["ci_high"] for r in rows])),
                             "replication rate per prompt (index:kind)")])
    kinds = report.results["kinds"]
    report.section("Replication per prompt kind", "Mean replication rate of the prompts of each kind "
                   "(Somepalli et al. 2023's prompt kinds, object prompts and controls).",
                   figures=[(bar_plot(list(kinds), [v["mean_replication"] for v in kinds.values()],
                                      title="mean replication rate per prompt kind", ylabel="share"), "per kind")])
    if "object" in report.results:
        o = report.results["object"]
        report.section(f"Object-level replication: '{o['object']}' behind '{o['keyword']}'",
                       f"Fisher's exact test, keyword vs control prompts: p = {o['fisher_p']}",
                       table=[{"where": "keyword prompts", "share": o["keyword_share"], "n": o["keyword_n"]},
                              {"where": "control prompts", "share": o["control_share"], "n": o["control_n"]},
                              {"where": "keyword's training images", "share": o["training_share"], "n": o["training_n"]}],
                       figures=[(bar_plot(["keyword prompts", "control prompts", "training images"],
                                          [o["keyword_share"], o["control_share"], o["training_share"]],
                                          title=f"share of images showing '{o['object']}'", rotate=False), "object share")])
    top = sorted(range(len(rows)), key=lambda i: -rows[i]["replication_rate"])[:4]
    for i in top:
        images, nearest, best = kept_images[i]
        order = np.argsort(-best)[:8]
        train = ds.load(entries.rows[nearest[order]], max_side=images.shape[1])
        train = [t if t is not None else np.zeros_like(images[0]) for t in train]
        train = [_fit(t, images.shape[1]) for t in train]
        grid = make_grid(list(images[order]) + train, columns=len(order), scale=auto_scale(images.shape[1]))
        report.section(f"Prompt {i}: {rows[i]['prompt']}",
                       f"Top row: the generations most similar to a training image; bottom row: that training image "
                       f"(replication rate {rows[i]['replication_rate']:.2f}, largest clique {rows[i]['clique_size']}).",
                       figures=[(png_bytes(grid), "generations (top) and their nearest training images (bottom)")])
    flagged = [r for r in rows if r["extraction_flagged"]]
    report.summary = [
        f"{len(rows)} prompts x {cfg.n} seeds on {cfg.model}",
        *[f"{k}: mean replication {v['mean_replication']:.2f} over {v['prompts']} prompt(s)" for k, v in kinds.items()],
        f"{len(flagged)} prompt(s) flagged by a clique of >= {CLIQUE_FLAG} near-identical generations "
        f"(tiled l2 < {report.results['clique']['value']}, {report.results['clique']['source']})",
    ]
    if "object" in report.results:
        o = report.results["object"]
        report.summary.append(f"object '{o['object']}': {o['keyword_share']:.2f} of keyword generations vs "
                              f"{o['control_share']:.2f} of controls (Fisher p = {o['fisher_p']:.2g})")


def _fit(image: np.ndarray, size: int) -> np.ndarray:
    if image.shape[0] == size and image.shape[1] == size:
        return image
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((size, size), Image.BOX))
