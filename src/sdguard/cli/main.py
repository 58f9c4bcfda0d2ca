"""Typer application. Each command parses its arguments, calls the library function of the same
name and prints where the output is. Errors of the contract become one line and an exit code."""

from __future__ import annotations

import inspect
import json
import os
import sys

import typer
from rich.console import Console
from rich.markup import escape

from ..core.errors import SdguardError
from .build import add_command

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Audit and harden text-to-image diffusion models for privacy and safety.")
err = Console(stderr=True)
out = Console()


def _register_groups() -> None:
    from . import harden  # noqa: F401  (registers `sdguard erase`)
    from .audit import audit_app
    from .data import data_app
    from .model import model_app

    app.add_typer(audit_app, name="audit")
    app.add_typer(data_app, name="data")
    app.add_typer(model_app, name="model")


def done(report, out_dir: str) -> None:
    """Print a command's summary lines and where its report is."""
    for line in report.summary:
        out.print(f"  {line}")
    out.print(f"[green]report:[/green] {os.path.join(out_dir, 'report.html')}")


def _generate(cfg, _extra, _cli) -> None:
    from ..models.commands import generate as run

    done(run(cfg), cfg.out)


def _info(cfg, _extra, cli) -> None:
    from ..models.commands import info as run

    desc = run(cfg)
    if cli["as_json"]:
        out.print_json(json.dumps(desc))
        return
    out.print(f"[bold]{desc['spec']}[/bold]  fingerprint {desc['fingerprint'][:16]}…")
    for name, cls in desc["components"].items():
        out.print(f"  {name:14s} {cls}")
    out.print("  parameters: " + ", ".join(f"{g}={c:,}" for g, c in desc["parameters"].items()))
    out.print(f"  default size {desc['default_size']}px, latents {desc['latent_shape']}, "
              f"vocabulary {desc['tokenizer']['vocab_size']}, max tokens {desc['tokenizer']['max_length']}")


def _demo(cfg, _extra, _cli) -> None:
    from ..demo import demo as run

    done(run(cfg), cfg.out)


def _register_commands() -> None:
    from ..demo import DemoConfig
    from ..models.commands import GenerateConfig, InfoConfig

    add_command(app, "generate", GenerateConfig, _generate)
    as_json = inspect.Parameter("as_json", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                                default=typer.Option(False, "--json", help="print JSON"))
    add_command(app, "info", InfoConfig, _info, cli_only=[as_json])
    add_command(app, "demo", DemoConfig, _demo)


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


_register_commands()
_register_groups()

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
