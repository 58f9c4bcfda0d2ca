"""Typer application. Each command parses its arguments, calls the library function of the same
name and prints where the output is. Errors of the contract become one line and an exit code; so do
Ctrl-C (exit 130) and an operating-system error (exit 2, naming the file). A resumable run that
failed says how to continue it."""

from __future__ import annotations

import inspect
import json
import os
import shlex
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from ..core.errors import EXIT_INPUT, EXIT_INTERRUPTED, Interrupted, SdguardError
from ..core.io import kept_staging
from .build import add_command

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Audit and harden text-to-image diffusion models for privacy and safety.")
err = Console(stderr=True)
out = Console()


def _register_groups() -> None:
    from . import deploy, harden  # noqa: F401  (register `sdguard erase`, `desensitize`, `encrypt`, `serve`, ...)
    from .audit import audit_app
    from .data import data_app
    from .federate import federate_app
    from .model import model_app

    app.add_typer(audit_app, name="audit")
    app.add_typer(data_app, name="data")
    app.add_typer(model_app, name="model")
    app.add_typer(federate_app, name="federate")


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
    p = desc.get("privacy")
    if p is not None:
        out.print(f"  privacy: {p['error']}" if "error" in p else
                  f"  privacy: ({p['epsilon']:.3g}, {p['delta']:g})-DP per {p['unit']} ({p['accountant']} accountant), "
                  f"noise multiplier {p['noise_multiplier']:.4g}, sampling rate {p['sample_rate']:.4g}, "
                  f"{p['steps']} steps, clipping {p['max_grad_norm']:g}")


def _train(cfg, _extra, _cli) -> None:
    from ..train import train as run

    report = run(cfg)
    if report is not None:  # None in the processes of a multi-process run that are not the main one
        done(report, cfg.out)


def _scan(cfg, _extra, _cli) -> None:
    from ..audit.scan import gate_failures, scan
    from ..core.errors import GateFailed

    report = scan(cfg)
    done(report, cfg.out)
    for path, what in ((cfg.junit, "JUnit XML"), (cfg.model_card, "model card")):
        if path:
            out.print(f"[green]{what}:[/green] {path}")
    failed = gate_failures(report)
    if failed:
        raise GateFailed("release gate failed: " + "; ".join(failed) + ".")


def _demo(cfg, _extra, _cli) -> None:
    from ..demo import demo as run

    done(run(cfg), cfg.out)


def _register_commands() -> None:
    from ..audit.scan import ScanConfig
    from ..demo import DemoConfig
    from ..models.commands import GenerateConfig, InfoConfig
    from ..train.finetune import TrainConfig

    add_command(app, "generate", GenerateConfig, _generate)
    as_json = inspect.Parameter("as_json", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                                default=typer.Option(False, "--json", help="print JSON"))
    add_command(app, "info", InfoConfig, _info, cli_only=[as_json])
    add_command(app, "train", TrainConfig, _train)
    add_command(app, "scan", ScanConfig, _scan)
    add_command(app, "demo", DemoConfig, _demo)


def _line(text: str, *, error: bool = True) -> None:
    err.print(("[red]error:[/red] " if error else "") + escape(text), highlight=False, soft_wrap=True)


def _kept(staging: Path | None, args: list[str]) -> str:
    """What a failed run kept and how to continue it (the same command with ``--resume``)."""
    if staging is None:
        return "no output was written"
    again = shlex.join(["sdguard", *args, *([] if "--resume" in args else ["--resume"])])
    return f"the work so far is kept in {str(staging)!r}; continue it with: {again}"


def _hint(exc: BaseException, args: list[str]) -> None:
    """After the error of a resumable run that kept its work: how to continue it (unless it was
    ``--resume`` that failed: its sentence says what to do)."""
    staging = kept_staging(exc)
    if staging is not None and "--resume" not in args:
        _line(_kept(staging, args) + ".", error=False)


def os_error_sentence(exc: OSError) -> str:
    """One sentence for an operating-system error: which file, and what the system said."""
    names = [os.fsdecode(f) if isinstance(f, (str, bytes)) else str(f) for f in (exc.filename, exc.filename2)
             if f is not None]
    what = exc.strerror or str(exc) or type(exc).__name__
    if not names:
        return f"an operating-system call failed: {what} ({type(exc).__name__})."
    return f"{' and '.join(repr(n) for n in names)} could not be used: {what} ({type(exc).__name__})."


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, turn sdguard errors, Ctrl-C and operating-system errors into one
    line on stderr and an exit code (a bug keeps its traceback)."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    args = [str(a) for a in (sys.argv[1:] if argv is None else argv)]
    try:
        app(args=args, prog_name="sdguard")  # standalone: usage errors print and exit 2
    except Interrupted as exc:
        _line(f"interrupted; {_kept(exc.staging, args)}.", error=False)
        return exc.exit_code
    except SdguardError as exc:
        _line(str(exc))
        _hint(exc, args)
        return exc.exit_code
    except OSError as exc:  # not a bug of ours: a file the system would not read or write
        _line(os_error_sentence(exc))
        _hint(exc, args)
        return EXIT_INPUT
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if code == EXIT_INTERRUPTED:  # Ctrl-C outside a command (typer's own handling)
            _line(f"interrupted; {_kept(None, args)}.", error=False)
        return code
    except Exception as exc:  # a bug: its traceback follows, after what the run kept
        _hint(exc, args)
        raise
    return 0


_register_commands()
_register_groups()

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
