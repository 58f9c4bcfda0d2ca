"""One registry for everything chosen by name.

Builtin models, embedders, erasure methods, object detectors (and the coming memorization
detectors, membership attacks, accountants, watermarks, face detectors) are each a
:class:`Registry`. An entry is either the object itself or a ``"module:attribute"`` string
imported on first use, so that an optional dependency (``transformers`` for CLIP, say) is only
loaded when its entry is asked for. A new method is one module plus one ``register`` line.

    EMBEDDERS = Registry("embedder", argument="--embedder")
    EMBEDDERS.register("clip", "sdguard.embed.clip:CLIPEmbedder", description="CLIP image features")
    EMBEDDERS.get("clip")          # the class, imported now
    EMBEDDERS.get("nope")          # InputError: --embedder 'nope' is not a known embedder (known: clip).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Generic, Iterator, TypeVar

from .errors import InputError

T = TypeVar("T")


@dataclass
class Entry:
    name: str
    target: Any  # the object, or "module:attribute"
    description: str = ""
    #: entry-specific facts a caller may read (e.g. an embedder's ``NAME:VALUE`` option)
    meta: dict[str, Any] = field(default_factory=dict)

    def load(self) -> Any:
        if isinstance(self.target, str):
            module, _, attr = self.target.partition(":")
            obj: Any = importlib.import_module(module)
            for part in attr.split("."):
                obj = getattr(obj, part)
            self.target = obj
        return self.target


class Registry(Generic[T]):
    """Names to objects, with lazy imports and one sentence for an unknown name.

    ``kind`` is what an entry is called in messages ("embedder"); ``argument`` is the option
    that chooses one ("--embedder"); ``loaders`` are modules imported before the first lookup
    (modules that register themselves with the :meth:`register` decorator form).
    """

    def __init__(self, kind: str, *, argument: str, loaders: tuple[str, ...] = ()):
        self.kind, self.argument = kind, argument
        self._entries: dict[str, Entry] = {}
        self._loaders = list(loaders)

    # -- writing ---------------------------------------------------------------------------
    def register(self, name: str, target: Any = None, *, description: str = "", **meta: Any) -> Any:
        """``register(name, obj_or_"module:attr")``, or as a decorator ``@register(name)``."""
        if not name or not isinstance(name, str):
            raise TypeError(f"a {self.kind} needs a non-empty name")
        if target is None:
            def wrap(obj: T) -> T:
                self._entries[name] = Entry(name, obj, description, dict(meta))
                return obj

            return wrap
        self._entries[name] = Entry(name, target, description, dict(meta))
        return target

    # -- reading ---------------------------------------------------------------------------
    def _ensure_loaded(self) -> None:
        while self._loaders:
            importlib.import_module(self._loaders.pop(0))

    def names(self) -> list[str]:
        self._ensure_loaded()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        self._ensure_loaded()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def entry(self, name: str, *, value: object | None = None) -> Entry:
        """The entry called ``name``; ``value`` is what the user typed, for the message."""
        self._ensure_loaded()
        if name not in self._entries:
            shown = name if value is None else value
            raise InputError.bad(self.argument, shown,
                                 f"is not a known {self.kind} (known: {', '.join(sorted(self._entries)) or 'none'})")
        return self._entries[name]

    def get(self, name: str, *, value: object | None = None) -> T:
        """The registered object (imported now if it was registered as a string)."""
        return self.entry(name, value=value).load()

