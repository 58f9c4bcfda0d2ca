"""`sdguard federate ...`: federated fine-tuning with Flower (simulation, SuperLink, SuperNode, run)."""

from __future__ import annotations

import typer

from .build import add_command

federate_app = typer.Typer(no_args_is_help=True, help="Federated fine-tuning with Flower: simulate every client "
                           "here, or serve a SuperLink, connect SuperNodes and run.")


def _simulate(cfg, _extra, _cli) -> None:
    from ..train.federated import simulate
    from .main import done

    done(simulate(cfg), cfg.out)


def _run(cfg, _extra, _cli) -> None:
    from ..train.federated.deploy import run_deployed
    from .main import out

    report = run_deployed(cfg)
    for line in report.get("summary", []):
        out.print(f"  {line}")
    out.print(f"[green]report:[/green] {cfg.out}/report.html")


def _serve(cfg, _extra, _cli) -> None:
    from ..train.federated.deploy import serve

    raise typer.Exit(serve(cfg))


def _client(cfg, _extra, _cli) -> None:
    from ..train.federated.deploy import node

    raise typer.Exit(node(cfg))


def _register() -> None:
    from ..train.federated.deploy import NodeConfig, ServeConfig
    from ..train.federated.options import FederateConfig

    add_command(federate_app, "simulate", FederateConfig, _simulate)
    add_command(federate_app, "run", FederateConfig, _run)
    add_command(federate_app, "serve", ServeConfig, _serve)
    add_command(federate_app, "client", NodeConfig, _client)


_register()
