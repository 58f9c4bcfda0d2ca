"""Fast memorization detection and inference-time mitigation (``sdguard audit memorization``).

- :mod:`.base`: the detector registry (``DETECTORS``), settings, the shared UNet pass;
- :mod:`.wen`: Wen et al. ICLR 2024, the text-conditional noise-prediction magnitude;
- :mod:`.anisotropy`: Asthana & Belagiannis ICLR 2026, norm + low-noise alignment;
- :mod:`.prompts`: prompt files and the public protocols (sdv1-500, world);
- :mod:`.command`: the audit; :mod:`.sections`: its report;
- :mod:`.mitigation`: Wen et al.'s prompt-embedding optimization, a generation option.
"""

from .base import DETECTORS, DetectionSettings


def __getattr__(name: str):
    """The command's names, imported on first use (``sdguard.models.commands`` imports the
    mitigation options from this package, and the command imports that module)."""
    if name in ("MemorizationConfig", "audit_memorization"):
        from . import command

        return getattr(command, name)
    raise AttributeError(name)

__all__ = ["DETECTORS", "DetectionSettings", "MemorizationConfig", "audit_memorization"]
