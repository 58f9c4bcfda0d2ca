"""The FastAPI application of ``sdguard serve`` (see :mod:`.service` for what it guards).

Status codes: 200 served (some images may be blocked: each says so), 400 a body that is not JSON,
401 no API key, 403 a key that is not in the keys file, 411/413 a body without a length or too
long, 422 a parameter out of its limits (the message names the field), 429 the key's rate or the
queue is full (``Retry-After``), 500 never on purpose: a failure inside generation is 503 with one
sentence, and the request is logged as failed.
"""


import asyncio
import random
import time

from .service import Guard, ServeConfig, request_model


def _metrics():
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

    registry = CollectorRegistry()
    return registry, {
        "requests": Counter("sdguard_requests", "requests by outcome", ["outcome"], registry=registry),
        "images": Counter("sdguard_images", "images by outcome (served, blocked)", ["outcome"], registry=registry),
        "latency": Histogram("sdguard_generate_seconds", "POST /generate latency of served requests",
                             buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120), registry=registry),
        "queue": Gauge("sdguard_queue", "requests waiting or running", registry=registry),
    }


def _field(loc) -> str:
    parts = [str(p) for p in loc if p != "body"]
    return ".".join(parts) or "body"


def create_app(cfg: ServeConfig, guard: Guard | None = None):
    """The ASGI app; ``guard`` (built from ``cfg`` when None) holds the model, gate, keys and log."""
    from fastapi import Depends, FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, PlainTextResponse
    from prometheus_client import generate_latest

    guard = guard or Guard(cfg)
    Body = request_model(cfg)
    registry, m = _metrics()
    app = FastAPI(title="sdguard serve", version="1", docs_url=None, redoc_url=None, openapi_url=None,
                  description="A guarded text-to-image service: API keys, rate limits, a bounded queue, a NudeNet "
                              "safety gate and a watermark on every image, an encrypted prompt log.")
    app.state.guard = guard
    refused = {"description": "refused (see the message)"}

    def error(status: int, message: str, headers: dict | None = None, outcome: str | None = None):
        m["requests"].labels(outcome or str(status)).inc()
        return JSONResponse({"detail": message}, status_code=status, headers=headers)

    @app.middleware("http")
    async def limits(request: Request, call_next):
        if request.method in ("POST", "PUT", "PATCH"):
            length = request.headers.get("content-length")
            if length is None:
                return error(411, "the request needs a Content-Length header")
            if not length.isdigit() or int(length) > cfg.max_body:
                return error(413, f"the request body of {length} bytes is over --max-body {cfg.max_body}")
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        problems = exc.errors()
        if any(p.get("type") == "json_invalid" for p in problems):
            return error(400, "the request body is not valid JSON: " + "; ".join(
                str(p.get("ctx", {}).get("error", p.get("msg"))) for p in problems))
        message = "; ".join(f"{_field(p.get('loc', ()))}: {p.get('msg')}" for p in problems[:5])
        return error(422, message)

    def caller(request: Request) -> str:
        from fastapi import HTTPException

        header = request.headers.get("authorization", "")
        token = header[7:].strip() if header.lower().startswith("bearer ") else request.headers.get("x-api-key")
        if not token:
            m["requests"].labels("401").inc()
            raise HTTPException(401, "an API key is needed (Authorization: Bearer KEY or X-API-Key)",
                                headers={"WWW-Authenticate": "Bearer"})
        name = guard.who(token)
        if name is None:
            m["requests"].labels("403").inc()
            raise HTTPException(403, "the API key is not valid")
        return name

    @app.get("/health", responses={401: refused, 403: refused})
    async def health(who: str = Depends(caller)) -> dict:
        return {"status": "ok", "queue": guard.pending, "max_queue": cfg.max_queue,
                "watermark": guard.marker[0].name, "size": guard.size}

    @app.get("/metrics", response_class=PlainTextResponse, responses={401: refused, 403: refused})
    async def metrics(who: str = Depends(caller)):
        m["queue"].set(guard.pending)
        return PlainTextResponse(generate_latest(registry).decode(), media_type="text/plain; version=0.0.4")

    @app.post("/generate", responses={400: refused, 401: refused, 403: refused, 413: refused, 429: refused,
                                      503: refused})
    async def generate(body: Body, who: str = Depends(caller)) -> dict:  # type: ignore[valid-type]
        request = body.model_dump()
        if request["seed"] is None:
            request["seed"] = random.SystemRandom().randrange(2**32 - request["n"])
        logged = {"api_key": who, "prompt": request["prompt"], **{k: request[k] for k in ("n", "seed", "steps",
                                                                                            "guidance")}}
        wait = guard.bucket.take(who)
        if wait > 0:
            guard.log.append(**logged, outcome="rate-limited")
            return error(429, f"the rate limit of {cfg.rate:g} requests/s for this key is reached",
                         {"Retry-After": str(max(1, round(wait)))}, "429-rate")
        if not guard.enter():
            guard.log.append(**logged, outcome="queue-full")
            return error(429, f"the queue is full ({cfg.max_queue} requests)", {"Retry-After": "1"}, "429-queue")
        t0 = time.perf_counter()
        try:
            result = await asyncio.get_running_loop().run_in_executor(guard.worker, guard.run, request)
        except Exception as exc:  # the model failed: one sentence, never a traceback
            guard.log.append(**logged, outcome="failed", error=type(exc).__name__)
            return error(503, f"the generation failed ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})")
        finally:
            guard.leave()
        m["latency"].observe(time.perf_counter() - t0)
        m["requests"].labels("200").inc()
        m["images"].labels("blocked").inc(result["blocked"])
        m["images"].labels("served").inc(len(result["images"]) - result["blocked"])
        guard.log.append(**logged, outcome="served", blocked=result["blocked"])
        return result

    @app.get("/openapi.json", include_in_schema=False)
    async def schema(who: str = Depends(caller)):
        return JSONResponse(app.openapi())

    return app

