"""``sdguard scan``: audit, gate and report in one resumable job (see :mod:`.run`)."""

from .config import STEPS, ScanConfig
from .gates import METRICS, Finding, Verdict, junit_xml, read_gate_file, resolve_gates
from .run import gate_failures, scan

__all__ = ["scan", "ScanConfig", "STEPS", "METRICS", "Finding", "Verdict", "gate_failures", "junit_xml",
           "read_gate_file", "resolve_gates"]
