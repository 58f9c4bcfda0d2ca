"""The one cache root: ``$SDGUARD_CACHE``, else ``$XDG_CACHE_HOME/sdguard``, else ``~/.cache/sdguard``.

Every cache (embeddings, the default world, fitted world probes) is a sub-folder of it, named
after what it holds, so one variable moves or clears them all.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    root = os.environ.get("SDGUARD_CACHE")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sdguard"


def cache_dir(kind: str) -> Path:
    """``cache_root() / kind`` (not created)."""
    return cache_root() / kind
