"""Atomic writes and output folders.

Every command writes into ``--out DIR``. A run builds its output in a staging folder beside
``DIR`` (``.DIR.partial``) and renames it into place when it succeeds, so a failed or killed run
never leaves a half-written ``DIR``. Resumable runs keep the staging folder when they fail and
pick it up again with ``resume=True``. Single files are written to a temporary name and renamed.

An output is guarded (:func:`output_dir`): ``--overwrite`` replaces only a folder sdguard wrote
(its :data:`MARKER`), an output never overlaps an input, and one run at a time holds a folder
(``.DIR.lock`` beside it).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterable, Iterator

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

from .errors import InputError


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def read_text(path: str | Path, argument: str) -> str:
    """The text of a UTF-8 file, a byte-order mark dropped. A file that cannot be read, or is not
    UTF-8, is one sentence naming ``argument``, the file and the line of the first bad byte."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise InputError.bad(argument, str(path), f"could not be read ({exc.strerror or exc})") from None
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        head = data[:exc.start]  # lines end at \n, \r\n or \r
        line = head.count(b"\n") + head.count(b"\r") - head.count(b"\r\n") + 1
        raise InputError.bad(argument, str(path), f"is not UTF-8 text: line {line} holds bytes that are not UTF-8 "
                             f"({exc.reason}); save the file as UTF-8") from None


def read_json_lines(path: str | Path, argument: str, hint: str = "") -> list[tuple[int, dict]]:
    """``(line number, object)`` for each non-blank line of a UTF-8 JSON-lines file (:func:`read_text`);
    a line that is not JSON, or not a JSON object, is one sentence naming ``argument``, the file and
    the line (``hint``, if given, says what the file should hold)."""
    out = []
    tail = f"; {hint}" if hint else ""
    for number, line in enumerate(read_text(path, argument).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise InputError.bad(argument, str(path), f"line {number} is not JSON "
                                 f"({getattr(exc, 'msg', exc)}){tail}") from None
        if not isinstance(row, dict):
            raise InputError.bad(argument, str(path), f"line {number} is not a JSON object{tail}")
        out.append((number, row))
    return out


def to_jsonable(obj: Any) -> Any:
    """Convert numpy scalars/arrays, paths, sets and dataclass-like objects for JSON."""
    try:
        import numpy as np
    except ImportError:  # pragma: no cover
        np = None
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if np is not None:
        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    if hasattr(obj, "model_dump"):
        return to_jsonable(obj.model_dump(mode="json"))
    if isinstance(obj, float) and obj != obj:  # NaN is not JSON
        return None
    return obj


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(to_jsonable(obj), indent=2, sort_keys=False) + "\n")


# -- output folders --------------------------------------------------------------------------------

#: the file that marks a folder as sdguard's: ``{"command", "schema_version"}`` (in staging folders
#: also ``"resumable"``)
MARKER = ".sdguard.json"
MARKER_SCHEMA = 1
_FULL_DISK = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def _absolute(path: str | Path) -> Path:
    return Path(os.path.abspath(os.path.expanduser(os.fspath(path))))


def _staging_path(out: str | Path) -> Path:
    out = _absolute(out)
    return out.parent / f".{out.name}.partial"


def staging_dir_of(out: str | Path) -> Path:
    """Where a resumable run on ``out`` keeps its work until it completes."""
    return _staging_path(out)


def read_json_or_none(path: Path) -> Any:
    """The JSON in ``path``, or None when it cannot be read or is not JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def is_sdguard_output(folder: str | Path) -> bool:
    """Whether ``folder`` was written by sdguard: its marker (:data:`MARKER`), or a ``report.json``
    with a ``schema_version`` and a ``command`` (what sdguard wrote before markers)."""
    for name in (MARKER, "report.json"):
        data = read_json_or_none(Path(folder) / name)
        if isinstance(data, dict) and isinstance(data.get("schema_version"), int) and data.get("command"):
            return True
    return False


def _write_marker(folder: Path, command: str, **extra: Any) -> None:
    atomic_write_json(folder / MARKER, {"command": command, "schema_version": MARKER_SCHEMA, **extra})


def _creation_problem(path: Path) -> str | None:
    """Why nothing can be made at ``path``: a file on the way (``afile/sub``) or a folder without
    write permission (the first folder of its parents that exists)."""
    first = path.parent
    while not first.exists() and not first.is_symlink() and first != first.parent:
        first = first.parent
    if not first.is_dir():
        return f"cannot be created: {str(first)!r} is not a folder"
    if not os.access(first, os.W_OK | os.X_OK):
        return f"cannot be created: the folder {str(first)!r} is not writable"
    return None


def check_writable_folder(path: str | Path, argument: str) -> None:
    """Refuse a folder sdguard is to write in (``--cache-dir``) when it is a file, or cannot be
    created or written."""
    p = Path(os.path.expanduser(os.fspath(path)))
    if p.exists() and not p.is_dir():
        raise InputError.bad(argument, str(path), "is a file, not a folder")
    if p.is_dir():
        problem = None if os.access(p, os.W_OK | os.X_OK) else "is not writable"
    else:
        problem = _creation_problem(p)
    if problem:
        raise InputError.bad(argument, str(path), problem)


def _inside(a: Path, b: Path) -> bool:
    """``a`` is ``b`` or lies inside it (real paths)."""
    return a == b or b in a.parents


def _check_path(given: str, argument: str, inputs: Iterable[tuple[str, Any]]) -> None:
    """What needs no look inside ``--out``: not a symlink or a file, creatable, no overlap with an input."""
    out = Path(os.path.expanduser(given))
    if out.is_symlink():
        raise InputError.bad(argument, given, "is a symbolic link; give the folder itself or another folder "
                             "(nothing was written)")
    if out.exists() and not out.is_dir():
        raise InputError.bad(argument, given, "is a file, not a folder")
    problem = _creation_problem(out)
    if problem:
        raise InputError.bad(argument, given, problem)
    real = Path(os.path.realpath(out))
    for name, value in inputs:
        if value is None or not str(value).strip() or not _absolute(value).exists():
            continue  # builtin:NAME, a hub id: nothing on disk to protect
        src = Path(os.path.realpath(_absolute(value)))
        relation = "is" if real == src else "lies inside" if _inside(real, src) else "contains" if _inside(src, real) \
            else None
        if relation:
            raise InputError.bad(argument, given, f"{relation} the input {name} {str(value)!r}; an output never "
                                 "overlaps an input: choose another folder (nothing was written)")


def _home() -> Path | None:
    try:
        return Path.home().resolve()
    except (RuntimeError, OSError):  # no HOME and no password entry
        return None


def _check_contents(out: Path, given: str, argument: str, overwrite: bool) -> None:
    """Refuse an existing ``out`` unless it is empty, or sdguard's, writable and ``overwrite`` is given;
    never the current folder (or one holding it) or the home folder."""
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise InputError.bad(argument, given, "already exists and is not empty; pass --overwrite to replace it")
        if not is_sdguard_output(out):
            raise InputError.bad(argument, given, "holds files sdguard did not write; choose another folder "
                                 "(nothing was deleted)")
    real = Path(os.path.realpath(out))
    with contextlib.suppress(OSError):
        if _inside(Path.cwd().resolve(), real):
            raise InputError.bad(argument, given, "is the current folder or holds it; choose a folder inside it "
                                 "(nothing was deleted)")
    if real in (_home(), Path(real.anchor)):
        raise InputError.bad(argument, given, "is your home folder or the root; choose a folder inside it "
                             "(nothing was deleted)")
    if out.is_dir() and overwrite:
        for root, _dirs, _files in os.walk(out):
            if not os.access(root, os.W_OK | os.X_OK):
                where = "" if Path(root) == out else f" ({root!r} is not writable)"
                raise InputError.bad(argument, given, f"is read-only{where}; --overwrite cannot replace it "
                                     "(nothing was deleted)")


def _has_work(staging: Path) -> bool:
    return staging.is_dir() and any(p.name != MARKER for p in staging.iterdir())


def _prepare_staging(staging: Path, given: str, argument: str, command: str, *, resume: bool, overwrite: bool,
                     resumable: bool) -> None:
    """Reuse (``resume``), refuse (an interrupted resumable run) or clear an earlier staging folder."""
    if staging.is_symlink() or (staging.exists() and not staging.is_dir()):
        staging.unlink()
    if not staging.exists():
        return
    info = read_json_or_none(staging / MARKER)
    info = info if isinstance(info, dict) else {}
    if resume:
        if info.get("command") not in (None, command):
            raise InputError.bad("--resume", given, f"has an interrupted run of `{info['command']}`, not of "
                                 f"`{command}`, in {str(staging)!r}; pass --overwrite instead to start anew")
        return
    if not overwrite and info.get("resumable", resumable) and _has_work(staging):
        raise InputError.bad(argument, given, f"has an interrupted run in {str(staging)!r}; pass --resume to "
                             "continue it or --overwrite to start anew")
    shutil.rmtree(staging)  # a killed run's leftovers (no run holds them: we hold the lock)


def _put_in_place(staging: Path, out: Path) -> None:
    """Rename ``staging`` to ``out``; an existing ``out`` (checked replaceable) is moved aside first
    and removed afterwards, so that ``out`` is never half-deleted."""
    if not out.exists():
        os.replace(staging, out)
        return
    old = out.parent / f".{out.name}.old"
    if old.is_symlink() or old.is_file():
        old.unlink()
    elif old.exists():
        shutil.rmtree(old)
    os.replace(out, old)
    try:
        os.replace(staging, out)
    except BaseException:
        os.replace(old, out)
        raise
    try:
        shutil.rmtree(old)
    except OSError as exc:  # the result is in place; only the replaced copy is left over
        warnings.warn(f"the replaced folder {str(old)!r} could not be removed: {exc}", RuntimeWarning, stacklevel=3)


def kept_staging(exc: BaseException) -> Path | None:
    """The staging folder a failed resumable run kept (``--resume`` continues it), if it still exists."""
    staging = getattr(exc, "sdguard_staging", None)
    return staging if isinstance(staging, Path) and staging.is_dir() else None


@contextlib.contextmanager
def _lock(out: Path, given: str, argument: str) -> Iterator[None]:
    """Hold ``.OUT.lock`` beside ``out`` (``flock``) for the run; a second run is refused at once."""
    path = out.parent / f".{out.name}.lock"
    if fcntl is None:  # pragma: no cover - not POSIX: no lock
        yield
        return
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise InputError.bad(argument, given, f"is in use by another sdguard run (pid {pid})") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the file was removed by the run that held it: lock the new one
    try:
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode("ascii"))
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)


@contextlib.contextmanager
def output_dir(out: str | Path, *, command: str, overwrite: bool = False, resume: bool = False,
               resumable: bool = False, inputs: Iterable[tuple[str, Any]] = (),
               argument: str = "--out") -> Iterator[Path]:
    """Yield a staging folder for a run whose result must appear at ``out`` all at once.

    - ``out`` must not be a symlink or a file, and must not be, hold or lie inside one of
      ``inputs`` (``(argument, path)`` pairs; paths that do not exist, such as hub ids, are skipped).
    - an existing non-empty ``out`` is refused unless ``overwrite`` and it is sdguard's
      (:func:`is_sdguard_output`) and writable; it is replaced when the run succeeds.
    - one run at a time holds ``out`` (a lock file beside it).
    - ``resumable``: a failed or interrupted run keeps its staging folder (when it holds anything),
      ``resume`` reuses it, and a new run without either flag is refused; otherwise a failed run
      removes it. A full disk becomes an :class:`InputError` naming ``argument``.
    - the result carries :data:`MARKER` (``command``), so a later ``overwrite`` knows it.
    """
    given, out = str(out), _absolute(out)
    _check_path(given, argument, inputs)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError.bad(argument, given, f"cannot be created ({exc.strerror or exc})") from None
    staging = _staging_path(out)
    with _lock(out, given, argument):
        _check_contents(out, given, argument, overwrite)
        _prepare_staging(staging, given, argument, command, resume=resume, overwrite=overwrite, resumable=resumable)
        staging.mkdir(exist_ok=True)
        _write_marker(staging, command, resumable=resumable)
        try:
            yield staging
            _write_marker(staging, command)
            _put_in_place(staging, out)
        except BaseException as exc:
            full = _failed(exc, staging, resumable, given, argument)
            if full is not None:
                raise full from exc
            raise


def _failed(exc: BaseException, staging: Path, resumable: bool, given: str, argument: str) -> InputError | None:
    """After a failed run: keep a resumable run's staging folder (recorded on ``exc`` for
    :func:`kept_staging`) or remove it; a full disk becomes the sentence that replaces ``exc``."""
    if resumable and _has_work(staging):
        exc.sdguard_staging = staging  # type: ignore[attr-defined]
    else:
        shutil.rmtree(staging, ignore_errors=True)
    if not (isinstance(exc, OSError) and exc.errno in _FULL_DISK):
        return None
    full = InputError.bad(argument, given, f"could not be written: the disk is full ({exc.strerror or exc})")
    full.sdguard_staging = getattr(exc, "sdguard_staging", None)  # type: ignore[attr-defined]
    return full
