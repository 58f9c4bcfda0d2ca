"""Object detectors for object-level replication (an object the prompt never names).

Somepalli et al. 2023 found that Stable Diffusion adds objects that co-occur with a keyword in
its training images (an "astronaut" prompt brings a flag). The audit counts how often a detector
finds the object in generations of keyword prompts, of control prompts and in the keyword's
training images. Detectors are created by name:

- ``world``: the synthetic world's planted object, detected by a probe fitted on the world
  (:class:`sdguard.data.world.probes.ObjectDetector`); needs the dataset to be a world folder.
- ``clip:MODEL``: zero-shot CLIP through transformers (a local folder or a hub id where it is
  reachable): the object is present when "a photo with a OBJECT" beats "a photo" on the image.
"""

from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np

from ..core.errors import InputError
from ..core.registry import Registry


class ObjectScorer(Protocol):
    name: str

    def score(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Probability-like score in [0, 1] that the object is in each image."""

    def detect(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Boolean presence per image."""


class WorldObjectDetector:
    """The planted object of a synthetic world (the flag), by a probe fitted on the world."""

    name = "world"

    def __init__(self, world_dir: str, object_name: str | None = None, threshold: float = 0.5):
        from ..data.world.probes import ObjectDetector

        self.world = _planted_world(world_dir, object_name)
        self.threshold = threshold
        self.probe = ObjectDetector().fit(self.world)

    def score(self, images):
        return np.asarray(self.probe.score(np.asarray(images)), np.float64)

    def detect(self, images):
        return self.score(images) >= self.threshold


class CLIPObjectDetector:
    """Zero-shot presence of an object with CLIP (Radford et al. 2021)."""

    name = "clip"

    def __init__(self, model: str, object_name: str, device: str | None = None):
        from ..embed.clip import CLIPEmbedder

        self.embedder = CLIPEmbedder(model=model, device=device)
        self.texts = [f"a photo with a {object_name}", "a photo"]

    def score(self, images):
        img = self.embedder.embed(list(images))
        txt = self.embedder.embed_text(self.texts)
        logits = 100.0 * img @ txt.T
        logits -= logits.max(1, keepdims=True)
        p = np.exp(logits)
        return p[:, 0] / p.sum(1)

    def detect(self, images):
        return self.score(images) >= 0.5


def _planted_world(world_dir: str, object_name: str | None):
    """The world of ``world_dir`` (the dataset), where ``object_name`` (if given) is planted."""
    from ..data.world import load_world

    try:
        world = load_world(world_dir)
    except InputError:
        raise InputError.bad("--detector", "world", f"needs the dataset to be a synthetic world folder, and "
                             f"{str(world_dir)!r} is not one (use clip:MODEL)") from None
    planted = [o["object"] for o in world.ground_truth.get("objects", [])]
    if object_name is not None and object_name not in planted:
        raise InputError.bad("--object", object_name, f"is not an object planted in this world (planted: "
                             f"{', '.join(planted) or 'none'})")
    return world


def _check_world(value: str, *, dataset: str, object_name: str | None) -> None:
    if value:
        raise InputError.bad("--detector", f"world:{value}", "takes no value after 'world:'")
    _planted_world(dataset, object_name)


def _check_clip(value: str, *, dataset: str, object_name: str | None) -> None:
    if not value or not object_name:
        raise InputError.bad("--detector", f"clip:{value}", "needs a model (clip:FOLDER) and --object")


#: object detectors by name; each is built as ``cls(value, dataset=..., object_name=...)`` with
#: ``value`` the part of the spec after ``NAME:``, once its ``check`` (same arguments) has passed
OBJECT_DETECTORS: Registry = Registry("object detector", argument="--detector")


@OBJECT_DETECTORS.register("world", description="the synthetic world's planted object, by a probe fitted on the world",
                           check=_check_world)
def _world_detector(value: str, *, dataset: str, object_name: str | None) -> ObjectScorer:
    return WorldObjectDetector(dataset, object_name)


@OBJECT_DETECTORS.register("clip", description="zero-shot CLIP (clip:MODEL_FOLDER_OR_ID)", check=_check_clip)
def _clip_detector(value: str, *, dataset: str, object_name: str | None) -> ObjectScorer:
    return CLIPObjectDetector(value, object_name)


def check_detector(spec: str, *, dataset: str, object_name: str | None) -> None:
    """Refuse an unknown detector, or one its arguments do not fit, before any work: the registry
    lookup and the entry's ``check`` (a world detector needs a world; CLIP a model and an object)."""
    name, _, value = spec.partition(":")
    entry = OBJECT_DETECTORS.entry(name, value=spec)
    check = entry.meta.get("check")
    if check is not None:
        check(value, dataset=dataset, object_name=object_name)


def create_detector(spec: str, *, dataset: str, object_name: str | None) -> ObjectScorer:
    """``world`` or ``clip:MODEL`` (see the module docstring), checked by :func:`check_detector`."""
    check_detector(spec, dataset=dataset, object_name=object_name)
    name, _, value = spec.partition(":")
    return OBJECT_DETECTORS.get(name, value=spec)(value, dataset=dataset, object_name=object_name)
