"""The robustness attack on the erased model: an adversarial prompt per concept."""

from __future__ import annotations

from typing import Any

import numpy as np

from ...report import auto_scale, make_grid
from .concepts import Concept
from .config import AuditErasureConfig
from .measure import Measurement
from .presence import PresenceDetector


def attack_concept(model, c: Concept, before: Measurement, after: Measurement, detector: PresenceDetector,
                   cfg: AuditErasureConfig) -> tuple[dict[str, Any], np.ndarray | None]:
    """The robustness attack against the erased ``model`` for concept ``c``: for up to
    ``cfg.attack_targets`` images in which the original model showed ``c`` (``before``), search
    a prompt embedding that brings them back (:func:`~sdguard.audit.robustness.prompt_embedding_attack`),
    regenerate from the same seeds and look for the concept. Returns the entry of
    ``results.robustness`` and an image grid (original / erased / attacked), or None."""
    from ...models import PromptEmbeddings
    from ..robustness import prompt_embedding_attack

    hits = [i for i, f in enumerate(before.flags) if f][: cfg.attack_targets]
    base = {"method": "prompt-embedding attack (UnlearnDiffAtk-style)", "tokens": cfg.attack_tokens,
            "steps": cfg.attack_steps, "lr": cfg.attack_lr}
    if not hits:
        return {**base, "targets": 0, "no_attack_rate": None, "attack_success_rate": None,
                "note": "the original model never showed the concept: nothing to attack"}, None
    by_prompt: dict[str, list[int]] = {}
    for i in hits:
        by_prompt.setdefault(before.prompts[i], []).append(i)
    flags, images, losses = {}, {}, []
    for p, idx in by_prompt.items():
        res = prompt_embedding_attack(model, p, before.latents[idx], tokens=cfg.attack_tokens, steps=cfg.attack_steps,
                                      lr=cfg.attack_lr, seed=cfg.seed)
        losses.append((res.first_loss, res.last_loss))
        gen = model.generate([p] * len(idx), [before.seeds[i] for i in idx], steps=cfg.steps, guidance=cfg.guidance,
                             batch_size=cfg.batch_size, prompt_embeddings=PromptEmbeddings(res.cond, res.uncond))
        found = detector(c, gen.images)
        for k, i in enumerate(idx):
            flags[i], images[i] = bool(found[k]), gen.images[k]
    no_attack = float(np.mean([after.flags[i] for i in hits]))
    adversarial = float(np.mean([flags[i] for i in hits]))
    # as in UnlearnDiffAtk, a target the plain prompt already brings back counts as a success
    asr = float(np.mean([flags[i] or bool(after.flags[i]) for i in hits]))
    entry = {**base, "targets": len(hits), "no_attack_rate": no_attack, "adversarial_prompt_rate": adversarial,
             "attack_success_rate": asr, "loss_first_last": losses}
    k = min(8, len(hits))
    grid = make_grid([before.images[i] for i in hits[:k]] + [after.images[i] for i in hits[:k]]
                     + [images[i] for i in hits[:k]], columns=k, scale=auto_scale(before.images.shape[1]))
    return entry, grid
