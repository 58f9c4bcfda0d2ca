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

from ...core.keys import KEY_BYTES, SecretKey, new_secret, read_secret

DEFAULT_ENV = "SDGUARD_WATERMARK_KEY"
__all__ = ["DEFAULT_ENV", "KEY_BYTES", "WatermarkKey", "load_key"]


class WatermarkKey(SecretKey):
    """A watermark key (:class:`~sdguard.core.keys.SecretKey` of kind ``watermark key``)."""

    def __init__(self, secret: bytes):
        super().__init__(secret, "watermark key", "--key")

    @classmethod
    def generate(cls) -> "WatermarkKey":
        return cls(new_secret())


def load_key(spec: str | None = None) -> WatermarkKey:
    """The key named by ``spec``: ``env:NAME``, ``file:PATH`` or None (``env:SDGUARD_WATERMARK_KEY``)."""
    return WatermarkKey(read_secret(spec, default_env=DEFAULT_ENV, kind="watermark key"))
