"""The report of a memorization audit: results, summary lines, a score histogram and ROC per
detector, the most suspicious prompts."""

from __future__ import annotations

from typing import Any

import numpy as np

from ...report import Report


def _label(v) -> str:
    return "memorized" if v is True else "ordinary" if v is False else ""


def write_sections(report: Report, cfg, scored, detectors: dict[str, dict[str, Any]], source: str) -> None:
    """Fill ``report`` (results, summary, HTML) from the detectors' outputs."""
    from ...report.plots import line_plot, overlaid_histograms

    rows = []
    for i, (p, lab) in enumerate(zip(scored.prompts, scored.labels)):
        row: dict[str, Any] = {"prompt": p, "label": _label(lab) or None, "scores": {}, "flagged": {}}
        for name, d in detectors.items():
            row["scores"][name] = round(float(d["scores"]["score"][i]), 6)
            if "flagged" in d:
                row["flagged"][name] = bool(d["flagged"][i])
        rows.append(row)
    summary: dict[str, Any] = {}
    for name, d in detectors.items():
        summary[name] = {k: v for k, v in d.items() if k not in ("scores", "flagged")}
        summary[name]["flagged"] = int(np.sum(d["flagged"])) if "flagged" in d else None
    report.results = {"prompts": rows, "detectors": summary, "source": scored.source, **scored.extra,
                      "calibration": source or None, "counts": {"scored": len(rows),
                      "memorized": sum(v is True for v in scored.labels),
                      "ordinary": sum(v is False for v in scored.labels)}}
    if not source:
        report.summary.append("no ordinary prompts to calibrate a threshold on (give --ordinary): scores only")
    labs = np.array(scored.labels, dtype=object)
    for name, d in detectors.items():
        line = f"{name}: {d['unet_evaluations_per_prompt']} UNet evaluations, {d['seconds_per_prompt'] * 1000:.1f} ms per prompt"
        if "threshold" in d:
            line += f"; {int(np.sum(d['flagged']))} of {len(rows)} flagged at {d['threshold']['fpr_target']:.1%} FPR"
        if "metrics" in d:
            m = d["metrics"]
            line += (f"; AUC {m['auc']:.3f} [{m['auc_ci'][0]:.3f}, {m['auc_ci'][1]:.3f}], TPR@1%FPR "
                     f"{m['tpr_at_0_01_fpr']:.2f}")
        if d["extensions"]:
            line += " (extension: " + "; ".join(d["extensions"]) + ")"
        report.summary.append(line)
        figs = []
        s = d["scores"]["score"]
        groups = {"memorized": s[labs == True], "ordinary": s[labs == False]} if scored.labelled else {"prompts": s}  # noqa: E712
        vl = {"threshold": d["threshold"]["value"]} if "threshold" in d else None
        figs.append((overlaid_histograms(groups, title=f"{name} scores", xlabel="score", vlines=vl), "score histogram"))
        if "metrics" in d:
            roc = d["metrics"]["roc"]
            figs.append((line_plot({name: (roc["fpr"], roc["tpr"])}, title="ROC", xlabel="false-positive rate",
                                   ylabel="true-positive rate", diagonal=True), "ROC curve"))
        top = np.argsort(-s, kind="stable")[:15]
        table = [{"prompt": scored.prompts[i], "label": _label(scored.labels[i]), "score": round(float(s[i]), 4),
                  "flagged": bool(d["flagged"][i]) if "flagged" in d else ""} for i in top]
        text = (f"{d['citation']}. Timesteps read: {d.get('timesteps')}. Threshold: "
                + (f"{d['threshold']['value']:.4g}, calibrated on {d['threshold']['calibration_prompts']} ordinary prompts "
                   f"({source}) at {d['threshold']['fpr_target']:.1%} FPR" if "threshold" in d else "none")
                + ". The 15 highest-scoring prompts:")
        report.section(f"Detector {name}", text, table=table, figures=figs)
