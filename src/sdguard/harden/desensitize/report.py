"""The report of ``sdguard desensitize``: what was changed, counted, with the images a person checks
(faces before and after, the near-duplicates left out beside the copy that stayed)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from ...report import make_grid, png_bytes
from ...report.plots import bar_plot
from .metadata import LABELS

GRID_FACES = 8  # images shown before / after face anonymization
GRID_CLUSTERS = 6  # near-duplicate clusters shown
GRID_COPIES = 7  # removed copies shown per cluster
THUMB = 96
IMAGE_REASONS = ("unreadable image", "missing image")


def tally(records: list[dict]) -> dict:
    """The counts of the report from the manifest lines."""
    left = Counter(r["reason"] for r in records if not r["kept"])
    entities, actions = Counter(), Counter()
    for r in records:
        for f in r.get("entities", []):
            entities[f["entity"]] += 1
            actions[f["action"]] += 1
    meta = Counter(lab for r in records for lab in r.get("metadata_removed", []))
    kept = [r for r in records if r["kept"]]
    return {
        "records": {"in": len(records), "out": len(kept), "left_out": dict(sorted(left.items()))},
        "pii": {"findings": dict(sorted(entities.items())), "by_action": dict(sorted(actions.items())),
                "captions_with_findings": sum(1 for r in records if r.get("entities"))},
        "faces": {"images": sum(1 for r in kept if r.get("faces")), "faces": sum(len(r.get("faces", [])) for r in kept)},
        "metadata": {"images_stripped": sum(1 for r in kept if r.get("metadata_removed")),
                     "removed": dict(sorted(meta.items())),
                     "unsupported_formats": dict(Counter(r["metadata_unsupported"] for r in kept
                                                         if r.get("metadata_unsupported")))},
        "diversified": sum(1 for r in kept if r.get("diversified")),
        "unreadable_examples": [{"file_name": r["file_name"], "reason": r["reason"], "detail": r.get("detail", "")}
                                for r in records if r.get("reason") in IMAGE_REASONS][:20],
    }


def render(report, cfg, ds, records: list[dict], plan, written: dict, *, scrubber, faces, stage: Path) -> None:
    """``report``'s results, summary and sections (called before the staged images are removed)."""
    counts = tally(records)
    report.results = {
        "dataset": ds.describe(),
        "output": {"folder": "dataset", "format": ds.format, **written},
        **counts,
        "pii_config": scrubber.config() if scrubber is not None else None,
        "face_detector": faces.config() if faces is not None else None,
        "dedup": plan.summary() if plan is not None else None,
    }
    report.summary = summary(counts, cfg, plan)
    _sections(report, counts, cfg)
    _face_grid(report, ds, records, stage)
    _dedup_grid(report, ds, records)


def summary(counts: dict, cfg, plan) -> list[str]:
    rec, pii, faces, meta = counts["records"], counts["pii"], counts["faces"], counts["metadata"]
    left = ", ".join(f"{n} {why}" for why, n in rec["left_out"].items()) or "none"
    lines = [f"{rec['in']} records in, {rec['out']} written to dataset/ (left out: {left})"]
    if pii["findings"]:
        found = ", ".join(f"{e} {n}" for e, n in pii["findings"].items())
        lines.append(f"personal data: {sum(pii['findings'].values())} findings in {pii['captions_with_findings']} "
                     f"captions ({found})")
    else:
        lines.append("personal data: none found in the captions" if cfg.pii != ["off"] else "personal data: not searched")
    if cfg.face_action != "off":
        done = {"blur": "blurred", "pixelate": "pixelated"}[cfg.face_action]
        lines.append(f"faces: {faces['faces']} {done} in {faces['images']} images ({cfg.face_detector}; "
                     "frontal faces only)")
    if cfg.metadata == "strip":
        removed = ", ".join(f"{k} {n}" for k, n in meta["removed"].items()) or "nothing to remove"
        lines.append(f"metadata stripped from {meta['images_stripped']} images ({removed})")
    if plan is not None:
        s = plan.summary()
        lines.append(f"near-duplicates: {s['clusters']} clusters over {s['clustered_records']} records, "
                     f"{s['removed']} copies left out ({cfg.dedup})")
    if counts["diversified"]:
        lines.append(f"captions diversified ({cfg.diversify}): {counts['diversified']}")
    return lines


def _sections(report, counts: dict, cfg) -> None:
    pii = counts["pii"]
    if pii["findings"]:
        names = list(pii["findings"])
        report.section("Personal data in captions", "Findings per entity type (Presidio's recognizers; the manifest "
                       "has each finding's offsets and score, never its text).",
                       table=[{"entity": e, "findings": n, "action": cfg_action(report, e)} for e, n in
                              pii["findings"].items()],
                       figures=[(bar_plot(names, [pii["findings"][n] for n in names], title="findings per type",
                                          ylabel="findings"), "findings per entity type")])
    meta = counts["metadata"]
    if meta["removed"]:
        report.section("Metadata removed", "Images whose file held each kind of metadata (removed without "
                       "re-encoding: the pixels are the original's).",
                       table=[{"metadata": k, "what": LABELS.get(k, "PNG text chunk" if k.startswith("png-text:") else k),
                               "images": n} for k, n in meta["removed"].items()])
    if meta["unsupported_formats"]:
        report.section("Metadata not stripped", "Formats whose metadata sdguard does not strip (copied as they were).",
                       table=[{"format": k, "images": n} for k, n in meta["unsupported_formats"].items()])
    if counts["unreadable_examples"]:
        report.section("Records left out for their image", "Images that are missing or cannot be decoded "
                       "(first examples); each record is in the manifest.", table=counts["unreadable_examples"])


def cfg_action(report, entity: str) -> str:
    config = report.results.get("pii_config") or {}
    return config.get("policy", {}).get(entity, "")


def _thumb(image: np.ndarray) -> np.ndarray:
    from PIL import Image

    im = Image.fromarray(image)
    im.thumbnail((THUMB, THUMB))
    canvas = Image.new("RGB", (THUMB, THUMB), (255, 255, 255))
    canvas.paste(im, ((THUMB - im.width) // 2, (THUMB - im.height) // 2))
    return np.asarray(canvas)


def _face_grid(report, ds, records: list[dict], stage: Path) -> None:
    from ...data.datasets.base import decode_image

    shown = [r for r in records if r["kept"] and r.get("faces") and r.get("staged")][:GRID_FACES]
    if not shown:
        return
    before = ds.load([r["row"] for r in shown], max_side=512)
    after = [decode_image(stage / ".records" / r["staged"], 512) for r in shown]
    tiles = [_thumb(im) for pair in zip(before, after) for im in pair if im is not None]
    report.section("Faces", "Each image before and after (pairs, left to right).",
                   figures=[(png_bytes(make_grid(tiles, columns=min(8, len(tiles)))), "before / after")])


def _dedup_grid(report, ds, records: list[dict]) -> None:
    removed: dict[int, list[dict]] = {}
    for r in records:
        if r.get("reason") == "near-duplicate" and r.get("duplicate_of") is not None:
            removed.setdefault(r["duplicate_of"], []).append(r)
    top = sorted(removed.items(), key=lambda kv: -len(kv[1]))[:GRID_CLUSTERS]
    names = {r["row"]: r["file_name"] for r in records}
    figures = []
    for first, copies in top:
        rows = [first] + [c["row"] for c in copies[:GRID_COPIES]]
        tiles = [_thumb(im) for im in ds.load(rows, max_side=256) if im is not None]
        if tiles:
            figures.append((png_bytes(make_grid(tiles, columns=len(tiles))),
                            f"kept {names.get(first, first)} (first) and {len(copies)} copies left out"))
    if figures:
        report.section("Near-duplicates left out", "The largest clusters: the record kept, then copies left out.",
                       figures=figures)

