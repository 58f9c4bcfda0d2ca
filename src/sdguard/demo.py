"""`sdguard demo`: the main job on the embedded default, end to end on a CPU."""

from __future__ import annotations

from pathlib import Path

from .models.builtin import tiny_available
from .report import Report


def demo(out: str | Path = "demo-out", *, overwrite: bool = False, progress: bool | None = None) -> Report:
    """Run the demo into ``out``: generations of the builtin model for a few world prompts."""
    from .models.commands import generate

    model = "builtin:tiny" if tiny_available() else "builtin:tiny-random"
    prompts = ["a red circle on the left", "a blue square at the top", "night sky"]
    return generate(model, prompts, out=str(out), n=8, steps=20, overwrite=overwrite, progress=progress)
