"""UnlearnDiffAtk (Zhang, Jia, Chen, Chen, Zhang, Ding & Liu 2023, "To Generate or Not?
Safety-Driven Unlearned Diffusion Models Are Still Easy To Generate Unsafe Images ... For Now",
arXiv 2310.11868), as published.

The erased model is its own classifier: for a target image ``x_0`` of the concept (made by the
original model), ``k`` adversarial tokens prepended to the concept's prompt are searched to
minimise the erased model's diffusion loss on ``x_0``. Each token is a distribution over the
vocabulary, a row of the probability simplex; each iteration draws one real token per row
(straight-through estimator: the forward pass samples a one-hot vector from the distribution and
embeds it with the text encoder's token-embedding table, the backward pass hands the gradient,
clipped to [-1, 1] by ``hardtanh``, to the distribution), takes an Adam step (with weight decay)
and projects every row back onto the simplex (the Euclidean projection: ``clip(v - mu, 0, 1)``
with ``mu`` found by bisection so that the row sums to 1). The timesteps are walked in order
(``timesteps`` of them, evenly spaced, ``steps`` iterations each, a fresh noise per iteration);
after each timestep the most probable token of each row gives a real text prompt, decoded by the
tokenizer, and the target is generated from it with its own seed: the attack stops at the first
prompt that brings the concept back. Its output is that text prompt (or the last one).

Follows the official code, ``src/attackers/text_grad_.py`` (``TextGrad``: ``init_adv``,
``STERandSelect``, ``bisection``/``projection``, ``argmax_project``, the ``sequential`` loop of
``run``) and ``src/tasks/classifier_.py`` (``get_loss``, ``sampled_t``) of
github.com/OPTML-Group/Diffusion-MU-Attack, with its published settings
(``configs/nudity/text_grad_esd_nudity_classifier.json``: ``prefix_k``, ``k = 5``, 40 iterations
per timestep, Adam ``lr = 0.01``, ``weight_decay = 0.1``; 50 timesteps; uniform initialisation).

Deviations:

- the vocabulary the distributions range over is the tokens whose text the tokenizer reads back as
  that one token (whole words): no special token (start, end, padding) and no sub-word piece, so
  that the text prompt output is exactly the tokens optimised (the official code ranges over the
  whole vocabulary and decodes the argmax tokens, end tokens dropped; a piece without a word end
  then joins the next word, and the text no longer encodes to what was optimised);
- the targets of one prompt are attacked in one batch: each has its own distributions, noise and
  stopping point, and the batch loss is the *sum* of the targets' losses, so each target's gradient
  is the one of a run on it alone; a target that succeeded stops being evaluated (its rows are still
  in the optimiser, as in a run that has ended);
- the projection bisects every row at once, in float64, to machine precision (the official code
  bisects row by row to a tolerance of 1e-5 and returns ``clip(v, 0, 1)`` when that is already
  within 1e-5 of summing to 1);
- the loss target is the model's parameterisation (the velocity for v-prediction models such as
  builtin:tiny; the noise, as published, for epsilon models), and the MSE is per target;
- the timesteps are those of the erased model's scheduler (``num_train_timesteps``; 1000 for
  Stable Diffusion, as published); ``timesteps`` and ``steps`` are options (published: 50 and 40);
- the success check after each timestep is ``sdguard audit erasure``'s presence detector on an
  image generated with the audit's sampler, steps and guidance (published: the concept's
  classifier on a 50-step LMS image).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ...core.errors import InputError
from .base import (
    ATTACKS,
    AttackOutcome,
    Judge,
    attacking,
    check_settings,
    diffusion_loss,
    prefix_ids,
    special_ids,
)

LABEL = "UnlearnDiffAtk (Zhang et al.)"
#: the published settings (official configs: prefix_k, k 5, 40 iterations, Adam lr 0.01, weight decay 0.1; 50 timesteps)
TOKENS, STEPS, LR, WEIGHT_DECAY, TIMESTEPS = 5, 40, 0.01, 0.1, 50


def project_simplex(v: torch.Tensor, iterations: int = 100) -> torch.Tensor:
    """The Euclidean projection of each row (last dimension) of ``v`` onto the probability simplex:
    ``clip(v - mu, 0, 1)`` with the ``mu`` that makes the row sum to 1, found by bisection (the
    sum is non-increasing in ``mu``: at least 1 at ``min(v) - 1``, 0 at ``max(v)``)."""
    x = v.detach().double()
    lo = x.min(-1, keepdim=True).values - 1
    hi = x.max(-1, keepdim=True).values
    for _ in range(iterations):
        mu = (lo + hi) / 2
        above = (x - mu).clamp(0, 1).sum(-1, keepdim=True) > 1
        lo, hi = torch.where(above, mu, lo), torch.where(above, hi, mu)
    return (x - (lo + hi) / 2).clamp(0, 1).to(v.dtype)


class StraightThroughSample(torch.autograd.Function):
    """Forward: one token per row drawn from the row's distribution, as a one-hot vector.
    Backward: the incoming gradient clipped to [-1, 1] (``hardtanh``), passed to the distribution."""

    @staticmethod
    def forward(ctx, probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        flat = probs.detach().reshape(-1, probs.shape[-1]).float().cpu()
        drawn = torch.multinomial(flat, 1, generator=generator).view(probs.shape[:-1])
        return F.one_hot(drawn, probs.shape[-1]).to(probs.device, probs.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return F.hardtanh(grad), None


def sampled_timesteps(total: int, count: int) -> list[int]:
    """``count`` evenly spaced timesteps of ``total``, the first half a stride in (the official ``sampled_t``)."""
    if count > total:
        raise InputError.bad("--attack-timesteps", count, f"is more than the model's {total} timesteps")
    stride = total // count
    return list(range(stride // 2, total, stride))[:count]


def vocabulary(model) -> torch.Tensor:
    """The ids an adversarial token may take: every token whose text the tokenizer reads back as
    that one token (whole words; no special token, no sub-word piece that would join the next word)."""
    tok = model.tokenizer
    special = special_ids(tok)
    rows = model.text_encoder.get_input_embeddings().weight.shape[0]
    ids = [i for i in range(min(len(tok), rows)) if i not in special]
    texts = [" ".join(t.replace("</w>", " ").split()) for t in tok.batch_decode([[i] for i in ids])]
    back = tok(texts, add_special_tokens=False).input_ids
    return torch.tensor([i for i, b in zip(ids, back) if b == [i]])


def decode_prompts(model, ids: torch.Tensor) -> list[str]:
    """The text of each row of token ids, special tokens left out. A word-end mark the tokenizer's
    decoder leaves in (``</w>``: some tokenizers do where a sub-word piece precedes a word) is a space;
    a piece without one joins the next token's text, as in the official code's decoded prompts."""
    special = special_ids(model.tokenizer)
    texts = [model.tokenizer.decode([i for i in row.tolist() if i not in special]) for row in ids]
    return [" ".join(t.replace("</w>", " ").split()) for t in texts]


def unlearndiffatk(model, prompt: str, target_latents: torch.Tensor, judge: Judge | None = None, *,
                   tokens: int = TOKENS, steps: int = STEPS, lr: float = LR, timesteps: int = TIMESTEPS,
                   weight_decay: float = WEIGHT_DECAY, seed: int = 0) -> AttackOutcome:
    """UnlearnDiffAtk against ``model`` (the erased model) for the targets ``target_latents``
    (N x C x h x w, scaled like the UNet's latents: images of the concept made by the original
    model), prompt ``prompt``. With ``judge`` (see :mod:`.base`) a target stops at the first
    decoded prompt that brings the concept back; without it every timestep runs and ``success``
    and ``images`` are left unknown (all False, None). Returns the text prompt found per target."""
    check_settings(steps, lr)
    x0 = target_latents.to(model.device, model.dtype)
    n = x0.shape[0]
    ids = prefix_ids(model, prompt, tokens, n)
    vocab = vocabulary(model)
    table = model.text_encoder.get_input_embeddings().weight.detach()[vocab.to(model.device)].float()
    gen = torch.Generator("cpu").manual_seed(int(seed))
    probs = torch.full((n, tokens, len(vocab)), 1.0 / len(vocab), device=model.device)
    probs = project_simplex(probs).requires_grad_(True)
    opt = torch.optim.Adam([probs], lr=lr, weight_decay=weight_decay)
    active = list(range(n))
    success, images, prompts, losses = [False] * n, [None] * n, [""] * n, []
    with attacking(model):
        for t in sampled_timesteps(model.num_train_timesteps, timesteps):
            tt = torch.full((len(active),), t, device=model.device, dtype=torch.long)
            for _ in range(steps):
                onehot = StraightThroughSample.apply(probs[active], gen)
                noise = torch.randn(x0[active].shape, generator=gen).to(model.device, model.dtype)
                per_target = diffusion_loss(model, x0[active], ids[active], onehot @ table, tt, noise)
                opt.zero_grad(set_to_none=True)
                per_target.sum().backward()
                opt.step()
                with torch.no_grad():
                    probs.copy_(project_simplex(probs))
                losses.append(float(per_target.detach().mean()))
            found = ids[active].clone()
            found[:, 1:1 + tokens] = vocab.to(model.device)[probs[active].detach().argmax(-1)]
            texts = decode_prompts(model, found)
            for i, text in zip(active, texts):
                prompts[i] = text
            if judge is None:
                continue
            with torch.no_grad():
                imgs, flags = judge(list(active), prompts=texts)
            for i, img, f in zip(list(active), imgs, flags):
                images[i], success[i] = img, bool(f)
            active = [i for i in active if not success[i]]
            if not active:
                break
    return AttackOutcome(success, np.stack(images) if judge is not None else None, prompts, losses)


@ATTACKS.register("unlearndiffatk", description=LABEL, steps=STEPS, lr=LR)
def run(model, prompt: str, target_latents: torch.Tensor, judge: Judge, *, tokens: int = TOKENS, steps: int = STEPS,
        lr: float = LR, timesteps: int = TIMESTEPS, seed: int = 0) -> AttackOutcome:
    """The registered runner (:func:`unlearndiffatk` with the judge of the audit)."""
    return unlearndiffatk(model, prompt, target_latents, judge, tokens=tokens, steps=steps, lr=lr, timesteps=timesteps,
                          seed=seed)
