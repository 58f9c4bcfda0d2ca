"""`sdguard data ...`: datasets and the synthetic world."""

from __future__ import annotations

import typer

from .build import add_command

data_app = typer.Typer(no_args_is_help=True, help="Datasets: make the synthetic world, inspect datasets.")


def _make_world(cfg, _extra, _cli) -> None:
    from ..data.world import make_world as run
    from .main import out

    out_dir = cfg.out
    truth = run(cfg)
    for d in truth["duplicates"]:
        out.print(f"  artwork {d['name']:16s} {d['count']:4d} copies ({d['rate']:.2%}) keywords {', '.join(d['keywords'])}")
    for c in truth["cooccurrence"]:
        out.print(f"  co-occurrence {' + '.join(c['keywords'])}: {c['dominant_share']:.0%} in {c['dominant']}")
    for s in truth["spread"]:
        out.print(f"  spread keyword {s['keyword']}: dominant cluster {s['dominant_share']:.1%}")
    for o in truth["objects"]:
        out.print(f"  object {o['object']} in {o['share']:.0%} of '{o['keyword']}' images, never named")
    for st in truth["styles"]:
        out.print(f"  style {st['name']}: {len(st['files'])} images ({st['rate']:.0%})")
    u = truth["under_described"]
    out.print(f"  under-described scene captions: {u['count']} ({u['share_of_scenes']:.0%} of scenes)")
    out.print(f"[green]world:[/green] {out_dir} ({truth['size']} images, ground_truth.json)")


def _register() -> None:
    from ..data.world import WorldConfig

    add_command(data_app, "make-world", WorldConfig, _make_world)


_register()
