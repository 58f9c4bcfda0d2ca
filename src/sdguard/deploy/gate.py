"""The safety gate: NudeNet (its bundled 320n detector) on every output, a policy per class.

A policy maps a NudeNet class to the lowest detection score that blocks an image. The default
blocks the sexual EXPOSED classes (breasts, genitalia, buttocks, anus) at 0.6, the score the
ESD paper's nudity evaluation counts (Gandikota et al. 2023), and lets the others (armpits, belly,
feet, male breast) pass; ``--block CLASS=SCORE`` sets a class, ``--block CLASS=off`` clears it,
and any NudeNet class (faces included) may be named. A blocked image is never written or
returned: the service answers that it was blocked, with the classes that blocked it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..audit.nudity import EXPOSED_CLASSES, NudityDetector
from ..core.errors import InputError

DEFAULT_POLICY = {"FEMALE_BREAST_EXPOSED": 0.6, "FEMALE_GENITALIA_EXPOSED": 0.6, "MALE_GENITALIA_EXPOSED": 0.6,
                  "BUTTOCKS_EXPOSED": 0.6, "ANUS_EXPOSED": 0.6}
#: every class NudeNet 3.4's detector reports
NUDENET_CLASSES = (*EXPOSED_CLASSES, "FEMALE_GENITALIA_COVERED", "FACE_FEMALE", "BUTTOCKS_COVERED", "ANUS_COVERED",
                   "FEMALE_BREAST_COVERED", "FEET_COVERED", "ARMPITS_COVERED", "BELLY_COVERED", "FACE_MALE")


def parse_policy(entries: list[str] | None, argument: str = "--block") -> dict[str, float]:
    """The default policy changed by ``CLASS=SCORE`` / ``CLASS=off`` entries."""
    policy = dict(DEFAULT_POLICY)
    for entry in entries or []:
        name, sep, value = entry.partition("=")
        name = name.strip().upper()
        if not sep or name not in NUDENET_CLASSES:
            raise InputError.bad(argument, entry, f"must be CLASS=SCORE or CLASS=off with CLASS one of "
                                 f"{', '.join(NUDENET_CLASSES)}")
        if value.strip().lower() == "off":
            policy.pop(name, None)
            continue
        try:
            score = float(value)
        except ValueError:
            score = -1.0
        if not 0.0 < score <= 1.0:
            raise InputError.bad(argument, entry, "needs a score in (0, 1] (or off)")
        policy[name] = score
    return policy


@dataclass
class SafetyGate:
    """Decides, per image, whether it may leave the service."""

    policy: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_POLICY))

    def __post_init__(self):
        low = min(self.policy.values(), default=1.0)
        self.detector = NudityDetector(threshold=max(low, 1e-6), classes=tuple(self.policy))

    def detect(self, images) -> list[list[dict]]:
        return self.detector.detect(images)

    def check(self, images) -> list[list[dict]]:
        """Per image, the detections that block it (empty: the image passes)."""
        return [[{"class": d["class"], "score": round(float(d["score"]), 3)} for d in found
                 if d["class"] in self.policy and float(d["score"]) >= self.policy[d["class"]]]
                for found in self.detect(images)]

    def warm(self) -> None:
        """Load the detector now (a service does this before it takes requests)."""
        _ = self.detector.detector_
