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
   Rates come with Wilson 95% intervals. What is replicated is reported too: the training
   clusters the replicated generations fall in (each generation against its nearest training
   image), with their top caption words and an example, and for a prompt built from a cluster the
   share that replicates that cluster (:mod:`sdguard.audit.generation_clusters`). ``rule="somepalli"``
   judges instead as Somepalli et al.'s code does: SSCD (DCR's preprocessing), top-1 over the whole
   training set, > 0.5 (:mod:`sdguard.audit.somepalli`); ``results.rule`` names the rule behind every rate.
4. Extraction: the largest clique of near-identical generations under the tiled l2 distance at
   the generated resolution; a prompt is flagged when it reaches 10 (Carlini et al.). Three rules
   are measured (:mod:`sdguard.audit.extraction`): the published distance 0.15 (reported), a
   distance calibrated on the generations of reference prompts (ordinary training captions that
   are not audited), and the spread of the copies of the training cluster the generations
   replicate; the calibrated and copies rules decide, or the ``--clique-delta`` given alone.
5. The text similarity of each prompt to its nearest training caption (the model's text encoder).
6. Object-level replication: a detector's rate among generations of object-keyword prompts vs.
   control prompts and in the keyword's training images, with Fisher's exact test.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import model_validator

from ..core.config import ResumableConfig, build, option, output_for
from ..core.errors import InputError, require
from ..data.captions import contains_phrase, frequent_words
from ..data.datasets import open_dataset
from ..distributed.options import BackendOptions
from ..report import Report, read_report
from .extraction import DEFAULT_DELTA, calibrate_delta, judge_extraction, tiled_l2
from .generation_clusters import CopySpreads, own_cluster_share, replicated_clusters
from .generation_plan import check_identity, record_plan, run_identity
from .generation_result import GenerationAuditResult, PromptResult, kind_means
from .generation_store import full_chunks, generate_all, load_prompt, seeds_of
from .memorization.mitigation import MitigationOptions, mitigator_for, summarize
from .objects import check_detector
from .prompt_suites import (
    PromptSpec,
    cluster_suite,
    control_prompts,
    read_prompt_file,
    reference_prompts,
)
from .somepalli import RULES, replicated, rule_entry, somepalli_embedder
from .stats import fisher_greater, wilson_interval


class GenerationAuditConfig(ResumableConfig, MitigationOptions, BackendOptions):
    """Generation replication audit: replication over many seeds per prompt kind, objects, cliques."""

    python_positional = ("model", "dataset")

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
                                     "cluster; with --rule somepalli, the published 0.5)")
    rule: Literal[RULES] = option("calibrated", help="replication rule: calibrated (per-cluster thresholds) or "  # type: ignore[valid-type]
                                  "somepalli (SSCD top-1 over the training set > 0.5; needs --embedder sscd:FILE)")
    top_clusters: int = option(3, ge=1, le=1000, help="clusters to build prompt suites for (the largest)")
    cluster_ids: list[int] = option(default_factory=list, flag="--cluster", help="a cluster id of --clusters to "
                                    "build a prompt suite for, instead of the largest (repeat for several)")
    controls: int = option(4, ge=0, le=1000, help="control prompts")
    object_keyword: str | None = option(None, help="a keyword whose images hold an object, e.g. astronaut")
    object_name: str | None = option(None, flag="--object", help="the object, e.g. flag")
    detector: str | None = option(None, help="object detector: world or clip:MODEL")
    clique_delta: float | None = option(None, gt=0.0, help="tiled l2 distance of near-identical generations "
                                        "(default: calibrated on reference prompts, at most Carlini et al.'s 0.15, "
                                        "and the spread of replicated copies)")
    reference_prompts: int = option(8, ge=0, le=1000, help="ordinary captions generated to calibrate the clique "
                                    "distance (0: Carlini et al.'s 0.15)")
    device: str | None = option(None, help="cpu, cuda, mps (default: best available)")

    @model_validator(mode="after")
    def _object_options(self) -> "GenerationAuditConfig":
        """The object options need each other: none of them is ignored."""
        if self.object_name is not None and not self.object_keyword:
            raise InputError.bad("--object", self.object_name, "needs --object-keyword (the keyword whose training "
                                 "images hold the object)")
        if self.object_keyword and not self.detector:
            raise InputError.bad("--detector", None, "is needed with --object-keyword (world or clip:MODEL)")
        if self.detector and not self.object_keyword:
            raise InputError.bad("--detector", self.detector, "is used only with --object-keyword; pass both or "
                                 "neither")
        if self.backend == "ray" and self.mitigate != "none":
            raise InputError.bad("--mitigate", self.mitigate, "runs with --backend local only (the mitigation "
                                 "optimizes each prompt's embedding in this process)")
        if self.cluster_ids and self.prompts:
            raise InputError.bad("--cluster", self.cluster_ids[0], "builds prompts from a cluster; it cannot be used "
                                 "with --prompts")
        return self


# ------------------------------------------------------------------------------------------
# training side: embeddings, clusters, thresholds
# ------------------------------------------------------------------------------------------


def _training_embeddings(ds, emb, progress, cfg=None):
    from ..distributed.embedding import ray_embedding
    from ..embed import EmbeddingCache, embed_dataset

    entries = ds.entries()
    store = EmbeddingCache.for_dataset(ds, emb)
    ray = ray_embedding(cfg, cfg.embedder) if cfg is not None and cfg.rule != "somepalli" else None
    vectors, status = embed_dataset(ds, entries, emb, cache=store, progress=progress, ray=ray)
    return entries, vectors, status == 0


def clusters_from_audit(audit_dir: str, entries, argument: str = "--clusters") -> tuple[np.ndarray, dict[int, list[str]], dict]:
    """Cluster labels per entry (-1: none) and top words per cluster from an ``audit data`` output
    folder; errors name ``argument``."""
    folder = Path(audit_dir)
    pq = require("pyarrow.parquet", "scale", "reading clusters.parquet")
    report = read_report(audit_dir, "audit data", argument)
    if not (folder / "clusters.parquet").is_file():
        raise InputError.bad(argument, audit_dir, "holds no clusters.parquet (the output folder of "
                             "`sdguard audit data` is expected)")
    table = pq.read_table(folder / "clusters.parquet", columns=["file_name", "cluster_id"]).to_pydict()
    index = {f: i for i, f in enumerate(entries.file_names)}
    labels = np.full(len(entries), -1, np.int64)
    unknown = 0
    for f, c in zip(table["file_name"], table["cluster_id"]):
        if f in index:
            labels[index[f]] = c
        else:
            unknown += 1
    words = {int(c["cluster_id"]): [w["word"] for w in c["top_words"]] for c in report.results.get("clusters", [])}
    return labels, words, {"source": str(folder), "unmatched_files": unknown,
                           "threshold": report.results.get("threshold", {}).get("value")}


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
# the audit
# ------------------------------------------------------------------------------------------


def _select_prompts(cfg, entries, labels, words, rng, fits=None) -> list[PromptSpec]:
    if cfg.prompts:
        return read_prompt_file(cfg.prompts)
    sizes = np.bincount(labels[labels >= 0]) if (labels >= 0).any() else np.zeros(0, int)
    order = [int(c) for c in np.argsort(-sizes, kind="stable") if sizes[c] >= 2 and words.get(int(c))]
    chosen = order[: cfg.top_clusters]
    if cfg.cluster_ids:
        unknown = [c for c in cfg.cluster_ids if c not in order]
        if unknown:
            raise InputError.bad("--cluster", unknown[0], f"is not a cluster of two or more captioned images "
                                 f"(the clusters are {', '.join(map(str, sorted(order)[:20]))}"
                                 f"{' ...' if len(order) > 20 else ''})")
        chosen = list(dict.fromkeys(cfg.cluster_ids))
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
        with_kw = sorted({t for t in entries.texts if contains_phrase(t, kw)})
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
    ``n``, ``replication_rate``, ``ci_low``, ``ci_high``, ``clique_size``, ``tokens``,
    ``truncated``, ...), ``report.html``, ``prompts.json`` and the generations' thumbnails and
    embeddings (``generations/``).
    ``clique_delta=None`` calibrates the clique distance on ``reference_prompts`` ordinary
    captions, ``min(n, 64)`` seeds each (``results.clique``); with no reference prompt it is
    Carlini et al.'s 0.15.
    """
    from ..embed import create_embedder
    from ..models import DiffusionModel
    from .generation_report import render_generation_audit

    cfg = build(GenerationAuditConfig, args, values)
    if cfg.detector:  # every option is checked before anything is loaded or generated
        check_detector(cfg.detector, dataset=cfg.dataset, object_name=cfg.object_name)
    require("faiss", "scale", "searching the training set")
    report = Report("audit generations", cfg)
    with report.timer("open"):
        ds = open_dataset(cfg.dataset)
        emb = somepalli_embedder(cfg.embedder) if cfg.rule == "somepalli" else create_embedder(cfg.embedder)
        m = DiffusionModel.load(cfg.model, device=cfg.device)
    report.add_model("model", m)
    with output_for(cfg, "audit generations", "model", "dataset", "clusters", "prompts") as stage:
        result = compute_generation_audit(cfg, m, ds, emb, stage, report, progress=progress)
        report.results = {**result.to_dict(), "dataset": ds.describe()}
        render_generation_audit(report, result, cfg, ds)
        report.artifacts = ["prompts.json", "generations/"]
        report.write(stage)
    return report


def compute_generation_audit(cfg: GenerationAuditConfig, model, ds, emb, stage: Path, report: Report, *,
                             progress: bool | None = None) -> GenerationAuditResult:
    """Steps 1-6 of the module docstring for ``model`` on the opened dataset ``ds`` with the
    embedder ``emb``; the generations and ``prompts.json`` go to ``stage``, each phase is timed
    into ``report`` (its only use of it). A resumed run that is not the interrupted one (another
    model, dataset or setting) is refused before any work (:mod:`sdguard.audit.generation_plan`)."""
    fp = report.models.get("model", {}).get("fingerprint") or model.fingerprint()
    identity = run_identity(cfg, fp, ds.fingerprint())
    check_identity(stage, cfg, identity)
    with report.timer("embed_training"):
        entries, vectors, ok = _training_embeddings(ds, emb, progress, cfg)
    with report.timer("clusters"):
        if cfg.clusters:
            labels, words, cinfo = clusters_from_audit(cfg.clusters, entries)
        else:  # also for a prompt file: its generations are judged at their nearest cluster's threshold
            labels, words, cinfo = _clusters_here(vectors, ok, entries.texts, emb, cfg.threshold, cfg.seed)
    mitigator = mitigator_for(cfg, model, fp)
    specs = _plan_prompts(cfg, model, entries, labels, words, stage, identity)
    with report.timer("generate"):
        counters = generate_all(model, specs, cfg, emb, stage, progress, mitigator)
    if mitigator is not None:
        counters["mitigation"] = _mitigation_results(stage, specs, cfg, mitigator)
    speed = round(counters["generated_now"] / max(report.timings["generate"], 1e-9), 3)
    with report.timer("analyse"):
        thresholds = _Thresholds(cfg.threshold, cinfo.get("threshold"), vectors, ok, labels)
        delta = _clique_delta(cfg, specs, stage)
        training = _Training(ds, entries, vectors, ok, labels, words)
        prompts = _judge_prompts(cfg, model, training, specs, stage, thresholds, delta)
        kinds = kind_means(prompts)
        obj = _object_rates(cfg, ds, entries, specs, stage) if cfg.object_keyword else None
    return GenerationAuditResult(delta, cinfo, thresholds.by_cluster, thresholds.global_value, prompts, kinds, obj,
                                 counters, speed, rule_entry(cfg.rule, emb, cfg.threshold))


def _mitigation_results(stage: Path, specs, cfg, mitigator) -> dict:
    """The mitigation over all images, and per audited prompt (``results.generation.mitigation``)."""
    from .generation_store import mitigation_stats

    per = mitigation_stats(stage, specs, cfg)
    out = summarize(np.concatenate(list(per.values())) if per else np.zeros((0, 3)), mitigator)
    out["prompts"] = [{"prompt": specs[k].prompt, "kind": specs[k].kind, **summarize(v, mitigator)}
                      for k, v in per.items() if specs[k].kind != "reference"]
    for row in out["prompts"]:
        for key in ("method", "target", "trigger", "target_source", "timestep"):
            row.pop(key, None)
    return out


def _plan_prompts(cfg, model, entries, labels, words, stage: Path, identity: dict) -> list[PromptSpec]:
    """The audited and reference prompts, recorded in ``prompts.json`` (a resumed run must match it)."""
    max_tokens = int(model.tokenizer.model_max_length)
    specs = _select_prompts(cfg, entries, labels, words, np.random.default_rng(cfg.seed),
                            fits=lambda p: model.token_count(p) <= max_tokens)
    model.prompt_lengths([s.prompt for s in specs])  # warns of each prompt the text encoder truncates
    specs += _reference_specs(cfg, entries, labels, specs)
    record_plan(stage, cfg, identity, [s.to_dict() for s in specs])
    return specs


class _Thresholds:
    """Replication thresholds: the given one, else calibrated per training cluster when first needed
    (:func:`calibrate_threshold`); ``global_value`` outside clusters."""

    def __init__(self, given: float | None, clustering: float | None, vectors: np.ndarray, ok: np.ndarray,
                 labels: np.ndarray):
        self.given, self.vectors, self.ok, self.labels = given, vectors, ok, labels
        self.global_value = given if given is not None else (clustering or 0.9)
        self.by_cluster: dict[int, dict] = {}

    def __call__(self, c: int) -> float:
        if c not in self.by_cluster:
            self.by_cluster[c] = ({"value": self.given, "source": "given"} if self.given is not None
                                  else calibrate_threshold(np.flatnonzero((self.labels == c) & self.ok), self.vectors,
                                                           self.ok))
        return self.by_cluster[c]["value"]


class _Training:
    """The training side a prompt is judged against: entries, embeddings, clusters and their words."""

    def __init__(self, ds, entries, vectors, ok, labels, words):
        faiss = require("faiss", "scale", "searching the training set")
        self.ds, self.entries, self.vectors, self.ok, self.labels, self.words = ds, entries, vectors, ok, labels, words
        self.index = faiss.IndexFlatIP(vectors.shape[1])
        self.index.add(np.where(ok[:, None], vectors, 0).astype(np.float32))
        self.spreads: CopySpreads | None = None

    def nearest(self, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sim, nn = self.index.search(e.astype(np.float32), 1)
        return sim[:, 0], nn[:, 0]


def _replication(spec: PromptSpec, e: np.ndarray, tr: _Training, thresholds: _Thresholds, cfg):
    """Per generation: similarity to the image judged against, its entry, whether it replicates, the
    threshold; and the same against its nearest training image anywhere (the cluster it lands in).
    ``cfg.rule == "somepalli"``: top-1 over the whole training set, > 0.5 (audit/somepalli.py)."""
    sim_all, nn_all = tr.nearest(e)
    if cfg.rule == "somepalli":
        hits, t = replicated(sim_all, cfg.threshold)
        return sim_all, nn_all, hits, t, (sim_all, nn_all, hits)
    t_each = np.array([thresholds(int(c)) if c >= 0 else thresholds.global_value for c in tr.labels[nn_all]])
    hits_any = sim_all >= t_each
    if spec.cluster is None:  # against the whole training set, at the threshold of each nearest image's cluster
        return sim_all, nn_all, hits_any, float(np.median(t_each)), (sim_all, nn_all, hits_any)
    members = np.flatnonzero((tr.labels == spec.cluster) & tr.ok)
    t = thresholds(spec.cluster)
    sims_c = e @ tr.vectors[members].T
    best = sims_c.max(1)
    return best, members[sims_c.argmax(1)], best >= t, float(t), (sim_all, nn_all, hits_any)


def _judge_prompts(cfg, model, tr: _Training, specs, stage, thresholds: _Thresholds, delta: dict) -> list[PromptResult]:
    """Replication, the clusters replicated, extraction rules and caption similarity of every
    audited (not reference) prompt."""
    entries = tr.entries
    caption_feats = model.text_features(entries.texts) if len(entries) <= 200_000 else None
    prompt_feats = model.text_features([s.prompt for s in specs])
    lengths = model.prompt_lengths([s.prompt for s in specs], warn=False)
    rules = ("given",) if delta.get("source") == "given" else ("calibrated", "copies")
    out = []
    for k, spec in enumerate(specs):
        if spec.kind == "reference":
            continue
        images, e = load_prompt(stage, k, cfg)
        best, nearest, hits, t, (sim_all, nn_all, hits_any) = _replication(spec, e, tr, thresholds, cfg)
        lo, hi = wilson_interval(int(hits.sum()), len(hits))
        full = full_chunks(stage, k, cfg)
        if tr.spreads is None:
            tr.spreads = CopySpreads(tr.ds, entries, tr.labels, tr.ok, int(full[0].shape[1]))
        landing = np.where(hits_any, tr.labels[nn_all], -1)
        ext = judge_extraction(tiled_l2(full), delta, landing, tr.spreads, rules)
        clique = ext["rules"][rules[0]]
        clusters = replicated_clusters(hits_any, nn_all, sim_all, tr.labels, tr.words, entries)
        row = PromptResult(spec.prompt, spec.kind, spec.cluster, int(len(hits)), float(hits.mean()), lo, hi, t,
                           float(best.max()), float(np.median(best)), clique["clique_size"], clique["exact"],
                           ext["flagged"],
                           float(np.mean(tr.labels[nn_all] == spec.cluster)) if spec.cluster is not None else None,
                           flagged_by=ext["flagged_by"], extraction=ext["rules"], replicated_clusters=clusters,
                           own_cluster_share=own_cluster_share(clusters, spec.cluster, len(hits)),
                           index=k, images=images, nearest_rows=entries.rows[nearest], similarity=best,
                           rule=cfg.rule, **lengths[k])
        if caption_feats is not None:
            tsim = caption_feats @ prompt_feats[k]
            j = int(tsim.argmax())
            row.caption_similarity, row.nearest_caption = float(tsim[j]), entries.texts[j]
        out.append(row)
    return out


def _clique_delta(cfg, specs, stage) -> dict:
    if cfg.clique_delta is not None:
        return {"value": cfg.clique_delta, "source": "given"}
    refs = [k for k, s in enumerate(specs) if s.kind == "reference"]
    if not refs or cfg.n < 2:
        return {"value": DEFAULT_DELTA, "source": "published (Carlini et al.): no reference prompt to calibrate on"}
    out = calibrate_delta([full_chunks(stage, k, cfg, seeds_of(specs[k], cfg)) for k in refs])
    out["prompts"] = [specs[k].prompt for k in refs]
    return out


def _object_rates(cfg, ds, entries, specs, stage) -> dict:
    from .objects import create_detector

    det = create_detector(cfg.detector, dataset=cfg.dataset, object_name=cfg.object_name)

    def share(kind: str) -> tuple[int, int]:
        found = total = 0
        for k, s in enumerate(specs):
            if s.kind == kind:
                images, _ = load_prompt(stage, k, cfg)
                d = det.detect(images)
                found, total = found + int(d.sum()), total + len(d)
        return found, total

    kw_hits, kw_n = share("object")
    ctl_hits, ctl_n = share("control")
    kw = cfg.object_keyword.lower()
    rows = [i for i, t in enumerate(entries.texts) if contains_phrase(t, kw)]
    train_imgs = [im for im in ds.load(entries.rows[rows]) if im is not None]
    train_hits = int(det.detect(np.stack(train_imgs)).sum()) if train_imgs else 0
    return {"keyword": cfg.object_keyword, "object": cfg.object_name, "detector": cfg.detector,
            "keyword_share": kw_hits / max(1, kw_n), "keyword_n": kw_n,
            "keyword_ci": wilson_interval(kw_hits, kw_n),
            "control_share": ctl_hits / max(1, ctl_n), "control_n": ctl_n,
            "control_ci": wilson_interval(ctl_hits, ctl_n),
            "training_share": train_hits / max(1, len(train_imgs)), "training_n": len(train_imgs),
            "fisher_p": fisher_greater(kw_hits, kw_n, ctl_hits, ctl_n) if kw_n and ctl_n else None}


__all__ = ["audit_generations", "clusters_from_audit", "GenerationAuditConfig", "GenerationAuditResult", "PromptResult",
           "compute_generation_audit", "calibrate_threshold", "kind_means"]
