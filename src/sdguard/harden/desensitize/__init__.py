"""Data desensitization before training (``sdguard desensitize``): personal data in captions
(:mod:`.pii`), faces (:mod:`.faces`), image metadata (:mod:`.metadata`), near-duplicates
(:mod:`.dedup`) and caption diversification (:mod:`.diversify`), run by :mod:`.run`."""

from .options import DesensitizeConfig
from .run import desensitize

__all__ = ["DesensitizeConfig", "desensitize"]
