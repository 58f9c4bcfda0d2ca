"""Weights at rest (issue 21): `sdguard encrypt` / `decrypt`, and loading an encrypted folder.

A round trip is bit-identical and generates the same images; one changed byte anywhere (a tensor,
a header, a config, the signature), a wrong key or a wrong pinned public key is refused with a
sentence naming the file, exit 2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("cryptotensors")
pytest.importorskip("model_signing")

MODEL = "builtin:tiny"
UNET = "unet/diffusion_pytorch_model.safetensors"


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    from sdguard.deploy import keygen

    folder = tmp_path_factory.mktemp("keys") / "k"
    keygen(str(folder))
    assert all((folder / f).stat().st_mode & 0o077 == 0 for f in ("weights.key", "signing.pem", "prompt-log.key"))
    return folder


@pytest.fixture(scope="module")
def encrypted(keys, tmp_path_factory):
    from sdguard.deploy import encrypt

    out = tmp_path_factory.mktemp("enc") / "tiny-encrypted"
    report = encrypt(MODEL, out=str(out), key=f"file:{keys / 'weights.key'}", sign_key=f"file:{keys / 'signing.pem'}")
    assert report.results["tensors"] > 100
    return out


@pytest.fixture
def env_key(keys, monkeypatch):
    monkeypatch.setenv("SDGUARD_KEY_FILE", str(keys / "weights.key"))
    monkeypatch.delenv("SDGUARD_VERIFY_KEY", raising=False)


def _state(model):
    return {f"{name}.{k}": v for name in ("unet", "vae", "text_encoder")
            for k, v in getattr(model.pipeline, name).state_dict().items()}


def test_round_trip_is_bit_identical_and_generates_the_same_images(encrypted, env_key):
    from sdguard.models.adapter import DiffusionModel

    plain, secret = DiffusionModel.load(MODEL, device="cpu"), DiffusionModel.load(str(encrypted), device="cpu")
    a, b = _state(plain), _state(secret)
    assert a.keys() == b.keys()
    assert all(a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and bool((a[k] == b[k]).all()) for k in a)
    x = plain.generate(["a red circle"], [3], steps=4).images
    y = secret.generate(["a red circle"], [3], steps=4).images
    assert np.array_equal(x, y)


def test_nothing_of_the_weights_is_readable_on_disk(encrypted):
    from safetensors import safe_open

    from sdguard.models.builtin import package_weights_dir

    with safe_open(str(package_weights_dir("tiny") / UNET), framework="np") as f:
        name = next(iter(f.keys()))
        plain = f.get_tensor(name).tobytes()
    assert len(plain) >= 64
    assert plain[:64] not in (encrypted / UNET).read_bytes()  # the plaintext bytes are nowhere in the file


def _copy(encrypted, tmp_path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(encrypted, dst)
    return dst


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def _header(path: Path) -> tuple[int, str]:
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    return n, raw[8:8 + n].decode()


def _refused(run_cli, folder) -> str:
    code, _out, err = run_cli("info", folder)
    assert code == 2, err
    return " ".join(err.split())


def test_one_changed_byte_anywhere_is_refused_naming_the_file(encrypted, env_key, run_cli, tmp_path, monkeypatch):
    folder = _copy(encrypted, tmp_path)
    n, _ = _header(folder / UNET)
    _flip(folder / UNET, 8 + n + 1000)  # a byte of a tensor's ciphertext
    assert "unet/diffusion_pytorch_model.safetensors" in _refused(run_cli, folder)

    folder = _copy(encrypted, tmp_path / "b")
    (folder / "unet" / "config.json").write_text((folder / "unet" / "config.json").read_text().replace("32", "33", 1))
    assert "unet/config.json" in _refused(run_cli, folder)

    folder = _copy(encrypted, tmp_path / "c")
    _flip(folder / "model.sig", len((folder / "model.sig").read_bytes()) // 2)
    assert "signature" in _refused(run_cli, folder)


def test_a_header_change_is_refused_by_the_tensor_layer_too(encrypted, keys, tmp_path):
    """Past the folder signature (re-signed by the attacker's own key), CryptoTensors' header signature
    still refuses a reshaped tensor: names, dtypes and shapes are authenticated per file."""
    from sdguard.deploy.weights import TamperedError, decrypt_tensors, weights_key

    path = _copy(encrypted, tmp_path) / UNET
    n, text = _header(path)
    header = json.loads(text)
    name, entry = next((k, v) for k, v in header.items() if k != "__metadata__" and len(v["shape"]) == 2
                       and v["shape"][0] != v["shape"][1])
    old = json.dumps(entry["shape"], separators=(",", ":"))
    new = json.dumps(entry["shape"][::-1], separators=(",", ":"))
    assert len(old) == len(new) and old in text
    raw = path.read_bytes()
    path.write_bytes(raw[:8] + text.replace(old, new, 1).encode() + raw[8 + n:])
    key = weights_key(f"file:{keys / 'weights.key'}")
    with pytest.raises(TamperedError, match="header signature"):
        decrypt_tensors(path, key)
    path.write_bytes(raw)
    _flip(path, len(raw) - 100)  # a byte of the last tensor's ciphertext: its GCM tag fails, by name
    with pytest.raises(TamperedError, match=r"tensor '.+' of .*does not decrypt"):
        decrypt_tensors(path, key)


def test_the_wrong_key_or_a_wrong_pinned_signer_is_refused(encrypted, keys, run_cli, tmp_path, monkeypatch):
    from sdguard.deploy import keygen

    other = tmp_path / "other"
    keygen(str(other))
    monkeypatch.setenv("SDGUARD_KEY_FILE", str(other / "weights.key"))
    assert "weights key" in _refused(run_cli, encrypted)
    monkeypatch.setenv("SDGUARD_KEY_FILE", str(keys / "weights.key"))
    monkeypatch.setenv("SDGUARD_VERIFY_KEY", str(other / "signing.pub.pem"))
    assert "does not verify" in _refused(run_cli, encrypted)
    monkeypatch.setenv("SDGUARD_VERIFY_KEY", str(keys / "signing.pub.pem"))
    code, _out, err = run_cli("info", encrypted)
    assert code == 0, err


def test_decrypt_writes_the_plain_folder_back(encrypted, keys, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from sdguard.deploy import decrypt
    from sdguard.models.builtin import package_weights_dir

    decrypt(str(encrypted), out=str(tmp_path / "plain"), key=f"file:{keys / 'weights.key'}")
    a, b = load_file(str(package_weights_dir("tiny") / UNET)), load_file(str(tmp_path / "plain" / UNET))
    assert a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)
    assert not (tmp_path / "plain" / "sdguard-encrypted.json").exists()


def test_bad_keys_are_one_sentence_that_never_shows_a_key(run_cli, keys, tmp_path, monkeypatch):
    monkeypatch.delenv("SDGUARD_KEY", raising=False)
    code, _out, err = run_cli("encrypt", MODEL, "--out", tmp_path / "o", "--sign-key", f"file:{keys / 'signing.pem'}")
    assert code == 2 and "SDGUARD_KEY" in err and "not set" in err
    code, _out, err = run_cli("encrypt", MODEL, "--out", tmp_path / "o", "--key", f"file:{keys / 'weights.key'}",
                              "--sign-key", f"file:{keys / 'weights.key'}")
    assert code == 2 and "--sign-key" in err and "PEM" in err
    secret = (keys / "weights.key").read_text().strip()
    assert secret not in err
    assert not (tmp_path / "o").exists()
