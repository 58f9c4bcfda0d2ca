"""An adversarial-prompt attack on an erased model, in the spirit of UnlearnDiffAtk (Zhang, Jia,
Chen, Chen, Zhang, Ding & Liu 2024, "To Generate or Not? Safety-Driven Unlearned Diffusion Models
Are Still Easy to Generate Unsafe Images ... For Now", ECCV).

UnlearnDiffAtk uses the erased model itself as the classifier it attacks: for a target image
``x_0`` that shows the concept (made by the *original* model), it searches a prompt ``c'`` that
minimises the erased model's diffusion loss ``E_{t, eps} ||eps_erased(x_t, c', t) - eps||^2`` on
that image, then generates with ``c'``; the attack succeeds when the concept is back.

Here ``tokens`` adversarial vectors are prepended (after the start token) to the concept prompt in
the text encoder's *input* token-embedding space and optimised with Adam (a continuous relaxation
of the paper's discrete token search, so at least as strong); they pass through the unchanged
text encoder, so an edit of the cross-attention projections (UCE) sees realistic contextual
embeddings. One adversarial prompt per target; the image is then generated from the target's own
seed. The token embeddings are replaced through a forward hook on the encoder's input-embedding
layer (public ``get_input_embeddings``), so any CLIP-like text encoder works.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..core.errors import InputError


@dataclass
class AttackResult:
    """Adversarial conditioning (one per target) and the mean loss per step."""

    cond: torch.Tensor
    uncond: torch.Tensor
    losses: list[float] = field(default_factory=list)
    first_loss: float | None = None
    last_loss: float | None = None

    def embeddings(self):
        from ..models import PromptEmbeddings

        return PromptEmbeddings(self.cond, self.uncond)


def _attack_ids(model, prompt: str, tokens: int, n: int) -> torch.Tensor:
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
def _replace_tokens(model, vectors: torch.Tensor, start: int = 1):
    """Within the block, the input embeddings at positions ``start..start+k`` are ``vectors`` (N x k x D)."""
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
def _frozen(*modules):
    flags = [[p.requires_grad for p in m.parameters()] for m in modules]
    try:
        for m in modules:
            m.requires_grad_(False)
        yield
    finally:
        for m, fl in zip(modules, flags):
            for p, f in zip(m.parameters(), fl):
                p.requires_grad_(f)


def prompt_embedding_attack(model, prompt: str, target_latents: torch.Tensor, *, tokens: int = 5, steps: int = 50,
                            lr: float = 0.01, seed: int = 0, timesteps_per_step: int = 1) -> AttackResult:
    """Optimise ``tokens`` prepended token embeddings per target against ``model``'s diffusion loss.

    ``target_latents`` (N x C x h x w, scaled like the UNet's latents) are the images of the
    concept, e.g. the final latents of the original model's generations. Returns the adversarial
    conditioning (N x L x D) and the empty-prompt unconditional embeddings for generation.
    """
    if steps < 1:
        raise InputError.bad("--attack-steps", steps, "must be at least 1")
    if not lr > 0:
        raise InputError.bad("--attack-lr", lr, "must be greater than 0")
    x0 = target_latents.to(model.device, model.dtype)
    n = x0.shape[0]
    ids = _attack_ids(model, prompt, tokens, n)
    table = model.text_encoder.get_input_embeddings().weight
    gen = torch.Generator("cpu").manual_seed(int(seed))
    special = {model.tokenizer.bos_token_id, model.tokenizer.eos_token_id, model.tokenizer.pad_token_id}
    choices = torch.tensor([i for i in range(table.shape[0]) if i not in special])
    init = choices[torch.randint(len(choices), (n, tokens), generator=gen)]
    adv = table.detach()[init.to(table.device)].clone().float().requires_grad_(True)
    opt = torch.optim.Adam([adv], lr=lr)
    sched = model.scheduler
    T = model.num_train_timesteps
    losses: list[float] = []
    was_training = model.unet.training, model.text_encoder.training
    model.unet.eval()
    model.text_encoder.eval()
    with _frozen(model.unet, model.text_encoder, model.vae):
        for _ in range(steps):
            total = 0.0
            opt.zero_grad(set_to_none=True)
            for _ in range(timesteps_per_step):
                t = torch.randint(0, T, (n,), generator=gen).to(model.device)
                noise = torch.randn(x0.shape, generator=gen).to(model.device, model.dtype)
                x_t = sched.add_noise(x0, noise, t)
                target = model.prediction_target(x0, noise, t)
                with _replace_tokens(model, adv):
                    cond = model.encode_text(ids)
                pred = model.predict_noise(x_t, t, cond)
                loss = F.mse_loss(pred.float(), target.float()) / timesteps_per_step
                loss.backward()
                total += float(loss.detach())
            opt.step()
            losses.append(total)
    model.unet.train(was_training[0])
    model.text_encoder.train(was_training[1])
    with torch.no_grad(), _replace_tokens(model, adv.detach()):
        cond = model.encode_text(ids)
    with torch.no_grad():
        uncond = model.encode_prompts([""] * n).uncond
    return AttackResult(cond.detach(), uncond.detach(), losses, losses[0], losses[-1])
