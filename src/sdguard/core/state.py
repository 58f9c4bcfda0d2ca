"""State files that never execute code: tensors in safetensors, everything else in JSON.

One checkpoint format for every resumable loop (the tiny recipe, ESD, and the coming
fine-tuning, DP and federated loops): a checkpoint ``NAME`` is two files written atomically,
``NAME.safetensors`` (every tensor: weights, optimizer moments, random-generator states) and
``NAME.json`` (the format version, the run's *key* -- everything that must match for a resume
to be the same run -- the loop's JSON state, the skeleton of nested state dicts and the
SHA-256 of the tensor file). :func:`load_checkpoint` refuses a file that is corrupt, that
another run wrote, or whose tensors do not match its JSON, with one sentence naming it
(:class:`~sdguard.core.errors.StateError`, exit code 2); :func:`check_checkpoint` does the checks
of the record alone (no tensor read), for a run to refuse another run's checkpoint before its
expensive work, and :func:`restoring` turns a loaded state that does not fit the run into the
same kind of sentence. Nothing else in a staging folder is read: a planted file never runs.

Nested state (``optimizer.state_dict()``, ``{"unet": module.state_dict(), ...}``) is flattened
by :func:`flatten` into ``"a/b/0/exp_avg"`` tensor keys and a JSON skeleton, and rebuilt by
:func:`unflatten`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
from pathlib import Path
from typing import Any, Iterator

from .errors import SdguardError, StateError
from .io import atomic_write_bytes, atomic_write_text, to_jsonable

FORMAT = "sdguard-checkpoint"
VERSION = 1
#: what a refused resume suggests instead (a run without --resume refuses an interrupted one)
_ANEW = "start anew with --overwrite instead of --resume"
_TENSOR = "__tensor__"
_FLOAT = "__float__"


def flatten(obj: Any, prefix: str = "") -> tuple[dict[str, Any], Any]:
    """Split nested dicts/lists holding tensors into ``{key: tensor}`` and a JSON skeleton.

    Tensor keys are the paths to the tensors (``"state/0/exp_avg"``), made unique where two paths
    spell the same (``{"a/b": x}`` and ``{"a": {"b": y}}``); a tensor whose memory overlaps one
    already taken (tied weights, the same tensor twice) is copied, as safetensors stores no
    shared memory. Non-finite floats keep their value (JSON has no NaN).
    """
    import torch

    tensors: dict[str, Any] = {}
    taken: dict[int, list[tuple[int, int]]] = {}  # storage -> byte ranges already in ``tensors``

    def own(t: Any) -> Any:
        t = t.detach().cpu().contiguous()
        ptr, size = t.untyped_storage().data_ptr(), t.numel() * t.element_size()
        start = t.storage_offset() * t.element_size()
        ranges = taken.setdefault(ptr, [])
        if size and any(start < e and s < start + size for s, e in ranges):
            return t.clone()
        ranges.append((start, start + size))
        return t

    def walk(o: Any, path: str) -> Any:
        if isinstance(o, torch.Tensor):
            key, n = path or "value", 1
            while key in tensors:
                n += 1
                key = f"{path or 'value'}#{n}"
            tensors[key] = own(o)
            return {_TENSOR: key}
        if isinstance(o, dict):
            return {"__dict__": [[_key(k), walk(v, f"{path}/{k}" if path else str(k))] for k, v in o.items()]}
        if isinstance(o, (list, tuple)):
            return [walk(v, f"{path}/{i}" if path else str(i)) for i, v in enumerate(o)]
        if isinstance(o, float) and not math.isfinite(o):
            return {_FLOAT: repr(o)}
        return to_jsonable(o)

    skeleton = walk(obj, prefix)
    return tensors, skeleton


def _key(k: Any) -> Any:
    # optimizer state dicts key their state by int; keep the type through JSON
    return {"int": k} if isinstance(k, int) and not isinstance(k, bool) else k


def unflatten(skeleton: Any, tensors: dict[str, Any]) -> Any:
    """The inverse of :func:`flatten`."""
    if isinstance(skeleton, dict):
        if set(skeleton) == {_TENSOR}:
            return tensors[skeleton[_TENSOR]]
        if set(skeleton) == {_FLOAT}:
            return float(skeleton[_FLOAT])
        if set(skeleton) == {"__dict__"}:
            out = {}
            for k, v in skeleton["__dict__"]:
                out[k["int"] if isinstance(k, dict) else k] = unflatten(v, tensors)
            return out
        return {k: unflatten(v, tensors) for k, v in skeleton.items()}
    if isinstance(skeleton, list):
        return [unflatten(v, tensors) for v in skeleton]
    return skeleton


def checkpoint_paths(folder: str | Path, name: str) -> tuple[Path, Path]:
    folder = Path(folder)
    return folder / f"{name}.safetensors", folder / f"{name}.json"


def checkpoint_exists(folder: str | Path, name: str) -> bool:
    return any(p.exists() for p in checkpoint_paths(folder, name))


def remove_checkpoint(folder: str | Path, name: str) -> None:
    for p in checkpoint_paths(folder, name):
        p.unlink(missing_ok=True)


def save_checkpoint(folder: str | Path, name: str, *, key: dict, state: Any) -> None:
    """Write ``state`` (nested dicts/lists of tensors and JSON values) as checkpoint ``name``.

    ``key`` (JSON) identifies the run; a resume with another key is refused. The tensor file is
    written first and the JSON, which names its hash, last: a kill in between leaves the old JSON
    pointing at a hash the new tensor file does not have, and the resume refuses it.
    """
    from safetensors.torch import save

    tensors, skeleton = flatten(state)
    data = save(tensors) if tensors else save({})
    st, js = checkpoint_paths(folder, name)
    atomic_write_bytes(st, data)
    meta = {"format": FORMAT, "version": VERSION, "key": to_jsonable(key), "sha256": hashlib.sha256(data).hexdigest(),
            "state": skeleton}
    atomic_write_text(js, json.dumps(meta) + "\n")


def check_checkpoint(folder: str | Path, name: str, *, key: dict, argument: str = "--resume") -> dict | None:
    """The JSON record of checkpoint ``name`` (``None`` if there is none), checked without reading
    its tensors: both files present, the record readable, its version and its ``key`` this run's.

    A run calls it before its expensive work, so that another run's checkpoint is refused first;
    :func:`load_checkpoint` checks the same and the tensors. Raises :class:`StateError`.
    """
    meta = _read_record(folder, name, argument)
    if meta is not None:
        _check_key(meta, key, checkpoint_paths(folder, name)[1], argument)
    return meta


def _read_record(folder: str | Path, name: str, argument: str) -> dict | None:
    st, js = checkpoint_paths(folder, name)
    if not st.exists() and not js.exists():
        return None
    for p in (st, js):
        if not p.is_file():
            raise StateError.bad(argument, str(p), f"is missing: the checkpoint is incomplete; {_ANEW}")
    try:
        meta = json.loads(js.read_text("utf-8"))
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ValueError("not an sdguard checkpoint")
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise StateError.bad(argument, str(js), f"is not a readable sdguard checkpoint ({_short(exc)}); {_ANEW}") from None
    if meta.get("version") != VERSION:
        raise StateError.bad(argument, str(js), f"has checkpoint version {_shown(meta.get('version'))}, this sdguard "
                             f"reads {VERSION}")
    return meta


def _check_key(meta: dict, key: dict, js: Path, argument: str) -> None:
    want = json.loads(json.dumps(to_jsonable(key)))  # as it reads back from the file
    if meta.get("key") != want:
        diff, theirs, ours = first_difference(meta.get("key"), want)
        raise StateError.bad(argument, str(js), f"was written by another run ({diff}: {_shown(theirs)} there, "
                             f"{_shown(ours)} now); {_ANEW}, or resume with the same arguments")


def load_checkpoint(folder: str | Path, name: str, *, key: dict, argument: str = "--resume") -> Any | None:
    """The state saved as checkpoint ``name`` in ``folder``, or ``None`` if there is none.

    Raises :class:`StateError` naming the file when it is unreadable, truncated, altered or was
    written by a run whose ``key`` differs (the first differing entry is named). Only JSON and
    safetensors are read: nothing in the folder can run code.
    """
    from safetensors.torch import load

    meta = _read_record(folder, name, argument)
    if meta is None:
        return None
    st, js = checkpoint_paths(folder, name)
    data = st.read_bytes()
    if hashlib.sha256(data).hexdigest() != meta.get("sha256"):
        raise StateError.bad(argument, str(st), "does not match its checkpoint record (corrupt or half-written); "
                             f"{_ANEW}")
    _check_key(meta, key, js, argument)
    try:
        tensors = load(data)
    except Exception as exc:  # a malformed tensor file that still hashes as recorded
        raise StateError.bad(argument, str(st), f"is not a readable safetensors file ({type(exc).__name__})") from None
    with restoring(folder, name, argument):
        return unflatten(meta.get("state"), tensors)


@contextlib.contextmanager
def restoring(folder: str | Path, name: str, argument: str = "--resume") -> Iterator[None]:
    """Apply a loaded checkpoint inside this block: a state that does not fit the run (a missing
    entry, a tensor of another shape: a hand-made or foreign record) becomes a :class:`StateError`
    naming the record instead of a traceback."""
    try:
        yield
    except SdguardError:
        raise
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
        raise StateError.bad(argument, str(checkpoint_paths(folder, name)[1]), f"holds a state that does not fit "
                             f"this run ({type(exc).__name__}: {_short(exc)}); {_ANEW}") from None


def other_run(out: str | Path, what: str, theirs: str, ours: str) -> StateError:
    """The sentence that refuses to resume ``out`` as another run: ``what`` ("the model",
    "--steps") differs, with its value in the interrupted run and now."""
    return StateError(f"--resume {str(out)!r}: {what} differs from the interrupted run's ({theirs} there, {ours} "
                      "now); start anew with --overwrite, or resume with the interrupted run's arguments.")


def fingerprint_shown(fp: Any) -> str:
    """A weight or data fingerprint as messages show it: ``fingerprint 2b6773faac31…``."""
    return f"fingerprint {str(fp)[:12]}…" if fp else "no fingerprint recorded"


def _shown(value: Any) -> str:
    """A key entry in a message: long strings (fingerprints) cut to 12 characters."""
    if isinstance(value, str) and len(value) > 24:
        return repr(value[:12] + "…")
    return repr(value)


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()).rstrip(".")
    return text if len(text) <= 120 else text[:117] + "..."


def first_difference(theirs: Any, ours: Any, path: str = "") -> tuple[str, Any, Any]:
    """The first entry (``"options.eta"``) where two JSON keys differ, and its two values."""
    if isinstance(theirs, dict) and isinstance(ours, dict):
        for k in sorted(set(theirs) | set(ours)):
            if theirs.get(k) != ours.get(k):
                return first_difference(theirs.get(k), ours.get(k), f"{path}.{k}" if path else k)
    return path or "key", theirs, ours
