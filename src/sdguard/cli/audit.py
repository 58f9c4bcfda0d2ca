"""`sdguard audit ...`: dataset, generation, memorization, membership, erasure and safety audits."""

from __future__ import annotations

import typer

audit_app = typer.Typer(no_args_is_help=True, help="Audit a dataset or a model.")
