"""The report of a membership audit: summary lines, the split check, one ROC and one score
histogram per attack, the groups. Every figure is computed by :mod:`.command`; this only renders."""

from __future__ import annotations

from typing import Any

import numpy as np

from ...report import Report

NOT_EVIDENCE = ("the split is shifted: a model-free classifier separates members from non-members, so the MIA "
                "AUCs below measure the distribution shift and are not evidence of membership")


def _ci(ci) -> str:
    return "n/a" if ci is None else f"[{ci[0]:.2f}, {ci[1]:.2f}]"


def write_sections(report: Report, results: dict[str, Any], scores: dict[str, np.ndarray], records) -> None:
    """Fill ``report``: ``results``, summary lines and the HTML sections."""
    report.results = results
    check = results["split_check"]
    shifted = check["shifted"]
    results["warnings"] = [NOT_EVIDENCE] if shifted else []
    for a in results["attacks"].values():
        a["evidence_of_membership"] = not shifted
    verdict = "SHIFTED" if shifted else "matched"
    report.summary.append(f"split check (blind attack, no model): AUC {check['auc']:.3f} {_ci(check['auc_ci'])}: "
                          f"{verdict}")
    if shifted:
        report.summary.append("WARNING: " + NOT_EVIDENCE)
    _split_section(report, results)
    _attack_sections(report, results, scores, records, shifted)
    _group_section(report, results, shifted)


def _split_section(report: Report, results: dict[str, Any]) -> None:
    check, split = results["split_check"], results["split"]
    text = (f"{check['method']}. Rule: {check['rule']}. "
            + ("WARNING: " + NOT_EVIDENCE + "." if check["shifted"] else
               "The classifier does not separate the sets: the split looks matched in distribution.")
            + f" Calibration half: {split['calibration']['members']} members, {split['calibration']['nonmembers']} "
            f"non-members; evaluation half: {split['evaluation']['members']} members, "
            f"{split['evaluation']['nonmembers']} non-members. {split['identical_to_a_member']} non-member(s) "
            "identical to a member (image and caption) under another file.")
    rows = [{"features": "images + captions", "auc": check["auc"], "95% interval": _ci(check["auc_ci"])}]
    rows += [{"features": k, "auc": v["auc"]} for k, v in check["by_features"].items()]
    report.section("Distribution check (blind attack)", text, table=rows)


def _attack_sections(report: Report, results: dict[str, Any], scores: dict[str, np.ndarray], records,
                     shifted: bool) -> None:
    from ...report.plots import line_plot, overlaid_histograms

    rows, figs = [], []
    ev = ~records.calibration
    for name, a in results["attacks"].items():
        cal = a["calibrated_threshold"]
        rows.append({"attack": name, "setting": a["chosen"], "auc": a["auc"], "auc 95%": _ci(a["auc_ci"]),
                     "tpr@1%fpr": a["tpr_at_0_01_fpr"], "tpr@1% 95%": _ci(a["tpr_at_0_01_fpr_ci"]),
                     "tpr@0.1%fpr": a["tpr_at_0_001_fpr"], "tpr@0.1% 95%": _ci(a["tpr_at_0_001_fpr_ci"]),
                     "calibrated threshold: tpr / fpr": f"{cal['evaluation_tpr']:.3f} / {cal['evaluation_fpr']:.3f}",
                     "unet evals / record": a["unet_evaluations_per_record"], "seconds": a["seconds"]})
        tail = " (not evidence: shifted split)" if shifted else ""
        report.summary.append(f"{name} ({a['chosen']}): AUC {a['auc']:.3f} {_ci(a['auc_ci'])}, TPR@1%FPR "
                              f"{a['tpr_at_0_01_fpr']:.3f} {_ci(a['tpr_at_0_01_fpr_ci'])}, calibrated threshold "
                              f"TPR {cal['evaluation_tpr']:.3f} at FPR {cal['evaluation_fpr']:.3f}; "
                              f"{a['unet_evaluations_per_record']} UNet evaluations per record{tail}")
        roc = a["roc"]
        figs.append((line_plot({name: (roc["fpr"], roc["tpr"])}, title=f"ROC: {name} ({a['chosen']})",
                               xlabel="false-positive rate", ylabel="true-positive rate", diagonal=True),
                     f"{name}: ROC on the evaluation half, AUC {a['auc']:.3f}"))
        s = scores[name]
        figs.append((overlaid_histograms({"members": s[ev & records.labels], "non-members": s[ev & ~records.labels]},
                                         title=f"{name} scores (higher = member)", xlabel="score",
                                         vlines={"1% FPR threshold": cal["threshold"]}),
                     f"{name}: scores of the evaluation half, with the threshold calibrated at 1% FPR"))
    text = ("Each attack's setting (the loss attack's timestep) and threshold are chosen on the calibration half; "
            "AUC and TPR at 1% and 0.1% FPR (bootstrap 95% intervals) are on the evaluation half, as is the TPR/FPR "
            "of the threshold calibrated at 1% FPR. A TPR at an FPR below 1/(non-members) is not resolvable.")
    if shifted:
        text = "WARNING: " + NOT_EVIDENCE + ". " + text
    report.section("Membership attacks", text, table=rows, figures=figs)


def _group_section(report: Report, results: dict[str, Any], shifted: bool) -> None:
    g = results["groups"]
    rows = []
    for name, by in g["by_attack"].items():
        for group, r in by.items():
            if "auc" in r:
                rows.append({"attack": name, "group": group, "members": r["members"], "non-members": r["nonmembers"],
                             "auc": r["auc"], "auc 95%": _ci(r["auc_ci"]), "tpr@1%fpr": r["tpr_at_0_01_fpr"],
                             "tpr@1% 95%": _ci(r["tpr_at_0_01_fpr_ci"])})
                report.summary.append(f"{name}, {group} members ({r['members']} vs {r['nonmembers']} clean "
                                      f"non-members): AUC {r['auc']:.3f} {_ci(r['auc_ci'])}, TPR@1%FPR "
                                      f"{r['tpr_at_0_01_fpr']:.3f}" + (" (shifted split)" if shifted else ""))
            elif "flagged" in r:
                rows.append({"attack": name, "group": "non-members that copy a member", "non-members": r["nonmembers"],
                             "flagged at the calibrated threshold": r["flagged"],
                             "share": r["flagged_share"], "95%": _ci(r["flagged_share_ci"])})
            else:
                rows.append({"attack": name, "group": group, "members": r["members"], "note": r["skipped"]})
    t = g["threshold"]
    text = (f"Members clustered by {g['embedder'].get('name')} embeddings at cosine similarity {t['value']:.3f} "
            f"({t['source']}): {g['members']} members; non-members: {g['nonmembers']}. Duplicated and single-copy "
            "members are each scored against the non-members with no near-duplicate among the members; the "
            "non-members that copy a member are their own row (their share flagged by the calibrated threshold).")
    report.section("Duplicated and single-copy members", text, table=rows)
