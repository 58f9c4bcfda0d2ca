"""The one adapter over a diffusers ``StableDiffusionPipeline`` that every audit and hardener uses.

It wraps only public diffusers API: the pipeline call (with ``callback_on_step_end`` to capture
the final latents), ``encode_prompt``, the UNet forward, the VAE and the scheduler. Image ``i`` of
a request is generated from its own generator seeded ``seeds[i]`` (``seed + i`` when one integer
seed is given), so the images do not depend on the batch size or on what else is in the batch.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..core.errors import InputError
from . import checkpoint
from .loading import load_pipeline

#: the models loaded inside :func:`sharing_models`, by (spec, device, dtype)
_SHARED: contextvars.ContextVar[dict | None] = contextvars.ContextVar("sdguard_shared_models", default=None)

PARAMETER_GROUPS = ("cross_attn", "attention", "non_cross_attn", "unet", "text_encoder")


class PromptTruncatedWarning(UserWarning):
    """A prompt is longer than the text encoder reads: the tokens past its limit are cut off."""


@dataclass
class PromptEmbeddings:
    """Text-encoder hidden states for the conditional prompts and the unconditional (negative) ones."""

    cond: torch.Tensor
    uncond: torch.Tensor

    def __len__(self) -> int:
        return self.cond.shape[0]

    def select(self, index: slice | Sequence[int]) -> "PromptEmbeddings":
        return PromptEmbeddings(self.cond[index], self.uncond[index])


@dataclass
class Generation:
    """Images (uint8, N×H×W×3) and the final latents of a generation request."""

    images: np.ndarray
    latents: torch.Tensor
    prompts: list[str]
    seeds: list[int]
    settings: dict = field(default_factory=dict)

    def pil(self) -> list:
        from PIL import Image

        return [Image.fromarray(img) for img in self.images]


def expand_seeds(seeds: int | Sequence[int], n: int) -> list[int]:
    """``seed + i`` for an integer seed, or the given per-image seeds (checked for length)."""
    if isinstance(seeds, (int, np.integer)):
        return [int(seeds) + i for i in range(n)]
    seeds = [int(s) for s in seeds]
    if len(seeds) != n:
        raise InputError.bad("seeds", seeds if len(seeds) < 8 else f"{len(seeds)} seeds", f"must give one seed per prompt ({n})")
    return seeds


class DiffusionModel:
    """A Stable Diffusion pipeline with the operations sdguard needs, independent of its origin."""

    def __init__(self, pipeline, spec: str | None = None):
        self.pipeline = pipeline
        self.spec = spec
        pipeline.set_progress_bar_config(disable=True)

    @classmethod
    def load(cls, spec: str, device: str | None = None, dtype=None) -> "DiffusionModel":
        """Load ``spec``; inside :func:`sharing_models`, a model loaded before with the same arguments
        is returned instead (a job of several audits loads its weights once)."""
        shared = _SHARED.get()
        key = (str(spec), device, str(dtype))
        if shared is not None and key in shared:
            return shared[key]
        model = cls(load_pipeline(spec, device=device, dtype=dtype), spec=str(spec))
        if shared is not None:
            shared[key] = model
        return model

    # -- components -------------------------------------------------------------------------
    @property
    def unet(self):
        return self.pipeline.unet

    @property
    def text_encoder(self):
        return self.pipeline.text_encoder

    @property
    def tokenizer(self):
        return self.pipeline.tokenizer

    @property
    def vae(self):
        return self.pipeline.vae

    @property
    def scheduler(self):
        return self.pipeline.scheduler

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @property
    def vae_scale_factor(self) -> int:
        return self.pipeline.vae_scale_factor

    @property
    def default_size(self) -> int:
        """The image side the model was built for (UNet sample size × VAE scale factor)."""
        return int(self.unet.config.sample_size) * self.vae_scale_factor

    @property
    def num_train_timesteps(self) -> int:
        return int(self.scheduler.config.num_train_timesteps)

    def to_dtype(self, dtype: torch.dtype) -> "DiffusionModel":
        """Cast every module of the pipeline to ``dtype`` in place (parameters keep their identity)."""
        from .loading import _to_dtype

        _to_dtype(self.pipeline, dtype)
        return self

    def copy(self) -> "DiffusionModel":
        """A deep copy (e.g. the frozen teacher of an erasure)."""
        return DiffusionModel(copy.deepcopy(self.pipeline), spec=self.spec)

    # -- text -------------------------------------------------------------------------------
    def tokenize(self, prompts: Sequence[str]) -> torch.Tensor:
        tok = self.tokenizer
        return tok(list(prompts), padding="max_length", max_length=tok.model_max_length,
                   truncation=True, return_tensors="pt").input_ids.to(self.device)

    def token_count(self, prompt: str, *, truncate: bool = False) -> int:
        """Tokens of ``prompt``, start and end included (:func:`sdguard.data.captions.count_tokens`);
        ``truncate``: as many as the text encoder reads."""
        from ..data.captions import count_tokens

        return count_tokens([prompt], self.tokenizer, truncate=truncate)[0]

    def prompt_lengths(self, prompts: Sequence[str], *, warn: bool = True) -> list[dict]:
        """``{"tokens": N, "truncated": bool}`` per prompt (start and end tokens included, as
        :meth:`token_count`); ``truncated``: longer than the text encoder reads. ``warn``: a
        :class:`PromptTruncatedWarning` per distinct truncated prompt, naming it and its count."""
        from ..data.captions import count_tokens

        prompts = list(prompts)
        limit = int(self.tokenizer.model_max_length)
        counts = count_tokens(prompts, self.tokenizer)
        if warn:
            for prompt, n in dict(zip(prompts, counts)).items():
                if n > limit:
                    shown = prompt if len(prompt) <= 60 else prompt[:60] + "..."
                    warnings.warn(f"the prompt {shown!r} has {n} tokens, more than the {limit} the text encoder "
                                  f"reads; it is truncated to its first {limit} tokens", PromptTruncatedWarning,
                                  stacklevel=2)
        return [{"tokens": int(n), "truncated": bool(n > limit)} for n in counts]

    def encode_prompts(self, prompts: Sequence[str], negative_prompts: Sequence[str] | str | None = None) -> PromptEmbeddings:
        """Conditional embeddings of ``prompts`` and unconditional ones (the empty prompt or the negatives)."""
        prompts = list(prompts)
        neg = negative_prompts
        if isinstance(neg, str):
            neg = [neg] * len(prompts)
        cond, uncond = self.pipeline.encode_prompt(
            prompts, self.device, 1, True, negative_prompt=list(neg) if neg is not None else None
        )
        return PromptEmbeddings(cond, uncond)

    def text_features(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """Pooled text-encoder features, L2-normalized (cosine similarity of captions and prompts)."""
        out = []
        with torch.no_grad():
            for i in range(0, len(texts), batch_size):
                pooled = self.text_encoder(self.tokenize(texts[i:i + batch_size])).pooler_output.float()
                out.append(torch.nn.functional.normalize(pooled, dim=-1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, int(self.text_encoder.config.hidden_size)), np.float32)

    def encode_text(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Hidden states of the text encoder for token ids (differentiable, for training)."""
        return self.text_encoder(input_ids.to(self.device))[0]

    # -- noise prediction -------------------------------------------------------------------
    def predict_noise(self, latents: torch.Tensor, timesteps: torch.Tensor | int, embeddings: torch.Tensor) -> torch.Tensor:
        """eps_theta(x_t, t, c): the UNet's prediction for ``latents`` at ``timesteps``, in the
        parameterization of ``scheduler.config.prediction_type`` (epsilon, or v for v-prediction
        models such as SD 2 and builtin:tiny; v is affine in epsilon for a given ``x_t`` and ``t``,
        so guidance and ESD's targets combine either alike). Training losses against the true noise
        must convert with :meth:`prediction_target`."""
        if not torch.is_tensor(timesteps):
            timesteps = torch.tensor([timesteps] * latents.shape[0], device=latents.device)
        elif timesteps.ndim == 0:
            timesteps = timesteps.expand(latents.shape[0])
        dt = self.dtype  # inputs in the UNet's dtype (a half-precision teacher of a float32 student)
        return self.unet(latents.to(dt), timesteps.to(latents.device), encoder_hidden_states=embeddings.to(dt)).sample

    def prediction_target(self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """What :meth:`predict_noise` should output for ``x_t = add_noise(x0, noise, t)``: ``noise``
        for epsilon prediction, ``sqrt(a_t) noise - sqrt(1 - a_t) x0`` for v-prediction."""
        kind = getattr(self.scheduler.config, "prediction_type", "epsilon")
        if kind == "epsilon":
            return noise
        if kind == "v_prediction":
            return self.scheduler.get_velocity(x0, noise, timesteps)
        if kind == "sample":
            return x0
        raise ValueError(f"unknown prediction_type {kind!r}")

    def alpha_bar(self, timesteps: torch.Tensor | int, like: torch.Tensor | None = None) -> torch.Tensor:
        """``alphas_cumprod`` of the training schedule at ``timesteps`` (shaped to broadcast over
        ``like``, a latent batch, when given), float32."""
        t = torch.as_tensor(timesteps, device="cpu").long()
        a = self.scheduler.alphas_cumprod.float().cpu()[t]
        if like is not None:
            a = a.reshape(-1, *([1] * (like.ndim - 1))).to(like.device)
        return a

    def to_epsilon(self, prediction: torch.Tensor, latents: torch.Tensor, timesteps) -> torch.Tensor:
        """The noise estimate of a :meth:`predict_noise` output at ``x_t = latents``, whatever the
        model predicts: epsilon as is; ``v``: ``sqrt(a) v + sqrt(1-a) x_t``; ``sample``:
        ``(x_t - sqrt(a) x0) / sqrt(1-a)``. Membership attacks and DDIM inversions work in epsilon."""
        kind = getattr(self.scheduler.config, "prediction_type", "epsilon")
        pred, x = prediction.float(), latents.float()
        if kind == "epsilon":
            return pred
        a = self.alpha_bar(timesteps, x).expand(x.shape[0], *([1] * (x.ndim - 1)))
        if kind == "v_prediction":
            return a.sqrt() * pred + (1 - a).sqrt() * x
        if kind == "sample":
            return (x - a.sqrt() * pred) / (1 - a).clamp_min(1e-12).sqrt()
        raise ValueError(f"unknown prediction_type {kind!r}")

    def to_x0(self, prediction: torch.Tensor, latents: torch.Tensor, timesteps) -> torch.Tensor:
        """The clean-latent estimate of a :meth:`predict_noise` output at ``x_t = latents``."""
        kind = getattr(self.scheduler.config, "prediction_type", "epsilon")
        pred, x = prediction.float(), latents.float()
        if kind == "sample":
            return pred
        a = self.alpha_bar(timesteps, x).expand(x.shape[0], *([1] * (x.ndim - 1)))
        if kind == "v_prediction":
            return a.sqrt() * x - (1 - a).sqrt() * pred
        if kind == "epsilon":
            return (x - (1 - a).sqrt() * pred) / a.clamp_min(1e-12).sqrt()
        raise ValueError(f"unknown prediction_type {kind!r}")

    def ddim_move(self, x: torch.Tensor, eps: torch.Tensor, t_from: int, t_to: int,
                  x0: torch.Tensor | None = None) -> torch.Tensor:
        """One deterministic DDIM move (Song et al. 2021, eta = 0) of ``x`` at ``t_from`` to
        ``t_to`` with the noise estimate ``eps``: ``x0 = (x - sqrt(1-a) eps) / sqrt(a)`` (or the
        ``x0`` given, e.g. :meth:`to_x0` of a v-prediction at ``alpha_bar = 0``, where that
        division is undefined), then ``sqrt(a') x0 + sqrt(1-a') eps``, in float32. Forward (an
        inversion step) when ``t_to > t_from``, denoising otherwise."""
        a, b = self.alpha_bar(t_from, x), self.alpha_bar(t_to, x)
        if x0 is None:
            x0 = (x.float() - (1 - a).sqrt() * eps) / a.sqrt()
        return b.sqrt() * x0.float() + (1 - b).sqrt() * eps.float()

    def ddim_invert(self, latents: torch.Tensor, embeddings: torch.Tensor, steps: int = 50) -> torch.Tensor:
        """Deterministic DDIM inversion (Song et al. 2021; Dhariwal and Nichol 2021's reverse ODE)
        of clean ``latents`` to the noise they would be sampled from, over the ``steps``-step DDIM
        grid, ascending: at each timestep t the noise is estimated at the current latent (one
        level below t, the usual approximation) under ``embeddings`` without guidance, and the
        latent moved from the previous level to t (:meth:`ddim_move`'s update). The first level is
        the scheduler's ``final_alpha_cumprod`` (1 with ``set_alpha_to_one``), as in diffusers'
        DDIMInverseScheduler. Float32 throughout."""
        from diffusers import DDIMScheduler

        grid = DDIMScheduler.from_config(self.scheduler.config)
        grid.set_timesteps(int(steps))
        final = getattr(self.scheduler, "final_alpha_cumprod", self.scheduler.alphas_cumprod[0])
        a_prev = torch.as_tensor(final).float().to(latents.device)
        x = latents.float()
        for t in sorted(int(t) for t in grid.timesteps):
            with torch.no_grad():
                eps = self.to_epsilon(self.predict_noise(x, t, embeddings.expand(x.shape[0], -1, -1)), x, t)
            a_t = self.alpha_bar(t, x)
            x = a_t.sqrt() * (x - (1 - a_prev).sqrt() * eps) / a_prev.sqrt() + (1 - a_t).sqrt() * eps
            a_prev = a_t
        return x

    def guided_noise(self, latents: torch.Tensor, timesteps, embeddings: PromptEmbeddings, guidance: float) -> torch.Tensor:
        """Classifier-free guidance: eps_u + g (eps_c - eps_u)."""
        if torch.is_tensor(timesteps) and timesteps.ndim == 1:  # one timestep per latent: repeat for both halves
            timesteps = torch.cat([timesteps, timesteps])
        both = self.predict_noise(torch.cat([latents, latents]), timesteps, torch.cat([embeddings.uncond, embeddings.cond]))
        eps_u, eps_c = both.chunk(2)
        return eps_u + guidance * (eps_c - eps_u)

    # -- latents and images -----------------------------------------------------------------
    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        f = self.vae_scale_factor
        return (int(self.unet.config.in_channels), height // f, width // f)

    def initial_latents(self, seeds: Sequence[int], height: int, width: int) -> torch.Tensor:
        """Gaussian latents, one CPU generator per image, so image i depends on seeds[i] only."""
        shape = self.latent_shape(height, width)
        noise = [torch.randn(shape, generator=torch.Generator("cpu").manual_seed(int(s))) for s in seeds]
        return torch.stack(noise).to(self.device, self.dtype)

    def encode_images(self, images: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
        """Latents of images in [-1, 1] (N×3×H×W), scaled by the VAE scaling factor."""
        dist = self.vae.encode(images.to(self.device, self.dtype)).latent_dist
        z = dist.sample(generator) if sample else dist.mode()
        return z * self.vae.config.scaling_factor

    def decode_latents(self, latents: torch.Tensor) -> np.ndarray:
        """uint8 images N×H×W×3 from (scaled) latents."""
        with torch.no_grad():
            x = self.vae.decode(latents.to(self.device, self.dtype) / self.vae.config.scaling_factor).sample
        return to_uint8(x)

    def generate(
        self,
        prompts: Sequence[str],
        seeds: int | Sequence[int] = 0,
        steps: int = 25,
        guidance: float = 7.5,
        height: int | None = None,
        width: int | None = None,
        batch_size: int = 8,
        negative_prompt: str | None = None,
        prompt_embeddings: PromptEmbeddings | None = None,
        on_batch: Callable[[int], None] | None = None,
        callback_on_step_end: Callable | None = None,
        latents: torch.Tensor | None = None,
    ) -> Generation:
        """Generate one image per prompt; image i from a generator seeded ``seeds[i]``.

        ``prompt_embeddings`` replaces the text (e.g. an optimized adversarial embedding);
        ``callback_on_step_end`` is passed to the diffusers pipeline (inference-time hooks);
        ``on_batch(k)`` is called after each batch with its number of images (progress bars);
        ``latents`` (N x C x h x w) replace the seeds' Gaussian initial latents (an in-generation
        watermark such as Gaussian Shading); the seeds still drive the sampler's own noise.
        """
        prompts = list(prompts)
        n = len(prompts) if prompt_embeddings is None else len(prompt_embeddings)
        if n == 0:
            raise InputError.bad("PROMPT", prompts, "is empty: give at least one prompt")
        if prompt_embeddings is None:
            for p in prompts:
                if not isinstance(p, str) or not p.strip():
                    raise InputError.bad("PROMPT", p, "is empty: every prompt needs at least one word")
        if steps < 1:
            raise InputError.bad("--steps", steps, "must be at least 1")
        if batch_size < 1:
            raise InputError.bad("--batch-size", batch_size, "must be at least 1")
        height = height or self.default_size
        width = width or self.default_size
        for arg, v in (("--height", height), ("--width", width)):
            if v % self.vae_scale_factor:
                raise InputError.bad(arg, v, f"must be a multiple of {self.vae_scale_factor}")
        seed_list = expand_seeds(seeds, n)
        images, finals = [], []
        for start in range(0, n, batch_size):
            idx = slice(start, min(n, start + batch_size))
            b_seeds = seed_list[idx]
            start_latents = self.initial_latents(b_seeds, height, width) if latents is None \
                else latents[idx].to(self.device, self.dtype)
            gens = [torch.Generator("cpu").manual_seed(s + 1_000_003) for s in b_seeds]
            captured: dict[str, torch.Tensor] = {}

            def capture(pipe, i, t, kwargs, _user=callback_on_step_end):
                out = _user(pipe, i, t, kwargs) if _user is not None else kwargs
                captured["latents"] = (out or kwargs)["latents"]
                return out if out is not None else kwargs

            call = dict(
                num_inference_steps=steps, guidance_scale=guidance, height=height, width=width,
                latents=start_latents, generator=gens, output_type="pt", callback_on_step_end=capture,
            )
            if prompt_embeddings is not None:
                emb = prompt_embeddings.select(idx)
                call.update(prompt_embeds=emb.cond, negative_prompt_embeds=emb.uncond)
            else:
                call.update(prompt=prompts[idx], negative_prompt=[negative_prompt] * len(b_seeds) if negative_prompt else None)
            with torch.no_grad():
                out = self.pipeline(**call)
            images.append(to_uint8(out.images * 2 - 1))
            finals.append(captured["latents"].detach().float().cpu())
            if on_batch is not None:
                on_batch(len(b_seeds))
        settings = dict(steps=steps, guidance=guidance, height=height, width=width,
                        scheduler=type(self.scheduler).__name__, negative_prompt=negative_prompt)
        return Generation(np.concatenate(images), torch.cat(finals), prompts, seed_list, settings)

    def sample_latents(self, embeddings: PromptEmbeddings, latents: torch.Tensor, *, steps: int = 50,
                       guidance: float = 7.5, stop_after: int | None = None) -> torch.Tensor:
        """Denoise the Gaussian ``latents`` for the first ``stop_after`` of ``steps`` sampler steps
        (all when None) and return the latents, undecoded.

        After k steps the latents are at the noise level of ``scheduler.timesteps[k]`` (for
        ``steps`` steps). The pipeline runs with ``output_type="latent"`` and is stopped through
        its documented ``callback_on_step_end`` (``pipe._interrupt = True``); partial sampling is
        how ESD makes its training latents (Gandikota et al. 2023).
        """
        k = steps if stop_after is None else int(stop_after)
        if not 0 <= k <= steps:
            raise InputError.bad("stop_after", k, f"must be between 0 and steps ({steps})")
        latents = latents.to(self.device, self.dtype)
        if k == 0:
            self.scheduler.set_timesteps(steps, device=self.device)
            return latents * self.scheduler.init_noise_sigma

        def stop(pipe, i, t, kwargs):
            if i + 1 >= k:
                pipe._interrupt = True
            return kwargs

        f = self.vae_scale_factor
        with torch.no_grad():
            out = self.pipeline(prompt_embeds=embeddings.cond, negative_prompt_embeds=embeddings.uncond,
                                num_inference_steps=steps, guidance_scale=guidance, latents=latents,
                                height=latents.shape[-2] * f, width=latents.shape[-1] * f,
                                output_type="latent", callback_on_step_end=stop)
        return out.images

    # -- parameters -------------------------------------------------------------------------
    def parameter_groups(self) -> dict[str, dict[str, torch.nn.Parameter]]:
        """Named parameter groups. ``cross_attn`` (every ``attn2`` of the UNet: the text-to-image
        cross-attention) and ``non_cross_attn`` partition ``unet``; ``attention`` is every attention
        layer of the UNet (self- and cross-attention, ``attn1`` and ``attn2``: the subset DP-LDM
        fine-tunes); ``text_encoder`` is separate."""
        unet = dict(self.unet.named_parameters())
        cross = {k: v for k, v in unet.items() if ".attn2." in k}
        return {
            "cross_attn": cross,
            "attention": {k: v for k, v in unet.items() if ".attn1." in k or ".attn2." in k},
            "non_cross_attn": {k: v for k, v in unet.items() if k not in cross},
            "unet": unet,
            "text_encoder": dict(self.text_encoder.named_parameters()),
        }

    def parameters(self, group: str) -> dict[str, torch.nn.Parameter]:
        groups = self.parameter_groups()
        if group not in groups:
            raise InputError.bad("group", group, f"is not a parameter group (known: {', '.join(groups)})")
        return groups[group]

    def parameter_counts(self) -> dict[str, int]:
        counts = {g: sum(p.numel() for p in ps.values()) for g, ps in self.parameter_groups().items()}
        counts["vae"] = sum(p.numel() for p in self.vae.parameters())
        return counts

    # -- persistence ------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Save as a diffusers folder, or as one sdguard ``.safetensors`` file when ``path`` ends so."""
        path = Path(path)
        if path.suffix == ".safetensors":
            return checkpoint.save_single_file(self.pipeline, path)
        from ..core.io import output_dir

        with output_dir(path, command="save", overwrite=True, argument="path") as staging:
            self.pipeline.save_pretrained(str(staging), safe_serialization=True)
        return path

    def fingerprint(self) -> str:
        """sha256 over all weights (see :func:`sdguard.models.checkpoint.fingerprint`)."""
        return checkpoint.fingerprint(self.pipeline)

    def describe(self) -> dict:
        """Components, classes, parameter counts per group and the fingerprint (``sdguard info``)."""
        comps = {}
        for name, comp in self.pipeline.components.items():
            if comp is None:
                continue
            comps[name] = type(comp).__name__
        return {
            "spec": self.spec,
            "components": comps,
            "parameters": self.parameter_counts(),
            "default_size": self.default_size,
            "latent_shape": list(self.latent_shape(self.default_size, self.default_size)),
            "tokenizer": {"vocab_size": len(self.tokenizer), "max_length": int(self.tokenizer.model_max_length)},
            "device": str(self.device),
            "dtype": str(self.dtype).replace("torch.", ""),
            "fingerprint": self.fingerprint(),
        }


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """Images in [-1, 1] (N×3×H×W tensor) to uint8 N×H×W×3."""
    x = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


@contextlib.contextmanager
def sharing_models():
    """Within the block, :meth:`DiffusionModel.load` loads each model once (``sdguard scan`` runs
    several audits of one model: they only read it, none changes its weights)."""
    token = _SHARED.set({})
    try:
        yield
    finally:
        _SHARED.reset(token)
