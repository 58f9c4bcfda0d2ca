"""Secret keys: 32 bytes that never reach a report, a log or a command line.

A key option names *where* the key is, never the key: ``env:NAME`` (an environment variable
holding 64 hex digits) or ``file:PATH`` (a file holding 64 hex digits or 32 raw bytes). Every use
derives its own material with HMAC-SHA256 under a label (``payload``, ``weights``, ``prompt-log``,
...), so one key can serve several purposes without one revealing another. Reports and logs carry
only :attr:`SecretKey.fingerprint` (the first 16 hex digits of SHA-256 over a per-kind label and
the key), which identifies a key without exposing it. The watermark keys
(:mod:`sdguard.harden.watermark.keys`) and the deployment keys (:mod:`sdguard.deploy`) are both
loaded here.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError

KEY_BYTES = 32


@dataclass(frozen=True)
class SecretKey:
    """A 32-byte secret; ``repr`` and ``str`` show the fingerprint only. ``kind`` names the purpose
    (in messages and in the fingerprint's label, so one secret has a different fingerprint per kind)."""

    secret: bytes = field(repr=False)
    kind: str = "key"
    argument: str = field(default="--key", repr=False, compare=False)

    def __post_init__(self):
        if len(self.secret) != KEY_BYTES:
            raise InputError.bad(self.argument, f"({len(self.secret)} bytes)", f"is not a {self.kind}: a key is "
                                 f"{KEY_BYTES} bytes ({2 * KEY_BYTES} hex digits)")

    @property
    def fingerprint(self) -> str:
        label = f"sdguard-{self.kind.replace(' ', '-')}-fingerprint\0".encode()
        return hashlib.sha256(label + self.secret).hexdigest()[:16]

    def derive(self, label: str, n_bytes: int = 32) -> bytes:
        """``n_bytes`` of key material for ``label`` (HMAC-SHA256 in counter mode)."""
        out, counter = b"", 0
        while len(out) < n_bytes:
            out += hmac.new(self.secret, f"{label}\0{counter}".encode(), hashlib.sha256).digest()
            counter += 1
        return out[:n_bytes]

    def rng(self, label: str) -> np.random.Generator:
        """A numpy generator seeded from the key material of ``label``."""
        return np.random.default_rng(np.frombuffer(self.derive(label, 32), dtype=np.uint32))

    def bits(self, label: str, n: int) -> np.ndarray:
        """``n`` key-derived bits (0/1, ``uint8``)."""
        raw = np.frombuffer(self.derive(label, (n + 7) // 8), dtype=np.uint8)
        return np.unpackbits(raw)[:n]

    def __str__(self) -> str:
        return f"{self.kind} {self.fingerprint}"

    def hex(self) -> str:
        """The secret as hex, for writing a key file (never for a report)."""
        return self.secret.hex()


def new_secret() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def _parse(text: bytes, where: str, argument: str, kind: str) -> bytes:
    stripped = text.strip()
    if len(text) == KEY_BYTES and not all(chr(c) in "0123456789abcdefABCDEF" for c in text):
        return text
    try:
        secret = bytes.fromhex(stripped.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise InputError.bad(argument, where, f"does not hold a key: write {2 * KEY_BYTES} hex digits") from None
    if len(secret) != KEY_BYTES:
        raise InputError.bad(argument, where, f"holds a key of {len(secret)} bytes; a {kind} is {KEY_BYTES} "
                             f"bytes ({2 * KEY_BYTES} hex digits)")
    return secret


def read_secret(spec: str | None, *, default_env: str, argument: str = "--key", kind: str = "key") -> bytes:
    """The 32 bytes named by ``spec`` (``env:NAME``, ``file:PATH``; None: ``env:<default_env>``).
    A missing or malformed key's message names where it was looked for, never its content."""
    spec = spec or f"env:{default_env}"
    source, _, where = spec.partition(":")
    if source == "env" and where:
        value = os.environ.get(where)
        if not value:
            raise InputError.bad(argument, spec, f"names an environment variable that is not set (put {2 * KEY_BYTES} "
                                 "hex digits in it)")
        return _parse(value.encode(), spec, argument, kind)
    if source == "file" and where:
        path = Path(where).expanduser()
        if not path.is_file():
            raise InputError.bad(argument, spec, "names no file")
        return _parse(path.read_bytes(), spec, argument, kind)
    raise InputError.bad(argument, "(hidden)", "is not where a key is: write env:NAME or file:PATH (a key is never "
                         "given on the command line)")


def write_private_file(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to a new file readable by its owner only from the start (refuses to replace one)."""
    path = Path(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    return path


def write_key_file(path: str | Path, secret: bytes) -> Path:
    """Write ``secret`` as hex to a new owner-only file."""
    return write_private_file(path, (secret.hex() + "\n").encode())
