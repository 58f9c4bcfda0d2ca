"""`sdguard erase` (concept erasure: ESD-x, ESD-u, ESD-all, UCE) and `sdguard desensitize` (the data).

Its options are :class:`~sdguard.harden.erasure.commands.EraseConfig`'s fields plus every
registered method's own options (each method's ``Options`` class), so a new method is one module
plus one registry line and its options appear here by themselves.
"""

from __future__ import annotations

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
