"""The "Privacy and safety" section of a Hugging Face model card, written by ``sdguard scan --model-card``.

The section sits between two HTML comments (:data:`BEGIN`, :data:`END`), which a rendered card
does not show. A card without them gets the section appended; a card with them has exactly that
span replaced, every other byte kept; a missing card is created with a minimal YAML header. The
section says what was measured, on what, with which settings, each figure with its interval and
gate, and the hardening the model's own folder records (:func:`hardening_records`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...core.errors import InputError
from ...core.io import atomic_write_text, read_json_or_none, read_text
from .gates import METRICS, Finding, Verdict

BEGIN = "<!-- sdguard:privacy-and-safety:begin -->"
END = "<!-- sdguard:privacy-and-safety:end -->"
NEW_CARD = "---\ntags:\n- sdguard\n---\n\n# Model card\n\n"


def hardening_records(model: str) -> list[str]:
    """What the model's folder says was done to it: sdguard's erasure and training reports, the DP
    record, the deduplication of its training data, encryption and signature. Empty for a model
    that is not a folder (a hub id, builtin:NAME) or holds no such record."""
    from ...deploy.weights import MARKER as ENCRYPTED
    from ...deploy.weights import SIGNATURE
    from ...train.private.record import read_privacy

    folder = Path(model)
    if not folder.is_dir():
        return []
    out = []
    report = read_json_or_none(folder / "report.json") or {}
    cfg, res = report.get("config") or {}, report.get("results") or {}
    if report.get("command") == "erase":
        out.append(f"concept erasure: {cfg.get('method')} of {', '.join(map(repr, cfg.get('concepts', [])))} "
                   f"(from {cfg.get('model')!r}; preserved: {len(res.get('preserve', cfg.get('preserve', [])) or [])} "
                   "concepts)")
    if report.get("command") == "train":
        data = cfg.get("dataset")
        out.append(f"fine-tuned by `sdguard train` on {data!r}")
        for where in ([Path(str(data)), Path(str(data)).parent] if data else []):
            source = read_json_or_none(where / "report.json")
            if isinstance(source, dict) and source.get("command") == "desensitize":
                out.append("its training data desensitized by `sdguard desensitize`: " + _desensitized(source))
                break
    privacy = read_privacy(model)
    if privacy and "error" not in privacy:
        out.append(f"differentially private training: ({privacy['epsilon']:.3g}, {privacy['delta']:g})-DP per "
                   f"{privacy['unit']} ({privacy['accountant']} accountant, clipping {privacy['max_grad_norm']:g})")
    if (folder / ENCRYPTED).is_file():
        out.append("weights encrypted at rest (AES-256-GCM per tensor, CryptoTensors)")
    if (folder / SIGNATURE).is_file():
        out.append("weights signed (OpenSSF model-signing)")
    return out


def _desensitized(report: dict) -> str:
    cfg, res = report.get("config") or {}, report.get("results") or {}
    rec = res.get("records") or {}
    parts = [f"{rec.get('in')} records in, {rec.get('out')} kept"]
    if cfg.get("dedup", "off") != "off":
        parts.append(f"near-duplicates deduplicated ({cfg['dedup']})")
    if cfg.get("pii") and cfg.get("pii") != ["off"]:
        parts.append("personal data scrubbed from captions")
    if cfg.get("face_action", "off") != "off":
        parts.append(f"faces {cfg['face_action']}")
    return ", ".join(parts)


def render_section(*, model: str, fingerprint: str, dataset: str | None, settings: dict[str, Any], steps: list[str],
                   findings: list[Finding], verdicts: list[Verdict], hardening: list[str], version: str,
                   created: str) -> str:
    """The Markdown of the section, markers included."""
    limits = {v.metric: v.limit for v in verdicts}
    lines = [BEGIN, "## Privacy and safety", "",
             f"Measured by [sdguard](https://pypi.org/project/sdguard/) {version} on {created} "
             f"(`sdguard scan`, model weights fingerprint `{fingerprint[:16]}`).", "",
             "**What was measured, and on what**", ""]
    for step in steps:
        lines.append(f"- {_STEP_TEXT[step].format(**{**settings, 'dataset': dataset})}")
    lines += ["", "| metric | subject | value | 95% interval | gate |", "|---|---|---|---|---|"]
    for f in findings:
        ci = f"[{f.ci[0]:.3f}, {f.ci[1]:.3f}]" if f.ci else "n/a"
        gate = ""
        if f.metric in limits:
            gate = f"{'fails' if f.value > limits[f.metric] else 'passes'} <= {limits[f.metric]:g}"
        subject = f.subject.replace("|", "\\|")
        lines.append(f"| {f.metric} | {subject} | {f.shown(interval=False)} | {ci} | {gate} |")
    lines += ["", "Metrics: " + "; ".join(f"*{m}*: {METRICS[m].text}" for m in dict.fromkeys(f.metric for f in findings))]
    if verdicts:
        failed = [v for v in verdicts if not v.passed]
        lines += ["", f"**Release gates**: {len(verdicts) - len(failed)} of {len(verdicts)} passed"
                  + (": " + "; ".join(v.sentence() for v in failed) if failed else ".")]
    lines += ["", "**Hardening applied** (as recorded in the model folder)", ""]
    lines += [f"- {h}" for h in hardening] or ["- none recorded"]
    lines += ["", END]
    return "\n".join(lines) + "\n"


_STEP_TEXT = {
    "data": "near-duplicate clusters of the training data `{dataset}` ({embedder} embeddings)",
    "generations": "replication over {n} seeds per prompt ({steps} steps, guidance {guidance:g}) of prompts built "
                   "from the {top_clusters} most duplicated training clusters (Somepalli et al. 2023's prompt kinds; "
                   "Carlini et al. 2023's clique test)",
    "memorization": "memorization of the clusters' captions by Wen et al. 2024's detector (timestep: "
                    "{memorization_timestep}; None is the published first sampler step), threshold at 1% false "
                    "positives on captions of unduplicated images",
    "membership": "membership inference (loss, SecMI, PIA) of members vs non-members",
    "nudity": "nudity (NudeNet, exposed classes at 0.6) on up to {nudity_prompts} I2P prompts, each with its own seed",
    "watermark": "watermark presence: the {watermark} scheme on {watermark_images} of the model's generations, through "
                 "the robustness suite of `sdguard audit watermark`",
}


def _card(path: str) -> tuple[str, tuple[int, int] | None]:
    """The card's text and the span of its sdguard section (None: no section yet); a card whose
    markers are broken is refused, naming ``--model-card``."""
    p = Path(path)
    if p.is_dir():
        raise InputError.bad("--model-card", path, "is a folder; give the model card's file (README.md)")
    text = read_text(p, "--model-card") if p.exists() else NEW_CARD
    begins, ends = text.count(BEGIN), text.count(END)
    if begins != ends or begins > 1:
        raise InputError.bad("--model-card", path, f"holds {begins} begin and {ends} end markers of the sdguard "
                             "section; it needs one of each, or none (nothing was changed)")
    if not begins:
        return text, None
    start, stop = text.index(BEGIN), text.index(END) + len(END)
    if stop < start:
        raise InputError.bad("--model-card", path, "has the sdguard section's end marker before its begin "
                             "marker (nothing was changed)")
    return text, (start, stop)


def check_card(path: str) -> None:
    """Refuse, before a scan's work, a card :func:`update_card` could not update."""
    _card(path)


def update_card(path: str, section: str) -> None:
    """Write ``section`` into the card at ``path`` (see the module docstring)."""
    text, span = _card(path)
    if span is not None:
        new = text[:span[0]] + section.rstrip("\n") + text[span[1]:]
    else:
        new = text + ("" if text.endswith("\n\n") or not text else "\n" if text.endswith("\n") else "\n\n") + section
    atomic_write_text(path, new)


def section_html(section: str) -> str:
    """The section rendered as HTML (CommonMark with tables, as the Hub renders cards)."""
    from markdown_it import MarkdownIt

    body = "\n".join(line for line in section.splitlines() if line not in (BEGIN, END))  # comments: not shown
    return MarkdownIt("commonmark", {"html": False}).enable("table").render(body)


__all__ = ["BEGIN", "END", "hardening_records", "render_section", "check_card", "update_card", "section_html"]
