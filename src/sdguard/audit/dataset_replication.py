"""Dataset replication audit: ``sdguard audit data``.

The dataset half of the memorization study of Somepalli et al. 2023 ("Understanding and
Mitigating Copying in Diffusion Models", NeurIPS): which training images behind a keyword are
near-duplicates of each other, how large those groups are, and which caption words go with them.

1. Keep the entries whose captions hold the keywords (whole words, case-insensitive; all of them,
   or any with ``any=True``); drop captions longer than the text encoder's 77 tokens, as the
   study does, and count them.
2. Embed the images (``pixels`` by default, weight-free; ``clip``, ``sscd``, ``dct``), with an
   on-disk cache that resumes. Unreadable and missing images are skipped and counted.
3. Cluster near-duplicates by cosine similarity (faiss; exact for small sets, an inverted-file
   index at LAION scale as in Webster 2023), with the user's threshold or one read from the
   similarity histogram, and rank the clusters by size. Optionally set the largest cluster aside
   as a catch-all, as the study does.
4. Describe every cluster by its size and its most frequent caption words (stop words removed),
   with a grid of its images.
5. Co-occurrence: the share of the keyword set's entries that fall in the dominant (largest)
   cluster, and the sizes of its 30 largest clusters as a bar plot (the study's "almond
   blossoming", mostly one painting, against "sunflower", spread over many).

Outputs in ``out``: ``report.json``, ``report.html`` and ``clusters.parquet`` (``file_name``,
``cluster_id`` with -1 for entries in no cluster, and ``row``, ``text``, ``status``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import numpy as np
from pydantic import field_validator

from ..core.config import OutputConfig, RunConfig, build, option
from ..core.errors import require
from ..core.images import fit_within
from ..core.io import atomic_write_bytes
from ..data.captions import MAX_TOKENS, KeywordFilter, drop_long, frequent_words
from ..data.datasets import FORMATS, Entries, SkipCounter, issues_sentence, open_dataset
from ..distributed.options import BackendOptions
from ..report import Report, make_grid, png_bytes
from .clustering import METHODS, Clustering, cluster_embeddings

TOP_CLUSTERS = 30


class ClusterOptions(RunConfig):
    """How near-duplicates are found: the embedder, the similarity threshold and the search (the
    options of ``sdguard audit data`` that ``sdguard desensitize --dedup`` shares)."""

    format: Literal[tuple(FORMATS)] | None = option(None, help=f"force the dataset format ({', '.join(FORMATS)})")
    embedder: str = option("pixels", help="pixels, dct, clip[:MODEL_DIR_OR_ID] or sscd:TORCHSCRIPT_FILE")
    embedder_options: dict[str, Any] = option(flag="--embedder-option", default_factory=dict,
                                              help="KEY=VALUE passed to the embedder (repeat for several)")
    threshold: float | None = option(None, gt=0.0, le=1.0, help="cosine similarity in (0, 1] linking two images "
                                     "(default: read from the similarity histogram)")
    method: Literal[METHODS] = option("auto", help=f"similarity search: {', '.join(METHODS)}")  # type: ignore[valid-type]
    min_cluster_size: int = option(2, ge=2, help="smallest group reported as a cluster")
    shard_size: int = option(1_000_000, ge=1, le=10**9, help="sharded: vectors per shard (one shard in memory, or "
                             "on the GPUs, at a time)")
    neighbours: int = option(32, ge=2, le=4096, help="hnsw and sharded: nearest neighbours searched per vector "
                             "(pairs among them are linked)")
    cache: bool = option(True, help="read and write the embedding cache")
    cache_dir: str | None = option(None, help="embedding cache folder (default: under the sdguard cache root)")
    max_side: int | None = option(512, ge=8, help="images are downscaled to this longest side before embedding")
    threads: int | None = option(None, ge=1, help="CPU threads for the similarity search")
    seed: int = option(0, ge=0, le=2**63 - 1, help="seed of the clustering's sampling (ivf training)")


class DataAuditConfig(OutputConfig, ClusterOptions, BackendOptions):
    """Dataset replication audit: keyword filter, near-duplicate clusters, frequent words, co-occurrence."""

    python_positional = ("dataset", "keywords")

    dataset: str = option(positional=True, help="imagefolder (metadata.jsonl), webdataset .tar shard(s), parquet "
                          "with image bytes, or a CSV/parquet of captions with image paths")
    keywords: list[str] = option(flag="--keyword -k", default_factory=list,
                                 help="a word or phrase the captions must contain (repeat for several; none selects "
                                 "every entry)")
    any: bool = option(False, help="keep captions with any keyword (default: all of them)")
    set_aside_largest: bool = option(False, help="report the largest cluster as a catch-all, outside the ranking")
    max_tokens: int | None = option(MAX_TOKENS, ge=3, help="drop captions longer than this many tokens")
    tokenizer: str | None = option(None, help="CLIP tokenizer folder for exact token counts")
    top_clusters: int = option(TOP_CLUSTERS, ge=1, le=10_000, help="clusters described in the report")
    top_words: int = option(10, ge=1, le=100, help="frequent caption words per cluster")
    grid_clusters: int = option(8, ge=0, le=100, help="clusters shown as image grids")
    grid_images: int = option(16, ge=1, le=256, help="images per cluster grid")

    @field_validator("keywords")
    @classmethod
    def _keywords(cls, keywords: list[str]) -> list[str]:
        KeywordFilter(tuple(keywords))  # raises on a keyword without letters
        return keywords


@dataclass
class ClusterRow:
    """One near-duplicate cluster as the report lists it (an entry of ``results.clusters``)."""

    rank: int | None  # 1 = the largest ranked cluster; None for the catch-all
    cluster_id: int
    size: int
    share: float  # of the embedded images
    top_words: list[dict]
    examples: list[str]
    members: np.ndarray = field(repr=False)  # its entries (indices into the kept entries, in entry order)

    def to_dict(self) -> dict:
        return {"rank": self.rank, "cluster_id": self.cluster_id, "size": self.size, "share": self.share,
                "top_words": self.top_words, "examples": self.examples}


@dataclass
class DataAuditResult:
    """What one ``sdguard audit data`` run found; :meth:`to_dict` is ``results`` of ``report.json``.

    ``entries``, ``labels`` and ``status`` (per kept entry) make ``clusters.parquet``; with
    ``clustering`` (threshold, nearest-neighbour similarities) and the clusters' ``members`` they
    are what the report draws from.
    """

    dataset: dict
    selection: dict  # results.filter
    embedder: dict
    skipped: SkipCounter
    cache: str | None
    entries: Entries
    status: np.ndarray  # embedding status per kept entry (0: embedded)
    labels: np.ndarray  # cluster id per kept entry, -1 for none (and for images not embedded)
    clustering: Clustering
    clusters: list[ClusterRow]  # the ranked clusters described (at most top_clusters)
    catch_all: ClusterRow | None
    cooccurrence: dict

    @property
    def embedded(self) -> int:
        return int((self.status == 0).sum())

    @property
    def clustered_entries(self) -> int:
        return int((self.labels >= 0).sum())

    def to_dict(self) -> dict[str, Any]:
        c = self.clustering
        return {
            "dataset": self.dataset, "filter": self.selection, "embedder": self.embedder,
            "images": {"embedded": self.embedded, **self.skipped.to_dict(), "cache": self.cache},
            "threshold": c.threshold.to_dict(),
            "clustering": {"method": c.method, "pairs_found": c.pairs_found, "clusters": c.n_clusters,
                           "clustered_entries": self.clustered_entries,
                           "singletons": self.embedded - self.clustered_entries, "index": c.info,
                           "timings": c.timings},
            "clusters": [r.to_dict() for r in self.clusters],
            "catch_all": self.catch_all.to_dict() if self.catch_all is not None else None,
            "cooccurrence": self.cooccurrence,
        }


def audit_data(*args: Any, progress: bool | None = None, **values: Any) -> Report:
    """Audit a dataset for replicated images behind keywords (Somepalli et al. 2023).

    ``audit_data(DataAuditConfig(...))`` or ``audit_data(dataset, keywords=[...], out=..., ...)``
    with the fields of :class:`DataAuditConfig`: ``keywords`` all occur in a caption (``any=True``:
    one suffices), none selects every entry; ``embedder`` a registry name or ``NAME:VALUE``
    (``clip:FOLDER``, ``sscd:FILE.pt``); ``threshold`` the cosine similarity in (0, 1] above which
    two images are linked (None: read from the similarity histogram, else the embedder's default);
    ``set_aside_largest`` reports the largest cluster as a catch-all, outside the ranking and the
    co-occurrence share. Writes ``report.json``, ``report.html`` and ``clusters.parquet`` into
    ``out``; returns the :class:`~sdguard.report.Report`.
    """
    from ..core.config import output_for
    from ..core.io import check_writable_folder
    from ..embed import STATUS_NAMES, create_embedder

    cfg = build(DataAuditConfig, args, values)
    pa = require("pyarrow", "scale", "writing clusters.parquet")
    pq = require("pyarrow.parquet", "scale", "writing clusters.parquet")
    require("faiss", "scale", "near-duplicate clustering")
    if cfg.cache_dir is not None:
        check_writable_folder(cfg.cache_dir, "--cache-dir")
    report = Report("audit data", cfg)
    with report.timer("open"):
        ds = open_dataset(cfg.dataset, cfg.format)
    emb = create_embedder(cfg.embedder, **cfg.embedder_options)
    with output_for(cfg, "audit data", "dataset", "cache_dir", "tokenizer") as stage:
        result = compute_data_audit(cfg, ds, emb, report, progress=progress)
        _write_clusters(stage / "clusters.parquet", result.entries, result.labels, result.status, STATUS_NAMES, pa, pq)
        report.artifacts = ["clusters.parquet"]
        report.results = result.to_dict()
        render_data_audit(report, result, cfg, ds)
        report.write(stage)
    return report


def compute_data_audit(cfg: DataAuditConfig, ds, emb, report: Report, *,
                       progress: bool | None = None) -> DataAuditResult:
    """Steps 1-5 of the module docstring on the opened dataset ``ds`` with the embedder ``emb``,
    timing each phase into ``report`` (its only use of it)."""
    from ..distributed.embedding import ray_embedding
    from ..embed import EmbeddingCache, embed_dataset

    where = KeywordFilter(tuple(cfg.keywords), cfg.any)
    # 1. captions
    with report.timer("filter"):
        matched = ds.entries(where)
        fits = drop_long(matched.texts, cfg.max_tokens, cfg.tokenizer) if cfg.max_tokens else [True] * len(matched)
        entries = matched.take([i for i, ok in enumerate(fits) if ok])
    selection = {"keywords": cfg.keywords, "mode": where.mode, "description": where.describe(),
                 "dataset_entries": len(ds), "matched": len(matched), "dropped_long": len(matched) - len(entries),
                 "kept": len(entries), "max_tokens": cfg.max_tokens,
                 "token_count": "tokenizer" if cfg.tokenizer else "estimate"}
    # 2. embeddings
    skipped = SkipCounter()
    store = EmbeddingCache.for_dataset(ds, emb, cfg.cache_dir) if cfg.cache and len(entries) else None
    with report.timer("embed"):
        vectors, status = embed_dataset(ds, entries, emb, cache=store, max_side=cfg.max_side, skipped=skipped,
                                        progress=progress,
                                        ray=ray_embedding(cfg, cfg.embedder, cfg.embedder_options, cfg.format))
    ok = status == 0
    # 3. clusters
    with report.timer("cluster"):
        clustering = cluster_embeddings(vectors if ok.all() else vectors[ok], cfg.threshold,
                                        default_threshold=emb.default_threshold, method=cfg.method,
                                        min_size=cfg.min_cluster_size, threads=cfg.threads, seed=cfg.seed,
                                        shard_size=cfg.shard_size, k=cfg.neighbours)
    labels = np.full(len(entries), -1, np.int64)
    labels[ok] = clustering.labels
    # 4. description, 5. co-occurrence
    rows, catch_all = describe_clusters(entries, labels, clustering.n_clusters, embedded=int(ok.sum()),
                                        top=cfg.top_clusters, top_words=cfg.top_words,
                                        set_aside_largest=cfg.set_aside_largest)
    co = cooccurrence(labels[ok], exclude=[catch_all.cluster_id] if catch_all is not None else [], top=TOP_CLUSTERS)
    co["keywords"] = cfg.keywords
    co["mode"] = where.mode
    return DataAuditResult(ds.describe(), selection, emb.config(), skipped,
                           str(store.folder) if store is not None else None, entries, status, labels, clustering,
                           rows, catch_all, co)


def describe_clusters(entries: Entries, labels: np.ndarray, n_clusters: int, *, embedded: int, top: int,
                      top_words: int, set_aside_largest: bool = False) -> tuple[list[ClusterRow], ClusterRow | None]:
    """The ``top`` largest clusters (ids ``0 .. n_clusters - 1``, largest first) of ``entries``
    with their sizes, shares of the ``embedded`` images and most frequent caption words; with
    ``set_aside_largest``, the largest is returned apart, as the catch-all."""
    # members of every cluster in one sort (cluster k: order[starts[k]:starts[k + 1]], in entry order)
    order = np.argsort(labels, kind="stable")
    starts = np.searchsorted(labels[order], np.arange(n_clusters + 1))

    def row(k: int, rank: int | None) -> ClusterRow:
        idx = order[starts[k] : starts[k + 1]]
        return ClusterRow(rank, k, int(len(idx)), len(idx) / max(1, embedded),
                          frequent_words((entries.texts[i] for i in idx), top_words),
                          [entries.file_names[i] for i in idx[:5]], idx)

    catch_all = 0 if (set_aside_largest and n_clusters) else None
    ranked = [k for k in range(n_clusters) if k != catch_all]
    return ([row(k, r + 1) for r, k in enumerate(ranked[:top])],
            row(catch_all, None) if catch_all is not None else None)


def _write_clusters(path: Path, entries, labels: np.ndarray, status: np.ndarray, names, pa, pq) -> None:
    import io

    table = pa.table({
        "file_name": pa.array(entries.file_names, pa.string()),
        "cluster_id": pa.array(labels, pa.int64()),
        "row": pa.array(np.asarray(entries.rows, np.int64), pa.int64()),
        "text": pa.array(entries.texts, pa.string()),
        "status": pa.array([names[s] for s in status.tolist()], pa.string()),
    })
    buf = io.BytesIO()
    pq.write_table(table, buf)
    atomic_write_bytes(path, buf.getvalue())


def cooccurrence(labels: np.ndarray, *, exclude: Sequence[int] = (), top: int = TOP_CLUSTERS) -> dict:
    """Co-occurrence share of a keyword set (Somepalli et al. 2023): among its ``len(labels)``
    entries (cluster labels, -1 for none), the share in the dominant (largest) cluster, and the
    sizes of its ``top`` largest clusters. Clusters in ``exclude`` (a set-aside catch-all) are not
    candidates for dominance but their entries stay in the denominator."""
    labels = np.asarray(labels, np.int64)
    n = len(labels)
    ids, counts = np.unique(labels[labels >= 0], return_counts=True)
    keep = ~np.isin(ids, np.asarray(list(exclude), np.int64))
    ids, counts = ids[keep], counts[keep]
    order = np.lexsort((ids, -counts))
    ids, counts = ids[order], counts[order]
    dominant = int(ids[0]) if len(ids) else None
    size = int(counts[0]) if len(ids) else (1 if n else 0)  # without clusters, the dominant "cluster" is one image
    return {"entries": n, "dominant_cluster": dominant, "dominant_size": size,
            "dominant_share": size / n if n else 0.0, "clusters": int(len(ids)),
            "in_clusters": int(counts.sum()), "largest_sizes": counts[:top].tolist()}


def score_groups(file_names: Sequence[str], labels: Sequence[int], groups: Mapping[str, Sequence[str]]) -> list[dict]:
    """Precision and recall of planted groups (name -> member file names) against clusters: each
    group is matched to the cluster holding most of its members; precision = share of that
    cluster in the group, recall = share of the group in that cluster. Members absent from
    ``file_names`` count as missed."""
    label_of = dict(zip(file_names, (int(v) for v in labels)))
    members: dict[int, int] = {}
    for v in label_of.values():
        if v >= 0:
            members[v] = members.get(v, 0) + 1
    out = []
    for name, files in groups.items():
        files = list(files)
        hits: dict[int, int] = {}
        for f in files:
            v = label_of.get(f, -1)
            if v >= 0:
                hits[v] = hits.get(v, 0) + 1
        if not hits:
            out.append({"group": name, "size": len(files), "cluster_id": None, "precision": 0.0, "recall": 0.0})
            continue
        best = max(sorted(hits), key=lambda k: hits[k])
        out.append({"group": name, "size": len(files), "cluster_id": best, "cluster_size": members[best],
                    "precision": hits[best] / members[best], "recall": hits[best] / len(files)})
    return out


def _thumbs(ds, rows: Sequence[int], max_side: int = 96) -> list[np.ndarray]:
    out = []
    for img in ds.load(rows, max_side=512):
        if img is None:
            continue
        h, w = img.shape[:2]
        scale = max_side / max(h, w)
        if scale >= 2:
            k = int(scale)
            img = img.repeat(k, 0).repeat(k, 1)
        elif scale < 1:
            img = fit_within(img, max_side)
        out.append(img)
    return out


def render_data_audit(report: Report, result: DataAuditResult, cfg: DataAuditConfig, ds) -> None:
    """The summary and sections of ``report.html`` from ``result``; ``ds`` gives the clusters' images."""
    report.summary = data_summary(result, cfg)
    _selection_sections(report, result, cfg)
    if not result.embedded:
        return
    _similarity_sections(report, result, cfg)
    _cluster_grids(report, result, cfg, ds)


def data_summary(result: DataAuditResult, cfg: DataAuditConfig) -> list[str]:
    """The summary lines of a data audit."""
    filt, skipped, n_ok = result.selection, result.skipped, result.embedded
    what = filt["description"]
    summary = []
    dropped = (f"{filt['dropped_long']} dropped as longer than {cfg.max_tokens} tokens" if cfg.max_tokens
               else "no caption length limit")
    if filt["matched"] == 0:
        what_none = f"matches {what}" if filt["keywords"] else "is there"
        summary.append(f"no caption of the {filt['dataset_entries']} entries {what_none}; nothing to cluster")
    elif not filt["keywords"]:
        summary.append(f"all {filt['matched']} entries (no keyword filter); {dropped}")
    else:
        summary.append(f"{filt['matched']} of {filt['dataset_entries']} entries match {what}; {dropped}")
        if filt["kept"] == 0:
            summary.append("no entry is left after dropping long captions; nothing to cluster")
    if skipped.total:
        summary.append(f"{skipped.total} image(s) skipped: {skipped.missing} missing, {skipped.unreadable} unreadable")
    issues = issues_sentence(result.dataset.get("issues", {}))
    if issues:
        summary.append(issues)
    if n_ok:
        th, co = result.clustering.threshold, result.cooccurrence
        summary.append(f"{n_ok} images embedded with {cfg.embedder}; threshold {th.value:.4g} ({th.source})")
        summary.append(f"{result.clustering.n_clusters} near-duplicate cluster(s) hold {result.clustered_entries} "
                       f"of {n_ok} images")
        if result.catch_all is not None:
            summary.append(f"catch-all cluster set aside: {result.catch_all.size} images")
        if result.clusters:
            top = result.clusters[0]
            words = ", ".join(w["word"] for w in top.top_words[:5])
            summary.append(f"largest cluster: {top.size} images ({100 * top.share:.1f}%), words: {words}")
        summary.append(f"co-occurrence: the dominant cluster holds {100 * co['dominant_share']:.1f}% of the "
                       f"{co['entries']} entries")
    return summary


def _selection_sections(report: Report, result: DataAuditResult, cfg: DataAuditConfig) -> None:
    filt, skipped = result.selection, result.skipped
    report.section("Selection", f"Entries whose caption matches {filt['description']} (whole words, "
                   f"case-insensitive); captions longer than {cfg.max_tokens} tokens dropped ({filt['token_count']}).",
                   table=[{k: filt[k] for k in ("description", "dataset_entries", "matched", "dropped_long", "kept")}
                          | {"embedded": result.embedded, "missing": skipped.missing,
                             "unreadable": skipped.unreadable}])
    if skipped.examples:
        report.section("Skipped images", "Images that could not be read (first examples).", table=skipped.examples)


def _similarity_sections(report: Report, result: DataAuditResult, cfg: DataAuditConfig) -> None:
    """Similarity histogram, co-occurrence and the table of clusters."""
    from ..report.plots import (  # matplotlib loads only when a report is drawn
        bar_plot,
        histogram,
    )

    what, co, clustering = result.selection["description"], result.cooccurrence, result.clustering
    th, nn = clustering.threshold, clustering.nn_similarity
    figs = []
    if len(nn):
        figs.append((histogram(np.clip(nn, -1, 1), bins=60, title="nearest-neighbour similarity",
                               xlabel="cosine similarity to the nearest other image", vlines={"threshold": th.value},
                               log=True), f"{len(nn)} images; threshold {th.value:.4g} ({th.source}: {th.reason})"))
    report.section("Similarity", f"Images are linked when their {cfg.embedder} embeddings have cosine similarity "
                   f">= {th.value:.4g}; clusters are connected components ({clustering.method} search).", figures=figs)
    sizes = co["largest_sizes"]
    size_figs = []
    if sizes:
        size_figs.append((bar_plot([str(i + 1) for i in range(len(sizes))], sizes, rotate=False,
                                   title=f"{what}: {len(sizes)} largest clusters", ylabel="images"),
                          f"sizes of the {len(sizes)} largest clusters of {co['entries']} entries"))
    report.section("Co-occurrence", f"Share of the {co['entries']} entries of {what} in the dominant cluster "
                   "(Somepalli et al. 2023).",
                   table=[{"keywords": what, "entries": co["entries"], "dominant cluster": co["dominant_cluster"],
                           "dominant size": co["dominant_size"], "dominant share": round(co["dominant_share"], 4),
                           "clusters": co["clusters"], "in clusters": co["in_clusters"]}],
                   figures=size_figs)
    rows = [{"rank": c.rank, "cluster": c.cluster_id, "size": c.size, "share": round(c.share, 4),
             "top words": ", ".join(f"{w['word']} ({w['count']})" for w in c.top_words)} for c in result.clusters]
    report.section("Clusters", "Near-duplicate clusters ranked by size, with their most frequent caption words "
                   "(stop words removed).", table=rows)


def _cluster_grids(report: Report, result: DataAuditResult, cfg: DataAuditConfig, ds) -> None:
    shown = ([result.catch_all] if result.catch_all is not None else []) + result.clusters[: cfg.grid_clusters]
    for c in shown:
        thumbs = _thumbs(ds, result.entries.rows[c.members[: cfg.grid_images]])
        if not thumbs:
            continue
        title = "Catch-all cluster" if c.rank is None else f"Cluster #{c.rank}"
        words = ", ".join(w["word"] for w in c.top_words[:6])
        report.section(f"{title}: {c.size} images", f"Most frequent words: {words}",
                       figures=[(png_bytes(make_grid(thumbs, columns=8)), f"{len(thumbs)} of {c.size} images")])


__all__ = ["audit_data", "DataAuditConfig", "DataAuditResult", "ClusterRow", "compute_data_audit", "describe_clusters",
           "render_data_audit", "data_summary", "cooccurrence", "score_groups"]
