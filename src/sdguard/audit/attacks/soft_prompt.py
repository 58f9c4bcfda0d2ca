"""The soft-prompt attack: white-box, continuous prompt embeddings (not UnlearnDiffAtk).

UnlearnDiffAtk's protocol (Zhang et al. 2023, arXiv 2310.11868; see :mod:`.base`) with the
discrete token search relaxed: ``tokens`` free vectors in the text encoder's *input*
token-embedding space, prepended after the start token, are optimised with Adam against the
erased model's diffusion loss on the target (a fresh timestep and noise per step), one set of
vectors per target. The vectors need not be any token's embedding, so no text prompt exists for
them; the attack needs white-box access to the text encoder, and is at least as strong as any
search over real tokens (every real prompt is one of its points). They pass through the
unchanged text encoder, so an edit of the cross-attention projections (UCE) sees realistic
contextual embeddings. The initial vectors are the embeddings of random non-special tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .base import (
    ATTACKS,
    AttackOutcome,
    Judge,
    attacking,
    check_settings,
    diffusion_loss,
    prefix_ids,
    replace_tokens,
    special_ids,
)

LABEL = "soft-prompt attack (white-box, continuous embeddings)"


@dataclass
class SoftPrompt:
    """Adversarial conditioning (one per target) and the mean loss per step."""

    cond: torch.Tensor
    uncond: torch.Tensor
    losses: list[float] = field(default_factory=list)

    def embeddings(self):
        from ...models import PromptEmbeddings

        return PromptEmbeddings(self.cond, self.uncond)


def soft_prompt_attack(model, prompt: str, target_latents: torch.Tensor, *, tokens: int = 5, steps: int = 60,
                       lr: float = 0.02, seed: int = 0) -> SoftPrompt:
    """Optimise ``tokens`` prepended token embeddings per target against ``model``'s diffusion loss.

    ``target_latents`` (N x C x h x w, scaled like the UNet's latents) are the images of the
    concept, e.g. the final latents of the original model's generations. Returns the adversarial
    conditioning (N x L x D) and the empty-prompt unconditional embeddings for generation.
    """
    check_settings(steps, lr)
    x0 = target_latents.to(model.device, model.dtype)
    n = x0.shape[0]
    ids = prefix_ids(model, prompt, tokens, n)
    table = model.text_encoder.get_input_embeddings().weight
    gen = torch.Generator("cpu").manual_seed(int(seed))
    special = special_ids(model.tokenizer)
    choices = torch.tensor([i for i in range(table.shape[0]) if i not in special])
    init = choices[torch.randint(len(choices), (n, tokens), generator=gen)]
    adv = table.detach()[init.to(table.device)].clone().float().requires_grad_(True)
    opt = torch.optim.Adam([adv], lr=lr)
    T = model.num_train_timesteps
    losses: list[float] = []
    with attacking(model):
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            t = torch.randint(0, T, (n,), generator=gen).to(model.device)
            noise = torch.randn(x0.shape, generator=gen).to(model.device, model.dtype)
            loss = diffusion_loss(model, x0, ids, adv, t, noise).mean()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        with torch.no_grad(), replace_tokens(model, adv.detach()):
            cond = model.encode_text(ids)
        with torch.no_grad():
            uncond = model.encode_prompts([""] * n).uncond
    return SoftPrompt(cond.detach(), uncond.detach(), losses)


@ATTACKS.register("soft-prompt", description=LABEL, steps=60, lr=0.02)
def run(model, prompt: str, target_latents: torch.Tensor, judge: Judge, *, tokens: int = 5, steps: int = 60,
        lr: float = 0.02, timesteps: int = 50, seed: int = 0) -> AttackOutcome:
    """The registered runner: optimise, then generate each target from its adversarial embeddings
    (``timesteps`` is UnlearnDiffAtk's and unused here: a timestep is drawn per step)."""
    res = soft_prompt_attack(model, prompt, target_latents, tokens=tokens, steps=steps, lr=lr, seed=seed)
    images, flags = judge(list(range(len(res.cond))), embeddings=res.embeddings())
    return AttackOutcome([bool(f) for f in flags], images, None, res.losses)
