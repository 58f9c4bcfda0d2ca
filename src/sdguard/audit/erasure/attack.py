"""The robustness attack on the erased model: an adversarial prompt per target image of a concept."""

from __future__ import annotations

from typing import Any

import numpy as np

from ...core.errors import InputError
from ...report import auto_scale, make_grid
from .concepts import Concept
from .config import AuditErasureConfig
from .measure import Measurement
from .presence import PresenceDetector

NO_ATTACK = "none"


def check_attack(name: str) -> None:
    """``--attack`` names a registered attack or ``none`` (one sentence otherwise)."""
    from ..attacks import ATTACKS

    if name != NO_ATTACK and name not in ATTACKS:
        raise InputError.bad("--attack", name, f"is not a known attack (known: {', '.join(ATTACKS.names())}, "
                             f"or {NO_ATTACK})")


def attack_concept(model, c: Concept, before: Measurement, after: Measurement, detector: PresenceDetector,
                   cfg: AuditErasureConfig) -> tuple[dict[str, Any], np.ndarray | None]:
    """The attack ``cfg.attack`` (:data:`~sdguard.audit.attacks.ATTACKS`) against the erased
    ``model`` for concept ``c``: for up to ``cfg.attack_targets`` images in which the original
    model showed ``c`` (``before``), search an adversarial prompt against the erased model's
    diffusion loss on that image, generate from the image's own seed and look for the concept.
    Returns the entry of ``results.robustness`` and an image grid (original / erased / attacked), or None."""
    from ..attacks import attack_defaults, attack_label, run_attack

    check_attack(cfg.attack)
    hits = [i for i, f in enumerate(before.flags) if f][: cfg.attack_targets]
    own = attack_defaults(cfg.attack)
    base = {"attack": cfg.attack, "method": attack_label(cfg.attack), "tokens": cfg.attack_tokens,
            "steps": cfg.attack_steps or own["steps"], "lr": cfg.attack_lr or own["lr"]}
    if cfg.attack == "unlearndiffatk":
        base["timesteps"] = cfg.attack_timesteps
    if not hits:
        return {**base, "targets": 0, "no_attack_rate": None, "attack_success_rate": None,
                "note": "the original model never showed the concept: nothing to attack"}, None
    by_prompt: dict[str, list[int]] = {}
    for i in hits:
        by_prompt.setdefault(before.prompts[i], []).append(i)
    flags, images, losses, found = {}, {}, [], []
    for p, idx in by_prompt.items():
        judge = _judge(model, c, p, [before.seeds[i] for i in idx], detector, cfg)
        res = run_attack(cfg.attack, model, p, before.latents[idx], judge, tokens=cfg.attack_tokens,
                         steps=cfg.attack_steps, lr=cfg.attack_lr, timesteps=cfg.attack_timesteps, seed=cfg.seed)
        losses.append((res.first_loss, res.last_loss))
        for k, i in enumerate(idx):
            flags[i], images[i] = res.success[k], res.images[k]
            if res.prompts is not None:
                found.append({"prompt": p, "seed": int(before.seeds[i]), "adversarial_prompt": res.prompts[k],
                              "success": res.success[k]})
    no_attack = float(np.mean([after.flags[i] for i in hits]))
    adversarial = float(np.mean([flags[i] for i in hits]))
    # as in UnlearnDiffAtk, a target the plain prompt already brings back counts as a success
    asr = float(np.mean([flags[i] or bool(after.flags[i]) for i in hits]))
    entry = {**base, "targets": len(hits), "no_attack_rate": no_attack, "adversarial_prompt_rate": adversarial,
             "attack_success_rate": asr, "loss_first_last": losses}
    if found:
        entry["prompts_found"] = found
    k = min(8, len(hits))
    grid = make_grid([before.images[i] for i in hits[:k]] + [after.images[i] for i in hits[:k]]
                     + [images[i] for i in hits[:k]], columns=k, scale=auto_scale(before.images.shape[1]))
    return entry, grid


def _judge(model, c: Concept, prompt: str, seeds: list[int], detector: PresenceDetector, cfg: AuditErasureConfig):
    """Generate targets (indices into ``seeds``) from text prompts or from the plain prompt's slot
    with adversarial embeddings, as the audit generates, and detect ``c`` in the images."""
    def judge(idx, *, prompts=None, embeddings=None):
        texts = list(prompts) if prompts is not None else [prompt] * len(idx)
        gen = model.generate(texts, [seeds[i] for i in idx], steps=cfg.steps, guidance=cfg.guidance,
                             batch_size=cfg.batch_size, prompt_embeddings=embeddings)
        return gen.images, np.asarray(detector(c, gen.images), bool)

    return judge
