"""``sdguard desensitize``: clean a dataset before training, and say exactly what changed.

One pass over the records in dataset order; per record, in this order:

1. near-duplicates (``--dedup``): a copy beyond the first K of its cluster is left out
   (:mod:`.dedup`, the clusters of ``sdguard audit data``);
2. the caption: personal data found by Presidio and replaced, masked, or the record dropped
   (:mod:`.pii`); then, for near-duplicates that stay (``--diversify``), words or numbers added
   (:mod:`.diversify`, Somepalli et al. 2023b);
3. the image: a record whose image is missing or cannot be decoded is left out and counted (it
   could not be trained on); faces found (:mod:`.faces`) are blurred or pixelated and the image
   re-encoded in its own format (JPEG with its own quantisation tables and subsampling, so the
   quality does not drop); otherwise the metadata is stripped without re-encoding
   (:mod:`.metadata`), so the pixels stay the original's.

Every record gets one line in ``manifest.jsonl``: kept or left out and why, each personal-data
finding's type, offsets and score (never its text), the faces' boxes, the metadata removed, the
near-duplicate cluster and the record it duplicates, the new caption. The manifest is appended as
the run goes (with the edited images staged beside it), so an interrupted run resumes where it
stopped; the cleaned dataset is written last, in the input's format, into ``OUT/dataset``.
"""

from __future__ import annotations

import io
import json
import os
import random
from pathlib import Path
from typing import Any

from ...core.config import build, output_for
from ...core.errors import InputError
from ...core.io import check_writable_folder
from ...core.progress import progress_bar
from ...core.state import check_checkpoint, remove_checkpoint, save_checkpoint
from ...data.datasets import open_dataset
from ...data.datasets.rewrite import RecordEdit, rewrite_dataset
from ...report import Report
from .dedup import DedupPlan, plan_dedup
from .diversify import diversify
from .faces import create_face_detector, find_and_anonymize
from .metadata import MetadataError, image_format, strip_metadata
from .options import DesensitizeConfig
from .pii import PiiScrubber, check_entities, parse_policy

MANIFEST = "manifest.jsonl"
DATASET_DIR = "dataset"
_RECORDS = ".records"  # edited image bytes, staged until the dataset is written
_RUN = "desensitize-run"  # the checkpoint record that ties a resume to the same run


def desensitize(*args: Any, progress: bool | None = None, **values: Any) -> Report:
    """Desensitize a dataset: ``desensitize(DesensitizeConfig(...))`` or ``desensitize(dataset,
    out=..., pii=["replace"], face_action="blur", dedup="keep-one", ...)`` with the fields of
    :class:`DesensitizeConfig`. Writes ``OUT/dataset`` (the input's format), ``manifest.jsonl``,
    ``report.json`` and ``report.html``; returns the :class:`~sdguard.report.Report`."""
    from .report import render

    cfg = build(DesensitizeConfig, args, values)
    entities = check_entities(cfg.entities, cfg.spacy_model)
    policy = parse_policy(cfg.pii, entities)
    if cfg.cache_dir is not None:
        check_writable_folder(cfg.cache_dir, "--cache-dir")
    report = Report("desensitize", cfg)
    with report.timer("open"):
        ds = open_dataset(cfg.dataset, cfg.format)
        scrubber = (PiiScrubber(entities, policy, spacy_model=cfg.spacy_model, replacement=cfg.pii_replacement,
                                min_score=cfg.pii_min_score) if set(policy.values()) != {"off"} else None)
        faces = create_face_detector(cfg.face_detector) if cfg.face_action != "off" else None
    with output_for(cfg, "desensitize", "dataset", "dedup_from", "spacy_model", "cache_dir") as stage:
        key = {**cfg.run_key(), "dataset": ds.fingerprint()}
        if check_checkpoint(stage, _RUN, key=key) is None:
            save_checkpoint(stage, _RUN, key=key, state={})
        plan = plan_dedup(cfg, ds, report, stage, progress=progress)
        records = _process(cfg, ds, stage, plan, scrubber, faces, report, progress)
        with report.timer("write"):
            edits = {r["row"]: RecordEdit(r["text"], stage / _RECORDS / r["staged"] if r.get("staged") else None)
                     for r in records if r["kept"]}
            written = rewrite_dataset(ds, _fresh(stage / DATASET_DIR), edits, drop_fields=cfg.drop_fields)
        report.artifacts = [DATASET_DIR, MANIFEST, *(["clusters.parquet"] if plan is not None else [])]
        report.links = {"dataset": DATASET_DIR, "manifest": MANIFEST}
        render(report, cfg, ds, records, plan, written, scrubber=scrubber, faces=faces, stage=stage)
        report.write(stage)
        _clean_up(stage)
    return report


def _fresh(folder: Path) -> Path:
    """``folder`` emptied (a resumed run rewrites the dataset from the manifest)."""
    import shutil

    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder


def _clean_up(stage: Path) -> None:
    import shutil

    shutil.rmtree(stage / _RECORDS, ignore_errors=True)
    remove_checkpoint(stage, _RUN)
    (stage / ".clusters_source.json").unlink(missing_ok=True)


def read_manifest(path: Path) -> list[dict]:
    """The complete lines of a (partial) manifest; a line cut off by an interruption is dropped
    from the file so that appending continues cleanly."""
    if not path.is_file():
        return []
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        with open(path, "r+b") as f:
            f.truncate(end)
    return [json.loads(line) for line in data[:end].decode("utf-8").splitlines() if line.strip()]


def _process(cfg: DesensitizeConfig, ds, stage: Path, plan: DedupPlan | None, scrubber, faces, report,
             progress: bool | None) -> list[dict]:
    """Every record's manifest line (resumed from the lines written before)."""
    entries = ds.entries()
    manifest = stage / MANIFEST
    records = read_manifest(manifest)
    done = {r["row"] for r in records}
    (stage / _RECORDS).mkdir(exist_ok=True)
    context = _Context(cfg, entries, plan)
    todo = [r for r in range(len(entries)) if r not in done]
    with report.timer("records"), open(manifest, "a", encoding="utf-8") as log, \
            progress_bar("desensitize", len(entries), enabled=progress, completed=len(done)) as bar:
        for row, data, why in ds.image_bytes(todo):
            rec = _record(row, data, why, context, stage, scrubber, faces)
            log.write(json.dumps(rec, ensure_ascii=False) + "\n")
            log.flush()
            records.append(rec)
            bar.advance()
        os.fsync(log.fileno())
    return sorted(records, key=lambda r: r["row"])


class _Context:
    """What every record's processing reads: options, captions, the dedup plan and its lookups."""

    def __init__(self, cfg: DesensitizeConfig, entries, plan: DedupPlan | None):
        self.cfg, self.entries, self.plan = cfg, entries, plan
        self.first_of = plan.first_of() if plan is not None else {}
        self.kept_in = plan.kept_in_cluster() if plan is not None else {}
        self.vocabulary = sorted({w for t in entries.texts for w in t.split()}) if cfg.diversify == "word-add" else []


def _record(row: int, data: bytes | None, why: str, ctx: _Context, stage: Path, scrubber, faces) -> dict:
    cfg, plan = ctx.cfg, ctx.plan
    rec: dict[str, Any] = {"row": row, "file_name": ctx.entries.file_names[row], "kept": True}
    label = int(plan.labels[row]) if plan is not None else -1
    if label >= 0:
        rec["cluster"] = label
    if plan is not None and not plan.keep[row]:
        of = ctx.first_of.get(label)
        return {**rec, "kept": False, "reason": "near-duplicate", "duplicate_of": of,
                "duplicate_of_file": ctx.entries.file_names[of] if of is not None else None}
    text = ctx.entries.texts[row]
    if scrubber is not None:
        findings = scrubber.analyze(text)
        text, acted = scrubber.apply(text, findings)
        if acted:
            rec["entities"] = [{**f.to_dict(), "action": scrubber.policy[f.entity]} for f in acted]
        if text is None:
            return {**rec, "kept": False, "reason": "personal data (drop policy)"}
    if cfg.diversify != "off" and label >= 0 and ctx.kept_in.get(label, 0) > 1:
        new = diversify(text, cfg.diversify, random.Random(f"{cfg.seed}:{row}"), vocabulary=ctx.vocabulary,
                        insertions=cfg.diversify_words)
        rec["diversified"] = new != text
        text = new
    rec["text"] = text
    return _image(rec, row, data, why, cfg, stage, faces)


def _image(rec: dict, row: int, data: bytes | None, why: str, cfg: DesensitizeConfig, stage: Path, faces) -> dict:
    """The image part of a record: left out when unreadable, faces anonymized, metadata stripped."""
    from PIL import Image

    if data is None:
        return {**rec, "kept": False, "reason": "missing image", "detail": why[:200]}
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            image = im.copy()
            info = {"format": im.format, "icc_profile": im.info.get("icc_profile"),
                    "quantization": getattr(im, "quantization", None), "jpeg": im.format == "JPEG"}
            if info["jpeg"]:
                from PIL import JpegImagePlugin

                info["subsampling"] = JpegImagePlugin.get_sampling(im)
    except Exception as exc:  # noqa: BLE001 - PIL raises many kinds for corrupt files
        return {**rec, "kept": False, "reason": "unreadable image", "detail": f"{type(exc).__name__}: {exc}"[:200]}
    keep_icc = not cfg.strip_icc
    if cfg.metadata == "strip":
        try:
            stripped, labels = strip_metadata(data, keep_icc=keep_icc)
        except MetadataError as exc:
            return {**rec, "kept": False, "reason": "unreadable image", "detail": f"metadata: {exc}"[:200]}
        removed = [lab for lab in labels if not lab.startswith("unsupported:")]
        if removed:
            rec["metadata_removed"] = removed
            rec["image"] = "metadata stripped"
            data = stripped
        elif labels:
            rec["metadata_unsupported"] = labels[0].split(":", 1)[1]
    else:
        info["exif"] = image.info.get("exif")  # carried over when faces make a re-encode necessary
    if faces is not None:
        if image.mode not in ("RGB", "RGBA", "L"):
            image = image.convert("RGBA" if "transparency" in image.info or "A" in image.mode else "RGB")
        anonymized, boxes = find_and_anonymize(image, faces, method=cfg.face_action, margin=cfg.face_margin)
        if boxes:
            rec["faces"] = [b.to_dict() for b in boxes]
            data = _encode(anonymized, info, keep_icc)
            if cfg.metadata == "strip":  # the encoder writes none, but nothing is left to chance
                data = strip_metadata(data, keep_icc=keep_icc)[0]
            rec["image"] = "faces anonymized"
    if "image" in rec:
        name = f"{row}.{image_format(data)}"
        (stage / _RECORDS / name).write_bytes(data)
        rec["staged"] = name
    return rec


def _encode(image, info: dict, keep_icc: bool) -> bytes:
    """``image`` in the format it was read from: JPEG with its own quantisation tables and chroma
    subsampling (its quality is kept), PNG and other lossless formats losslessly, WebP at 95."""
    fmt = info["format"] or "PNG"
    options: dict[str, Any] = {}
    if keep_icc and info.get("icc_profile"):
        options["icc_profile"] = info["icc_profile"]
    if info.get("exif") and fmt in ("JPEG", "PNG", "WEBP", "TIFF"):
        options["exif"] = info["exif"]
    if info["jpeg"]:
        if image.mode not in ("RGB", "L", "CMYK"):
            image = image.convert("RGB")
        options.update(qtables=info["quantization"], subsampling=max(info.get("subsampling", -1), 0))
    elif fmt == "WEBP":
        options.update(quality=95)
    elif fmt not in ("PNG", "TIFF", "BMP", "GIF"):
        fmt = "PNG"
    buf = io.BytesIO()
    try:
        image.save(buf, fmt, **options)
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"an image with faces could not be re-encoded as {fmt} ({exc}).") from None
    return buf.getvalue()
