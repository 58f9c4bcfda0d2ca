"""Typed, validated run configurations: the single source of every option.

Each command has a pydantic config. A field *is* the option: its name, type, default, range
(pydantic constraints) and help (``description``) are declared once, with :func:`option`, and

- the command line derives its options from the fields (:mod:`sdguard.cli.build`);
- the Python function of the same name takes the config object, or the same values as keywords
  (:func:`build`); a future HTTP API accepts the same object as its body;
- the report records the whole validated object, so a run can be repeated exactly.

:func:`validate` turns the first validation problem into the one sentence of the error contract,
naming the option as the user spells it on the command line; a validator that checks options
together (one needs another) raises :class:`~sdguard.core.errors.InputError` with its own sentence.
"""

from __future__ import annotations

import math
import os
import typing
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticUndefined

from .errors import InputError
from .io import output_dir

C = TypeVar("C", bound="RunConfig")


def option(default: Any = PydanticUndefined, *, help: str = "", flag: str | None = None, positional: bool = False,
           metavar: str | None = None, cli: bool = True, **constraints: Any) -> Any:
    """A config field that is also a command-line option.

    ``flag``: how the option is spelled (default ``--field-name``; short aliases after a space,
    ``"--keyword -k"``; booleans may give ``"--on/--off"``); ``positional``: an argument rather than an option (``metavar`` names it in
    messages, default the field name in capitals); ``cli=False``: set only from Python (e.g. a
    dict filled by the library). ``constraints`` are pydantic's (``ge``, ``le``, ``min_length``,
    ``default_factory`` ...).
    """
    extra: dict[str, Any] = {}
    if flag:
        extra["flag"] = flag
    if positional:
        extra["positional"] = True
    if metavar:
        extra["metavar"] = metavar
    if not cli:
        extra["cli"] = False
    return Field(default, description=help or None, json_schema_extra=extra or None, **constraints)


def field_meta(cls: type[BaseModel], name: str) -> dict[str, Any]:
    extra = cls.model_fields[name].json_schema_extra
    return dict(extra) if isinstance(extra, dict) else {}


class RunConfig(BaseModel):
    """Base of every command config: frozen, no unknown fields.

    Before validation, paths become strings and a single string given for a list field becomes a
    one-element list, so ``out=Path("x")`` and ``concepts="monet"`` work from Python.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    #: fields that change no result (where the output goes, whether to replace it): left out of
    #: the keys that decide whether a resumed run is the same run
    presentation_fields: ClassVar[frozenset[str]] = frozenset({"out", "overwrite", "resume"})
    #: the fields a Python call may pass by position, in order (default: the CLI's arguments)
    python_positional: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def _coerce(cls, values: Any) -> Any:
        if not isinstance(values, dict):
            return values
        out = dict(values)
        for name, value in values.items():
            f = cls.model_fields.get(name)
            if f is None:
                continue
            if isinstance(value, os.PathLike):
                out[name] = os.fspath(value)
            elif isinstance(value, (str, os.PathLike)) and _is_list_of_str(f.annotation):
                out[name] = [os.fspath(value)]
            elif isinstance(value, (list, tuple)) and _is_list_of_str(f.annotation):
                out[name] = [os.fspath(v) if isinstance(v, os.PathLike) else v for v in value]
            _check_value(cls, name, out[name])
        return out

    def run_key(self) -> dict[str, Any]:
        """The settings that change results (every field but :attr:`presentation_fields`)."""
        return self.model_dump(mode="json", exclude=set(self.presentation_fields))


def _check_value(cls: type[BaseModel], name: str, value: Any) -> None:
    """Refuse what no option takes: a NaN or infinite number (pydantic would compare it with the
    range and say "should be <= 100"), and text that is not valid UTF-8 (a command line of raw
    bytes reaches Python as lone surrogates, which no file can hold)."""
    for v in value if isinstance(value, (list, tuple)) else [value]:
        if isinstance(v, float) and not math.isfinite(v):
            raise InputError.bad(argument_name(cls, name), v, "is not a finite number")
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                shown = v.encode("utf-8", "backslashreplace").decode("ascii", "replace")
                raise InputError(f"{argument_name(cls, name)} {shown!r} is not valid UTF-8 text.") from None


def _is_list_of_str(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return any(_is_list_of_str(a) for a in typing.get_args(annotation) if a is not type(None))
    return origin in (list, tuple) and typing.get_args(annotation)[:1] == (str,)


class OutputConfig(RunConfig):
    """A command that writes into ``--out DIR``."""

    out: str = option(help="output folder")
    overwrite: bool = option(False, help="replace an existing output folder")


class ResumableConfig(OutputConfig):
    """A command whose long runs checkpoint and can be continued."""

    resume: bool = option(False, help="continue an interrupted run from its checkpoint")


def output_for(cfg: OutputConfig, command: str, *inputs: str, resumable: bool | None = None):
    """:func:`~sdguard.core.io.output_dir` for ``cfg.out`` with ``cfg``'s ``overwrite`` and ``resume``:
    resumable when ``cfg`` is a :class:`ResumableConfig` (unless ``resumable`` says otherwise); the
    values of the fields named in ``inputs`` are the inputs ``out`` must not overlap."""
    pairs = []
    for name in inputs:
        value = getattr(cfg, name)
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if v is not None:
                pairs.append((argument_name(type(cfg), name), v))
    return output_dir(cfg.out, command=command, overwrite=cfg.overwrite, resume=getattr(cfg, "resume", False),
                      resumable=isinstance(cfg, ResumableConfig) if resumable is None else resumable, inputs=pairs)


def argument_name(cls: type[BaseModel], field: str) -> str:
    """How the user spells ``field`` of ``cls`` on the command line (``--batch-size``, ``MODEL``)."""
    if field in cls.model_fields:
        meta = field_meta(cls, field)
        if meta.get("flag"):
            return str(meta["flag"]).split()[0].split("/")[0]
        if meta.get("positional"):
            return str(meta.get("metavar") or field.upper())
    return f"--{field.replace('_', '-')}"


def validate(cls: type[C], **values: Any) -> C:
    """Build ``cls(**values)``; on failure raise :class:`InputError` naming argument and value."""
    try:
        return cls(**values)
    except ValidationError as exc:
        err = exc.errors()[0]
        raised = (err.get("ctx") or {}).get("error")
        if isinstance(raised, InputError):  # a validator's own sentence (e.g. options that need each other)
            raise raised from None
        loc = [str(p) for p in err.get("loc", ())]
        field = loc[0] if loc else "?"
        value = err.get("input")
        if err.get("type") == "extra_forbidden":
            known = ", ".join(argument_name(cls, f) for f in cls.model_fields)
            raise InputError(f"{argument_name(cls, field)} is not an option here (options: {known}).") from None
        if err.get("type") == "missing":
            raise InputError(f"{argument_name(cls, field)} is required.") from None
        arg = argument_name(cls, field)
        msg = err.get("msg", "is invalid")
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        msg = msg[0].lower() + msg[1:] if msg else msg
        raise InputError(f"{arg} {value!r} is invalid: {msg}.") from None


def positional_fields(cls: type[BaseModel]) -> list[str]:
    """The fields a Python call passes by position: ``python_positional``, else the CLI's arguments."""
    order = getattr(cls, "python_positional", ())
    return list(order) if order else [n for n in cls.model_fields if field_meta(cls, n).get("positional")]


def build(cls: type[C], args: tuple = (), values: dict[str, Any] | None = None) -> C:
    """The config of a library call.

    ``fn(config)`` passes a config object (keywords then replace its fields);
    ``fn("builtin:tiny", "world", out="x", n=8)`` passes the positional fields in order and the
    rest by name. Either way the result is validated as a whole.
    """
    values = dict(values or {})
    if args and isinstance(args[0], cls):
        if len(args) > 1:
            raise TypeError(f"{cls.__name__} given with more positional arguments {args[1:]!r}")
        return validate(cls, **{**args[0].model_dump(), **values})
    if args and isinstance(args[0], RunConfig):
        raise TypeError(f"expected a {cls.__name__}, got a {type(args[0]).__name__}")
    names = positional_fields(cls)
    if len(args) > len(names):
        raise TypeError(f"{cls.__name__} takes {len(names)} positional values ({', '.join(names)}), got {len(args)}")
    for name, value in zip(names, args):
        if name in values:
            raise TypeError(f"{name} given twice")
        values[name] = value
    return validate(cls, **values)
