"""The report of an erasure audit: its results, summary lines, tables, plots and image grids."""

from __future__ import annotations

from typing import Any

from ...report import Report, auto_scale, make_grid, png_bytes
from .result import ErasureAudit


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.0%}"


def write_sections(report: Report, audit: ErasureAudit) -> None:
    """Fill ``report`` from ``audit``: ``results``, the summary and the HTML sections."""
    results = audit.results()
    report.results = results
    _presence_section(report, results)
    _utility_section(report, results.get("utility", {}))
    _robustness_section(report, results.get("robustness", {}))
    _images_section(report, audit)


def _presence_section(report: Report, results: dict[str, Any]) -> None:
    from ...report.plots import bar_plot

    rows, labels, values, rules = [], [], [], {}
    for role in ("efficacy", "retention"):
        for text, e in results[role].items():
            rows.append({"role": "erased" if role == "efficacy" else "kept", "concept": text, "kind": e["kind"],
                         "target": e["target"], "images": e["images"], "original": e["original"],
                         "erased model": e["erased"], "after / before": e["ratio"], "rule": e["rule"]["name"]})
            rules[e["rule"]["name"]] = rule_sentence(e["rule"])
            labels += [f"{text[:18]} (before)", f"{text[:18]} (after)"]
            values += [e["original"], e["erased"]]
            verb = "erased" if role == "efficacy" else "kept"
            report.summary.append(f"{verb} {text!r} ({e['kind']}, rule {e['rule']['name']}): presence {_pct(e['original'])} -> {_pct(e['erased'])}"
                                  + (f" ({e['ratio']:.0%} of the original)" if e["ratio"] is not None else ""))
    figs = [(bar_plot(labels, values, title="presence before and after", ylabel="presence rate"), "presence rates")]
    report.section("Efficacy and retention", "Presence of each concept in the original and in the erased model's "
                   "generations (same prompts, same seeds). Rules: " + "; ".join(rules.values()) + ".",
                   table=rows, figures=figs)


def rule_sentence(rule: dict[str, Any]) -> str:
    """A presence rule in words (the ``rule`` of a concept's entry)."""
    out = f"{rule['name']}: {rule['description']}"
    if "threshold" in rule:
        out += f" ({rule['threshold']})"
    if "base_rate" in rule:
        out += (f" (embedder {rule['embedder']['name']}; {rule['named_images']} training images named, "
                f"{rule['counted_images']} of {rule['training_images']} counted with their near-duplicates: "
                f"base rate {rule['base_rate']:.1%})")
    return out


def _utility_section(report: Report, u: dict[str, Any]) -> None:
    if "original" in u:
        report.summary.append(f"utility (attribute accuracy on unrelated prompts): {u['original']['mean']:.0%} -> "
                              f"{u['erased']['mean']:.0%}")
        table = [{"model": "original", **u["original"]}, {"model": "erased", **u["erased"]}]
        if "fid" in u:
            table[0]["fid"], table[1]["fid"] = u["fid"]["original"], u["fid"]["erased"]
        report.section("Utility", f"{u['images']} images of {len(u['prompts'])} unrelated scene prompts; accuracy of the "
                       "attribute classifier against what the prompt asked for.", table=table)
    elif u:
        report.section("Utility", u.get("skipped", ""))


def _robustness_section(report: Report, rob: dict[str, Any]) -> None:
    if not rob:
        return
    label = next(iter(rob.values()))["method"]
    hidden = ("loss_first_last", "prompts_found")
    report.section("Robustness", f"The {label}: adversarial tokens prepended to the prompt, optimised against the "
                   "erased model's diffusion loss on images of the concept made by the original model, then generated "
                   "from the same seeds; the success rate counts the targets brought back by the adversarial prompt "
                   "or already by the plain one.",
                   table=[{"concept": k, **{kk: vv for kk, vv in v.items() if kk not in hidden}} for k, v in rob.items()])
    found = [{"concept": k, **row} for k, v in rob.items() for row in v.get("prompts_found", [])]
    if found:
        report.section("Prompts found", f"The text prompt the {label} found for each target (real tokens of the "
                       "vocabulary, decoded by the tokenizer), and whether it brought the concept back.", table=found)
    for k, v in rob.items():
        if v.get("attack_success_rate") is not None:
            report.summary.append(f"{v['method']} on {k!r}: success rate {_pct(v['attack_success_rate'])} "
                                  f"(without attack {_pct(v['no_attack_rate'])}, {v['targets']} targets)")


def _images_section(report: Report, audit: ErasureAudit) -> None:
    """Image grids: each concept before (top row) and after (bottom row), then each attack."""
    figs = []
    for p in audit.presence:
        before, after = p.before, p.after
        k = min(8, len(before.images))
        grid = make_grid(list(before.images[:k]) + list(after.images[:k]), columns=k,
                         scale=auto_scale(before.images.shape[1]))
        label = "erased" if p.role == "efficacy" else "kept"
        cap = (f"{p.concept.text!r} ({label}): original (top, {_pct(before.rate)}) vs erased "
               f"(bottom, {_pct(after.rate)})")
        figs.append((png_bytes(grid), cap))
    for a in audit.attacks or []:
        if a.grid is not None:
            r0, r1 = a.entry["no_attack_rate"], a.entry["attack_success_rate"]
            cap = (f"{a.concept.text!r} under attack: original model (top), erased (middle, {_pct(r0)}), erased with the "
                   f"adversarial prompt (bottom, {_pct(r1)})")
            figs.append((png_bytes(a.grid), cap))
    report.section("Images", "Same prompts and seeds in each column.", figures=figs)
