"""The registry of attacks on an erased model, and what they share.

An attack searches, for target images of an erased concept (made by the *original* model), an
adversarial prompt that the *erased* model turns back into the concept. Every attack here is
UnlearnDiffAtk's protocol (Zhang et al. 2023, arXiv 2310.11868): the erased model is its own
classifier, and the prompt is optimised against its diffusion loss
``E_{t, eps} ||eps_erased(x_t, c', t) - eps||^2`` on the target ``x_0``; ``k`` adversarial
tokens are prepended (after the start token) to the concept's prompt. The methods differ in what
the tokens are: real tokens of the vocabulary (:mod:`.unlearndiffatk`, the published attack, a
real text prompt as output) or free vectors in the token-embedding space (:mod:`.soft_prompt`, a
white-box relaxation, at least as strong).

Each method is one module registered in :data:`ATTACKS` with the ``label`` the report shows and
its default ``steps`` and ``lr``; its registered object is a function
``run(model, prompt, target_latents, judge, *, tokens, steps, lr, timesteps, seed) -> AttackOutcome``.
``judge(indices, prompts=... | embeddings=...)`` generates the targets ``indices`` from their own
seeds and says where the concept is back (``sdguard audit erasure`` builds it from its detector).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from ...core.errors import InputError
from ...core.registry import Registry

#: attacks by name (``--attack``); each method module registers its ``run`` function
ATTACKS: Registry = Registry("attack", argument="--attack",
                             loaders=("sdguard.audit.attacks.unlearndiffatk", "sdguard.audit.attacks.soft_prompt"))

#: ``judge(indices, prompts=None, embeddings=None) -> (images, flags)``: generate targets ``indices``
#: from text prompts or from prompt embeddings, and whether each image shows the concept
Judge = Callable[..., "tuple[np.ndarray, np.ndarray]"]


@dataclass
class AttackOutcome:
    """What an attack found for its targets (one entry per target)."""

    success: list[bool]
    images: Optional[np.ndarray]  # the image generated from each target's final adversarial prompt
    prompts: Optional[list[str]] = None  # the discrete prompts found (None: continuous embeddings)
    losses: list[float] = field(default_factory=list)  # mean diffusion loss per optimisation step

    @property
    def first_loss(self) -> Optional[float]:
        return self.losses[0] if self.losses else None

    @property
    def last_loss(self) -> Optional[float]:
        return self.losses[-1] if self.losses else None


def check_settings(steps: int, lr: float) -> None:
    if steps < 1:
        raise InputError.bad("--attack-steps", steps, "must be at least 1")
    if not lr > 0:
        raise InputError.bad("--attack-lr", lr, "must be greater than 0")


def special_ids(tokenizer) -> set[int]:
    """The start, end and padding ids (never an adversarial token)."""
    return {i for i in (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) if i is not None}


def prefix_ids(model, prompt: str, tokens: int, n: int) -> torch.Tensor:
    """Token ids (n x L) of ``prompt`` with ``tokens`` placeholder slots after the start token;
    the prompt is cut so that the whole still fits the encoder (the slots push its end token
    ``tokens`` places right, as the official code's ``prefix_k``)."""
    tok = model.tokenizer
    length = int(tok.model_max_length)
    if tokens < 1 or tokens > length - 2:
        raise InputError.bad("--attack-tokens", tokens, f"must be between 1 and {length - 2}")
    base = tok(prompt, truncation=True, max_length=length - tokens).input_ids
    bos = tok.bos_token_id if tok.bos_token_id is not None else base[0]
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    ids = [base[0]] + [bos] * tokens + list(base[1:])
    ids = ids + [pad] * (length - len(ids))
    return torch.tensor([ids] * n, device=model.device)


@contextlib.contextmanager
def replace_tokens(model, vectors: torch.Tensor, start: int = 1):
    """Within the block, the input embeddings at positions ``start..start+k`` are ``vectors``
    (N x k x D), through a forward hook on the encoder's public ``get_input_embeddings`` (so any
    CLIP-like text encoder works, and the rest of the encoder is unchanged)."""
    layer = model.text_encoder.get_input_embeddings()

    def hook(module, inputs, output):
        out = output.clone()
        out[:, start:start + vectors.shape[1]] = vectors.to(out.dtype)
        return out

    handle = layer.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@contextlib.contextmanager
def attacking(model):
    """The model in eval mode with every weight frozen; restored afterwards."""
    modules = (model.unet, model.text_encoder, model.vae)
    flags = [[p.requires_grad for p in m.parameters()] for m in modules]
    modes = [m.training for m in modules]
    try:
        for m in modules:
            m.requires_grad_(False)
            m.eval()
        yield
    finally:
        for m, fl, mode in zip(modules, flags, modes):
            m.train(mode)
            for p, f in zip(m.parameters(), fl):
                p.requires_grad_(f)


def diffusion_loss(model, x0: torch.Tensor, ids: torch.Tensor, vectors: torch.Tensor, t: torch.Tensor,
                   noise: torch.Tensor) -> torch.Tensor:
    """Per target (N,): the erased model's denoising error on ``x0`` noised to ``t`` with ``noise``,
    conditioned on ``ids`` whose prefix slots hold ``vectors`` (differentiable in ``vectors``).
    The target is the model's parameterisation (:meth:`~sdguard.models.DiffusionModel.prediction_target`:
    the noise for epsilon models, the velocity for v-prediction ones such as builtin:tiny)."""
    x_t = model.scheduler.add_noise(x0, noise, t)
    target = model.prediction_target(x0, noise, t)
    with replace_tokens(model, vectors):
        cond = model.encode_text(ids)
    pred = model.predict_noise(x_t, t, cond)
    return F.mse_loss(pred.float(), target.float(), reduction="none").flatten(1).mean(1)


def attack_label(name: str) -> str:
    """The name the report gives the attack ``name``."""
    return ATTACKS.entry(name).description


def attack_defaults(name: str) -> dict:
    """``{"steps": ..., "lr": ...}``: the attack's own defaults (its paper's, where it has one)."""
    meta = ATTACKS.entry(name).meta
    return {"steps": meta["steps"], "lr": meta["lr"]}


def run_attack(name: str, model, prompt: str, target_latents: torch.Tensor, judge: Judge, *, tokens: int = 5,
               steps: int | None = None, lr: float | None = None, timesteps: int = 50, seed: int = 0,
               value: object | None = None) -> AttackOutcome:
    """Run the registered attack ``name`` (its own defaults where ``steps`` / ``lr`` are None)."""
    fn = ATTACKS.get(name, value=value)
    d = attack_defaults(name)
    return fn(model, prompt, target_latents, judge, tokens=tokens, steps=steps or d["steps"], lr=lr or d["lr"],
              timesteps=timesteps, seed=seed)
