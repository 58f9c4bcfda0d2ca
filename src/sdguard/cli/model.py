"""`sdguard model ...`: the builtin tiny model's training recipe."""

from __future__ import annotations

import typer

from .build import add_command

model_app = typer.Typer(no_args_is_help=True, help="Models: train the builtin tiny model.")


def _train_tiny(cfg, _extra, _cli) -> None:
    from ..train import train_tiny as run
    from .main import done

    done(run(cfg), cfg.out)


def _register() -> None:
    from ..train import TrainTinyConfig

    add_command(model_app, "train-tiny", TrainTinyConfig, _train_tiny)


_register()
