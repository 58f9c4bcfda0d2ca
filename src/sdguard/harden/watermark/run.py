"""``sdguard watermark embed`` and ``sdguard watermark detect``: a scheme over image files.

Embed writes each image watermarked (PNG, lossless, under its own name) and ``marks.jsonl``;
detect decodes each image and tests it at ``--fpr`` (:func:`~.base.detect_bits`), writing
``detections.jsonl``. Both reports carry the scheme's settings and the key's fingerprint, never
the key.
"""

from __future__ import annotations

import json
from typing import Any

from ...core.config import OutputConfig, build, option
from ...core.io import atomic_write_bytes, atomic_write_text
from ...core.progress import progress_bar
from ...report import Report, make_grid, png_bytes
from ...report.images import difference_image
from .options import WatermarkOptions, image_paths, read_image, scheme_for


class WatermarkEmbedConfig(OutputConfig, WatermarkOptions):
    """Watermark image files (post-hoc schemes)."""

    python_positional = ("files",)
    files: list[str] = option(positional=True, metavar="FILES", min_length=1, help="images or folders of images")


class WatermarkDetectConfig(OutputConfig, WatermarkOptions):
    """Detect a watermark in image files at a false-positive rate."""

    python_positional = ("files",)
    files: list[str] = option(positional=True, metavar="FILES", min_length=1, help="images or folders of images")
    fpr: float = option(1e-6, gt=0.0, lt=1.0, help="the false-positive rate the detection threshold holds")
    model: str | None = option(None, help="the model, for an in-generation scheme (gaussian-shading)")
    size: int | None = option(None, ge=8, le=4096, help="the side an in-generation scheme's images were generated at "
                              "(default: the model's)")
    inversion_steps: int | None = option(None, ge=1, le=1000, help="DDIM inversion steps of an in-generation scheme "
                                         "(default 50; as many as the generation's)")
    device: str | None = option(None, help="cpu, cuda, mps (default: best available)")


def watermark_embed(*args: Any, progress: bool | None = None, **values: Any) -> Report:
    """Watermark ``files`` with ``watermark`` under ``key`` into ``out`` (PNG)."""
    from ...audit.watermark.metrics import psnr

    cfg = build(WatermarkEmbedConfig, args, values)
    paths = image_paths(cfg.files)
    scheme, key, payload = scheme_for(cfg)
    if scheme.in_generation:
        scheme.embed(None, payload, key)  # the one sentence: use sdguard generate --watermark
    report = Report("watermark embed", cfg)
    rows, shown = [], []
    with output_for_files(cfg) as stage:
        with report.timer("embed"), progress_bar("watermarking", len(paths), enabled=progress) as bar:
            for i, path in enumerate(paths):
                image = read_image(path)
                marked = scheme.embed(image, payload, key)
                name = f"images/{i:05d}_{path.stem}.png"
                atomic_write_bytes(stage / name, png_bytes(marked))
                rows.append({"source": str(path), "file": name, "psnr": round(psnr(image, marked), 3)})
                if len(shown) < 4:
                    shown.append((image, marked))
                bar.advance(1)
        atomic_write_text(stage / "marks.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
        report.artifacts = ["images/", "marks.jsonl"]
        report.results = {"scheme": scheme.config(), "key_fingerprint": key.fingerprint,
                          "payload_bits": int(payload.size), "images": len(rows),
                          "psnr_min": min(r["psnr"] for r in rows),
                          "seconds_per_image": round(report.timings["embed"] / len(rows), 4)}
        grid = make_grid([x for pair in shown for x in (*pair, difference_image(*pair))], columns=3)
        report.section("Original, watermarked, difference (x16)", figures=[(png_bytes(grid), "examples")])
        report.summary = [f"{len(rows)} images watermarked with {scheme.name} (key {key.fingerprint})",
                          f"PSNR at least {report.results['psnr_min']:.1f} dB"]
        report.write(stage)
    return report


def output_for_files(cfg):
    from ...core.config import output_for

    return output_for(cfg, f"watermark {'embed' if isinstance(cfg, WatermarkEmbedConfig) else 'detect'}", "files")


def watermark_detect(*args: Any, progress: bool | None = None, **values: Any) -> Report:
    """Detect ``watermark`` under ``key`` in ``files`` at ``fpr``; ``results.detections`` per file."""
    from .base import detect_bits

    cfg = build(WatermarkDetectConfig, args, values)
    paths = image_paths(cfg.files)
    model = None
    if cfg.model is not None:
        from ...models.adapter import DiffusionModel

        model = DiffusionModel.load(cfg.model, device=cfg.device)
    options = {"size": cfg.size, "inversion_steps": cfg.inversion_steps} if model is not None else {}
    if model is None and (cfg.size is not None or cfg.inversion_steps is not None):
        from ...core.errors import InputError

        raise InputError.bad("--size" if cfg.size is not None else "--inversion-steps", cfg.size or cfg.inversion_steps,
                             "is used only with --model (an in-generation scheme)")
    scheme, key, payload = scheme_for(cfg, model=model, **options)
    report = Report("watermark detect", cfg)
    if model is not None:
        report.add_model("model", model)
    rows = []
    with output_for_files(cfg) as stage:
        with report.timer("detect"), progress_bar("detecting", len(paths), enabled=progress) as bar:
            for path in paths:
                found = detect_bits(scheme.decode(read_image(path), key), payload, cfg.fpr)
                rows.append({"file": str(path), **found.to_dict()})
                bar.advance(1)
        atomic_write_text(stage / "detections.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
        report.artifacts = ["detections.jsonl"]
        n_found = sum(r["detected"] for r in rows)
        report.results = {"scheme": scheme.config(), "key_fingerprint": key.fingerprint, "fpr": cfg.fpr,
                          "images": len(rows), "detected": n_found, "detections": rows}
        report.section("Detections", table=[{k: r[k] for k in ("file", "bit_accuracy", "p_value", "detected")}
                                            for r in rows])
        report.summary = [f"{n_found} of {len(rows)} images carry {scheme.name} under key {key.fingerprint} "
                          f"(at FPR {cfg.fpr:g})"] + [
            f"{r['file']}: {'watermarked' if r['detected'] else 'not detected'} (bit accuracy {r['bit_accuracy']:.2f}, "
            f"p {r['p_value']:.2g})" for r in rows[:20]]
        report.write(stage)
    return report
