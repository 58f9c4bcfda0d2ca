"""`sdguard data ...`: datasets and the synthetic world."""

from __future__ import annotations

import typer

data_app = typer.Typer(no_args_is_help=True, help="Datasets: make the synthetic world, inspect datasets.")
