"""The error contract shared by the library and the CLI.

Every error a user can cause carries one clear sentence that names the argument and the value,
and an exit code (DESIGN.md): 0 ok, 1 an audit gate failed, 2 usage or input error, 3 a missing
optional dependency, 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import importlib
from types import ModuleType

EXIT_OK = 0
EXIT_GATE = 1
EXIT_INPUT = 2
EXIT_DEPENDENCY = 3
EXIT_INTERRUPTED = 130


class SdguardError(Exception):
    """Base class of every error sdguard raises on purpose (exit code 2 unless a subclass says
    otherwise; the gate's code 1 belongs to :class:`GateFailed` alone)."""

    exit_code = EXIT_INPUT


class InputError(SdguardError, ValueError):
    """Bad input: a missing file, a wrong format, an out-of-range parameter (exit code 2)."""

    exit_code = EXIT_INPUT

    @classmethod
    def bad(cls, argument: str, value: object, problem: str) -> "InputError":
        """Build the one sentence of the contract: ``ARGUMENT 'VALUE' PROBLEM.`` The problem is
        one line whatever it quotes (a library's message may end in a newline, as pyarrow's do)."""
        sentence = f"{argument} {value!r} {' '.join(str(problem).split())}".rstrip()
        if not sentence.endswith("."):
            sentence += "."
        return cls(sentence)


class MissingDependencyError(SdguardError, ImportError):
    """An optional dependency is not installed (exit code 3); the message names the extra."""

    exit_code = EXIT_DEPENDENCY

    def __init__(self, module: str, extra: str, purpose: str | None = None):
        self.module, self.extra = module, extra
        what = f" for {purpose}" if purpose else ""
        super().__init__(
            f"the optional dependency '{module}' is needed{what} but is not installed; "
            f"install it with: pip install 'sdguard[{extra}]'"
        )


class WeightsUnavailable(SdguardError):
    """A metric needs pretrained weights that are not on this machine and cannot be downloaded
    here (exit code 3, as a missing dependency: the message says where the weights go)."""

    exit_code = EXIT_DEPENDENCY


class StateError(InputError):
    """A state file (checkpoint, cache entry) is corrupt or belongs to another run (exit code 2)."""

    exit_code = EXIT_INPUT


class GateFailed(SdguardError):
    """An audit measured a value above the user's ``--fail-above`` gate (exit code 1)."""

    exit_code = EXIT_GATE


class Interrupted(SdguardError):
    """The user interrupted a command (Ctrl-C; exit code 130). The command line turns a
    ``KeyboardInterrupt`` into it; ``staging`` is the work a resumable run kept, or None."""

    exit_code = EXIT_INTERRUPTED

    def __init__(self, staging=None):
        self.staging = staging
        super().__init__("interrupted")


def require(module: str, extra: str, purpose: str | None = None) -> ModuleType:
    """Import an optional dependency or raise :class:`MissingDependencyError` naming its extra."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependencyError(module.split(".")[0], extra, purpose) from exc


def reason(exc: BaseException, limit: int = 200) -> str:
    """What a library's exception says, fit for one sentence: its first non-empty line, at most
    ``limit`` characters, the exception's class name when it says nothing (pyarrow and others put
    newlines and whole tracebacks in their messages)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
