"""The world's probes, fitted once and cached on disk as safetensors arrays and JSON (no code runs on load)."""

from __future__ import annotations

import hashlib
import inspect
import json
from pathlib import Path
from typing import Any

import numpy as np

from ...core.cache import cache_root
from ...core.state import load_checkpoint, save_checkpoint

#: the layout of a cached probe (part of every entry's key): bump it when the layout changes
PROBE_FORMAT = "sdguard-world-probe/1"
_OBJECT, _TUPLE, _STRINGS = "__object__", "__tuple__", "__strings__"


class WorldProbes:
    """The world's probes, fitted once on a subset of ``fit_images`` images and cached on disk.

    With ``render`` (a model), the probes are fitted on the world as that model's autoencoder
    renders it (:func:`sdguard.audit.world_check.autoencoded`): a model can only draw what its
    decoder draws, and probes fitted on sharper originals misread its generations (on
    ``builtin:tiny`` a style probe fitted on the raw world called hokusai and picasso generations
    unstyled). The audit passes the original model, so before and after are judged alike.

    A cached probe is a checkpoint of :mod:`sdguard.core.state` in ``$SDGUARD_CACHE/probes``
    (:func:`save_probe`): an entry that is corrupt, stale or another's is refitted.
    """

    def __init__(self, world, fit_images: int = 1500, seed: int = 0, cache: bool = True, render=None):
        self.world = world
        self.fit_images = fit_images
        self.seed = seed
        self.cache = cache
        self.render = render
        self._seen = None
        self._probes: dict[str, Any] = {}

    def _key(self, kind: str) -> str:
        import sklearn

        h = hashlib.sha256()
        h.update((Path(self.world.root) / "ground_truth.json").read_bytes())
        render_id = self.render.fingerprint() if self.render is not None else None  # only when a probe is needed
        h.update(json.dumps([kind, self.fit_images, self.seed, len(self.world), sklearn.__version__,
                             render_id]).encode())
        h.update(_probe_code())  # a probe fitted by other code is another probe (measured: a stale cache
        # entry kept picasso at 100% after UCE in the erasure benchmark, where a fresh fit gives 83%)
        return h.hexdigest()[:24]

    def _fit_world(self):
        """The world the probes are fitted on (autoencoded by ``render`` when given)."""
        if self.render is None:
            return self.world
        if self._seen is None:
            from ..world_check import autoencoded

            self._seen = autoencoded(self.world, self.render)
        return self._seen

    def _get(self, kind: str, cls: type, fit):
        if kind in self._probes:
            return self._probes[kind]
        folder, name = cache_root() / "probes", f"{kind}-{self._key(kind)}"
        key = {"format": PROBE_FORMAT, "probe": cls.__name__, "entry": name}
        probe = load_probe(folder, name, cls, key) if self.cache else None
        if probe is None:
            probe = fit()
            if self.cache:
                save_probe(folder, name, probe, key)
        self._probes[kind] = probe
        return probe

    def style(self):
        from ...data.world.probes import StyleClassifier

        def fit():
            rng = np.random.default_rng(self.seed)
            labels = self.world.labels
            styled = [i for i, lab in enumerate(labels) if lab.get("style")]
            plain = [i for i, lab in enumerate(labels) if not lab.get("style")]
            k = max(1, self.fit_images - len(styled))
            chosen = sorted(styled + list(rng.choice(plain, min(k, len(plain)), replace=False)))
            return StyleClassifier(random_state=self.seed).fit(self._fit_world(), chosen)

        return self._get("style", StyleClassifier, fit)

    def attributes(self):
        from ...data.world.probes import AttributeClassifier

        def fit():
            rng = np.random.default_rng(self.seed)
            scenes = [i for i, lab in enumerate(self.world.labels) if lab.get("kind") == "scene"]
            chosen = sorted(rng.choice(scenes, min(self.fit_images, len(scenes)), replace=False))
            return AttributeClassifier(random_state=self.seed).fit(self._fit_world(), chosen)

        return self._get("attributes", AttributeClassifier, fit)


# ---------------------------------------------------------------------------------------------
# A fitted probe as arrays and JSON
# ---------------------------------------------------------------------------------------------


def _probe_code() -> bytes:
    """The source of the modules that fit the probes (part of every cache key)."""
    from ...data.world import detector, probes, probing

    return b"".join(inspect.getsource(m).encode() for m in (probes, probing, detector))


def storable_classes() -> dict[str, type]:
    """The classes a cached probe may hold, by name: the world's probes and their scikit-learn parts."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from ...data.world.probes import AttributeClassifier, StyleClassifier

    return {c.__name__: c for c in (StyleClassifier, AttributeClassifier, Pipeline, StandardScaler, LogisticRegression)}


def probe_state(value: Any, classes: dict[str, type] | None = None) -> Any:
    """``value`` (a fitted probe) as nested dicts and lists of JSON values and tensors.

    An object of a :func:`storable_classes` class becomes its class name, its constructor
    parameters and every other attribute (``coef_``, ``intercept_``, ``classes_``, a scaler's
    ``mean_`` and ``scale_`` ...); numeric arrays become tensors, string arrays lists. Raises
    ``ValueError`` for anything else (such a probe is not cached).
    """
    import torch

    classes = storable_classes() if classes is None else classes
    if classes.get(type(value).__name__) is type(value):
        params = {p: getattr(value, p) for p in inspect.signature(type(value)).parameters}
        rest = {k: v for k, v in vars(value).items() if k not in params}
        return {_OBJECT: {"class": type(value).__name__, "params": probe_state(params, classes),
                          "attributes": probe_state(rest, classes)}}
    if isinstance(value, np.ndarray):
        if value.dtype != object:
            return torch.from_numpy(np.ascontiguousarray(value))
        if all(isinstance(v, str) for v in value.ravel()):
            return {_STRINGS: value.tolist()}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: probe_state(v, classes) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [probe_state(v, classes) for v in value]
        return {_TUPLE: items} if isinstance(value, tuple) else items
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    raise ValueError(f"a probe holding a {type(value).__name__} cannot be stored")


def probe_from_state(state: Any, classes: dict[str, type] | None = None) -> Any:
    """The inverse of :func:`probe_state` (only :func:`storable_classes` are built)."""
    import torch

    classes = storable_classes() if classes is None else classes
    if isinstance(state, torch.Tensor):
        return state.numpy()
    if isinstance(state, list):
        return [probe_from_state(v, classes) for v in state]
    if not isinstance(state, dict):
        return state
    if set(state) == {_OBJECT}:
        spec = state[_OBJECT]
        obj = classes[spec["class"]](**probe_from_state(spec["params"], classes))
        for k, v in probe_from_state(spec["attributes"], classes).items():
            setattr(obj, k, v)
        return obj
    if set(state) == {_TUPLE}:
        return tuple(probe_from_state(state[_TUPLE], classes))
    if set(state) == {_STRINGS}:
        return np.array(state[_STRINGS], dtype=object)
    return {k: probe_from_state(v, classes) for k, v in state.items()}


def save_probe(folder: Path, name: str, probe: Any, key: dict[str, Any]) -> bool:
    """Cache ``probe`` as the checkpoint ``name`` of ``folder`` under ``key``; False where it cannot be."""
    try:
        save_checkpoint(folder, name, key=key, state=probe_state(probe))
    except (OSError, ValueError):  # an unwritable cache, or a probe that is not plain arrays: not cached
        return False
    return True


def load_probe(folder: Path, name: str, cls: type, key: dict[str, Any]) -> Any | None:
    """The ``cls`` probe cached as ``name`` in ``folder`` under ``key``, or None: no entry, or one
    that is corrupt, stale, written under another key or that does not rebuild a working probe."""
    try:
        state = load_checkpoint(folder, name, key=key)
        probe = None if state is None else probe_from_state(state)
        if not isinstance(probe, cls):
            return None
        probe.predict(np.zeros((1, 32, 32, 3), np.float32))  # its arrays fit together
        return probe
    except Exception:  # noqa: BLE001 - any broken entry is refitted
        return None
