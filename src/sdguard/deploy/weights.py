"""Weights at rest: an encrypted, signed diffusers folder that loads in memory only.

Every ``*.safetensors`` file of the pipeline is rewritten with CryptoTensors (Zhu et al. 2025,
"CryptoTensors: A Light-Weight Large Language Model File Format for Highly-Secure Model
Distribution", arXiv:2512.04580; the ``cryptotensors`` package, a safetensors extension):

- each tensor is encrypted with AES-256-GCM under its own data key, which is wrapped by the
  key-encryption key derived from the weights key (``SDGUARD_KEY`` by default, or a key file);
- the file's header (every tensor's name, dtype, shape, offsets, wrapped keys and GCM tags) is
  signed with Ed25519 by CryptoTensors, under a signing key also derived from the weights key.

Deviation from "name, dtype and shape bound as associated data": CryptoTensors authenticates the
header (names, dtypes and shapes included) with that signature, checked before any tensor is
decrypted, instead of passing them to GCM as associated data; swapping, renaming or reshaping a
tensor is refused either way (a test does both). Everything else in the folder (configs,
tokenizer, scheduler) stays readable, and the whole folder is signed with sigstore's
``model-signing`` (an elliptic-curve key of the publisher, ``--sign-key``), verified on every
load against the folder's ``signing.pub.pem`` or, when ``SDGUARD_VERIFY_KEY`` names one, the
operator's pinned public key. A folder spec that holds :data:`MARKER` is loaded through
:func:`load_encrypted_pipeline`: decrypted tensors go straight into the modules (built empty with
Accelerate where it is installed), never to disk.
"""

from __future__ import annotations

import base64
import importlib
import json
import os
import shutil
from pathlib import Path

from ..core.errors import InputError, MissingDependencyError
from ..core.keys import SecretKey, read_secret

MARKER = "sdguard-encrypted.json"
SIGNATURE = "model.sig"
PUBLIC_KEY = "signing.pub.pem"
DEFAULT_KEY_ENV = "SDGUARD_KEY"
VERIFY_KEY_ENV = "SDGUARD_VERIFY_KEY"
FORMAT = "sdguard-encrypted-folder"
#: files of an output folder that are not the model (not signed, not copied by decrypt)
NOT_SIGNED = (SIGNATURE, ".sdguard.json", "report.json", "report.html")
WEIGHT_FILES = {"diffusers": "diffusion_pytorch_model.safetensors", "transformers": "model.safetensors"}


class TamperedError(InputError):
    """An encrypted folder failed authentication: a tensor, a header or the signature was changed,
    or the key is not the one it was encrypted with (exit code 2)."""


def weights_key(spec: str | None = None, argument: str = "--key") -> SecretKey:
    """The weights key named by ``spec`` (``env:NAME``/``file:PATH``; default ``env:SDGUARD_KEY``,
    or ``file:$SDGUARD_KEY_FILE`` when that is set)."""
    if spec is None and os.environ.get("SDGUARD_KEY_FILE"):
        spec = f"file:{os.environ['SDGUARD_KEY_FILE']}"
    return SecretKey(read_secret(spec, default_env=DEFAULT_KEY_ENV, argument=argument, kind="weights key"),
                     "weights key", argument)


def is_encrypted_folder(path: str | Path) -> bool:
    return (Path(path) / MARKER).is_file()


def _cryptotensors():
    try:
        import cryptotensors.torch as ct
    except ImportError:
        raise MissingDependencyError("cryptotensors", "deploy", "encrypted weights") from None
    return ct


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")  # CryptoTensors reads JWK key material as standard base64


def crypto_config(key: SecretKey, *, private: bool) -> dict:
    """CryptoTensors' key configuration (JWKs) derived from ``key``: the AES-256 key-encryption key
    and the Ed25519 header-signing key (its private half only when writing)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    signer = Ed25519PrivateKey.from_private_bytes(key.derive("weights-header-signing"))
    public = signer.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    kid = f"sdguard-{key.fingerprint}"
    sign = {"kty": "OKP", "crv": "Ed25519", "x": _b64(public), "kid": kid + "-sign"}
    if private:
        sign["d"] = _b64(signer.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                              serialization.NoEncryption()))
    return {"enc_key": {"kty": "oct", "alg": "aes256gcm", "k": _b64(key.derive("weights-kek")), "kid": kid + "-enc"},
            "sign_key": sign}


def encrypt_tensors(tensors: dict, path: Path, key: SecretKey, metadata: dict | None = None) -> None:
    _cryptotensors().save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata,
                               config=crypto_config(key, private=True))


def _why(exc: Exception) -> str:
    text = str(exc)
    if "Signature verification failed" in text:
        return "its header signature does not verify (the header was changed, or this is not its key)"
    if "Decryption" in text:
        return "it does not decrypt (the data was changed, or this is not its key)"
    return " ".join(text.split())[:300]


def decrypt_tensors(path: Path, key: SecretKey, device: str = "cpu", metadata: dict | None = None) -> dict:
    """Every tensor of an encrypted file, authenticated; a failure names the file (and the tensor).
    ``metadata``, when given, receives the file's own header metadata (not CryptoTensors' records)."""
    from cryptotensors import safe_open

    _cryptotensors()
    config = crypto_config(key, private=False)
    name = None
    try:
        with safe_open(str(path), framework="pt", device=device, config=config) as f:
            if metadata is not None:
                metadata.update({k: v for k, v in (f.metadata() or {}).items() if not k.startswith("__")})
            out = {}
            for name in f.keys():
                out[name] = f.get_tensor(name)
            return out
    except Exception as exc:  # CryptoTensors raises SafetensorError for every failure
        where = f"tensor {name!r} of {path}" if name is not None else str(path)
        raise TamperedError(f"encrypted weights {where} were refused: {_why(exc)}.") from None


def plain_tensors(path: Path) -> tuple[dict, dict]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata() or {}


def encrypt_folder(source: Path, out: Path, key: SecretKey, progress=None) -> dict:
    """Copy the diffusers folder ``source`` into ``out`` with every ``*.safetensors`` file encrypted
    (its tensors bit for bit, dtype and shards kept). Pickle weights (``.bin``, ``.ckpt``) are refused:
    they would stay readable."""
    pickled = sorted(str(p.relative_to(source)) for p in source.rglob("*") if p.suffix in (".bin", ".ckpt", ".pt"))
    if pickled:
        raise InputError.bad("MODEL", str(source), f"holds pickle weights ({', '.join(pickled[:3])}), which would stay "
                             "readable: save the pipeline with safetensors first (save_pretrained, the default)")
    files = {}
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        rel = path.relative_to(source)
        if rel.parts[0] in NOT_SIGNED or rel.name in (MARKER, ".sdguard.json"):
            continue
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".safetensors":
            tensors, metadata = plain_tensors(path)
            encrypt_tensors(tensors, target, key, metadata)
            files[str(rel)] = {"tensors": len(tensors)}
            if progress is not None:
                progress(str(rel))
        else:
            shutil.copyfile(path, target)
    return files


def encrypt_pipeline(pipe, out: Path, key: SecretKey) -> dict:
    """Write a loaded pipeline (any spec that is not a folder) into ``out``, encrypted; nothing of its
    weights reaches the disk in the clear."""
    import torch

    pipe.save_config(str(out))
    files = {}
    for name, part in pipe.components.items():
        if part is None:
            continue
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        if isinstance(part, torch.nn.Module):
            library = "transformers" if type(part).__module__.startswith("transformers") else "diffusers"
            (part.config.save_pretrained if library == "transformers" else part.save_config)(str(folder))
            state = {k: v.detach().to("cpu").contiguous().clone() for k, v in part.state_dict().items()}
            encrypt_tensors(state, folder / WEIGHT_FILES[library], key, {"format": "pt"})
            files[f"{name}/{WEIGHT_FILES[library]}"] = {"tensors": len(state)}
        elif hasattr(part, "save_pretrained"):
            part.save_pretrained(str(folder))
    return files


def write_marker(out: Path, key: SecretKey, files: dict, source: str) -> None:
    record = {"format": FORMAT, "version": 1, "cipher": "AES-256-GCM per tensor, Ed25519-signed header (CryptoTensors)",
              "key_fingerprint": key.fingerprint, "key_env_default": DEFAULT_KEY_ENV, "files": files,
              "folder_signature": {"file": SIGNATURE, "public_key": PUBLIC_KEY, "tool": "model-signing (sigstore)"},
              "source": source}
    (out / MARKER).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


def read_marker(folder: Path) -> dict:
    try:
        record = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TamperedError(f"MODEL {str(folder)!r} has an unreadable {MARKER} ({exc}).") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT or not isinstance(record.get("files"), dict):
        raise TamperedError(f"MODEL {str(folder)!r} has a {MARKER} that is not sdguard's encrypted-folder record.")
    return record


def check_key(folder: Path, key: SecretKey, record: dict, argument: str = "--key") -> None:
    if record.get("key_fingerprint") != key.fingerprint:
        raise TamperedError(f"{argument} holds weights key {key.fingerprint}, but {folder} was encrypted with key "
                            f"{record.get('key_fingerprint')}: set {DEFAULT_KEY_ENV} (or the key file) to that key.")


def _module_class(library: str, name: str):
    try:
        return getattr(importlib.import_module(library), name)
    except (ImportError, AttributeError):
        raise TamperedError(f"the encrypted folder names a component class {library}.{name} that cannot be "
                            "imported.") from None


def _build_module(cls, library: str, folder: Path, state: dict):
    """An empty module of ``cls`` from the config in ``folder`` (on the meta device with
    Accelerate), then the decrypted tensors assigned into it."""
    try:
        from accelerate import init_empty_weights
    except ImportError:  # the plain path: random init, then overwritten
        import contextlib

        init_empty_weights = contextlib.nullcontext
    with init_empty_weights():
        if library == "transformers":
            module = cls(cls.config_class.from_pretrained(str(folder)))
        else:
            module = cls.from_config(cls.load_config(str(folder)))
    missing, unexpected = module.load_state_dict(state, strict=False, assign=True)
    still_meta = [n for n, p in [*module.named_parameters(), *module.named_buffers()] if p.is_meta]
    if unexpected or still_meta:
        raise TamperedError(f"the encrypted weights of {folder} do not fit its config "
                            f"({len(still_meta)} missing, {len(unexpected)} unexpected tensors, e.g. "
                            f"{(still_meta + list(unexpected))[0]!r}).")
    return module.eval()


def load_encrypted_pipeline(folder: Path, key: SecretKey | None = None):
    """The StableDiffusionPipeline of an encrypted folder, decrypted in memory, after the folder's
    signature and every tensor's authentication verify."""
    from diffusers import StableDiffusionPipeline

    from ..models.loading import pretrained_options
    from .signing import verify_folder

    key = key or weights_key(argument=DEFAULT_KEY_ENV)
    record = read_marker(folder)
    verify_folder(folder)
    check_key(folder, key, record, DEFAULT_KEY_ENV)
    index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    parts = {}
    for name, spec in index.items():
        if name.startswith("_") or not isinstance(spec, list) or len(spec) != 2 or spec[0] is None:
            continue
        weights = sorted((folder / name).glob("*.safetensors"))
        if not weights or name == "safety_checker":
            continue
        state = {}
        for path in weights:
            if str(path.relative_to(folder)) not in record["files"]:
                raise TamperedError(f"{path} is not one of the files {folder} was encrypted with.")
            state.update(decrypt_tensors(path, key))
        parts[name] = _build_module(_module_class(*spec), spec[0], folder / name, state)
    options = pretrained_options()
    options.pop("low_cpu_mem_usage", None)
    return StableDiffusionPipeline.from_pretrained(str(folder), local_files_only=True, **parts, **options)


def decrypt_folder(folder: Path, out: Path, key: SecretKey) -> dict:
    """Write the plain diffusers folder of an encrypted one (after verifying it) into ``out``."""
    from safetensors.torch import save_file

    from .signing import verify_folder

    record = read_marker(folder)
    verify_folder(folder)
    check_key(folder, key, record)
    counts = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder)
        if str(rel) in NOT_SIGNED or str(rel) in (MARKER, PUBLIC_KEY):
            continue
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if str(rel) in record["files"]:
            meta: dict = {}
            tensors = decrypt_tensors(path, key, metadata=meta)
            save_file(tensors, str(target), metadata=meta or None)
            counts[str(rel)] = len(tensors)
        else:
            shutil.copyfile(path, target)
    return counts
