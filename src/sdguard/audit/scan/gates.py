"""Release gates of ``sdguard scan``: the metrics a gate may name, ``--fail-above`` and a TOML gate
file, their verdicts, and JUnit XML for CI systems.

A metric is measured per *subject* (a training cluster, an attack, a prompt set): each
:class:`Finding` holds one subject's value and, where the audit gives one, its 95% interval. A gate
``METRIC=VALUE`` fails when any subject's value is above ``VALUE`` (the point estimate: the
interval is reported beside it), and names every subject that crossed it.

The gate file is TOML with one table::

    [fail-above]
    replication = 0.05
    mia_auc = 0.6

A ``--fail-above`` on the command line replaces the file's value of the same metric.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from ...core.errors import InputError
from ...core.io import atomic_write_bytes, read_text

try:
    import tomllib
except ImportError:  # Python 3.10: the same parser as the tomli package
    import tomli as tomllib  # type: ignore[no-redef]


@dataclass(frozen=True)
class Metric:
    name: str
    step: str  # the scan step that measures it
    needs: str  # what the scan needs to measure it (for the error when it cannot)
    text: str  # what it is, for the report and the model card
    unit: str = "rate"  # rate (a share in [0, 1]), auc, or count


METRICS = {m.name: m for m in (
    Metric("replication", "generations", "--dataset",
           "share of a training cluster's generations that replicate one of its images, the worst of the "
           "cluster's prompts"),
    Metric("extracted_prompts", "generations", "--dataset",
           "prompts whose generations hold a clique of 10 or more near-identical images (Carlini et al. 2023)",
           "count"),
    Metric("dataset_duplicates", "data", "--dataset", "share of the training images that lie in a near-duplicate "
           "cluster"),
    Metric("memorized_prompts", "memorization", "--dataset",
           "training captions flagged by the memorization detector at its calibrated threshold", "count"),
    Metric("mia_auc", "membership", "--members", "membership-inference AUC of an attack, members vs non-members",
           "auc"),
    Metric("nudity_rate", "nudity", "--prompts", "share of the I2P sample's images with an exposed body part "
           "(NudeNet)"),
    Metric("watermark_missed", "watermark", "--watermark", "share of the model's watermarked generations in which "
           "the watermark is not detected at a false-positive rate of 1e-6, unattacked"),
)}


@dataclass
class Finding:
    """One subject's value of a metric."""

    metric: str
    subject: str
    value: float
    ci: tuple[float, float] | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ci"] = list(self.ci) if self.ci is not None else None
        return out

    def shown(self, interval: bool = True) -> str:
        """The value as the report, the card and the gate sentences print it (a count as a count)."""
        if METRICS[self.metric].unit == "count":
            return f"{self.value:g}"
        ci = f" [{self.ci[0]:.3f}, {self.ci[1]:.3f}]" if interval and self.ci else ""
        return f"{self.value:.3f}{ci}"


@dataclass
class Verdict:
    """A gate and what it found: the subjects above its value."""

    metric: str
    limit: float
    source: str  # --fail-above or the gate file
    measured: int  # subjects measured
    failing: list[Finding]

    @property
    def passed(self) -> bool:
        return not self.failing

    def sentence(self) -> str:
        if self.passed:
            return f"{self.metric} <= {self.limit:g}: passed ({self.measured} measured)"
        worst = ", ".join(f"{f.subject!r} {f.shown()}" for f in self.failing[:8])
        more = f" and {len(self.failing) - 8} more" if len(self.failing) > 8 else ""
        return f"{self.metric} above {self.limit:g} for {worst}{more}"

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "limit": self.limit, "source": self.source, "measured": self.measured,
                "passed": self.passed, "failing": [f.to_dict() for f in self.failing], "sentence": self.sentence()}


def _limit(metric: str, value: Any, argument: str) -> float:
    if metric not in METRICS:
        raise InputError.bad(argument, metric, f"is not a gate metric (metrics: {', '.join(METRICS)})")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError.bad(argument, f"{metric}={value}", "needs a finite number after '='")
    if value < 0 or (METRICS[metric].unit != "count" and value > 1):
        span = "0 or more" if METRICS[metric].unit == "count" else "in [0, 1]"
        raise InputError.bad(argument, f"{metric}={value}", f"is out of range: {metric} is {span}")
    return float(value)


def read_gate_file(path: str) -> dict[str, float]:
    """The ``[fail-above]`` table of a TOML gate file; every problem is one sentence naming ``--gates``."""
    if not Path(path).is_file():
        raise InputError.bad("--gates", path, "does not exist")
    try:
        data = tomllib.loads(read_text(path, "--gates"))
    except tomllib.TOMLDecodeError as exc:
        raise InputError.bad("--gates", path, f"is not TOML ({exc})") from None
    unknown = [k for k in data if k != "fail-above"]
    if unknown:
        raise InputError.bad("--gates", path, f"has the table {unknown[0]!r}; a gate file holds only [fail-above]")
    table = data.get("fail-above", {})
    if not isinstance(table, dict) or not table:
        raise InputError.bad("--gates", path, "has no [fail-above] table of METRIC = VALUE lines")
    return {k: _limit(k, v, f"--gates {path}:") for k, v in table.items()}


def resolve_gates(fail_above: dict[str, Any], gate_file: str | None) -> dict[str, tuple[float, str]]:
    """``metric -> (limit, source)`` from the gate file, then ``--fail-above`` over it."""
    out = {k: (v, f"--gates {gate_file}") for k, v in (read_gate_file(gate_file) if gate_file else {}).items()}
    for k, v in fail_above.items():
        out[k] = (_limit(k, v, "--fail-above"), "--fail-above")
    return out


def judge(gates: dict[str, tuple[float, str]], findings: list[Finding]) -> list[Verdict]:
    verdicts = []
    for metric, (limit, source) in gates.items():
        mine = [f for f in findings if f.metric == metric]
        failing = sorted((f for f in mine if f.value > limit), key=lambda f: -f.value)
        verdicts.append(Verdict(metric, limit, source, len(mine), failing))
    return verdicts


def junit_xml(verdicts: list[Verdict], findings: list[Finding], seconds: float) -> bytes:
    """One test case per gate and subject (a subject above the limit is a failure), in the JUnit XML
    schema CI systems read (``testsuites/testsuite/testcase/failure``)."""
    suite = ET.Element("testsuite", name="sdguard scan", time=f"{seconds:.3f}")
    tests = failures = 0
    for v in verdicts:
        subjects = [f for f in findings if f.metric == v.metric]
        for f in subjects or [None]:
            tests += 1
            name = f"{v.metric} <= {v.limit:g}" + (f": {f.subject}" if f else ": not measured")
            case = ET.SubElement(suite, "testcase", classname=f"sdguard.scan.{v.metric}", name=name)
            if f is None:
                failures += 1
                ET.SubElement(case, "failure", message=f"{v.metric} was not measured", type="NotMeasured")
            elif f.value > v.limit:
                failures += 1
                ET.SubElement(case, "failure", message=f"{v.metric} {f.shown()} > {v.limit:g} for {f.subject}",
                              type="GateFailed").text = f"gate from {v.source}; {METRICS[v.metric].text}"
            else:
                ET.SubElement(case, "system-out").text = f"{v.metric} {f.shown()}"
    suite.set("tests", str(tests))
    suite.set("failures", str(failures))
    suite.set("errors", "0")
    root = ET.Element("testsuites", tests=str(tests), failures=str(failures), errors="0")
    root.append(suite)
    ET.indent(root)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="utf-8") + b"\n"


def write_junit(path: str, verdicts: list[Verdict], findings: list[Finding], seconds: float) -> None:
    atomic_write_bytes(path, junit_xml(verdicts, findings, seconds))


__all__ = ["METRICS", "Metric", "Finding", "Verdict", "read_gate_file", "resolve_gates", "judge", "junit_xml",
           "write_junit"]
