"""Inference-time mitigation of memorization (Wen et al., "Detecting, Explaining, and Mitigating
Memorization in Diffusion Models", ICLR 2024, section 5): before an image is generated, its prompt
embedding is optimized to lower the detection score on the image's own starting noise, then the
image is generated from the optimized embedding.

As in the official code (``aug_prompt`` in ``local_sd_pipeline.py`` and ``inference_mem.py`` of
github.com/YuxinWenRick/diffusion_memorization): the conditional text embedding is the only
variable, the start token's embedding is kept (its gradient zeroed), AdamW with ``lr = 0.05``, at
most 10 iterations, stopping as soon as the loss ``|| pred(x_T, c) - pred(x_T, "") ||_2`` is at or
below a target; an image whose score is already below the target is left exactly as it is.

Deviations: each image's embedding is optimized on that image's own starting noise (the official
code optimizes one embedding over the batch of ``num_images_per_prompt`` images), so an image still
depends on its seed only. With ``--mitigate-from`` (an ``sdguard audit memorization`` run of the
same model) the official code's one hand-set ``target_loss`` becomes two calibrated values: only an
image scoring at or above the run's flag threshold (calibrated on ordinary prompts at its FPR) is
optimized, down to the median score of those ordinary prompts, at the timestep the run scored (its
first sampler step, or its ``--timestep`` extension). So ordinary prompts below the threshold
generate exactly the images they would without mitigation, and a flagged prompt ends where a
typical ordinary prompt starts. ``--mitigate-target`` alone is the official single value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from pydantic import model_validator

from ...core.config import RunConfig, option
from ...core.errors import InputError
from .base import guidance_pair, sampler


class MitigationOptions(RunConfig):
    """The mitigation options of a generating command (``sdguard generate``, ``audit generations``)."""

    mitigate: Literal["none", "wen"] = option("none", help="inference-time mitigation of memorization: none or wen "
                                              "(optimize each image's prompt embedding, Wen et al. 2024)")
    mitigate_from: str | None = option(None, help="an `sdguard audit memorization` output of the same model: its wen "
                                       "threshold is the target, at the timestep it scored")
    mitigate_target: float | None = option(None, gt=0.0, help="the score to bring each image below (instead of "
                                           "--mitigate-from's threshold)")
    mitigate_timestep: int | None = option(None, ge=0, le=100_000, help="timestep the score is read at (default: "
                                           "--mitigate-from's, else the sampler's first)")
    mitigate_iterations: int = option(10, ge=1, le=10_000, help="at most this many optimizer steps per image")
    mitigate_lr: float = option(0.05, gt=0.0, le=10.0, help="AdamW learning rate of the embedding")

    @model_validator(mode="after")
    def _mitigation(self):
        if self.mitigate == "none":
            for name in ("mitigate_from", "mitigate_target", "mitigate_timestep"):
                if getattr(self, name) is not None:
                    flag = "--" + name.replace("_", "-")
                    raise InputError.bad(flag, getattr(self, name), "is used only with --mitigate wen")
        elif self.mitigate_from is None and self.mitigate_target is None:
            raise InputError.bad("--mitigate", self.mitigate, "needs --mitigate-from DIR (an `sdguard audit "
                                 "memorization` output) or --mitigate-target SCORE")
        return self


@dataclass
class Mitigator:
    """Wen et al.'s mitigation with a resolved target and timestep (:func:`mitigator_for`)."""

    target: float
    timestep: int | None
    iterations: int = 10
    lr: float = 0.05
    source: str = ""
    trigger: float | None = None  # images scoring below this are left alone (default: the target)

    def embeddings(self, model, prompts: list[str], seeds: list[int], steps: int, size: tuple[int, int]):
        """The prompt embeddings to generate ``prompts`` from (one per image, each optimized on its
        own starting noise) and, per image, ``(score before, score after, iterations)``."""
        from ...models.adapter import PromptEmbeddings

        emb = model.encode_prompts(prompts)
        sched = sampler(model, steps)
        t = self.timestep if self.timestep is not None else int(sched.timesteps[0])
        conds, stats = [], []
        for i, seed in enumerate(seeds):
            x = model.initial_latents([seed], *size) * sched.init_noise_sigma
            cond, stat = self._optimize(model, sched, x, t, emb.cond[i:i + 1], emb.uncond[i:i + 1])
            conds.append(cond)
            stats.append(stat)
        return PromptEmbeddings(torch.cat(conds), emb.uncond), np.array(stats, dtype=np.float64)

    def _optimize(self, model, sched, x, t, cond, uncond):
        from ...models.adapter import PromptEmbeddings

        u, c = guidance_pair(model, sched, x, t, PromptEmbeddings(cond, uncond))
        first = float((c - u).norm())
        if first <= self.target or (self.trigger is not None and first < self.trigger):
            return cond, (first, first, 0)
        var = cond.detach().clone().float().requires_grad_(True)
        opt = torch.optim.AdamW([var], lr=self.lr)
        steps = 0
        for _ in range(self.iterations):
            xs = sched.scale_model_input(x, t)
            both = model.predict_noise(torch.cat([xs, xs]), t, torch.cat([uncond, var.to(uncond.dtype)]))
            pu, pc = both.float().chunk(2)
            loss = (pc - pu).norm()
            if float(loss.detach()) <= self.target:
                break
            (grad,) = torch.autograd.grad(loss, [var])
            grad[:, 0] = 0  # the start token's embedding is kept
            var.grad = grad
            opt.step()
            opt.zero_grad(set_to_none=True)
            steps += 1
        out = var.detach().to(cond.dtype)
        u, c = guidance_pair(model, sched, x, t, PromptEmbeddings(out, uncond))  # the score it is generated with
        return out, (first, float((c - u).norm()), steps)


def mitigator_for(cfg: MitigationOptions, model, fingerprint: str | None = None) -> Mitigator | None:
    """The mitigation ``cfg`` asks for on ``model`` (None without one). ``--mitigate-from`` must be
    a memorization audit of the same weights (a threshold is meaningless on another model);
    ``fingerprint`` is the model's, when the caller has already hashed its weights."""
    if cfg.mitigate == "none":
        return None
    target, timestep, source, trigger = cfg.mitigate_target, cfg.mitigate_timestep, "--mitigate-target", None
    if cfg.mitigate_from is not None:
        from ...report import read_report

        rep = read_report(cfg.mitigate_from, "audit memorization", "--mitigate-from")
        wen = (rep.results.get("detectors") or {}).get("wen") or {}
        if "threshold" not in wen:
            raise InputError.bad("--mitigate-from", cfg.mitigate_from, "holds no calibrated wen threshold (run the "
                                 "memorization audit with --detector wen and ordinary prompts)")
        theirs = ((rep.data.get("models") or {}).get("model") or {}).get("fingerprint")
        if theirs and theirs != (fingerprint or model.fingerprint()):
            raise InputError.bad("--mitigate-from", cfg.mitigate_from, "is the audit of another model (its weights' "
                                 "fingerprint differs): its threshold does not apply")
        trigger = float(wen["threshold"]["value"])
        if target is None:
            target = float(wen["threshold"].get("ordinary_median", trigger))
            source = f"{cfg.mitigate_from}: images at or above its threshold {trigger:.4g}, down to its ordinary median"
        if timestep is None:
            timestep = int(wen["timesteps"][0])
    if timestep is not None and timestep >= model.num_train_timesteps:
        raise InputError.bad("--mitigate-timestep", timestep, f"is past the model's {model.num_train_timesteps} "
                             "training timesteps")
    return Mitigator(float(target), timestep, cfg.mitigate_iterations, cfg.mitigate_lr, source,
                     trigger if trigger is not None and trigger > target else None)


def summarize(stats: np.ndarray, mitigator: Mitigator) -> dict:
    """Per-run figures of the mitigation: how many images were changed, scores before and after."""
    if not len(stats):
        return {"method": "wen", "target": mitigator.target, "images": 0}
    changed = stats[:, 2] > 0
    return {"method": "wen", "target": mitigator.target, "trigger": mitigator.trigger, "target_source": mitigator.source,
            "timestep": mitigator.timestep, "images": int(len(stats)), "optimized": int(changed.sum()),
            "score_before_mean": float(stats[:, 0].mean()), "score_after_mean": float(stats[:, 1].mean()),
            "reached_target": float(np.mean(stats[:, 1] <= mitigator.target)),
            "iterations_mean": float(stats[changed, 2].mean()) if changed.any() else 0.0}





def generate_with(model, mitigator: Mitigator | None, prompts: list[str], seeds: list[int], *, steps: int,
                  guidance: float, height: int | None = None, width: int | None = None, batch_size: int = 8,
                  negative_prompt: str | None = None, on_batch=None, latents=None):
    """``model.generate`` with the mitigation applied first when there is one; returns the
    generation and the per-image ``(score before, score after, iterations)`` (None without).
    ``latents``: initial latents instead of the seeds' (an in-generation watermark)."""
    if mitigator is None:
        return model.generate(prompts, seeds, steps=steps, guidance=guidance, height=height, width=width,
                              batch_size=batch_size, negative_prompt=negative_prompt, on_batch=on_batch,
                              latents=latents), None
    if negative_prompt:
        raise InputError.bad("--negative-prompt", negative_prompt, "cannot be combined with --mitigate (the "
                             "mitigation guides against the empty prompt it was measured with)")
    size = (height or model.default_size, width or model.default_size)
    emb, stats = mitigator.embeddings(model, list(prompts), list(seeds), steps, size)
    gen = model.generate(list(prompts), list(seeds), steps=steps, guidance=guidance, height=size[0], width=size[1],
                         batch_size=batch_size, prompt_embeddings=emb, on_batch=on_batch, latents=latents)
    return gen, stats
__all__ = ["MitigationOptions", "Mitigator", "mitigator_for", "summarize", "generate_with"]
