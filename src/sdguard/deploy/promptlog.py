"""The service's prompt log, encrypted at rest (AES-256-GCM, ``cryptography``'s AEAD).

One JSON line per request: ``{"v": 1, "kid": FINGERPRINT, "seq": N, "nonce": B64, "data": B64}``,
where ``data`` is the AES-GCM encryption of the record (time, API key name, prompt, parameters,
outcome) under a key derived from the prompt-log key (``SDGUARD_LOG_KEY`` by default), a fresh
96-bit random nonce per record, and the key id and sequence number as associated data (so a line
moved, replayed under another number or re-labelled does not authenticate). Nothing of the prompt
is readable without the key: ``sdguard log read LOG --key ...``.

Key rotation: start the service with a new key (a new log file, or the same one: each line names
its key id), keep the old key until ``sdguard log rekey LOG --key OLD --new-key NEW --out NEW_LOG``
has re-encrypted the old lines under the new key, then destroy the old key. ``log read`` takes
several ``--key`` options and reads each line with the key whose id it names.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from pathlib import Path

from ..core.errors import InputError, MissingDependencyError
from ..core.keys import SecretKey, read_secret

DEFAULT_LOG_KEY_ENV = "SDGUARD_LOG_KEY"


def log_key(spec: str | None = None, argument: str = "--key") -> SecretKey:
    return SecretKey(read_secret(spec, default_env=DEFAULT_LOG_KEY_ENV, argument=argument, kind="prompt log key"),
                     "prompt log key", argument)


def _aead(key: SecretKey):
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError:
        raise MissingDependencyError("cryptography", "deploy", "the encrypted prompt log") from None
    return AESGCM(key.derive("prompt-log-aes-256-gcm"))


def _aad(kid: str, seq: int) -> bytes:
    return f"sdguard-prompt-log\0v1\0{kid}\0{seq}".encode()


def seal(key: SecretKey, seq: int, record: dict) -> str:
    nonce = os.urandom(12)
    data = _aead(key).encrypt(nonce, json.dumps(record, sort_keys=True).encode(), _aad(key.fingerprint, seq))
    return json.dumps({"v": 1, "kid": key.fingerprint, "seq": seq, "nonce": base64.b64encode(nonce).decode(),
                       "data": base64.b64encode(data).decode()})


class PromptLog:
    """Append-only encrypted log; thread-safe; each line flushed and fsynced before the call returns."""

    def __init__(self, path: str | Path, key: SecretKey):
        self.path, self.key, self._lock = Path(path), key, threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._seq = sum(1 for _ in self.path.open(encoding="utf-8")) if self.path.is_file() else 0

    def append(self, **record) -> None:
        record.setdefault("time", round(time.time(), 3))
        with self._lock:
            line = seal(self.key, self._seq, record)
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(line + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            self._seq += 1


def read_log(path: str | Path, keys: list[SecretKey], argument: str = "LOG") -> list[dict]:
    """Every record of the log at ``path``, decrypted with the key each line names; a line whose key
    is not among ``keys``, or that does not authenticate, is one sentence naming its line."""
    path = Path(path)
    if not path.is_file():
        raise InputError.bad(argument, str(path), "names no file")
    by_id = {k.fingerprint: k for k in keys}
    out = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            kid, seq = row["kid"], int(row["seq"])
            nonce, data = base64.b64decode(row["nonce"]), base64.b64decode(row["data"])
        except (ValueError, KeyError, TypeError):
            raise InputError.bad(argument, str(path), f"line {number} is not a prompt-log record") from None
        if kid not in by_id:
            raise InputError.bad("--key", "(hidden)", f"does not open line {number} of {path}: it is encrypted with "
                                 f"prompt log key {kid}, and the keys given are {sorted(by_id)}")
        try:
            plain = _aead(by_id[kid]).decrypt(nonce, data, _aad(kid, seq))
        except Exception:  # cryptography raises InvalidTag
            raise InputError.bad(argument, str(path), f"line {number} does not authenticate (it was changed)") from None
        out.append({"seq": seq, "key": kid, **json.loads(plain)})
    return out


def rekey_log(path: str | Path, keys: list[SecretKey], new_key: SecretKey, out: str | Path) -> int:
    """Re-encrypt every record of ``path`` under ``new_key`` into ``out`` (key rotation)."""
    records = read_log(path, keys)
    lines = [seal(new_key, i, {k: v for k, v in r.items() if k not in ("seq", "key")}) for i, r in enumerate(records)]
    from ..core.io import atomic_write_text

    atomic_write_text(out, "".join(line + "\n" for line in lines))
    return len(lines)
