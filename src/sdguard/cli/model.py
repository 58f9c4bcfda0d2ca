"""`sdguard model ...`: the builtin tiny model's training recipe and model utilities."""

from __future__ import annotations

import typer

model_app = typer.Typer(no_args_is_help=True, help="Models: train the builtin tiny model.")
