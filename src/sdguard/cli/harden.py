"""`sdguard erase` (concept erasure: ESD-x, ESD-u, ESD-all, UCE), `sdguard desensitize` (the data) and
`sdguard watermark embed|detect`.

Its options are :class:`~sdguard.harden.erasure.commands.EraseConfig`'s fields plus every
registered method's own options (each method's ``Options`` class), so a new method is one module
plus one registry line and its options appear here by themselves.
"""

from __future__ import annotations

import typer

from .build import add_command
from .main import app, done


def _erase(cfg, method_options, _cli) -> None:
    from ..harden.erasure import erase as run

    done(run(cfg, **method_options), cfg.out)  # warnings: printed by the command wrapper (build.py)


def _register() -> None:
    from ..harden.erasure import ERASURE_METHODS
    from ..harden.erasure.commands import EraseConfig

    methods = {name: ERASURE_METHODS.get(name).Options for name in ERASURE_METHODS.names()}
    # one label per Options class: "esd-all, esd-u, esd-x" share ESD's options
    by_class: dict[type, list[str]] = {}
    for name, options in methods.items():
        by_class.setdefault(options, []).append(name)
    extra = {", ".join(names): options for options, names in by_class.items()}
    add_command(app, "erase", EraseConfig, _erase, extra=extra)


_register()


def _desensitize(cfg, _extra, _cli) -> None:
    from ..harden.desensitize import desensitize

    done(desensitize(cfg), cfg.out)


def _register_desensitize() -> None:
    from ..harden.desensitize.options import DesensitizeConfig

    add_command(app, "desensitize", DesensitizeConfig, _desensitize)


_register_desensitize()


watermark_app = typer.Typer(no_args_is_help=True, help="Watermark images and detect watermarks.")


def _watermark_embed(cfg, _extra, _cli) -> None:
    from ..harden.watermark import watermark_embed

    done(watermark_embed(cfg), cfg.out)


def _watermark_detect(cfg, _extra, _cli) -> None:
    from ..harden.watermark import watermark_detect

    done(watermark_detect(cfg), cfg.out)


def _register_watermark() -> None:
    from ..harden.watermark.run import WatermarkDetectConfig, WatermarkEmbedConfig

    add_command(watermark_app, "embed", WatermarkEmbedConfig, _watermark_embed)
    add_command(watermark_app, "detect", WatermarkDetectConfig, _watermark_detect)
    app.add_typer(watermark_app, name="watermark")


_register_watermark()
