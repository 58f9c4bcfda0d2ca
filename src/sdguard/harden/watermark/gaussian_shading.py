"""Gaussian Shading (Yang et al., CVPR 2024, "Gaussian Shading: Provable Performance-Lossless Image
Watermarking for Diffusion Models"): the payload in the signs of the initial latents, read back
by DDIM inversion (``gaussian-shading``, an in-generation scheme).

As published (official code ``bsmhmmlf/Gaussian-Shading``, ``watermark.py``
``Gaussian_Shading_chacha`` and ``run_gaussian_shading.py``, read side by side):

- the mark is ``C/channel_copy x (h/hw_copy) x (w/hw_copy)`` bits of a latent of C x h x w,
  tiled ``channel_copy x hw_copy x hw_copy`` times to the latent's shape (``torch.repeat``);
- the tiled bits are encrypted with ChaCha20 (a 32-byte key and a nonce), so the result is
  uniformly random whatever the payload;
- each latent value is drawn from the standard normal truncated to the half its encrypted bit
  names (bit 1: positive), ``ppf((u + bit) / 2)`` for uniform ``u``: the latents are exactly
  N(0, I), which is why the paper's scheme costs nothing in quality;
- detection: the image is resized to the model's size, encoded by the VAE (its mean), inverted by
  DDIM to the initial latents with the empty prompt and guidance 1 over as many steps as the
  generation (50), the signs decrypted, each mark bit voted over its copies (a tie reads 0), and
  the bit accuracy compared with the binomial threshold at the false-positive rate (the paper's
  ``tau_onebit``, :func:`~.base.match_threshold`).

Measured limit: builtin:tiny at its own 32 px recovers only 0.55 of the latent signs through its
autoencoder and the unconditional inversion (0.61 from the exact final latents, 0.84 with
guidance 1), so detection there is near chance; at 128 px (4096 latents, 16 copies a bit) it
detects (``benchmarks/watermark.py --part latent``).

Deviations:
- ``hw_copy`` defaults to the latent side over 8 (the paper's 8 at 512 px, a 64-latent), so the
  mark is the paper's 256 bits at any resolution; on builtin:tiny's 8 x 8 latents each bit has one
  copy (the official vote, ``vote <= threshold`` with threshold 1, would read every bit as 0 in
  that case; here a single copy is read as it is);
- the ChaCha20 key and nonce are derived from the sdguard key (HMAC, :mod:`.keys`) and fixed per
  key, as a deployed detector needs them without the image's seed; the official code draws a
  fresh key per image and detects with it right away. With one nonce, every image of one payload
  shares its latent signs (the magnitudes still vary with the seed), so one key's generations can
  lean one way: on builtin:tiny the attribute probe read shape 0.42-0.44 under four keys against
  0.40 unwatermarked (colour 0.62-0.70 against 0.56; ``benchmarks/watermark.py --part
  attributes``), and 0.34-0.47 under three other keys and payloads in an earlier probe;
- the uniform draws ``u`` come from the image's seed, so a watermarked generation is reproducible;
- ChaCha20 is ``cryptography``'s (16-byte nonce: a 4-byte counter of 0 and 12 derived bytes)
  instead of PyCryptodome's.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ...core.errors import InputError
from .base import Watermark


def _chacha20(key, n_bits: int) -> np.ndarray:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

    nonce = b"\0\0\0\0" + key.derive("gaussian-shading/nonce", 12)
    cipher = Cipher(algorithms.ChaCha20(key.derive("gaussian-shading/chacha20", 32), nonce), mode=None).encryptor()
    stream = cipher.update(bytes((n_bits + 7) // 8))
    return np.unpackbits(np.frombuffer(stream, np.uint8))[:n_bits]


class GaussianShading(Watermark):
    """The scheme for ``model`` (a :class:`~sdguard.models.adapter.DiffusionModel`) at ``size`` pixels."""

    name = "gaussian-shading"
    description = "Gaussian Shading (Yang et al. 2024): the payload in the signs of the initial latents"
    in_generation = True

    def __init__(self, model=None, size: int | None = None, channel_copy: int = 1, hw_copy: int | None = None,
                 inversion_steps: int = 50, batch_size: int = 16):
        if model is None:
            raise InputError.bad("--model", None, "is needed: gaussian-shading marks and reads through a model")
        self.model = model
        self.size = int(size or model.default_size)
        c, h, w = model.latent_shape(self.size, self.size)
        self.latent = (c, h, w)
        self.channel_copy = int(channel_copy)
        self.hw_copy = int(hw_copy or max(1, min(h, w) // 8))
        if self.channel_copy < 1 or c % self.channel_copy:
            raise InputError.bad("--channel-copy", channel_copy, f"must divide the latent's {c} channels")
        if self.hw_copy < 1 or h % self.hw_copy or w % self.hw_copy:
            raise InputError.bad("--hw-copy", hw_copy, f"must divide the latent's {h} x {w} sides")
        if inversion_steps < 1:
            raise InputError.bad("--inversion-steps", inversion_steps, "must be at least 1")
        self.mark_shape = (c // self.channel_copy, h // self.hw_copy, w // self.hw_copy)
        self.bits = int(np.prod(self.mark_shape))
        self.min_side = 8
        self.inversion_steps, self.batch_size = int(inversion_steps), int(batch_size)

    def _tiled(self, payload: np.ndarray) -> np.ndarray:
        mark = payload.reshape(self.mark_shape)
        return np.tile(mark, (self.channel_copy, self.hw_copy, self.hw_copy)).ravel()

    def initial_latents(self, payload: np.ndarray, key, seeds: Sequence[int]) -> torch.Tensor:
        """N x C x h x w watermarked initial latents, one per seed (uniform draws from the seed)."""
        from scipy.stats import norm

        payload = self.check_payload(payload)
        encrypted = self._tiled(payload) ^ _chacha20(key, int(np.prod(self.latent)))
        out = []
        for seed in seeds:
            u = np.random.default_rng([int(seed), 0x6A55]).random(encrypted.size)
            z = norm.ppf(np.clip((u + encrypted) / 2.0, 1e-12, 1 - 1e-12))
            out.append(torch.from_numpy(z.reshape(self.latent)).float())
        return torch.stack(out)

    def embed(self, image: np.ndarray, payload: np.ndarray, key) -> np.ndarray:
        raise InputError.bad("--watermark", self.name, "marks images while they are generated, not afterwards: use "
                             "sdguard generate --watermark gaussian-shading")

    def invert(self, images: np.ndarray) -> torch.Tensor:
        """The initial latents the model would have started ``images`` (N x H x W x 3 uint8) from."""
        from PIL import Image

        model = self.model
        empty = model.encode_prompts([""]).cond
        out = []
        for start in range(0, len(images), self.batch_size):
            batch = [np.asarray(Image.fromarray(im).resize((self.size, self.size), Image.BICUBIC))
                     if im.shape[:2] != (self.size, self.size) else im for im in images[start:start + self.batch_size]]
            x = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
            with torch.no_grad():
                z0 = model.encode_images(x).float()
            out.append(model.ddim_invert(z0, empty, self.inversion_steps).cpu())
        return torch.cat(out)

    def decode_many(self, images: Sequence[np.ndarray], key) -> np.ndarray:
        """Soft scores (vote share minus a half) per mark bit, one row per image."""
        for im in images:
            self.check_image(np.asarray(im))
        inverted = self.invert(list(images)).reshape(len(images), -1).numpy()
        stream = _chacha20(key, inverted.shape[1])
        rows = []
        copies = (self.channel_copy, self.mark_shape[0], self.hw_copy, self.mark_shape[1], self.hw_copy,
                  self.mark_shape[2])
        for z in inverted:
            tiled = ((z > 0).astype(np.uint8) ^ stream).reshape(copies)
            votes = tiled.mean(axis=(0, 2, 4))  # copies of one mark bit: the tile index of each axis
            rows.append((votes - 0.5).ravel())
        return np.stack(rows)

    def decode(self, image: np.ndarray, key) -> np.ndarray:
        return self.decode_many([image], key)[0]

    def config(self) -> dict:
        return {**super().config(), "size": self.size, "latent": list(self.latent), "channel_copy": self.channel_copy,
                "hw_copy": self.hw_copy, "inversion_steps": self.inversion_steps, "model": self.model.spec}
