"""The watermark robustness suite: the edits a watermarked image meets after it leaves the model.

Each attack is written ``NAME:VALUE`` and chained with ``+`` (``jpeg:75+resize:0.5``):

- ``jpeg:Q``: JPEG at quality Q (Pillow's libjpeg, 4:2:0), decoded again;
- ``resize:S``: scaled by S (bicubic); the detector sees the smaller image;
- ``crop:F``: a crop keeping F of each side, at an offset drawn from the seed (the detector sees
  the crop, not a re-enlarged one);
- ``rotate:D``: rotated by D degrees about the centre (bicubic), the corners filled with black
  and the size kept;
- ``noise:SIGMA``: additive Gaussian noise of standard deviation SIGMA (0-255 units);
- ``blur:R``: Gaussian blur of radius R pixels;
- ``brightness:F``: brightness scaled by F (Pillow's ImageEnhance);
- ``regen:S``: the regeneration attack of Zhao et al. 2023 ("Invisible Image Watermarks Are
  Provably Removable Using Generative AI"): the image through a model's img2img at strength S
  (noised to S of the schedule, denoised with the empty prompt, guidance 1, 25 steps), diffusers'
  ``StableDiffusionImg2ImgPipeline`` over the model's components; only with a model.

:data:`DEFAULT_SUITE` is the list the audit runs by default (the issue's: JPEG 90/75/50, resize
0.5/0.25, crop 0.75/0.5, rotation 5/15, noise, blur, brightness and combined chains).
"""

from __future__ import annotations

import io
from typing import Callable

import numpy as np

from ...core.errors import InputError

DEFAULT_SUITE = ("none", "jpeg:90", "jpeg:75", "jpeg:50", "resize:0.5", "resize:0.25", "crop:0.75", "crop:0.5",
                 "rotate:5", "rotate:15", "noise:8", "blur:1", "brightness:1.3", "brightness:0.7",
                 "jpeg:75+resize:0.5", "crop:0.75+jpeg:75", "rotate:5+jpeg:75", "resize:0.5+crop:0.75+jpeg:50")


def _pil(image: np.ndarray):
    from PIL import Image

    return Image.fromarray(image)


def jpeg(image: np.ndarray, quality: float, rng) -> np.ndarray:
    from PIL import Image

    buf = io.BytesIO()
    _pil(image).save(buf, "JPEG", quality=int(quality))
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def resize(image: np.ndarray, scale: float, rng) -> np.ndarray:
    from PIL import Image

    h, w = image.shape[:2]
    return np.asarray(_pil(image).resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BICUBIC))


def crop(image: np.ndarray, keep: float, rng) -> np.ndarray:
    h, w = image.shape[:2]
    ch, cw = max(1, round(h * keep)), max(1, round(w * keep))
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    return image[y:y + ch, x:x + cw].copy()


def rotate(image: np.ndarray, degrees: float, rng) -> np.ndarray:
    from PIL import Image

    return np.asarray(_pil(image).rotate(degrees, resample=Image.BICUBIC, expand=False, fillcolor=(0, 0, 0)))


def noise(image: np.ndarray, sigma: float, rng) -> np.ndarray:
    return np.clip(image.astype(np.float64) + rng.normal(0.0, sigma, image.shape), 0, 255).round().astype(np.uint8)


def blur(image: np.ndarray, radius: float, rng) -> np.ndarray:
    from PIL import ImageFilter

    return np.asarray(_pil(image).filter(ImageFilter.GaussianBlur(radius)))


def brightness(image: np.ndarray, factor: float, rng) -> np.ndarray:
    from PIL import ImageEnhance

    return np.asarray(ImageEnhance.Brightness(_pil(image)).enhance(factor))


#: name -> (function, the range its value must be in, what the value is)
ATTACKS: dict[str, tuple[Callable, tuple[float, float], str]] = {
    "jpeg": (jpeg, (1, 100), "a JPEG quality"), "resize": (resize, (0.01, 4), "a scale"),
    "crop": (crop, (0.05, 1), "the share of each side kept"), "rotate": (rotate, (-180, 180), "degrees"),
    "noise": (noise, (0, 255), "a standard deviation"), "blur": (blur, (0, 50), "a radius in pixels"),
    "brightness": (brightness, (0, 10), "a brightness factor"),
    "regen": (None, (0.01, 1), "an img2img strength"),
}


def regenerate(image: np.ndarray, strength: float, rng, model) -> np.ndarray:
    """``image`` through ``model``'s img2img at ``strength`` (the empty prompt, guidance 1)."""
    import torch
    from diffusers import StableDiffusionImg2ImgPipeline

    from ...models.adapter import to_uint8

    pipe = StableDiffusionImg2ImgPipeline.from_pipe(model.pipeline)  # the same modules, no copy
    pipe.set_progress_bar_config(disable=True)
    f = model.vae_scale_factor
    h, w = image.shape[:2]
    x = torch.from_numpy(np.array(image[: h - h % f, : w - w % f])).permute(2, 0, 1)[None].float() / 255
    generator = torch.Generator("cpu").manual_seed(int(rng.integers(0, 2**31)))
    with torch.no_grad():
        out = pipe(prompt="", image=x.to(model.device, model.dtype), strength=float(strength), guidance_scale=1.0,
                   num_inference_steps=25, output_type="pt", generator=generator).images
    return to_uint8(out * 2 - 1)[0]


def parse_attack(spec: str, argument: str = "--attack") -> list[tuple[str, float]]:
    """``jpeg:75+resize:0.5`` -> ``[("jpeg", 75.0), ("resize", 0.5)]``; ``none`` -> ``[]``."""
    if spec.strip() == "none":
        return []
    steps = []
    for part in spec.split("+"):
        name, _, value = part.strip().partition(":")
        if name not in ATTACKS:
            raise InputError.bad(argument, spec, f"names no attack {name!r} (known: none, {', '.join(ATTACKS)}; "
                                 "chain them with +)")
        _, (lo, hi), what = ATTACKS[name]
        try:
            v = float(value)
        except ValueError:
            raise InputError.bad(argument, spec, f"needs {name}:VALUE, VALUE {what}") from None
        if not lo <= v <= hi:
            raise InputError.bad(argument, spec, f"has {name} {v:g} outside [{lo:g}, {hi:g}] ({what})")
        steps.append((name, v))
    return steps


def needs_model(spec: str) -> bool:
    return any(name == "regen" for name, _ in parse_attack(spec))


def apply_attack(image: np.ndarray, spec: str, seed: int = 0, model=None) -> np.ndarray:
    """``image`` after the chain ``spec`` (randomness from ``seed``: crop offsets, noise, the
    regeneration's sampler); ``regen`` needs ``model``."""
    rng = np.random.default_rng(seed)
    for name, value in parse_attack(spec):
        if name == "regen":
            if model is None:
                raise InputError.bad("--attack", spec, "regenerates through a model's img2img: give --model")
            image = regenerate(image, value, rng, model)
        else:
            image = ATTACKS[name][0](image, value, rng)
    return image
