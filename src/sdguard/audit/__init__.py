"""audit"""
from .dataset_replication import audit_data
from .erasure import audit_erasure  # noqa: E402
