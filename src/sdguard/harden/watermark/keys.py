"""Watermark keys: secrets that never reach a report, a log or a command line.

A key is 32 bytes (256 bits), read from an environment variable (``SDGUARD_WATERMARK_KEY`` by
default, hex) or a key file (hex text or 32 raw bytes); ``--key`` names where it is
(``env:NAME`` or ``file:PATH``), never the key itself. What the schemes need is derived from it
with HMAC-SHA256 under a label per use (``payload``, ``pattern``, ``latent``, ...), so one key
serves every scheme without one use revealing another's bits; reports carry only
:attr:`WatermarkKey.fingerprint` (the first 16 hex digits of SHA-256 over a fixed label and the
key), which identifies a key without exposing it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...core.errors import InputError

KEY_BYTES = 32
DEFAULT_ENV = "SDGUARD_WATERMARK_KEY"


@dataclass(frozen=True)
class WatermarkKey:
    """A 32-byte secret; ``repr`` and ``str`` show the fingerprint only."""

    secret: bytes = field(repr=False)

    def __post_init__(self):
        if len(self.secret) != KEY_BYTES:
            raise InputError.bad("--key", f"({len(self.secret)} bytes)", f"is not a watermark key: a key is "
                                 f"{KEY_BYTES} bytes ({2 * KEY_BYTES} hex digits)")

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(b"sdguard-watermark-key-fingerprint\0" + self.secret).hexdigest()[:16]

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
        """``n`` key-derived bits (0/1, ``uint8``): e.g. the zero-bit payload a detector looks for."""
        raw = np.frombuffer(self.derive(label, (n + 7) // 8), dtype=np.uint8)
        return np.unpackbits(raw)[:n]

    def __str__(self) -> str:
        return f"watermark key {self.fingerprint}"

    @classmethod
    def generate(cls) -> "WatermarkKey":
        return cls(secrets.token_bytes(KEY_BYTES))

    def hex(self) -> str:
        """The secret as hex, for writing a key file (never for a report)."""
        return self.secret.hex()


def _parse(text: bytes, where: str) -> bytes:
    stripped = text.strip()
    if len(text) == KEY_BYTES and not all(chr(c) in "0123456789abcdefABCDEF" for c in text):
        return text
    try:
        secret = bytes.fromhex(stripped.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise InputError.bad("--key", where, f"does not hold a key: write {2 * KEY_BYTES} hex digits") from None
    if len(secret) != KEY_BYTES:
        raise InputError.bad("--key", where, f"holds a key of {len(secret)} bytes; a watermark key is {KEY_BYTES} "
                             f"bytes ({2 * KEY_BYTES} hex digits)")
    return secret


def load_key(spec: str | None = None) -> WatermarkKey:
    """The key named by ``spec``: ``env:NAME``, ``file:PATH`` or None (``env:SDGUARD_WATERMARK_KEY``).
    The message of a missing or malformed key names where it was looked for, never its content."""
    spec = spec or f"env:{DEFAULT_ENV}"
    kind, _, where = spec.partition(":")
    if kind == "env" and where:
        value = os.environ.get(where)
        if not value:
            raise InputError.bad("--key", spec, f"names an environment variable that is not set (put {2 * KEY_BYTES} "
                                 "hex digits in it)")
        return WatermarkKey(_parse(value.encode(), spec))
    if kind == "file" and where:
        path = Path(where)
        if not path.is_file():
            raise InputError.bad("--key", spec, "names no file")
        return WatermarkKey(_parse(path.read_bytes(), spec))
    raise InputError.bad("--key", "(hidden)", "is not where a key is: write env:NAME or file:PATH (a key is never "
                         "given on the command line)")
