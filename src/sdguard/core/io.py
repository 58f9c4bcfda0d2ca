"""Atomic writes and output folders.

Every command writes into ``--out DIR``. A run builds its output in a staging folder beside
``DIR`` (``.DIR.partial``) and renames it into place when it succeeds, so a failed or killed run
never leaves a half-written ``DIR``. Resumable runs keep the staging folder when they fail and
pick it up again with ``resume=True``. Single files are written to a temporary name and renamed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

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


def _staging_path(out: Path) -> Path:
    return out.parent / f".{out.name}.partial"


@contextlib.contextmanager
def output_dir(
    out: str | Path, *, overwrite: bool = False, resume: bool = False, argument: str = "--out"
) -> Iterator[Path]:
    """Yield a staging folder for a run whose result must appear at ``out`` all at once.

    - ``out`` exists and is not empty: refused unless ``overwrite`` (then replaced on success).
    - ``resume``: an earlier staging folder of the same ``out`` is reused (checkpoints in it are
      the caller's to read); on failure the staging folder is kept so the run can resume.
    - otherwise a failed run removes its staging folder.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError.bad(argument, str(out), "is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise InputError.bad(argument, str(out), "already exists and is not empty; pass --overwrite to replace it")
    staging = _staging_path(out)
    if staging.exists() and not resume:
        shutil.rmtree(staging)
    staging.mkdir(parents=True, exist_ok=True)
    try:
        yield staging
    except BaseException:
        if not resume:
            shutil.rmtree(staging, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    os.replace(staging, out)


def staging_dir_of(out: str | Path) -> Path:
    """Where a resumable run on ``out`` keeps its work until it completes."""
    return _staging_path(Path(out))
