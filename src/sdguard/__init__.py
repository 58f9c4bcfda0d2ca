"""sdguard: audit and harden text-to-image diffusion models for privacy and safety.

The Python API mirrors the command line: every command has a function of the same name.
Heavy modules (torch, diffusers) load on first use.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "load_pipeline": "sdguard.models",
    "load_model": "sdguard.models",
    "DiffusionModel": "sdguard.models",
    "generate": "sdguard.models.commands",
    "info": "sdguard.models.commands",
    "Report": "sdguard.report",
    "scan": "sdguard.audit.scan",
    "demo": "sdguard.demo",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sdguard' has no attribute {name!r}")
