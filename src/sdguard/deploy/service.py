"""``sdguard serve``: a guarded text-to-image service (FastAPI over the model adapter, uvicorn).

Every request needs an API key (``Authorization: Bearer KEY`` or ``X-API-Key``; the keys file holds
only SHA-256 hashes: a 256-bit random key needs no slow hash). Per key, a token bucket limits the
rate; a request body over ``--max-body`` bytes is refused (413), parameters outside the limits are
refused by the schema (422, naming the field); a bounded queue (``--max-queue`` requests waiting or
running) answers 429 beyond it. The model runs in one worker thread, one request at a time.

Each image of ``POST /generate`` goes through the safety gate (:mod:`.gate`), then the watermark
(the registry of :mod:`sdguard.harden.watermark`; an in-generation scheme is drawn into the initial
latents before the gate); a blocked image is never returned or written. Each request is written to
the encrypted prompt log (:mod:`.promptlog`) with its outcome. ``GET /health``, ``GET /metrics``
(Prometheus text) and ``GET /openapi.json`` also need a key; the interactive docs pages are off.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..core.config import option
from ..core.errors import InputError, MissingDependencyError
from ..harden.watermark.options import WatermarkOptions

API_KEY_PREFIX = "sdg_"


class ServeConfig(WatermarkOptions):
    """Serve a model behind API keys, a safety gate, a watermark and an encrypted prompt log."""

    python_positional = ("model",)
    model: str = option(positional=True, metavar="MODEL", help="the model spec (an encrypted folder loads with "
                        "SDGUARD_KEY)")
    api_keys: str = option(help="the API keys file (hashes only; `sdguard api-key add` writes it)")
    log: str = option(help="the encrypted prompt log (JSON lines; appended to)")
    log_key: str | None = option(None, help="where the prompt log key is: env:NAME or file:PATH (default "
                                 "env:SDGUARD_LOG_KEY)")
    host: str = option("127.0.0.1", help="the address to listen on")
    port: int = option(8000, ge=0, le=65_535, help="the port to listen on")
    size: int | None = option(None, ge=16, le=4096, help="the side of the images served (default: --generate-size); "
                              "a different side is reached by resizing (bicubic) before the gate and the watermark")
    generate_size: int | None = option(None, ge=8, le=2048, help="the side the model generates at (default: the "
                                       "model's own)")
    max_n: int = option(4, ge=1, le=64, help="most images per request")
    max_steps: int = option(50, ge=1, le=1000, help="most denoising steps per request")
    default_steps: int = option(25, ge=1, le=1000, help="steps when a request gives none")
    max_guidance: float = option(20.0, ge=0.0, le=100.0, help="largest guidance scale")
    max_prompt_chars: int = option(1000, ge=1, le=100_000, help="longest prompt, in characters")
    max_body: int = option(16_384, ge=256, le=10_000_000, help="largest request body, in bytes")
    max_queue: int = option(8, ge=1, le=10_000, help="requests waiting or running before 429")
    rate: float = option(5.0, gt=0.0, le=10_000.0, help="requests per second per API key (token bucket)")
    burst: int = option(10, ge=1, le=100_000, help="bucket size: requests a key may send at once")
    block: list[str] = option([], help="safety policy changes: CLASS=SCORE blocks a NudeNet class at that score, "
                              "CLASS=off lets it pass (default: breasts, genitalia, buttocks, anus at 0.6)")
    device: str | None = option(None, help="cpu, cuda, mps (default: best available)")


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def api_key_rows(path: Path, argument: str = "--api-keys") -> list[dict]:
    """The rows of an API keys file (``{"keys": [{"name": ..., "sha256": ...}]}``)."""
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))["keys"]
        if not all(isinstance(r.get("name"), str) and isinstance(r.get("sha256"), str) for r in rows):
            raise TypeError
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise InputError.bad(argument, str(path), "is not an API keys file ({\"keys\": [{\"name\", \"sha256\"}]})") \
            from None
    return rows


def read_api_keys(path: str | Path) -> dict[str, str]:
    """{sha256 hex: name} of a keys file."""
    path = Path(path)
    if not path.is_file():
        raise InputError.bad("--api-keys", str(path), "names no file (sdguard api-key add writes one)")
    table = {r["sha256"]: r["name"] for r in api_key_rows(path)}
    if not table:
        raise InputError.bad("--api-keys", str(path), "holds no key: nobody could use the service")
    return table


class TokenBucket:
    def __init__(self, rate: float, burst: int):
        self.rate, self.burst, self._lock = rate, burst, threading.Lock()
        self._state: dict[str, tuple[float, float]] = {}

    def take(self, who: str) -> float:
        """0 when ``who`` may go now, else the seconds until a token is back."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._state.get(who, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self._state[who] = (tokens - 1.0, now)
                return 0.0
            self._state[who] = (tokens, now)
            return (1.0 - tokens) / self.rate


def _require(module: str, purpose: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(module, "deploy", purpose) from None


class Guard:
    """What the service does with a request, apart from HTTP: generate, gate, watermark, log."""

    def __init__(self, cfg: ServeConfig, model=None, gate=None, log=None):
        from ..harden.watermark import WATERMARKS
        from ..harden.watermark.options import scheme_for
        from ..models.adapter import DiffusionModel
        from .gate import SafetyGate, parse_policy
        from .promptlog import PromptLog, log_key

        self.cfg = cfg
        self.keys = read_api_keys(cfg.api_keys)
        self.log = log or PromptLog(cfg.log, log_key(cfg.log_key, "--log-key"))
        if cfg.watermark is None:
            raise InputError.bad("--watermark", None, f"is needed: every image the service returns is watermarked "
                                 f"({', '.join(WATERMARKS.names())})")
        self.model = model or DiffusionModel.load(cfg.model, device=cfg.device)
        self.generate_size = cfg.generate_size or self.model.default_size
        self.size = cfg.size or self.generate_size
        if WATERMARKS.get(cfg.watermark).in_generation:
            if self.size != self.generate_size:
                raise InputError.bad("--size", self.size, f"must equal --generate-size with {cfg.watermark} (the mark "
                                     "is in the latents, read back at the generated size)")
            self.marker = scheme_for(cfg, model=self.model, size=self.size)
        else:
            self.marker = scheme_for(cfg)
            if self.size < self.marker[0].min_side:
                raise InputError.bad("--size", self.size, f"is too small for {cfg.watermark}, which needs images of at "
                                     f"least {self.marker[0].min_side} pixels a side")
        if cfg.default_steps > cfg.max_steps:
            raise InputError.bad("--default-steps", cfg.default_steps, f"is above --max-steps {cfg.max_steps}")
        self.gate = gate or SafetyGate(parse_policy(cfg.block))
        self.gate.warm()
        self.bucket = TokenBucket(cfg.rate, cfg.burst)
        self.pending = 0
        self.pending_lock = threading.Lock()
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sdguard-model")

    def who(self, token: str | None) -> str | None:
        if not token:
            return None
        digest = hash_api_key(token)
        for known, name in self.keys.items():
            if hmac.compare_digest(known, digest):
                return name
        return None

    def enter(self) -> bool:
        with self.pending_lock:
            if self.pending >= self.cfg.max_queue:
                return False
            self.pending += 1
            return True

    def leave(self) -> None:
        with self.pending_lock:
            self.pending -= 1

    def run(self, body: dict) -> dict:
        """Generate ``body['n']`` images, gate, watermark; returns the response body (no I/O of images)."""
        scheme, key, payload = self.marker
        seeds = [body["seed"] + i for i in range(body["n"])]
        latents = scheme.initial_latents(payload, key, seeds) if scheme.in_generation else None
        gen = self.model.generate([body["prompt"]] * body["n"], seeds, steps=body["steps"], guidance=body["guidance"],
                                  height=self.generate_size, width=self.generate_size, batch_size=body["n"],
                                  latents=latents)
        images = gen.images  # uint8 N x H x W x 3
        if self.size != self.generate_size:
            from ..core.images import resize_batch

            images = np.clip(np.rint(resize_batch(images, self.size, resample="bicubic")), 0, 255).astype(np.uint8)
        verdicts = self.gate.check(images)
        out = []
        for i, (img, blocked) in enumerate(zip(images, verdicts)):
            if blocked:
                out.append({"index": i, "seed": seeds[i], "blocked": True, "classes": blocked})
                continue
            marked = img if scheme.in_generation else scheme.embed(img, payload, key)
            out.append({"index": i, "seed": seeds[i], "blocked": False, "png_base64": _png_b64(marked)})
        return {"seed": body["seed"], "images": out, "blocked": sum(bool(v) for v in verdicts),
                "watermark": {"scheme": scheme.name, "key_fingerprint": key.fingerprint}}


def _png_b64(image: np.ndarray) -> str:
    from ..report import png_bytes

    return base64.b64encode(png_bytes(image)).decode("ascii")


def request_model(cfg: ServeConfig):
    """The ``POST /generate`` body, its limits read from ``cfg`` (so the OpenAPI schema states them)."""
    from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator

    class _Base(BaseModel):
        model_config = ConfigDict(extra="forbid")

        @field_validator("prompt", check_fields=False)
        @classmethod
        def _words(cls, value: str) -> str:
            if not value.strip():
                raise ValueError("the prompt is blank: it needs at least one word")
            return value

    return create_model(
        "GenerateRequest", __base__=_Base,
        prompt=(str, Field(min_length=1, max_length=cfg.max_prompt_chars, description="the text prompt")),
        n=(int, Field(1, ge=1, le=cfg.max_n, description="images; image i from seed + i")),
        seed=(int | None, Field(None, ge=0, le=2**32 - 1, description="the first image's seed (default: random)")),
        steps=(int, Field(min(cfg.default_steps, cfg.max_steps), ge=1, le=cfg.max_steps)),
        guidance=(float, Field(7.5, ge=0.0, le=cfg.max_guidance, allow_inf_nan=False)),
    )


__all__ = ["Guard", "ServeConfig", "TokenBucket", "api_key_rows", "hash_api_key", "new_api_key", "read_api_keys",
           "request_model"]
