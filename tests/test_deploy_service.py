"""The guarded service (issue 21): `sdguard serve` on loopback, started and stopped by the test.

No request without a valid key succeeds; a bounded load of 1000 requests from concurrent clients
loses none (each served or 429) and every served image carries the watermark; bad bodies are
400/422 naming the field, never 500; schemathesis finds no 5xx; the prompt log holds no prompt in
the clear and reads back with its key; the safety gate blocks what its policy names."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

MODEL = "builtin:tiny"
SIZE = 128  # sdguard-spread needs 128 px a side: the tiny model's 32 px images are served upscaled


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from sdguard.core.keys import new_secret, write_key_file
    from sdguard.deploy import serve_key_add

    root = tmp_path_factory.mktemp("serve")
    write_key_file(root / "log.key", new_secret())
    write_key_file(root / "wm.key", new_secret())
    tokens = {name: serve_key_add(str(root / "keys.json"), name=name) for name in ("alice", "bob")}
    return root, tokens


def _config(root, **over):
    from sdguard.deploy.service import ServeConfig

    values = dict(model=MODEL, api_keys=str(root / "keys.json"), log=str(root / "prompts.log"),
                  log_key=f"file:{root / 'log.key'}", watermark="sdguard-spread", key=f"file:{root / 'wm.key'}",
                  size=SIZE, max_n=2, max_steps=2, default_steps=1, max_queue=2, rate=1000.0, burst=1000,
                  device="cpu")
    return ServeConfig(**{**values, **over})


@pytest.fixture(scope="module")
def guard(setup):
    from sdguard.deploy.service import Guard

    root, _ = setup
    return Guard(_config(root))


@pytest.fixture(scope="module")
def server(setup, guard):
    """uvicorn in a thread on a free loopback port; stopped after the module."""
    import uvicorn

    from sdguard.deploy.app import create_app
    from sdguard.train.federated.deploy import free_port

    root, tokens = setup
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(guard.cfg, guard), host="127.0.0.1", port=port,
                                        log_level="error", access_log=False, limit_concurrency=2000))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the service did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", tokens
    srv.should_exit = True
    thread.join(15)


def _auth(token):
    return {"Authorization": f"Bearer {token}"}


def test_no_request_without_a_valid_key_succeeds(server):
    url, tokens = server
    body = {"prompt": "a red circle", "steps": 1}
    with httpx.Client(base_url=url, timeout=30) as c:
        for method, path in (("get", "/health"), ("get", "/metrics"), ("get", "/openapi.json"), ("post", "/generate")):
            kwargs = {"json": body} if method == "post" else {}
            assert getattr(c, method)(path, **kwargs).status_code == 401
            assert getattr(c, method)(path, headers=_auth("sdg_" + "x" * 43), **kwargs).status_code == 403
            assert getattr(c, method)(path, headers={"X-API-Key": tokens["alice"][:-1]}, **kwargs).status_code == 403
        ok = c.get("/health", headers={"X-API-Key": tokens["bob"]})
        assert ok.status_code == 200 and ok.json()["watermark"] == "sdguard-spread"


def _decode(png_b64):
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(base64.b64decode(png_b64))).convert("RGB"))


def test_a_load_of_1000_requests_loses_none_and_every_image_is_watermarked(server, guard, setup):
    from sdguard.harden.watermark.base import detect_bits

    url, tokens = server
    names = list(tokens)
    def one(i):
        t0 = time.perf_counter()
        r = client.post("/generate", json={"prompt": "a blue square", "steps": 1, "seed": i}, headers=_auth(tokens[names[i % 2]]))
        return r.status_code, time.perf_counter() - t0, (r.json() if r.status_code == 200 else None)

    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    with httpx.Client(base_url=url, timeout=120, limits=limits) as client, ThreadPoolExecutor(32) as pool:
        results = list(pool.map(one, range(1000)))
    codes = [c for c, _, _ in results]
    assert len(results) == 1000 and set(codes) <= {200, 429}, sorted(set(codes))
    served = [r for c, _, r in results if c == 200]
    assert 1 <= len(served) < 1000  # the queue of 2 cannot take 1000 at once: some are refused
    scheme, key, payload = guard.marker
    images = [im for r in served for im in r["images"] if not im["blocked"]]
    assert images
    distinct = {im["png_base64"] for im in images}
    assert all(detect_bits(scheme.decode(_decode(b), key), payload, 1e-6).detected for b in distinct)
    latency = sorted(t for c, t, _ in results if c == 200)
    print(f"served {len(served)}, refused {codes.count(429)}; p50 {latency[len(latency) // 2]:.3f} s, "
          f"p95 {latency[int(len(latency) * 0.95)]:.3f} s")
    with httpx.Client(base_url=url, timeout=30) as c:
        text = c.get("/metrics", headers=_auth(tokens["alice"])).text
    assert 'sdguard_requests_total{outcome="429-queue"}' in text


def test_bad_bodies_are_400_or_422_naming_the_field(server):
    url, tokens = server
    cases = [({"prompt": ""}, "prompt"), ({"prompt": "   "}, "prompt"), ({"prompt": "x" * 1001}, "prompt"),
             ({"prompt": "a", "n": 0}, "n"), ({"prompt": "a", "n": 3}, "n"), ({"prompt": "a", "steps": 3}, "steps"),
             ({"prompt": "a", "steps": -1}, "steps"), ({"prompt": "a", "guidance": 1e9}, "guidance"),
             ({"prompt": "a", "colour": "red"}, "colour"), ({}, "prompt")]
    with httpx.Client(base_url=url, timeout=30, headers=_auth(tokens["alice"])) as c:
        for body, field in cases:
            r = c.post("/generate", json=body)
            assert r.status_code == 422 and field in r.json()["detail"], (body, r.text)
        r = c.post("/generate", content=b'{"prompt": "a", ', headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and "JSON" in r.json()["detail"]
        r = c.post("/generate", content=b"x" * 20_000, headers={"Content-Type": "application/json"})
        assert r.status_code == 413


def test_the_prompt_log_holds_no_prompt_in_the_clear(server, setup):
    from sdguard.deploy.promptlog import log_key, read_log

    url, tokens = server
    root, _ = setup
    secret = "a purple giraffe named zebulon"
    with httpx.Client(base_url=url, timeout=60) as c:
        assert c.post("/generate", json={"prompt": secret, "steps": 1}, headers=_auth(tokens["bob"])).status_code in (
            200, 429)
    raw = (root / "prompts.log").read_bytes()
    assert b"zebulon" not in raw and b"giraffe" not in raw and b"blue square" not in raw
    rows = read_log(root / "prompts.log", [log_key(f"file:{root / 'log.key'}")])
    assert any(r["prompt"] == secret and r["api_key"] == "bob" for r in rows)
    assert all(r["outcome"] in ("served", "queue-full", "rate-limited") for r in rows)


def test_log_read_and_rekey_from_the_command_line(run_cli, setup, tmp_path):
    from sdguard.core.keys import new_secret, write_key_file

    root, _ = setup
    write_key_file(tmp_path / "new.key", new_secret())
    code, out, err = run_cli("log", "rekey", root / "prompts.log", "--key", f"file:{root / 'log.key'}",
                             "--new-key", f"file:{tmp_path / 'new.key'}", "--out", tmp_path / "new.log")
    assert code == 0, err
    code, out, err = run_cli("log", "read", tmp_path / "new.log", "--key", f"file:{tmp_path / 'new.key'}")
    assert code == 0 and "blue square" in out
    code, out, err = run_cli("log", "read", tmp_path / "new.log", "--key", f"file:{root / 'log.key'}")
    assert code == 2 and "does not open line 1" in err
    lines = (tmp_path / "new.log").read_text().splitlines()
    row = json.loads(lines[0])
    row["seq"] = 7  # a line moved to another place does not authenticate
    (tmp_path / "new.log").write_text("\n".join([json.dumps(row), *lines[1:]]) + "\n")
    code, out, err = run_cli("log", "read", tmp_path / "new.log", "--key", f"file:{tmp_path / 'new.key'}")
    assert code == 2 and "does not authenticate" in err


def test_the_gate_blocks_what_its_policy_names(guard, setup, monkeypatch):
    """The real NudeNet gate on scikit-image's astronaut (a face): passed under the default policy,
    blocked under one that names FACE_FEMALE; and in the service a blocked image is never returned."""
    data = pytest.importorskip("skimage.data")
    from sdguard.deploy.gate import SafetyGate, parse_policy

    photo = data.astronaut()
    assert SafetyGate().check([photo]) == [[]]
    blocked = SafetyGate(parse_policy(["FACE_FEMALE=0.5"])).check([photo])[0]
    assert blocked and blocked[0]["class"] == "FACE_FEMALE"

    real = guard.gate.check
    monkeypatch.setattr(guard.gate, "check", lambda images: [[{"class": "FACE_FEMALE", "score": 0.9}]] + real(images[1:]))
    result = guard.run({"prompt": "a red circle", "n": 2, "seed": 1, "steps": 1, "guidance": 7.5})
    first, second = result["images"]
    assert first["blocked"] and "png_base64" not in first and result["blocked"] == 1
    assert not second["blocked"] and second["png_base64"]


def test_schemathesis_finds_no_server_error(guard, setup):
    """Schemathesis generates valid and invalid requests from the OpenAPI schema (both modes); none
    may answer 5xx. The calls go to the ASGI app in this process, with a valid key."""
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable

    from sdguard.deploy.app import create_app

    _, tokens = setup
    app = create_app(guard.cfg, guard)
    schema = schemathesis.openapi.from_dict(app.openapi())
    seen = []
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in schemathesis.GenerationMode:
            @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            @given(case=operation.as_strategy(generation_mode=mode))
            def check(case):
                response = case.call(app=app, headers=_auth(tokens["alice"]))
                seen.append(response.status_code)
                assert response.status_code < 500, (case.body, response.text)

            try:
                check()
            except Unsatisfiable:  # GET /health and /metrics take no input: nothing negative to send
                assert mode == schemathesis.GenerationMode.NEGATIVE and operation.method.upper() == "GET"
    assert 200 in seen and any(400 <= s < 500 for s in seen)


def test_a_service_that_could_not_mark_its_images_does_not_start(setup):
    from sdguard.core.errors import InputError
    from sdguard.deploy.service import Guard

    root, _ = setup
    with pytest.raises(InputError, match=r"^--size 32 is too small for sdguard-spread"):
        Guard(_config(root, size=None))  # the tiny model's own 32 px
    with pytest.raises(InputError, match=r"^--watermark None is needed"):
        Guard(_config(root, watermark=None))
