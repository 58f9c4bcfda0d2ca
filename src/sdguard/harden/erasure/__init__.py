"""Concept erasure: ESD-x, ESD-u, ESD-all (Gandikota et al. 2023) and UCE (Gandikota et al. 2024).

``erase(model, concepts, method, preserve=(), out=...)`` writes the erased model (a diffusers
folder), a delta file with only the changed tensors and a report; methods are looked up by name
in :data:`ERASURE_METHODS` (:func:`get_method` builds one with validated options).
"""

from .base import (
                   ERASURE_METHODS,
                   ErasureMethod,
                   ErasureResult,
                   VocabularyWarning,
                   get_method,
                   register_method,
)
from .commands import erase
from .delta import DELTA_FILE, apply_delta, read_delta, save_delta

__all__ = ["erase", "ErasureMethod", "ErasureResult", "VocabularyWarning", "get_method", "ERASURE_METHODS",
           "register_method", "DELTA_FILE", "apply_delta", "read_delta", "save_delta"]
