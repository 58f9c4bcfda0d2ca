"""Attacks on an erased model: adversarial prompts that bring an erased concept back.

:data:`ATTACKS` (``--attack``) holds ``unlearndiffatk`` (:mod:`.unlearndiffatk`, UnlearnDiffAtk
as published, Zhang et al. 2023: real tokens, a text prompt as output) and ``soft-prompt``
(:mod:`.soft_prompt`, a white-box attack on continuous prompt embeddings); :mod:`.base` holds
what they share.
"""

from .base import ATTACKS, AttackOutcome, attack_defaults, attack_label, run_attack
from .soft_prompt import SoftPrompt, soft_prompt_attack
from .unlearndiffatk import project_simplex, unlearndiffatk

__all__ = ["ATTACKS", "AttackOutcome", "SoftPrompt", "attack_defaults", "attack_label", "project_simplex",
           "run_attack", "soft_prompt_attack", "unlearndiffatk"]
