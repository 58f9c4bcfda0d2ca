"""Typed reading of another command's output: its ``report.json``, checked before it is used.

A command that builds on another's output (``audit generations --clusters`` on an ``audit data``
folder) reads it with :func:`read_report`, which refuses, with the one sentence of the error
contract naming the option and the folder, a folder without ``report.json``, a file that is not
JSON, the report of another command and a schema version this sdguard does not read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import InputError
from .report import SCHEMA_VERSION

#: ``schema_version`` values of ``report.json`` this sdguard reads
READABLE_SCHEMA_VERSIONS = (SCHEMA_VERSION,)


@dataclass(frozen=True)
class StoredReport:
    """A ``report.json`` written by :meth:`sdguard.report.Report.write`, read back."""

    folder: Path
    command: str
    schema_version: int
    config: dict[str, Any]
    results: dict[str, Any]
    data: dict[str, Any]  # the whole file


def read_report(folder: str | Path, command: str, argument: str) -> StoredReport:
    """The ``report.json`` in ``folder``, the output of ``sdguard COMMAND`` (e.g. ``"audit data"``).

    Raises :class:`~sdguard.core.errors.InputError` naming ``argument`` (the option that gave the
    folder, e.g. ``"--clusters"``) and ``folder`` when the file is missing, unreadable or not JSON,
    written by another command, or of a schema version not in :data:`READABLE_SCHEMA_VERSIONS`.
    """
    name = str(folder)
    path = Path(folder) / "report.json"
    expected = f"the output folder of `sdguard {command}` is expected"
    if not path.is_file():
        raise InputError.bad(argument, name, f"holds no report.json ({expected})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError.bad(argument, name, f"has a report.json that cannot be read ({exc})") from None
    except json.JSONDecodeError as exc:
        raise InputError.bad(argument, name, f"has a corrupt report.json ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict) or not isinstance(data.get("command"), str):
        raise InputError.bad(argument, name, f"has a report.json that is not an sdguard report ({expected})")
    if data["command"] != command:
        raise InputError.bad(argument, name, f"is the output of `sdguard {data['command']}`, not of "
                             f"`sdguard {command}`")
    version = data.get("schema_version")
    if isinstance(version, bool) or version not in READABLE_SCHEMA_VERSIONS:
        readable = ", ".join(str(v) for v in READABLE_SCHEMA_VERSIONS)
        raise InputError.bad(argument, name, f"has a report.json of schema version {version!r}, which this sdguard "
                             f"does not read (it reads version {readable})")
    results, config = data.get("results"), data.get("config")
    if not isinstance(results, dict) or not isinstance(config, (dict, type(None))):
        raise InputError.bad(argument, name, "has a report.json without its results")
    return StoredReport(Path(folder), command, version, config or {}, results, data)


__all__ = ["READABLE_SCHEMA_VERSIONS", "StoredReport", "read_report"]
