"""The deployment commands: ``sdguard keygen``, ``encrypt``, ``decrypt``, ``log read|rekey``,
``api-key add`` and ``serve`` (each a Python function of the same name over its config)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ..core.config import OutputConfig, RunConfig, build, option, output_for
from ..core.errors import InputError
from ..report import Report
from .service import ServeConfig


class KeygenConfig(RunConfig):
    """Write new keys: the weights key, the prompt-log key, the watermark key (hex, mode 600) and an
    elliptic-curve signing key pair (PEM)."""

    python_positional = ("out",)
    out: str = option(positional=True, metavar="DIR", help="a new folder for the key files")


class EncryptConfig(OutputConfig):
    """Encrypt a model's weights (AES-256-GCM per tensor, CryptoTensors) and sign the folder."""

    python_positional = ("model",)
    model: str = option(positional=True, metavar="MODEL", help="the model spec to encrypt")
    key: str | None = option(None, help="where the weights key is: env:NAME or file:PATH (default env:SDGUARD_KEY)")
    sign_key: str = option(help="the publisher's signing key: file:PATH (an elliptic-curve private key, PEM)")


class DecryptConfig(OutputConfig):
    """Write the plain diffusers folder of an encrypted one (after it verifies)."""

    python_positional = ("model",)
    model: str = option(positional=True, metavar="MODEL", help="the encrypted folder")
    key: str | None = option(None, help="where the weights key is: env:NAME or file:PATH (default env:SDGUARD_KEY)")


class LogReadConfig(RunConfig):
    """Decrypt and print the prompt log."""

    python_positional = ("log",)
    log: str = option(positional=True, metavar="LOG", help="the encrypted prompt log")
    key: list[str] = option([], help="where a prompt log key is: env:NAME or file:PATH (repeatable: one per key the "
                            "log was written with; default env:SDGUARD_LOG_KEY)")


class LogRekeyConfig(LogReadConfig):
    """Re-encrypt the prompt log under a new key (key rotation)."""

    new_key: str = option(help="where the new prompt log key is: env:NAME or file:PATH")
    out: str = option(help="the re-encrypted log (a new file)")


class ServeKeyConfig(RunConfig):
    """Add an API key to a keys file (the key is printed once; only its hash is stored)."""

    python_positional = ("keys",)
    keys: str = option(positional=True, metavar="KEYS", help="the API keys file (created when missing)")
    name: str = option(min_length=1, max_length=100, help="who the key is for (in the prompt log)")


def keygen(*args: Any, **values: Any) -> dict:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from ..core.io import atomic_write_bytes
    from ..core.keys import new_secret, write_key_file, write_private_file

    cfg = build(KeygenConfig, args, values)
    out = Path(cfg.out)
    if out.exists() and any(out.iterdir()):
        raise InputError.bad("DIR", cfg.out, "is not empty: keys are never overwritten")
    out.mkdir(parents=True, exist_ok=True)
    for name in ("weights.key", "prompt-log.key", "watermark.key"):
        write_key_file(out / name, new_secret())
    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    write_private_file(out / "signing.pem", pem)
    atomic_write_bytes(out / "signing.pub.pem", private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return {"folder": str(out), "files": sorted(p.name for p in out.iterdir())}


def encrypt(*args: Any, **values: Any) -> Report:
    """Encrypt ``model`` into ``out`` (a folder that is itself a model spec)."""
    from ..models.builtin import package_weights_dir
    from .signing import sign_folder, signing_key_path
    from .weights import (
        encrypt_folder,
        encrypt_pipeline,
        is_encrypted_folder,
        weights_key,
        write_marker,
    )

    cfg = build(EncryptConfig, args, values)
    key, pem = weights_key(cfg.key), signing_key_path(cfg.sign_key)
    source = Path(cfg.model).expanduser()
    if cfg.model.startswith("builtin:") and (package_weights_dir(cfg.model[8:]) / "model_index.json").is_file():
        source = package_weights_dir(cfg.model[8:])
    if source.is_dir() and is_encrypted_folder(source):
        raise InputError.bad("MODEL", cfg.model, "is already encrypted")
    report = Report("encrypt", cfg)
    with output_for(cfg, "encrypt", "model") as stage:
        with report.timer("encrypt"):
            if source.is_dir() and (source / "model_index.json").is_file():
                files = encrypt_folder(source, stage, key)
            else:
                from ..models.loading import load_pipeline

                files = encrypt_pipeline(load_pipeline(cfg.model, device="cpu"), stage, key)
            write_marker(stage, key, files, cfg.model)
        report.results = {"key_fingerprint": key.fingerprint, "files": files,
                          "tensors": sum(f["tensors"] for f in files.values())}
        report.summary = [f"{report.results['tensors']} tensors in {len(files)} file(s) encrypted under weights key "
                          f"{key.fingerprint}", "the folder is signed (model.sig); load it with SDGUARD_KEY set"]
        report.write(stage)
        with report.timer("sign"):
            sign_folder(stage, pem)
    return report


def decrypt(*args: Any, **values: Any) -> Report:
    from .weights import decrypt_folder, is_encrypted_folder, weights_key

    cfg = build(DecryptConfig, args, values)
    folder = Path(cfg.model)
    if not folder.is_dir() or not is_encrypted_folder(folder):
        raise InputError.bad("MODEL", cfg.model, "is not an encrypted folder (sdguard encrypt writes one)")
    key = weights_key(cfg.key)
    report = Report("decrypt", cfg)
    with output_for(cfg, "decrypt", "model") as stage:
        with report.timer("decrypt"):
            counts = decrypt_folder(folder, stage, key)
        report.results = {"key_fingerprint": key.fingerprint, "files": counts}
        report.summary = [f"{sum(counts.values())} tensors in {len(counts)} file(s) decrypted (signature verified)"]
        report.write(stage)
    return report


def log_read(*args: Any, **values: Any) -> list[dict]:
    from .promptlog import log_key, read_log

    cfg = build(LogReadConfig, args, values)
    keys = [log_key(k) for k in cfg.key] or [log_key(None)]
    return read_log(cfg.log, keys)


def log_rekey(*args: Any, **values: Any) -> int:
    from .promptlog import log_key, rekey_log

    cfg = build(LogRekeyConfig, args, values)
    if Path(cfg.out).exists():
        raise InputError.bad("--out", cfg.out, "exists: the re-encrypted log goes to a new file")
    keys = [log_key(k) for k in cfg.key] or [log_key(None)]
    return rekey_log(cfg.log, keys, log_key(cfg.new_key, "--new-key"), cfg.out)


def serve_key_add(*args: Any, **values: Any) -> str:
    """Add a key for ``name`` to ``keys``; returns the key (shown once, stored as its hash)."""
    from ..core.io import atomic_write_json
    from .service import api_key_rows, hash_api_key, new_api_key

    cfg = build(ServeKeyConfig, args, values)
    path = Path(cfg.keys)
    rows = api_key_rows(path, "KEYS") if path.is_file() else []
    if any(r.get("name") == cfg.name for r in rows):
        raise InputError.bad("--name", cfg.name, f"already has a key in {cfg.keys}")
    token = new_api_key()
    rows.append({"name": cfg.name, "sha256": hash_api_key(token), "created": round(time.time())})
    atomic_write_json(path, {"keys": rows})
    path.chmod(0o600)
    return token


def serve(*args: Any, **values: Any) -> None:
    """Run the service until interrupted (uvicorn, one worker: the model is loaded once)."""
    cfg = build(ServeConfig, args, values)
    from .app import create_app
    from .service import _require

    uvicorn = _require("uvicorn", "sdguard serve")
    app = create_app(cfg)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning", access_log=False)
