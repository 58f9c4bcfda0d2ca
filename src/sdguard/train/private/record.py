"""The privacy record of a DP-trained model: ``privacy.json`` beside its weights, and its report part.

``privacy.json`` (next to ``model_index.json``, or to a LoRA folder's weights) holds the final
guarantee -- epsilon, delta, the accountant, the noise multiplier, the sampling rate, the steps --
with the privacy unit, the clipping bound and Opacus's version; ``sdguard info`` shows it. It says
what the training spent, not what the base model's own training leaked: a fine-tuned Stable
Diffusion is private with respect to the fine-tuning data only.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from ...core.io import atomic_write_text

PRIVACY_FILE = "privacy.json"
FORMAT = "sdguard-privacy"
KEYS = ("epsilon", "delta", "accountant", "noise_multiplier", "sample_rate", "steps", "unit", "units",
        "max_grad_norm", "target_epsilon", "expected_batch", "grad_sample_mode", "source", "secure_mode", "opacus")


#: written only when given: a federated run's per-client figures, and its record-level guarantee
#: beside a client-level one (``sdguard federate --dp --client-dp ...``)
OPTIONAL = ("clients", "record_level")


def write_privacy(folder: Path, summary: dict) -> None:
    record = {"format": FORMAT, "version": 1, **{k: summary.get(k) for k in KEYS},
              "epsilon_curve": summary.get("epsilon_curve", []), **{k: summary[k] for k in OPTIONAL if k in summary}}
    atomic_write_text(Path(folder) / PRIVACY_FILE, json.dumps(record, indent=1) + "\n")


def read_privacy(spec: str) -> dict | None:
    """The privacy record of the model folder ``spec`` (``None``: not a folder, or trained without DP)."""
    path = Path(spec) / PRIVACY_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return {"error": f"{path} is unreadable: {exc}"}
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        return {"error": f"{path} is not an sdguard privacy record"}
    return {k: record.get(k) for k in (*KEYS, *OPTIONAL) if k in record}


def privacy_section(report, summary: dict) -> str:
    """The report's DP part (the guarantee, the unit, the epsilon curve, clipping); returns its
    summary line."""
    from ...report.plots import line_plot

    eps, curve = summary["epsilon"], summary["epsilon_curve"]
    unit = summary["unit"] + (f" ({summary['source']})" if summary.get("source") else "")
    text = (f"({eps:.3g}, {summary['delta']:g})-DP per {summary['unit']} by the {summary['accountant']} accountant: "
            f"noise multiplier {summary['noise_multiplier']:.4g}, sampling rate {summary['sample_rate']:.4g} over "
            f"{summary['units']} units, {summary['steps']} steps, clipping at {summary['max_grad_norm']:g}")
    figures = []
    if curve:
        figures.append((line_plot({"epsilon": ([c[0] for c in curve], [c[1] for c in curve])},
                                  title="epsilon spent", xlabel="step", ylabel="epsilon"), "epsilon spent"))
    clipped = summary.get("clipped_share_median")
    report.section("Differential privacy (DP-SGD)", text, figures=figures, table=[{
        "epsilon": round(eps, 4), "delta": summary["delta"], "accountant": summary["accountant"],
        "noise multiplier": round(summary["noise_multiplier"], 4), "sampling rate": round(summary["sample_rate"], 5),
        "steps": summary["steps"], "unit": unit, "units": summary["units"], "largest unit": summary["largest"],
        "mean units per step": round(summary["mean_units_per_step"], 2),
        "units clipped (median share)": None if clipped is None else round(clipped, 3),
        "median unit gradient norm": None if summary["unit_norm_median"] is None else round(summary["unit_norm_median"], 4),
        "grad sample mode": summary["grad_sample_mode"]}])
    return (f"DP: epsilon {eps:.3g} at delta {summary['delta']:g} ({summary['accountant']}), per "
                          f"{summary['unit']}" + ("" if math.isfinite(eps) else " (no finite guarantee)"))


__all__ = ["PRIVACY_FILE", "write_privacy", "read_privacy", "privacy_section"]
