"""The steps of ``sdguard scan``: each runs an sdguard audit into its own folder of the scan's output
and reads its findings back from that folder (so a resumed scan reads a finished step, never reruns it).

- ``data``: ``sdguard audit data`` on the dataset (near-duplicate clusters), then the clusters the
  scan generates from, most duplicated first (:mod:`.candidates`; ``candidates.json``).
- ``generations``: ``sdguard audit generations`` on those clusters (``--cluster``), the data
  step's clusters and embeddings reused (the embedding cache), ``--n`` seeds per prompt.
- ``memorization``: ``sdguard audit memorization`` (Wen et al.'s detector) on the captions of those
  clusters, its threshold calibrated on captions of images in no cluster.
- ``membership``: ``sdguard audit membership`` on ``--members`` vs ``--nonmembers``.
- ``nudity``: the ESD paper's evaluation (:func:`~sdguard.audit.nudity.evaluate_nudity`) on the
  first rows of an I2P-format file, each with its own seed and guidance.
- ``watermark``: ``sdguard audit watermark`` of the model's watermark (``--watermark``, its key and
  payload): the robustness suite on the model's own generations.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ...core.io import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    output_dir,
)
from ..stats import wilson_interval
from .config import ScanConfig
from .gates import Finding


@dataclass
class Context:
    cfg: ScanConfig
    stage: Path  # the scan's staging folder
    progress: bool | None

    def folder(self, step: str) -> Path:
        return self.stage / step

    def backend(self) -> dict:
        """The backend options the steps that generate or embed pass on."""
        return {k: getattr(self.cfg, k) for k in ("backend", "ray_address", "workers", "worker_gpus")}

    def candidate_file(self) -> dict | None:
        """``candidates.json`` (written once, after the data step), read once; None before it exists."""
        if getattr(self, "_candidates", None) is None and (self.stage / "candidates.json").is_file():
            self._candidates = json.loads((self.stage / "candidates.json").read_text(encoding="utf-8"))
        return getattr(self, "_candidates", None)

    def candidates(self) -> list[dict]:
        return self.candidate_file()["clusters"]

    def results(self, step: str) -> dict[str, Any]:
        """``results`` of the report a step's audit wrote in its folder."""
        return json.loads((self.folder(step) / "report.json").read_text(encoding="utf-8"))["results"]


# -- data ----------------------------------------------------------------------------------------


def run_data(ctx: Context) -> None:
    from ..dataset_replication import audit_data

    cfg = ctx.cfg
    audit_data(cfg.dataset, out=ctx.folder("data"), embedder=cfg.embedder, seed=cfg.seed, progress=ctx.progress,
               **ctx.backend())


def choose_candidates(ctx: Context) -> None:
    """``candidates.json``: the clusters the later steps use, most duplicated first."""
    from ...data.datasets import open_dataset
    from ...embed import EmbeddingCache, create_embedder, embed_dataset
    from ..generation_replication import clusters_from_audit
    from .candidates import copy_similarity, most_duplicated

    cfg = ctx.cfg
    ds, emb = open_dataset(cfg.dataset), create_embedder(cfg.embedder)
    entries = ds.entries()
    vectors, _ = embed_dataset(ds, entries, emb, cache=EmbeddingCache.for_dataset(ds, emb), progress=ctx.progress)
    ok = np.linalg.norm(vectors, axis=1) > 0
    labels, words, _ = clusters_from_audit(str(ctx.folder("data")), entries, "--dataset")
    similarity = copy_similarity(emb.default_threshold)
    chosen = most_duplicated(vectors, ok, labels, similarity, cfg.top_clusters, words)
    for c in chosen:
        idx = np.flatnonzero(labels == c["cluster"])
        c["words"] = words[c["cluster"]][:6]
        c["captions"] = sorted({entries.texts[i] for i in idx})
        c["files"] = [entries.file_names[i] for i in idx[:16]]
    ordinary = sorted({entries.texts[i] for i in np.flatnonzero(labels < 0)})
    atomic_write_json(ctx.stage / "candidates.json", {
        "rule": "most near-identical copies within a cluster (Carlini et al. 2023, section 4.2)",
        "copy_similarity": similarity, "clusters": chosen, "ordinary_captions": ordinary})


def data_findings(ctx: Context) -> list[Finding]:
    r = ctx.results("data")
    c = r["clustering"]
    n = int(r["images"]["embedded"])
    k = int(c["clustered_entries"])
    return [Finding("dataset_duplicates", "training images", k / max(1, n), wilson_interval(k, n),
                    {"clusters": c["clusters"], "clustered": k, "images": n})]


# -- generations ---------------------------------------------------------------------------------


def generation_config(ctx: Context):
    from ..generation_replication import GenerationAuditConfig

    cfg = ctx.cfg
    return GenerationAuditConfig(model=cfg.model, dataset=cfg.dataset, clusters=str(ctx.folder("data")),
                                 cluster_ids=[c["cluster"] for c in ctx.candidates()], n=cfg.n, seed=cfg.seed,
                                 steps=cfg.steps, guidance=cfg.guidance, batch_size=cfg.batch_size,
                                 embedder=cfg.embedder, top_clusters=max(1, len(ctx.candidates())),
                                 controls=cfg.controls, reference_prompts=cfg.reference_prompts, device=cfg.device,
                                 out=str(ctx.folder("generations")), resume=True, **ctx.backend())


def run_generations(ctx: Context) -> None:
    from ..generation_replication import audit_generations

    if ctx.candidates():
        audit_generations(generation_config(ctx), progress=ctx.progress)


def subject_name(rows: list[dict], words: list[str]) -> str:
    """A cluster as a person names it: its keywords prompt (the words all its captions share)."""
    for r in rows:
        if r["kind"] == "keywords":
            return r["prompt"]
    return " ".join(words[:4])


def generation_findings(ctx: Context) -> list[Finding]:
    if not ctx.candidates():
        return [Finding("extracted_prompts", "audited prompts", 0.0, None, {"note": "no duplicated cluster"})]
    r = ctx.results("generations")
    out = []
    for c in ctx.candidates():
        rows = [p for p in r["prompts"] if p["cluster"] == c["cluster"]]
        if not rows:
            continue
        worst = max(rows, key=lambda p: p["replication_rate"])
        out.append(Finding("replication", subject_name(rows, c["words"]), worst["replication_rate"],
                           (worst["ci_low"], worst["ci_high"]),
                           {"cluster": c["cluster"], "copies": c["copies"], "size": c["size"], "prompt": worst["prompt"],
                            "files": c["files"], "kind": worst["kind"], "n": worst["n"],
                            "by_kind": {p["kind"]: p["replication_rate"] for p in rows}}))
    flagged = [p["prompt"] for p in r["prompts"] if p["extraction_flagged"]]
    out.append(Finding("extracted_prompts", "audited prompts", float(len(flagged)), None,
                       {"prompts": flagged[:20], "audited": len(r["prompts"])}))
    return out


# -- memorization --------------------------------------------------------------------------------


def _prompt_files(ctx: Context) -> tuple[Path, Path]:
    """The captions scored (of the chosen clusters) and the ordinary ones calibrating the threshold."""
    cfg = ctx.cfg
    cands = ctx.candidate_file()
    scored = list(dict.fromkeys(t for c in cands["clusters"] for t in c["captions"]))[: cfg.captions]
    rng = np.random.default_rng([cfg.seed, 0x5CA7])
    ordinary = [t for t in cands["ordinary_captions"] if t not in set(scored)]
    ordinary = [ordinary[i] for i in sorted(rng.permutation(len(ordinary))[: cfg.captions])]
    folder = ctx.stage / "inputs"
    paths = folder / "memorization-scored.jsonl", folder / "memorization-ordinary.jsonl"
    for path, rows in zip(paths, (scored, ordinary)):
        atomic_write_text(path, "".join(json.dumps({"prompt": t}) + "\n" for t in rows))
    return paths


def run_memorization(ctx: Context) -> None:
    from ..memorization import audit_memorization

    cfg = ctx.cfg
    if not ctx.candidates():
        return
    scored, ordinary = _prompt_files(ctx)
    audit_memorization(cfg.model, prompts=str(scored), ordinary=str(ordinary), detector=["wen"], seed=cfg.seed,
                       timestep=cfg.memorization_timestep,
                       batch_size=cfg.batch_size, device=cfg.device, out=ctx.folder("memorization"),
                       progress=ctx.progress)


def memorization_findings(ctx: Context) -> list[Finding]:
    if not ctx.candidates():
        return [Finding("memorized_prompts", "training captions", 0.0, None, {"note": "no duplicated cluster"})]
    r = ctx.results("memorization")
    flagged = [p["prompt"] for p in r["prompts"] if p["flagged"].get("wen")]
    t = r["detectors"]["wen"].get("threshold") or {}
    return [Finding("memorized_prompts", "training captions", float(len(flagged)), None,
                    {"prompts": flagged[:200], "scored": len(r["prompts"]), "threshold": t.get("value"),
                     "fpr": t.get("fpr_target"), "calibration_prompts": t.get("calibration_prompts"),
                     "extensions": r["detectors"]["wen"].get("extensions")})]


# -- membership ----------------------------------------------------------------------------------


def run_membership(ctx: Context) -> None:
    from ..membership import audit_membership

    cfg = ctx.cfg
    nonmembers = cfg.nonmembers or str(Path(cfg.members).with_name("nonmembers.jsonl"))
    audit_membership(cfg.model, cfg.members, nonmembers, seed=cfg.seed, batch_size=cfg.batch_size, device=cfg.device,
                     out=ctx.folder("membership"), progress=ctx.progress)


def membership_findings(ctx: Context) -> list[Finding]:
    """Per attack, the AUC over all members, and over the duplicated and the single-copy members each
    against the clean non-members (where the evaluation half holds both): duplicated images leak most."""
    r = ctx.results("membership")
    out = []
    for name, a in r["attacks"].items():
        out.append(Finding("mia_auc", name, float(a["auc"]), tuple(a["auc_ci"]) if a.get("auc_ci") else None,
                           {"tpr_at_1%_fpr": a.get("tpr_at_0_01_fpr"), "chosen": a.get("chosen")}))
        for group, g in r.get("groups", {}).get("by_attack", {}).get(name, {}).items():
            if isinstance(g, dict) and "auc" in g:
                out.append(Finding("mia_auc", f"{name}, {group} members", float(g["auc"]),
                                   tuple(g["auc_ci"]) if g.get("auc_ci") else None,
                                   {"members": g.get("members"), "nonmembers": g.get("nonmembers")}))
    return out


# -- nudity --------------------------------------------------------------------------------------


def run_nudity(ctx: Context) -> None:
    from ...models import DiffusionModel
    from ...report import Report, auto_scale, make_grid, png_bytes
    from ..nudity import evaluate_nudity, load_i2p_prompts
    from .figures import censored

    cfg = ctx.cfg
    prompts = load_i2p_prompts(cfg.prompts, limit=cfg.nudity_prompts)
    report = Report("scan nudity", {"prompts": cfg.prompts, "rows": cfg.nudity_prompts, "steps": cfg.steps})
    with output_dir(ctx.folder("nudity"), command="scan nudity") as stage:
        model = DiffusionModel.load(cfg.model, device=cfg.device)
        report.add_model("model", model)
        with report.timer("generate_and_detect"):
            result = evaluate_nudity(model, prompts, steps=cfg.steps, batch_size=cfg.batch_size)
        images, flags = result.pop("images_array"), result.pop("flags")
        lo, hi = wilson_interval(result["images_flagged"], result["images"])
        report.results = {**result, "ci": [lo, hi], "skipped": prompts.skipped_reasons(),
                          "flagged_prompts": [p.prompt for p, f in zip(prompts.prompts, flags) if f][:50]}
        shown = [censored(im) if f else im for im, f in zip(images[:16], flags[:16])]
        if shown:
            atomic_write_bytes(stage / "grid.png", png_bytes(make_grid(shown, columns=8, scale=auto_scale(shown[0].shape[0]))))
        report.write(stage)


def nudity_findings(ctx: Context) -> list[Finding]:
    r = ctx.results("nudity")
    return [Finding("nudity_rate", "I2P sample", float(r["flagged_rate"]), tuple(r["ci"]),
                    {"images": r["images"], "flagged": r["images_flagged"], "per_class": r["per_class"]})]


# -- watermark ----------------------------------------------------------------------------------


def _watermark_prompts(ctx: Context) -> list[str] | None:
    """Training captions to generate from (the candidates', else the ordinary ones), else the audit's own."""
    cands = ctx.candidate_file()
    if cands is None:
        return None
    texts = [t for c in cands["clusters"] for t in c["captions"][:1]] + cands["ordinary_captions"][:4]
    return texts[:4] or None


def run_watermark(ctx: Context) -> None:
    """The robustness audit of the model's own watermark: an in-generation scheme generates with it;
    a post-hoc one marks the model's generations (resized to ``--watermark-size``, as the service does)."""
    from ...harden.watermark import WATERMARKS
    from ..watermark import audit_watermark

    cfg = ctx.cfg
    common = dict(watermark=cfg.watermark, key=cfg.key, payload=cfg.payload, model=cfg.model, seed=cfg.seed % 2**31,
                  steps=cfg.steps, device=cfg.device, attacks=list(dict.fromkeys(["none", *cfg.watermark_attacks])) if cfg.watermark_attacks else [], out=ctx.folder("watermark"),
                  progress=ctx.progress)
    prompts = _watermark_prompts(ctx)
    if getattr(WATERMARKS.get(cfg.watermark), "in_generation", False):
        n = max(1, -(-cfg.watermark_images // len(prompts or [None] * 4)))
        audit_watermark(**common, n=n, size=cfg.watermark_size, **({"prompts": prompts} if prompts else {}))
        return
    audit_watermark(**common, images=[str(_generations_to_mark(ctx, prompts))])


def _generations_to_mark(ctx: Context, prompts: list[str] | None) -> Path:
    """PNGs of the model's generations, at the side the post-hoc scheme marks (``inputs/watermark``)."""
    from PIL import Image

    from ...core.images import resize_batch
    from ...harden.watermark import WATERMARKS
    from ...models import DiffusionModel
    from ..watermark.run import AuditWatermarkConfig

    cfg = ctx.cfg
    model = DiffusionModel.load(cfg.model, device=cfg.device)
    prompts = prompts or AuditWatermarkConfig.model_fields["prompts"].default_factory()
    chosen = [prompts[i % len(prompts)] for i in range(cfg.watermark_images)]
    images = model.generate(chosen, seeds=cfg.seed, steps=cfg.steps, guidance=cfg.guidance,
                            batch_size=cfg.batch_size).images
    side = cfg.watermark_size or max(model.default_size, WATERMARKS.get(cfg.watermark).min_side)
    if side != images.shape[1]:
        images = np.clip(np.rint(resize_batch(images, side, resample="bicubic")), 0, 255).astype(np.uint8)
    folder = ctx.stage / "inputs" / "watermark"
    folder.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(images):
        Image.fromarray(im).save(folder / f"{i:05d}.png")
    return folder


def watermark_findings(ctx: Context) -> list[Finding]:
    r = ctx.results("watermark")
    key = "tpr@1e-06" if any("tpr@1e-06" in row for row in r["attacks"]) else next(
        k for k in r["attacks"][0] if k.startswith("tpr@"))
    clean = next(row for row in r["attacks"] if row["attack"] == "none")
    n = int(clean["images"])
    missed = round((1.0 - clean[key]) * n)
    worst = min(r["attacks"], key=lambda row: row[key])
    return [Finding("watermark_missed", "no attack", missed / max(1, n), wilson_interval(missed, n),
                    {"scheme": r["scheme"]["name"], "key_fingerprint": r["key_fingerprint"], "images": n,
                     "fpr": key.removeprefix("tpr@"), "bit_accuracy_median": clean["bit_accuracy_median"],
                     "worst_attack": worst["attack"], "worst_attack_tpr": worst[key]})]


#: step -> (run it, read its findings)
STEP_FUNCTIONS: dict[str, tuple[Callable[[Context], None], Callable[[Context], list[Finding]]]] = {
    "data": (run_data, data_findings),
    "generations": (run_generations, generation_findings),
    "memorization": (run_memorization, memorization_findings),
    "membership": (run_membership, membership_findings),
    "nudity": (run_nudity, nudity_findings),
    "watermark": (run_watermark, watermark_findings),
}


__all__ = ["Context", "STEP_FUNCTIONS", "choose_candidates", "generation_config"]
