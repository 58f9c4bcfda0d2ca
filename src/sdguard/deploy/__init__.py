"""Deployment protection: encrypted and signed weights (:mod:`.weights`, :mod:`.signing`), the
encrypted prompt log (:mod:`.promptlog`), the NudeNet safety gate (:mod:`.gate`) and the guarded
FastAPI service (:mod:`.service`, :mod:`.app`); the commands in :mod:`.commands`.

Imports are lazy: ``sdguard.deploy`` costs nothing until a name is used."""

from __future__ import annotations

_NAMES = {
    "keygen": "commands", "encrypt": "commands", "decrypt": "commands", "log_read": "commands",
    "log_rekey": "commands", "serve_key_add": "commands", "serve": "commands",
    "create_app": "app", "Guard": "service", "ServeConfig": "service", "SafetyGate": "gate",
    "PromptLog": "promptlog", "read_log": "promptlog", "load_encrypted_pipeline": "weights",
    "is_encrypted_folder": "weights", "TamperedError": "weights",
}
__all__ = sorted(_NAMES)


def __getattr__(name: str):
    if name not in _NAMES:
        raise AttributeError(name)
    import importlib

    return getattr(importlib.import_module(f".{_NAMES[name]}", __name__), name)
