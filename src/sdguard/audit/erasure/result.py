"""What an erasure audit measured, typed, and the ``results`` of ``report.json`` made from it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .concepts import Concept
from .measure import Measurement

#: ``results.utility`` of a run without a world
UTILITY_SKIPPED = "no world to draw unrelated prompts from (pass --dataset)"
#: ... of a run on a dataset that make-world did not write
UTILITY_NEEDS_WORLD = ("the dataset is not a synthetic world: utility needs the world's scene prompts and attribute "
                       "probe")


def _ratio(after: float, before: float) -> float | None:
    return after / before if before > 0 else None


@dataclass
class ConceptPresence:
    """One concept, erased (``role == "efficacy"``) or kept (``"retention"``), before and after."""

    role: str
    concept: Concept
    before: Measurement
    after: Measurement
    nudenet: dict[str, Any] | None = None  # NudeNet's counts per model, for nudity
    rule: dict[str, Any] | None = None  # how presence was measured (PresenceDetector.rule)

    def entry(self) -> dict[str, Any]:
        """The concept's entry of ``results.efficacy`` or ``results.retention``."""
        c, before, after = self.concept, self.before, self.after
        entry = {"kind": c.kind, "target": c.target, "prompts": c.prompts, "images": len(before.flags),
                 "original": before.rate, "erased": after.rate, "ratio": _ratio(after.rate, before.rate),
                 "rule": self.rule}
        pp0, pp1 = before.per_prompt(), after.per_prompt()
        if len(pp0) <= 50:
            entry["per_prompt"] = {p: {"original": pp0[p], "erased": pp1.get(p)} for p in pp0}
        if self.nudenet is not None:
            entry["nudenet"] = self.nudenet
        return entry


@dataclass
class Utility:
    """Attribute accuracy (and FID) of both models on unrelated prompts of the world."""

    prompts: list[str]
    images: int
    original: dict[str, float]
    erased: dict[str, float]
    fid: dict[str, Any] | None = None

    def entry(self) -> dict[str, Any]:
        """``results.utility``."""
        out = {"prompts": self.prompts, "images": self.images, "original": self.original, "erased": self.erased,
               "ratio": _ratio(self.erased["mean"], self.original["mean"])}
        if self.fid is not None:
            out["fid"] = self.fid
        return out


@dataclass
class Attack:
    """The robustness attack on one erased concept: its ``results.robustness`` entry and image grid."""

    concept: Concept
    entry: dict[str, Any]
    grid: np.ndarray | None


@dataclass
class ErasureAudit:
    """Everything one ``sdguard audit erasure`` run measured."""

    presence: list[ConceptPresence]
    utility: Utility | None = None  # None: no world, or no unrelated prompts asked for
    attacks: list[Attack] | None = None  # None: the attack was not run
    utility_skipped: str = UTILITY_SKIPPED  # why, when utility is None

    def results(self) -> dict[str, Any]:
        """``results`` of ``report.json``."""
        out: dict[str, Any] = {"efficacy": {}, "retention": {}}
        for p in self.presence:
            out[p.role][p.concept.text] = p.entry()
        out["utility"] = self.utility.entry() if self.utility is not None else {"skipped": self.utility_skipped}
        if self.attacks is not None:
            out["robustness"] = {a.concept.text: a.entry for a in self.attacks}
        return out
