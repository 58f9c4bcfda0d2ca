"""The watermark audit: the robustness suite's attacks (:mod:`.attacks`), image-quality metrics
(:mod:`.metrics`), the suite's scoring (:mod:`.robustness`) and ``sdguard audit watermark`` (:mod:`.run`)."""

from .run import AuditWatermarkConfig, audit_watermark

__all__ = ["AuditWatermarkConfig", "audit_watermark"]
