"""`sdguard keygen`, `encrypt`, `decrypt`, `log read|rekey`, `api-key add` and `serve` (thin over
:mod:`sdguard.deploy.commands`)."""

from __future__ import annotations

import json

import typer

from .build import add_command
from .main import app, done, out

log_app = typer.Typer(no_args_is_help=True, help="Read or re-key the service's encrypted prompt log.")
key_app = typer.Typer(no_args_is_help=True, help="Manage the service's API keys (stored hashed).")


def _keygen(cfg, _extra, _cli) -> None:
    from ..deploy import keygen

    made = keygen(cfg)
    out.print(f"  keys written to {made['folder']}: {', '.join(made['files'])} (keep them out of the model folder)")


def _encrypt(cfg, _extra, _cli) -> None:
    from ..deploy import encrypt

    done(encrypt(cfg), cfg.out)


def _decrypt(cfg, _extra, _cli) -> None:
    from ..deploy import decrypt

    done(decrypt(cfg), cfg.out)


def _log_read(cfg, _extra, _cli) -> None:
    from ..deploy import log_read

    for row in log_read(cfg):
        print(json.dumps(row, ensure_ascii=False))


def _log_rekey(cfg, _extra, _cli) -> None:
    from ..deploy import log_rekey

    out.print(f"  {log_rekey(cfg)} records re-encrypted into {cfg.out}")


def _key_add(cfg, _extra, _cli) -> None:
    from ..deploy import serve_key_add

    token = serve_key_add(cfg)
    out.print(f"  API key for {cfg.name} (shown once; {cfg.keys} keeps only its hash):")
    print(token)


def _serve(cfg, _extra, _cli) -> None:
    from ..deploy import serve

    out.print(f"  serving {cfg.model} on http://{cfg.host}:{cfg.port} (Ctrl-C stops)")
    serve(cfg)


def _register() -> None:
    from ..deploy.commands import (
        DecryptConfig,
        EncryptConfig,
        KeygenConfig,
        LogReadConfig,
        LogRekeyConfig,
        ServeKeyConfig,
    )
    from ..deploy.service import ServeConfig

    add_command(app, "keygen", KeygenConfig, _keygen)
    add_command(app, "encrypt", EncryptConfig, _encrypt)
    add_command(app, "decrypt", DecryptConfig, _decrypt)
    add_command(app, "serve", ServeConfig, _serve)
    add_command(log_app, "read", LogReadConfig, _log_read)
    add_command(log_app, "rekey", LogRekeyConfig, _log_rekey)
    add_command(key_app, "add", ServeKeyConfig, _key_add)
    app.add_typer(log_app, name="log")
    app.add_typer(key_app, name="api-key")


_register()
