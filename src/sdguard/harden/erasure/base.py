"""The registry of concept-erasure methods and what they share.

An erasure method edits the weights of a :class:`~sdguard.models.DiffusionModel` in place so
that a list of concepts can no longer be generated. Each method is one module that subclasses
:class:`ErasureMethod` and registers itself in :data:`ERASURE_METHODS` with :func:`register_method`;
the command :func:`sdguard.harden.erasure.erase` looks it up with :func:`get_method`, so a new
method is one new module plus one registry line.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

import torch

from ...core.config import RunConfig, argument_name
from ...core.errors import InputError
from ...core.registry import Registry
from ...data.captions import count_tokens

#: erasure methods by name; each method module registers its class with ``register_method``
ERASURE_METHODS: Registry = Registry("erasure method", argument="--method",
                                     loaders=("sdguard.harden.erasure.esd", "sdguard.harden.erasure.uce"))


class VocabularyWarning(UserWarning):
    """A concept word is not one token of the model's tokenizer (it is encoded as sub-words)."""


@dataclass
class ErasureResult:
    """What a method reports about its run (written under ``results`` of the report)."""

    stats: dict[str, Any] = field(default_factory=dict)
    #: per-iteration losses of iterative methods (plotted in the report)
    losses: list[float] = field(default_factory=list)


class ErasureMethod:
    """Base class of an erasure method.

    Subclasses set ``name``, ``description``, ``Options`` (a :class:`~sdguard.core.config.RunConfig`
    with the method's own options and their defaults) and implement :meth:`touched` and
    :meth:`run`. Instances are built by :func:`get_method` with validated options.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Options: ClassVar[type[RunConfig]] = RunConfig
    #: whether the method reads a preserve list / an anchor prompt
    uses_preserve: ClassVar[bool] = False
    uses_anchor: ClassVar[bool] = False
    #: whether ``run`` writes checkpoints and can resume
    resumable: ClassVar[bool] = False

    def __init__(self, options: RunConfig):
        self.options = options

    def extensions(self) -> list[str]:
        """sdguard's additions to the published method that these options switch on, each named
        (recorded under ``results.extensions`` of the erase report); none by default."""
        return []

    def touched(self, model) -> dict[str, torch.nn.Parameter]:
        """The parameters (names as in ``model.unet.named_parameters()``) the method may change."""
        raise NotImplementedError

    def check_resume(self, model_fingerprint: str, concepts: Sequence[str], *, preserve: Sequence[str] = (),
                     seed: int = 0, workdir: Path) -> None:
        """Refuse, before any work, a checkpoint in ``workdir`` that another run wrote (a method
        that does not resume has none to check)."""

    def run(self, model, concepts: Sequence[str], *, preserve: Sequence[str] = (), anchor: str | Sequence[str] = "",
            seed: int = 0, progress: bool | None = None, workdir: Path | None = None,
            resume: bool = False, model_fingerprint: str | None = None) -> ErasureResult:
        """Edit ``model`` in place so that ``concepts`` are erased. ``model_fingerprint``: the
        weights' fingerprint when the caller has it already (a resumable method keys its
        checkpoint by it; computed here otherwise)."""
        raise NotImplementedError


def register_method(cls: type[ErasureMethod]) -> type[ErasureMethod]:
    """Class decorator: ``ERASURE_METHODS.register(cls.name, cls)``."""
    return ERASURE_METHODS.register(cls.name, cls, description=cls.description)


def get_method(name: str, **options: Any) -> ErasureMethod:
    """An instance of the method called ``name`` with validated ``options``.

    An option the method does not have, or a value out of range, raises
    :class:`~sdguard.core.errors.InputError` naming the option as it is spelled on the command line.
    """
    from ...core.config import validate

    cls = ERASURE_METHODS.get(name)
    fields = cls.Options.model_fields
    for key in options:
        if key not in fields:
            known = ", ".join(argument_name(cls.Options, f) for f in fields) or "none"
            raise InputError(f"{argument_name(cls.Options, key)} is not an option of --method {name!r} (its options: {known}).")
    return cls(validate(cls.Options, **options))


# ---------------------------------------------------------------------------------------------
# Helpers shared by the methods
# ---------------------------------------------------------------------------------------------


def check_concepts(concepts: Sequence[str] | str, argument: str = "--concept") -> list[str]:
    """Non-empty, stripped concept strings, without duplicates (order kept)."""
    if isinstance(concepts, str):
        concepts = [concepts]
    out: list[str] = []
    if not concepts:
        raise InputError.bad(argument, list(concepts), "is empty: give at least one concept to erase")
    for c in concepts:
        if not isinstance(c, str) or not c.strip():
            raise InputError.bad(argument, c, "is empty: every concept needs at least one word")
        c = " ".join(c.split())
        if c not in out:
            out.append(c)
    return out


def vocabulary_warnings(tokenizer, texts: Sequence[str], argument: str = "--concept", warn: bool = True) -> list[str]:
    """One message per word of ``texts`` that is not a single token of ``tokenizer``.

    Such a word still works: the tokenizer spells it in sub-word tokens and the methods erase
    what the text encoder makes of them, but the erasure then also touches those sub-words.
    Prompts longer than the tokenizer's maximum length are reported as well (they are truncated).
    """
    messages = []
    for text in texts:
        for word in text.split():
            pieces = tokenizer.tokenize(word)
            if len(pieces) > 1:
                shown = " ".join(p.replace("</w>", "") for p in pieces[:12]) + (" ..." if len(pieces) > 12 else "")
                messages.append(f"{argument} {text!r}: the word {word!r} is not in the tokenizer's vocabulary; "
                                f"it is encoded as {len(pieces)} sub-word tokens ({shown})")
        n = count_tokens([text], tokenizer)[0]
        if n > tokenizer.model_max_length:
            messages.append(f"{argument} {text!r} has {n} tokens, more than the tokenizer's "
                            f"{tokenizer.model_max_length}; it is truncated")
    if warn:
        for m in messages:
            warnings.warn(m, VocabularyWarning, stacklevel=3)
    return messages


def select_parameters(model, predicate: Callable[[str], bool]) -> dict[str, torch.nn.Parameter]:
    return {k: p for k, p in model.unet.named_parameters() if predicate(k)}
