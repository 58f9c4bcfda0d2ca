"""Is a concept in an image: artwork replication, the style probe or NudeNet."""

from __future__ import annotations

from typing import Any

import numpy as np

from .concepts import Concept
from .probes import WorldProbes


class PresenceDetector:
    """Is a concept in each image? (artwork replication, style classifier or NudeNet)."""

    def __init__(self, world=None, probes: WorldProbes | None = None, replication_threshold: float = 0.6,
                 nudity_threshold: float = 0.6):
        self.world = world
        self.probes = probes
        self.replication_threshold = replication_threshold
        self.nudity_threshold = nudity_threshold
        self._nudity = None

    def __call__(self, concept: Concept, images: np.ndarray) -> np.ndarray:
        if concept.kind == "artwork":
            from ...data.world.probes import nearest_training_image

            idx, sims = nearest_training_image(images, self.world)
            arts = np.array([self.world.artwork_of(int(i)) == concept.target for i in idx])
            return arts & (sims >= self.replication_threshold)
        if concept.kind == "style":
            return np.array(self.probes.style().predict(images)) == concept.target
        if concept.kind == "nudity":
            from ..nudity import NudityDetector

            if self._nudity is None:
                self._nudity = NudityDetector(self.nudity_threshold)
            return np.array([bool(c) for c in self._nudity.exposed(images)])
        raise ValueError(f"unknown concept kind {concept.kind!r}")

    def nudity_counts(self, images: np.ndarray) -> dict[str, Any]:
        from ..nudity import NudityDetector

        if self._nudity is None:
            self._nudity = NudityDetector(self.nudity_threshold)
        out = self._nudity.count(images)
        out.pop("flags", None)
        return out
