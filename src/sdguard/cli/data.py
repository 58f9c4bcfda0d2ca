"""`sdguard data ...`: datasets and the synthetic world."""

from __future__ import annotations

import typer

data_app = typer.Typer(no_args_is_help=True, help="Datasets: make the synthetic world, inspect datasets.")


@data_app.command("make-world")
def make_world(
    out_dir: str = typer.Argument(..., metavar="OUT", help="folder to create"),
    seed: int = typer.Option(0, help="world seed (0: the world builtin:tiny was trained on)"),
    size: int = typer.Option(5000, help="number of images"),
    image_size: int = typer.Option(32, "--image-size", help="32 or 64"),
) -> None:
    """Make the synthetic captioned world with planted replication (imagefolder + ground_truth.json)."""
    from ..data.world import make_world as run

    from .main import out

    truth = run(out_dir, seed=seed, size=size, image_size=image_size)
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
