"""Hardening: concept erasure (:mod:`.erasure`), data desensitization (:mod:`.desensitize`) and
watermarking (:mod:`.watermark`); each imported on use, so one does not load the others."""
