"""Typer application. Each command parses its arguments, calls the library function of the same
name and prints where the output is. Errors of the contract become one line and an exit code."""

from __future__ import annotations

import json
import os
import sys
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape

from ..core.errors import SdguardError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Audit and harden text-to-image diffusion models for privacy and safety.")
err = Console(stderr=True)
out = Console()


def _register_groups() -> None:
    from .audit import audit_app
    from .data import data_app
    from .model import model_app
    from . import harden  # noqa: F401  (registers `sdguard erase`)

    app.add_typer(audit_app, name="audit")
    app.add_typer(data_app, name="data")
    app.add_typer(model_app, name="model")


def done(report, out_dir: str) -> None:
    """Print a command's summary lines and where its report is."""
    for line in report.summary:
        out.print(f"  {line}")
    out.print(f"[green]report:[/green] {os.path.join(out_dir, 'report.html')}")


@app.command()
def generate(
    model: str = typer.Argument(..., help="builtin:NAME, a diffusers folder, a .safetensors file or a hub id"),
    prompt: List[str] = typer.Argument(..., help="one or more prompts"),
    n: int = typer.Option(4, "--n", help="images per prompt"),
    seed: int = typer.Option(0, help="image j of each prompt uses seed + j"),
    steps: int = typer.Option(25, help="denoising steps"),
    guidance: float = typer.Option(7.5, help="classifier-free guidance scale"),
    height: Optional[int] = typer.Option(None, help="image height (default: the model's size)"),
    width: Optional[int] = typer.Option(None, help="image width (default: the model's size)"),
    batch_size: int = typer.Option(8, "--batch-size"),
    negative_prompt: Optional[str] = typer.Option(None, "--negative-prompt"),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, mps (default: best available)"),
    out_dir: str = typer.Option(..., "--out", help="output folder"),
    overwrite: bool = typer.Option(False, help="replace an existing output folder"),
) -> None:
    """Generate images: N per prompt, each from its own seed."""
    from ..models.commands import generate as run

    report = run(model, prompt, out=out_dir, n=n, seed=seed, steps=steps, guidance=guidance, height=height,
                 width=width, batch_size=batch_size, negative_prompt=negative_prompt, device=device,
                 overwrite=overwrite)
    done(report, out_dir)


@app.command()
def info(
    model: str = typer.Argument(..., help="builtin:NAME, a diffusers folder, a .safetensors file or a hub id"),
    device: Optional[str] = typer.Option(None),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Components, parameter counts per group and the weight fingerprint of a model."""
    from ..models.commands import info as run

    desc = run(model, device=device)
    if as_json:
        out.print_json(json.dumps(desc))
        return
    out.print(f"[bold]{desc['spec']}[/bold]  fingerprint {desc['fingerprint'][:16]}…")
    for name, cls in desc["components"].items():
        out.print(f"  {name:14s} {cls}")
    out.print("  parameters: " + ", ".join(f"{g}={c:,}" for g, c in desc["parameters"].items()))
    out.print(f"  default size {desc['default_size']}px, latents {desc['latent_shape']}, "
              f"vocabulary {desc['tokenizer']['vocab_size']}, max tokens {desc['tokenizer']['max_length']}")


@app.command()
def demo(
    out_dir: str = typer.Option("demo-out", "--out", help="output folder"),
    overwrite: bool = typer.Option(False, help="replace an existing output folder"),
) -> None:
    """The main job on the embedded default (builtin model and synthetic world), on a CPU."""
    from ..demo import demo as run

    report = run(out_dir, overwrite=overwrite)
    done(report, out_dir)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, turn sdguard errors into one line on stderr and an exit code."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    try:
        app(args=argv, prog_name="sdguard")  # standalone: usage errors print and exit 2
    except SdguardError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return exc.exit_code
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


_register_groups()

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
