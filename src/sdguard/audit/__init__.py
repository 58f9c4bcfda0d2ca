"""Audits of a dataset and a model: replication (dataset, generations), erasure, safety."""

from .dataset_replication import audit_data
from .erasure import audit_erasure
from .generation_replication import audit_generations

__all__ = ["audit_data", "audit_erasure", "audit_generations"]
