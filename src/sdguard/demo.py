"""`sdguard demo`: the audit loop on the embedded default, end to end on a CPU.

1. make the synthetic world ``builtin:tiny`` was trained on (``OUT/world``);
2. audit the dataset: near-duplicate clusters over the whole world (``OUT/audit-data``);
3. audit the model's generations: the prompt kinds of each large cluster, an object keyword and
   control prompts, over many seeds (``OUT/audit-generations``);
4. write ``OUT/report.html`` (and ``report.json``) that summarizes and links both reports.
"""

from __future__ import annotations

from typing import Any

from .core.config import OutputConfig, build, option, output_for
from .models.builtin import tiny_available
from .report import Report


class DemoConfig(OutputConfig):
    """The main job on the embedded default (builtin model and synthetic world), on a CPU."""

    python_positional = ("out",)

    out: str = option("demo-out", help="output folder")
    n: int = option(32, flag="--n", ge=1, le=100_000, help="generations per prompt")
    top_clusters: int = option(3, ge=1, le=100, help="keyword clusters whose prompt suites are audited")


def demo(*args: Any, progress: bool | None = None, **values: Any) -> Report:
    """Run the demo into ``out`` and return the index report (see the module docstring);
    ``demo(DemoConfig(...))`` or ``demo("demo-out", n=32)``."""
    from .audit.dataset_replication import audit_data
    from .audit.generation_replication import audit_generations
    from .data.world import WORLD_DEFAULTS, make_world

    cfg = build(DemoConfig, args, values)
    n, top_clusters = cfg.n, cfg.top_clusters
    model = "builtin:tiny" if tiny_available() else "builtin:tiny-random"
    report = Report("demo", {"model": model, **cfg.model_dump(), "world": dict(WORLD_DEFAULTS)})
    with output_for(cfg, "demo") as stage:
        with report.timer("world"):
            truth = make_world(stage / "world", **WORLD_DEFAULTS)
        with report.timer("audit_data"):
            data = audit_data(stage / "world", out=stage / "audit-data", progress=progress)
        with report.timer("audit_generations"):
            gens = audit_generations(model, str(stage / "world"), clusters=str(stage / "audit-data"),
                                     out=str(stage / "audit-generations"), n=n, top_clusters=top_clusters,
                                     batch_size=64, object_keyword="astronaut", object_name="flag", detector="world",
                                     progress=progress)
        report.models["model"] = gens.models["model"]
        report.links = {"dataset audit (near-duplicate clusters)": "audit-data/report.html",
                        "generation audit (replication over seeds)": "audit-generations/report.html"}
        report.results = {"world": {"size": truth["size"], "artworks": [d["name"] for d in truth["duplicates"]]},
                          "audit_data": {"clusters": data.results.get("clustering", {}).get("clusters"),
                                         "largest": data.results.get("clusters", [])[:3]},
                          "audit_generations": {"kinds": gens.results["kinds"], "object": gens.results.get("object")}}
        report.summary = [f"model {model}; world of {truth['size']} images with planted replication",
                          *[f"data: {line}" for line in data.summary[-3:]], *[f"generations: {line}" for line in gens.summary]]
        report.section("Generation audit: replication per prompt kind",
                       figures=[(f.png, f.caption) for sec in gens.sections if "kind" in sec.title for f in sec.figures])
        report.section("Dataset audit: largest clusters",
                       table=[{k: c[k] for k in ("rank", "size", "share")} | {"words": ", ".join(w["word"] for w in c["top_words"][:5])}
                              for c in data.results.get("clusters", [])[:8]])
        report.write(stage)
    return report
