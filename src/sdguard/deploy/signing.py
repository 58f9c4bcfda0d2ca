"""Signing a model folder with sigstore's ``model-signing`` (an elliptic-curve key of the publisher).

``model-signing`` (https://github.com/sigstore/model-transparency, ``model_signing.signing`` and
``model_signing.verifying``) hashes every file of the folder into a manifest and signs it as a
sigstore bundle; sdguard writes it to ``model.sig`` inside the folder and the public key beside it
(``signing.pub.pem``). Verification recomputes the manifest, so a changed, added or removed file
is refused by name. The public key checked against is the operator's pinned one when
``SDGUARD_VERIFY_KEY`` (a PEM file) is set, else the folder's own: that one proves the folder is
whole and unchanged since signing, the pinned one also proves who signed it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..core.errors import InputError, MissingDependencyError
from .weights import NOT_SIGNED, PUBLIC_KEY, SIGNATURE, VERIFY_KEY_ENV, TamperedError


def _model_signing():
    try:
        import model_signing
    except ImportError:
        raise MissingDependencyError("model-signing", "deploy", "signing model folders") from None
    return model_signing


def _hashing(ms):
    return ms.hashing.Config().set_ignored_paths(paths=list(NOT_SIGNED), ignore_git_paths=True)


def signing_key_path(spec: str | None, argument: str = "--sign-key") -> Path:
    """The PEM private key named by ``file:PATH`` (a key is never given on the command line)."""
    kind, _, where = (spec or "").partition(":")
    if kind != "file" or not where:
        raise InputError.bad(argument, spec or "(none)", "must be file:PATH, an elliptic-curve private key in PEM "
                             "(sdguard keygen writes one)")
    path = Path(where).expanduser()
    if not path.is_file():
        raise InputError.bad(argument, spec, "names no file")
    return path


def write_public_key(private_pem: Path, out: Path, argument: str = "--sign-key") -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        private = serialization.load_pem_private_key(private_pem.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise InputError.bad(argument, f"file:{private_pem}", f"is not an unencrypted PEM private key ({exc})") from None
    if not isinstance(private, ec.EllipticCurvePrivateKey):
        raise InputError.bad(argument, f"file:{private_pem}", "is not an elliptic-curve key (model-signing signs with "
                             "P-256/P-384/P-521 keys)")
    (out / PUBLIC_KEY).write_bytes(private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))


def sign_folder(folder: Path, private_pem: Path) -> None:
    """Sign every file of ``folder`` (but the signature and sdguard's run records) into ``model.sig``."""
    ms = _model_signing()
    write_public_key(private_pem, folder)
    ms.signing.Config().use_elliptic_key_signer(private_key=private_pem).set_hashing_config(
        _hashing(ms)).sign(folder, folder / SIGNATURE)


def _trusted_key(folder: Path) -> Path:
    pinned = os.environ.get(VERIFY_KEY_ENV)
    if pinned:
        path = Path(pinned.removeprefix("file:")).expanduser()
        if not path.is_file():
            raise InputError.bad(VERIFY_KEY_ENV, pinned, "names no public-key file")
        return path
    return folder / PUBLIC_KEY


def verify_folder(folder: Path) -> str:
    """Refuse ``folder`` unless its signature verifies; returns which key it was checked against."""
    ms = _model_signing()
    signature, public = folder / SIGNATURE, _trusted_key(folder)
    for path in (signature, public):
        if not path.is_file():
            raise TamperedError(f"MODEL {str(folder)!r} is an encrypted folder without its {path.name}: it cannot be "
                                "verified, so it is not loaded.")
    try:
        ms.verifying.Config().use_elliptic_key_verifier(public_key=public).set_hashing_config(
            _hashing(ms)).verify(folder, signature)
    except Exception as exc:  # model-signing raises ValueError, pydantic and sigstore errors
        raise TamperedError(f"the signature {signature} of MODEL {str(folder)!r} does not verify: "
                            f"{_mismatch(exc)}.") from None
    return "pinned" if public != folder / PUBLIC_KEY else "folder"


def _mismatch(exc: Exception) -> str:
    """The files model-signing's mismatch message names (its message is a list's repr, so quotes may
    come escaped)."""
    text = str(exc).replace("\\'", "'").replace('\\"', '"')
    files = re.findall(r"Hash mismatch for '([^']+)'", text)
    for listed in re.findall(r"(?:Extra|Missing) files (?:found )?in model '[^']*': ([^\]\"']+)", text):
        files += [f.strip() for f in listed.split(",") if f.strip()]
    if files:
        return "changed, added or missing: " + ", ".join(sorted(set(files)))
    if "ignature" in text or "Bundle" in text or "validation error" in text:
        return "the signature file is damaged or was made with another key"
    return " ".join(text.split())[:200]
