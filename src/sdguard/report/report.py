"""The report every command writes: ``report.json`` for machines, ``report.html`` for people.

``report.json`` is schema-versioned and carries the command line, the full config, package
versions, model fingerprints, timings and the results; ``report.html`` is self-contained (plots and
image grids inline as data URIs). Both are written atomically.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import html
import json
import platform
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator, Sequence

from ..core.io import atomic_write_json, atomic_write_text, to_jsonable
from .images import data_uri

SCHEMA_VERSION = 1
_PACKAGES = ("sdguard", "torch", "diffusers", "transformers", "numpy", "safetensors", "faiss-cpu",
             "duckdb", "opacus", "flwr", "nudenet", "scikit-learn")


def package_versions() -> dict[str, str]:
    out = {}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def environment() -> dict[str, Any]:
    info: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform(),
                            "packages": package_versions()}
    try:
        import torch

        info["cuda"] = torch.cuda.is_available()
        info["threads"] = torch.get_num_threads()
    except ImportError:  # pragma: no cover
        pass
    return info


@dataclass
class Figure:
    png: bytes
    caption: str = ""


@dataclass
class Section:
    """A part of the HTML report: text, a table, figures (plots or image grids)."""

    title: str
    text: str = ""
    table: list[dict[str, Any]] | None = None
    figures: list[Figure] = field(default_factory=list)
    #: HTML sdguard rendered itself (a model-card section, Markdown without raw HTML): shown as is
    html: str = ""


@dataclass
class Report:
    command: str
    config: Any = None
    results: dict[str, Any] = field(default_factory=dict)
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    artifacts: list[str] = field(default_factory=list)
    summary: list[str] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)
    links: dict[str, str] = field(default_factory=dict)
    argv: list[str] = field(default_factory=lambda: list(sys.argv))
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))

    @contextlib.contextmanager
    def timer(self, name: str) -> Iterator[None]:
        """Time a phase into ``timings[name]`` (seconds)."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - t0, 4)

    def add_model(self, role: str, model) -> None:
        """Record a model (a DiffusionModel) by role: its spec and weight fingerprint."""
        self.models[role] = {"spec": model.spec, "fingerprint": model.fingerprint()}

    def section(self, title: str, text: str = "", table: list[dict] | None = None,
                figures: Sequence[tuple[bytes, str]] = (), html: str = "") -> Section:
        sec = Section(title, text, table, [Figure(png, cap) for png, cap in figures], html)
        self.sections.append(sec)
        return sec

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "command": self.command,
            "argv": self.argv,
            "created": self.created,
            "config": to_jsonable(self.config),
            "environment": environment(),
            "models": self.models,
            "timings": self.timings,
            "results": to_jsonable(self.results),
            "artifacts": self.artifacts,
            "links": self.links,
        }

    def write(self, out_dir: str | Path) -> Path:
        """Write ``report.json`` and ``report.html`` into ``out_dir`` (atomically); returns the JSON path."""
        out_dir = Path(out_dir)
        data = self.to_dict()
        atomic_write_text(out_dir / "report.html", render_html(self, data))
        return atomic_write_json(out_dir / "report.json", data)


def load_report(path: str | Path) -> dict[str, Any]:
    """Read a ``report.json`` (or the one inside a folder)."""
    path = Path(path)
    if path.is_dir():
        path = path / "report.json"
    return json.loads(path.read_text())


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#222;padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
.meta{color:#666;font-size:.85rem}table{border-collapse:collapse;margin:.6rem 0;font-size:.85rem}
td,th{border:1px solid #ddd;padding:.25rem .5rem;text-align:left;vertical-align:top}th{background:#f4f4f4}
figure{display:inline-block;margin:.5rem 1rem .5rem 0;vertical-align:top}figcaption{font-size:.8rem;color:#555;max-width:520px}
img{image-rendering:pixelated;max-width:100%}pre{background:#f7f7f7;padding:.6rem;overflow:auto;font-size:.75rem}
ul.summary li{margin:.15rem 0}.rendered{border:1px solid #ddd;padding:0 1rem;border-radius:4px}
"""


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, dict)):
        return html.escape(json.dumps(to_jsonable(value))[:300])
    return html.escape(str(value))


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<p><em>(no rows)</em></p>"
    cols: list[str] = []
    for row in rows:
        cols.extend(c for c in row if c not in cols)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{_cell(r.get(c, ''))}</td>" for c in cols) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(report: Report, data: dict[str, Any]) -> str:
    """A self-contained HTML page: summary, sections with tables, plots and grids, config, environment."""
    esc = html.escape
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>sdguard {esc(report.command)}</title><style>{_CSS}</style></head><body>",
        f"<h1>sdguard {esc(report.command)}</h1>",
        f"<p class='meta'>{esc(report.created)} · sdguard {esc(data['environment']['packages'].get('sdguard', '?'))}"
        f" · <code>{esc(' '.join(report.argv))}</code></p>",
    ]
    if report.summary:
        parts.append("<h2>Summary</h2><ul class='summary'>" + "".join(f"<li>{esc(s)}</li>" for s in report.summary) + "</ul>")
    if report.links:
        parts.append("<h2>Linked reports</h2><ul>" + "".join(
            f"<li><a href='{esc(href)}'>{esc(name)}</a></li>" for name, href in report.links.items()) + "</ul>")
    for sec in report.sections:
        parts.append(f"<h2>{esc(sec.title)}</h2>")
        if sec.text:
            parts.append(f"<p>{esc(sec.text)}</p>")
        if sec.table is not None:
            parts.append(_table(sec.table))
        if sec.html:
            parts.append(f"<div class='rendered'>{sec.html}</div>")
        for fig in sec.figures:
            parts.append(f"<figure><img src='{data_uri(fig.png)}' alt='{esc(fig.caption)}'>"
                         f"<figcaption>{esc(fig.caption)}</figcaption></figure>")
    if report.models:
        parts.append("<h2>Models</h2>" + _table([{"role": r, **m} for r, m in report.models.items()]))
    if report.timings:
        parts.append("<h2>Timings (s)</h2>" + _table([report.timings]))
    parts.append("<h2>Configuration</h2><pre>" + esc(json.dumps(data["config"], indent=2)) + "</pre>")
    parts.append("<h2>Environment</h2><pre>" + esc(json.dumps(data["environment"], indent=2)) + "</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)
