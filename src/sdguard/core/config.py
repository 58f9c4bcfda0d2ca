"""Typed, validated run configurations.

Each command has a pydantic config; the same object is written into the command's report so a
run can be repeated exactly. :func:`validate` turns the first validation problem into the one
sentence of the error contract, naming the CLI argument and the value.
"""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import InputError

C = TypeVar("C", bound="RunConfig")


class RunConfig(BaseModel):
    """Base of every command config: frozen, no unknown fields."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    #: maps a field name to how the user spells it on the command line
    cli_names: ClassVar[dict[str, str]] = {}


def argument_name(cls: type[RunConfig], field: str) -> str:
    return cls.cli_names.get(field, f"--{field.replace('_', '-')}")


def validate(cls: type[C], **values: Any) -> C:
    """Build ``cls(**values)``; on failure raise :class:`InputError` naming argument and value."""
    try:
        return cls(**values)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(p) for p in err.get("loc", ())]
        field = loc[0] if loc else "?"
        value = err.get("input")
        arg = argument_name(cls, field)
        msg = err.get("msg", "is invalid")
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        msg = msg[0].lower() + msg[1:] if msg else msg
        raise InputError(f"{arg} {value!r} is invalid: {msg}.") from None
