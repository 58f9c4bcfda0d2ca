"""Watermarks side by side (issue 20): sdguard-spread against invisible-watermark's dwtDct,
dwtDctSvd and rivaGan at 512 px, sdguard-spread's null calibration, and Gaussian Shading on
builtin:tiny.

    python benchmarks/watermark.py                 # all three parts (about 40 min on 2 cores)
    python benchmarks/watermark.py --part compare  # or: null, latent

- ``compare``: every scheme marks the same images (scikit-image's photos at 512 px and builtin:tiny
  generations made at 512 px), goes through the robustness suite in one run, and is timed on the
  same images (embed and detect, medians per image); the generations are made at 256 px and
  resized to 512 px (builtin:tiny's UNet takes 10 s a step at 512 px here). The baselines are handed attacked images
  resized back to 512 px (their best case); sdguard-spread is not.
- ``null``: sdguard-spread decoded on >= 1000 unwatermarked images (random crops at random scales of
  the photos and of generations): detections at 1e-3 and 1e-6 against the binomial threshold.
- ``attributes``: the attribute probe on unwatermarked generations against Gaussian Shading's
  under four keys (the same prompts and seeds).
- ``latent``: Gaussian Shading on builtin:tiny with the world check's sampler settings (25 steps,
  guidance 5) at 32 px, and at 128 px: TPR at 1e-3 after JPEG 75 and resize 0.5, detections on as
  many unwatermarked generations, the sign agreement of the inverted latents, and the attribute
  probe's accuracy on watermarked against unwatermarked generations of the same prompts and seeds.

Writes ``benchmarks/results/watermark.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from finetune_new_artwork import machine, write_results  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
RESULTS = Path(__file__).parent / "results" / "watermark.json"
GOAL_ATTACKS = ("jpeg:50", "resize:0.5", "crop:0.75", "rotate:5")


def _key():
    from sdguard.harden.watermark import WatermarkKey

    return WatermarkKey(bytes(range(32)))


def _generated(n: int, size: int = 512, made_at: int = 256) -> list[np.ndarray]:
    """builtin:tiny generations made at ``made_at`` px (its UNet takes 10 s a step at 512 px on this
    CPU) and resized to ``size`` (bicubic)."""
    from PIL import Image

    from sdguard.models.adapter import DiffusionModel

    model = DiffusionModel.load("builtin:tiny")
    prompts = ["a red circle on the left", "a blue square at the top", "a green triangle", "a starry night painting"]
    images = model.generate([prompts[i % 4] for i in range(n)], seeds=list(range(n)), steps=25, guidance=5.0,
                            height=made_at, width=made_at, batch_size=2).images
    return [np.asarray(Image.fromarray(im).resize((size, size), Image.BICUBIC)) for im in images]


def compare(n_generated: int = 4) -> dict:
    from sdguard.audit.watermark.attacks import DEFAULT_SUITE
    from sdguard.audit.watermark.robustness import quality, run_suite
    from sdguard.harden.watermark import create_watermark
    from sdguard.harden.watermark.options import photos

    key = _key()
    sets = {"photos": list(photos(512).values()), "generated": _generated(n_generated)}
    schemes = {"sdguard-spread": {}, "sdguard-spread bch_t=5": {"bch_t": 5},
               "sdguard-spread host_rejection=0": {"host_rejection": 0.0}, "dwtDct": {}, "dwtDctSvd": {}, "rivaGan": {}}
    out = {}
    for label, options in schemes.items():
        scheme = create_watermark(label.split()[0], **options)
        payload = key.bits(f"payload/{scheme.name}", scheme.bits)
        out[label] = {"bits": scheme.bits}
        for set_name, images in sets.items():
            t_embed = []
            marked = []
            for im in images:
                t0 = time.perf_counter()
                marked.append(scheme.embed(im, payload, key))
                t_embed.append(time.perf_counter() - t0)
            null = images if label in ("sdguard-spread", "dwtDct", "dwtDctSvd") else []  # rivaGan: 1.2 s a decode
            rows = run_suite(scheme, key, payload, marked, null, DEFAULT_SUITE, [1e-3, 1e-6], seed=7)
            out[label][set_name] = {"images": len(images), "embed_ms_median": 1000 * float(np.median(t_embed)),
                                    "quality": quality(images, marked), "attacks": rows}
            goal = {r["attack"]: r["bit_accuracy_median"] for r in rows if r["attack"] in GOAL_ATTACKS}
            print(f"{label:24s} {set_name:9s} psnr {out[label][set_name]['quality']['psnr_median']:.2f} "
                  f"embed {out[label][set_name]['embed_ms_median']:.0f} ms "
                  f"detect {1000 * np.median([r['detect_seconds_per_image'] for r in rows]):.0f} ms  "
                  + "  ".join(f"{a} {v:.2f}" for a, v in goal.items()), flush=True)
    return out


def null_calibration(n: int = 1000, seed: int = 0) -> dict:
    from PIL import Image

    from sdguard.harden.watermark import create_watermark, detect_bits
    from sdguard.harden.watermark.options import photos

    key = _key()
    scheme = create_watermark("sdguard-spread")
    payload = key.bits(f"payload/{scheme.name}", scheme.bits)
    sources = list(photos(512).values()) + _generated(4)
    rng = np.random.default_rng(seed)
    matches, detections, t0 = [], {1e-3: 0, 1e-6: 0}, time.perf_counter()
    for i in range(n):
        im = sources[i % len(sources)]
        side = int(rng.integers(160, min(im.shape[:2]) + 1))
        y, x = int(rng.integers(0, im.shape[0] - side + 1)), int(rng.integers(0, im.shape[1] - side + 1))
        crop = im[y:y + side, x:x + side]
        out_side = int(rng.integers(160, 513))
        crop = np.asarray(Image.fromarray(crop).resize((out_side, out_side), Image.BICUBIC))
        soft = scheme.decode(crop, key)
        d = detect_bits(soft, payload, 1e-3)
        matches.append(d.matches)
        for fpr in detections:
            detections[fpr] += int(detect_bits(soft, payload, fpr).detected)
        if (i + 1) % 100 == 0:
            print(f"null {i + 1}/{n}: detections {detections}", flush=True)
    m = np.array(matches)
    return {"images": n, "bits": scheme.bits, "detections": {f"{k:g}": v for k, v in detections.items()},
            "expected_at_most": {f"{k:g}": k * n for k in detections}, "matches_mean": float(m.mean()),
            "matches_std": float(m.std()), "matches_max": int(m.max()), "binomial_std": float(np.sqrt(scheme.bits) / 2),
            "seconds_per_image": (time.perf_counter() - t0) / n}


def _attribute_accuracy(model, images, combos, classifier) -> dict:
    pred = classifier.predict(images)
    return {a: float(np.mean([pred[a][i] == combos[i][a] for i in range(len(combos))])) for a in pred}


def latent(n: int = 128, n_null: int = 1000, n_large: int = 48) -> dict:
    import torch

    from sdguard.audit.erasure.concepts import load_or_make_default_world
    from sdguard.audit.watermark.robustness import attacked
    from sdguard.audit.world_check import autoencoded
    from sdguard.data.world.probes import AttributeClassifier
    from sdguard.harden.watermark import create_watermark, detect_bits
    from sdguard.models.adapter import DiffusionModel

    key = _key()
    model = DiffusionModel.load("builtin:tiny")
    world = load_or_make_default_world()
    classifier = AttributeClassifier().fit(autoencoded(world, model))
    values = world.ground_truth["attributes"]
    rng = np.random.default_rng(0)
    out = {}
    for size in (32, 128):
        scheme = create_watermark("gaussian-shading", model=model, size=size, inversion_steps=25)
        payload = key.bits(f"payload/{scheme.name}", scheme.bits)
        count = n if size == 32 else n_large
        combos = [{a: str(rng.choice(values[a])) for a in ("shape", "color", "position")} for _ in range(count)]
        prompts = [f"a {c['color']} {c['shape']} {c['position']}" for c in combos]
        seeds = list(range(count))
        t0 = time.perf_counter()
        marked = model.generate(prompts, seeds=seeds, steps=25, guidance=5.0, height=size, width=size,
                                latents=scheme.initial_latents(payload, key, seeds)).images
        gen_s = (time.perf_counter() - t0) / count
        plain = model.generate(prompts, seeds=seeds, steps=25, guidance=5.0, height=size, width=size).images
        null_prompts = [prompts[i % count] for i in range(n_null)]
        null = model.generate(null_prompts, seeds=[10_000 + i for i in range(n_null)], steps=25, guidance=5.0,
                              height=size, width=size).images if size == 32 else plain
        row = {"bits": scheme.bits, "hw_copy": scheme.hw_copy, "generate_seconds_per_image": gen_s, "attacks": {}}
        with torch.no_grad():
            inv = scheme.invert(list(marked))
        z = scheme.initial_latents(payload, key, seeds)
        row["sign_agreement"] = float(((inv > 0) == (z > 0)).float().mean())
        for spec in ("none", "jpeg:75", "resize:0.5", "jpeg:75+resize:0.5"):
            t0 = time.perf_counter()
            soft = scheme.decode_many(attacked(scheme, list(marked), spec, 3), key)
            det_s = (time.perf_counter() - t0) / count
            soft0 = scheme.decode_many(attacked(scheme, list(null), spec, 5), key)
            row["attacks"][spec] = {
                "bit_accuracy_median": float(np.median([detect_bits(s, payload, 1e-3).bit_accuracy for s in soft])),
                "tpr@0.001": float(np.mean([detect_bits(s, payload, 1e-3).detected for s in soft])),
                "null_images": len(soft0),
                "null_detections@0.001": int(sum(detect_bits(s, payload, 1e-3).detected for s in soft0)),
                "detect_seconds_per_image": det_s}
            print(f"gaussian-shading {size}px {spec}: {row['attacks'][spec]}", flush=True)
        if size == 32:
            row["attribute_accuracy"] = {"watermarked": _attribute_accuracy(model, marked, combos, classifier),
                                         "unwatermarked": _attribute_accuracy(model, plain, combos, classifier)}
            print("attributes", row["attribute_accuracy"], flush=True)
        out[f"{size}px"] = row
    return out


def attributes(n: int = 256, keys: int = 4) -> dict:
    """The attribute probe on builtin:tiny generations at 32 px: unwatermarked against Gaussian
    Shading under ``keys`` keys, the same prompts and seeds (a fixed key fixes the latents' signs,
    so one key's generations can lean one way; the mean over keys is the scheme's cost)."""
    from sdguard.audit.erasure.concepts import load_or_make_default_world
    from sdguard.audit.world_check import autoencoded
    from sdguard.data.world.probes import AttributeClassifier
    from sdguard.harden.watermark import WatermarkKey, create_watermark
    from sdguard.models.adapter import DiffusionModel

    model = DiffusionModel.load("builtin:tiny")
    world = load_or_make_default_world()
    classifier = AttributeClassifier().fit(autoencoded(world, model))
    values = world.ground_truth["attributes"]
    rng = np.random.default_rng(1)
    combos = [{a: str(rng.choice(values[a])) for a in ("shape", "color", "position")} for _ in range(n)]
    prompts = [f"a {c['color']} {c['shape']} {c['position']}" for c in combos]
    seeds = list(range(500, 500 + n))
    plain = _attribute_accuracy(model, model.generate(prompts, seeds=seeds, steps=25, guidance=5.0).images, combos,
                                classifier)
    scheme = create_watermark("gaussian-shading", model=model)
    per_key = []
    for k in range(keys):
        key = WatermarkKey(bytes([k + 7]) * 32)
        latents = scheme.initial_latents(key.bits("payload", scheme.bits), key, seeds)
        images = model.generate(prompts, seeds=seeds, steps=25, guidance=5.0, latents=latents).images
        per_key.append(_attribute_accuracy(model, images, combos, classifier))
        print(f"key {k}: {per_key[-1]} (unwatermarked {plain})", flush=True)
    mean = {a: float(np.mean([r[a] for r in per_key])) for a in plain}
    return {"images": n, "keys": keys, "unwatermarked": plain, "watermarked_per_key": per_key,
            "watermarked_mean": mean, "standard_error": {a: float(np.sqrt(plain[a] * (1 - plain[a]) / n)) for a in plain}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", choices=["compare", "null", "latent", "attributes", "all"], default="all")
    args = ap.parse_args()
    result = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    result["machine"] = machine()
    for part, fn in (("compare", compare), ("null", null_calibration), ("latent", latent), ("attributes", attributes)):
        if args.part in (part, "all"):
            result[part] = fn()
            write_results(RESULTS, result)


if __name__ == "__main__":
    main()
