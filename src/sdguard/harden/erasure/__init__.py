"""Concept erasure: ESD-x, ESD-u, ESD-all (Gandikota et al. 2023) and UCE (Gandikota et al. 2024).

``erase(model, concepts, method, preserve=(), out=...)`` writes the erased model (a diffusers
folder), a delta file with only the changed tensors and a report; methods are looked up by name
in a registry (:func:`get_method`, :func:`method_names`).
"""

from .base import (ErasureMethod, ErasureResult, VocabularyWarning, get_method, get_method_class, method_names,
                   register_method)
from .commands import erase
from .delta import DELTA_FILE, apply_delta, read_delta, save_delta

__all__ = ["erase", "ErasureMethod", "ErasureResult", "VocabularyWarning", "get_method", "get_method_class",
           "method_names", "register_method", "DELTA_FILE", "apply_delta", "read_delta", "save_delta"]
