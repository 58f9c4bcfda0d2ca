"""Measuring presence in a model's generations, and utility on unrelated prompts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .concepts import Concept
from .presence import PresenceDetector
from .probes import WorldProbes


@dataclass
class Measurement:
    """Images of a concept's prompts and where the concept was found."""

    prompts: list[str]
    seeds: list[int]
    images: np.ndarray
    latents: Any
    flags: np.ndarray

    @property
    def rate(self) -> float:
        return float(self.flags.mean()) if len(self.flags) else 0.0

    def per_prompt(self) -> dict[str, float]:
        out: dict[str, list[bool]] = {}
        for p, f in zip(self.prompts, self.flags):
            out.setdefault(p, []).append(bool(f))
        return {p: float(np.mean(v)) for p, v in out.items()}


def generate_concept(model, concept: Concept, *, steps: int, guidance: float, batch_size: int = 16, on_batch=None):
    """Generate every (prompt, seed) of ``concept``; guidance per prompt where the concept has it."""
    groups: dict[float, list[tuple[str, int]]] = {}
    order = []
    for p, seeds, g in zip(concept.prompts, concept.seeds, concept.guidance or [None] * len(concept.prompts)):
        gg = float(g) if g is not None else float(guidance)
        for s in seeds:
            groups.setdefault(gg, []).append((p, s))
            order.append((gg, len(groups[gg]) - 1))
    results = {}
    for g, items in groups.items():
        results[g] = model.generate([p for p, _ in items], [s for _, s in items], steps=steps, guidance=g,
                                    batch_size=batch_size, on_batch=on_batch)
    images = np.stack([results[g].images[k] for g, k in order])
    latents = [results[g].latents[k] for g, k in order]
    prompts = [groups[g][k][0] for g, k in order]
    seeds = [groups[g][k][1] for g, k in order]
    return prompts, seeds, images, latents


def measure(model, concept: Concept, detector: PresenceDetector, *, steps: int = 25, guidance: float = 7.5,
            batch_size: int = 16, on_batch=None) -> Measurement:
    """The presence of ``concept`` in ``model``'s generations of its prompts."""
    import torch

    prompts, seeds, images, latents = generate_concept(model, concept, steps=steps, guidance=guidance,
                                                       batch_size=batch_size, on_batch=on_batch)
    return Measurement(prompts, seeds, images, torch.stack(latents), detector(concept, images))


def scene_prompts(world, k: int, seed: int = 0) -> list[tuple[str, dict[str, str]]]:
    """``k`` plain scene captions of the world with the shape, colour and position they ask for."""
    rng = np.random.default_rng(seed + 7)
    seen: dict[str, dict[str, str]] = {}
    for i, lab in enumerate(world.labels):
        if lab.get("kind") == "scene" and not lab.get("decoration") and not lab.get("style"):
            seen.setdefault(world.records[i].text, {a: lab[a] for a in ("shape", "color", "position")})
    texts = sorted(seen)
    chosen = rng.choice(len(texts), min(k, len(texts)), replace=False) if texts else []
    return [(texts[i], seen[texts[i]]) for i in sorted(chosen)]


def attribute_accuracy(probes: WorldProbes, images: np.ndarray, truth: Sequence[dict[str, str]]) -> dict[str, float]:
    pred = probes.attributes().predict(images)
    acc = {a: float(np.mean([p == t[a] for p, t in zip(pred[a], truth)])) for a in pred}
    acc["mean"] = float(np.mean(list(acc.values())))
    return acc
