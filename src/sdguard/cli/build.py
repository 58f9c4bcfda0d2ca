"""Command-line options derived from the config classes (an option is declared once, as a field).

:func:`add_command` turns a :class:`~sdguard.core.config.RunConfig` into a typer command: each
field becomes an argument or option with the field's name, default and help; the command
collects the values, builds the config with :func:`~sdguard.core.config.validate` (so a bad
value gets the contract's sentence) and calls the library function. ``extra`` configs add
options that are validated elsewhere (the erasure methods' own options, for ``sdguard erase``).
"""

from __future__ import annotations

import contextlib
import inspect
import types
import typing
import warnings
from typing import Any, Callable, Iterator, List, Optional

import typer
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from ..core.config import RunConfig, argument_name, field_meta, validate
from ..core.errors import InputError, Interrupted
from ..core.io import kept_staging


def _base_type(annotation: Any) -> tuple[Any, bool, bool]:
    """``(scalar type, optional, is_list)`` of a field annotation."""
    optional = False
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional = len(args) < len(typing.get_args(annotation))
        annotation = args[0] if len(args) == 1 else str
        origin = typing.get_origin(annotation)
    if origin in (list, tuple):
        inner = typing.get_args(annotation)[:1]
        scalar = inner[0] if inner and inner[0] is not Ellipsis else str
        if typing.get_origin(scalar) is typing.Literal:  # choices: validated by the config
            scalar = type(typing.get_args(scalar)[0])
        return scalar, optional, True
    if origin is dict:
        return str, optional, True  # KEY=VALUE pairs
    if origin is typing.Literal:
        return type(typing.get_args(annotation)[0]), optional, False
    if annotation not in (str, int, float, bool):
        return str, optional, False
    return annotation, optional, False


def _default(info) -> Any:
    if info.default_factory is not None:
        return info.default_factory()
    return ... if info.default is PydanticUndefined else info.default


def cli_fields(cls: type[BaseModel]) -> list[str]:
    """The fields of ``cls`` that the command line sets."""
    return [n for n in cls.model_fields if field_meta(cls, n).get("cli", True)]


def _parameter(cls: type[BaseModel], name: str, *, all_optional: bool = False,
               prefix: str = "") -> inspect.Parameter:
    info = cls.model_fields[name]
    meta = field_meta(cls, name)
    scalar, optional, is_list = _base_type(info.annotation)
    default = None if all_optional else _default(info)
    help_ = prefix + (info.description or "")
    if meta.get("positional"):
        annotation = List[scalar] if is_list else (Optional[scalar] if optional else scalar)
        param = typer.Argument(default, metavar=argument_name(cls, name), help=help_, show_default=default is not ...)
        return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=param, annotation=annotation)
    flag = str(meta.get("flag") or f"--{name.replace('_', '-')}")
    if scalar is bool and not is_list:
        if "/" not in flag:
            first, *aliases = flag.split()
            flag = " ".join([f"{first}/--no-{first[2:]}", *aliases])
        annotation = Optional[bool] if (optional or all_optional) else bool
    elif is_list:
        annotation = Optional[List[scalar]] if all_optional else List[scalar]
        if isinstance(default, (tuple, dict)):
            default = list(default) if isinstance(default, tuple) else [f"{k}={v}" for k, v in default.items()]
    else:
        annotation = Optional[scalar] if (optional or all_optional or default is None) else scalar
    param = typer.Option(default, *flag.split(), help=help_,
                         show_default=default is not ... and default not in (None, [], ()))
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=param, annotation=annotation)


def key_values(pairs: list[str], argument: str) -> dict[str, Any]:
    """``KEY=VALUE`` strings to a dict (numbers and true/false converted)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InputError.bad(argument, pair, "is not KEY=VALUE")
        v: object = value
        if value.lower() in ("true", "false"):
            v = value.lower() == "true"
        else:
            for cast in (int, float):
                try:
                    v = cast(value)
                    break
                except ValueError:
                    continue
        out[key.strip().replace("-", "_")] = v
    return out


def values_of(cls: type[BaseModel], given: dict[str, Any]) -> dict[str, Any]:
    """The CLI's parsed values as the config's field values (KEY=VALUE lists to dicts)."""
    out = {}
    for name, value in given.items():
        if name not in cls.model_fields:
            continue
        origin = typing.get_origin(cls.model_fields[name].annotation)
        if origin is dict or (origin in (typing.Union, types.UnionType) and any(
                typing.get_origin(a) is dict for a in typing.get_args(cls.model_fields[name].annotation))):
            value = key_values(list(value or []), argument_name(cls, name))
        out[name] = value
    return out


@contextlib.contextmanager
def printed_warnings() -> Iterator[None]:
    """Python warnings of the ``UserWarning`` kind (sdguard's, e.g. a truncated prompt) printed on
    stderr as ``warning: ...`` lines when they happen, each message once; other kinds as before."""
    from rich.markup import escape

    from .main import err

    shown: set[str] = set()
    previous = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if not issubclass(category, UserWarning):
            return previous(message, category, filename, lineno, file, line)
        if str(message) not in shown:
            shown.add(str(message))
            err.print(f"[yellow]warning:[/yellow] {escape(str(message))}", highlight=False, soft_wrap=True)

    with warnings.catch_warnings():
        warnings.simplefilter("always", UserWarning)
        warnings.showwarning = show
        yield


def add_command(app: typer.Typer, name: str, config: type[RunConfig], run: Callable[[RunConfig], Any], *,
                extra: dict[str, type[BaseModel]] | None = None,
                cli_only: list[inspect.Parameter] = (), help: str | None = None) -> Callable:
    """Register ``sdguard ... NAME`` on ``app``: options from ``config`` (and ``extra``), then
    ``run(cfg, extra_values, cli_values)``.

    ``extra``: label -> config class whose fields become optional options (default: unset), passed
    to ``run`` as a dict of the values the user gave; ``cli_only``: presentation options
    (e.g. ``--json``) that no config holds, passed in ``cli_values``.
    """
    params = [_parameter(config, n) for n in cli_fields(config)]
    seen = {p.name for p in params}
    owners: dict[str, list[str]] = {}
    for label, cls in (extra or {}).items():
        for n in cli_fields(cls):
            owners.setdefault(n, []).append(label)
    for label, cls in (extra or {}).items():
        for n in cli_fields(cls):
            if n in seen:
                continue
            seen.add(n)
            params.append(_parameter(cls, n, all_optional=True, prefix=f"{', '.join(owners[n])}: "))
    params += list(cli_only)
    # arguments first, then the command's own options, then where the output goes (order kept)
    def rank(p: inspect.Parameter) -> int:
        if isinstance(p.default, typer.models.ArgumentInfo):
            return 0
        return 2 if p.name in RunConfig.presentation_fields else 1

    params.sort(key=rank)
    extra_names = {n for cls in (extra or {}).values() for n in cli_fields(cls)} - set(config.model_fields)
    only = {p.name for p in cli_only}

    def command(**given: Any) -> None:
        with printed_warnings():
            cfg = validate(config, **values_of(config, {k: v for k, v in given.items() if k not in extra_names | only}))
            extras = {k: v for k, v in given.items() if k in extra_names and v is not None}
            try:
                return command.handler(cfg, extras, {k: given[k] for k in only})  # type: ignore[attr-defined]
            except KeyboardInterrupt as exc:  # typer would end it silently with 130; say what was kept
                raise Interrupted(kept_staging(exc)) from None

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__doc__ = help or inspect.cleandoc(config.__doc__ or "").split("\n\n")[0]
    command.__name__ = name.replace("-", "_")
    command.config, command.extra, command.handler = config, dict(extra or {}), run  # type: ignore[attr-defined]
    app.command(name)(command)
    return command
