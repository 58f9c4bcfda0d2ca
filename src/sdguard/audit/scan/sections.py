"""The scan's report: summary (gates first), the worst findings with their grids, every metric
against its gate, links to each step's own report, the model-card section as rendered."""

from __future__ import annotations

import json
import warnings

from ...report import Report
from .gates import METRICS, Finding, Verdict
from .steps import Context, generation_config

#: the titles of each step's own report, linked from the scan's
_LINKS = {"data": "dataset audit (near-duplicate clusters)", "generations": "generation audit (replication over seeds)",
          "memorization": "memorization audit (Wen et al.)", "membership": "membership-inference audit",
          "nudity": "nudity on the I2P sample", "watermark": "watermark robustness"}


def summary_lines(ctx: Context, findings: list[Finding], verdicts: list[Verdict], steps: dict) -> list[str]:
    lines = []
    if verdicts:
        failed = [v for v in verdicts if not v.passed]
        lines.append(f"release gates: {len(verdicts) - len(failed)} of {len(verdicts)} passed")
        lines += [f"FAILED: {v.sentence()}" for v in failed]
    for metric in dict.fromkeys(f.metric for f in findings):
        mine = sorted((f for f in findings if f.metric == metric), key=lambda f: -f.value)
        worst = mine[0]
        lines.append(f"{metric}: worst {worst.subject!r} {worst.shown()}" + (f" ({len(mine)} measured)" if len(mine) > 1
                                                                              else ""))
    reused = [s for s, d in steps.items() if d.get("reused")]
    lines.append(f"steps: {', '.join(steps)}" + (f" (reused from the interrupted run: {', '.join(reused)})"
                                                  if reused else ""))
    return lines


def _worst(findings: list[Finding], verdicts: list[Verdict]) -> list[Finding]:
    """Per metric, its worst subject; those above a gate first."""
    limits = {v.metric: v.limit for v in verdicts}
    out = []
    for metric in dict.fromkeys(f.metric for f in findings):
        out.append(max((f for f in findings if f.metric == metric), key=lambda f: f.value))
    return sorted(out, key=lambda f: (not (f.metric in limits and f.value > limits[f.metric]),))


def _finding_section(report: Report, ctx: Context, f: Finding) -> None:
    title = f"Worst finding: {f.metric} of {f.subject!r}, {f.shown()}"
    if f.metric == "replication":
        from .figures import replication_grid

        try:
            grid = replication_grid(generation_config(ctx), f, ctx.cfg.dataset)
        except (OSError, KeyError, StopIteration, ValueError) as exc:  # the report still says what was found
            warnings.warn(f"the replication grid could not be drawn: {exc}", RuntimeWarning, stacklevel=2)
            grid = None
        text = (f"prompt {f.detail['prompt']!r} ({f.detail['kind']}, {f.detail['n']} seeds); the cluster has "
                f"{f.detail['size']} images, {f.detail['copies']} of them near-identical copies")
        report.section(title, text, table=[{"kind": k, "replication": v} for k, v in f.detail["by_kind"].items()],
                       figures=[(grid, "top: generations of the prompt (first seeds); bottom: training images of "
                                 "the cluster")] if grid else ())
    elif f.metric == "nudity_rate":
        grid = ctx.folder("nudity") / "grid.png"
        report.section(title, f"{f.detail['flagged']} of {f.detail['images']} images flagged; per class: "
                       f"{json.dumps({k: v for k, v in f.detail['per_class'].items() if v})}",
                       figures=[(grid.read_bytes(), "the first generations; flagged ones pixelated")]
                       if grid.is_file() else ())
    elif f.metric in ("memorized_prompts", "extracted_prompts"):
        report.section(title, METRICS[f.metric].text,
                       table=[{"prompt": p} for p in f.detail.get("prompts", [])[:20]] or None)
    else:
        ci = f"[{f.ci[0]:.3f}, {f.ci[1]:.3f}]" if f.ci else ""
        report.section(title, METRICS[f.metric].text, table=[{"subject": f.subject, "value": f.value,
                                                             "95% interval": ci, **f.detail}])


def write_sections(report: Report, ctx: Context, findings: list[Finding], verdicts: list[Verdict],
                   card_html: str) -> None:
    from .figures import metric_plot

    report.summary = summary_lines(ctx, findings, verdicts, report.results["steps"])
    for f in _worst(findings, verdicts):
        _finding_section(report, ctx, f)
    limits = {v.metric: v.limit for v in verdicts}
    if verdicts:
        report.section("Release gates", table=[{"metric": v.metric, "limit": v.limit, "from": v.source,
                                                 "measured": v.measured, "passed": v.passed,
                                                 "failing": ", ".join(x.subject for x in v.failing)} for v in verdicts])
    figures = [(metric_plot(findings, m, limits.get(m)), f"{m}: {METRICS[m].text}")
               for m in dict.fromkeys(f.metric for f in findings) if METRICS[m].unit != "count"]
    report.section("All findings", table=[{"metric": f.metric, "subject": f.subject, "value": f.value,
                                          "95% interval": f"[{f.ci[0]:.3f}, {f.ci[1]:.3f}]" if f.ci else "",
                                          "gate": limits.get(f.metric, "")} for f in findings], figures=figures)
    report.links = {_LINKS[s]: f"{s}/report.html" for s in ctx.cfg.planned() if (ctx.folder(s) / "report.html").is_file()}
    report.section("Model card: Privacy and safety", "the section `--model-card` writes, as the Hugging Face Hub "
                   "renders it", html=card_html)


__all__ = ["write_sections", "summary_lines"]
