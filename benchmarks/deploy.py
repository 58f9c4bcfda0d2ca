"""Issue 21: the cost of encrypted weights at load time, and the guarded service under load.

Load: `DiffusionModel.load` of builtin:tiny's plain folder vs its encrypted copy (signature check,
decryption, empty-module build), alternating, median of --repeats runs each, in one process.
Service: uvicorn on loopback, --requests requests from --clients concurrent clients; codes,
p50/p95 latency of served requests, and every served image's watermark decoded.

    python benchmarks/deploy.py [--repeats 7] [--requests 1000] [--clients 32] [--max-queue 8]
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from finetune_new_artwork import machine, write_results  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def load_overhead(root: Path, repeats: int) -> dict:
    from sdguard.deploy import encrypt, keygen
    from sdguard.models.adapter import DiffusionModel
    from sdguard.models.builtin import package_weights_dir

    keygen(str(root / "keys"))
    os.environ["SDGUARD_KEY_FILE"] = str(root / "keys" / "weights.key")
    t0 = time.perf_counter()
    encrypt("builtin:tiny", out=str(root / "enc"), sign_key=f"file:{root / 'keys' / 'signing.pem'}")
    encrypt_s = time.perf_counter() - t0
    plain, secret = str(package_weights_dir("tiny")), str(root / "enc")
    times = {"plain": [], "encrypted": []}
    DiffusionModel.load(plain, device="cpu")  # warm the imports
    for _ in range(repeats):
        for name, spec in (("plain", plain), ("encrypted", secret)):
            t = time.perf_counter()
            DiffusionModel.load(spec, device="cpu")
            times[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    out = {"repeats": repeats, "encrypt_seconds": round(encrypt_s, 3),
           "median_seconds": {k: round(v, 4) for k, v in med.items()},
           "overhead": round(med["encrypted"] / med["plain"] - 1, 4),
           "runs": {k: [round(x, 4) for x in v] for k, v in times.items()}}
    print(f"load: plain {med['plain']:.3f} s, encrypted {med['encrypted']:.3f} s (median of {repeats}), "
          f"overhead {out['overhead']:+.1%}; encrypt took {encrypt_s:.2f} s")
    return out


def service_load(root: Path, requests: int, clients: int, max_queue: int) -> dict:
    import httpx
    import numpy as np
    import uvicorn
    from PIL import Image

    from sdguard.core.keys import new_secret, write_key_file
    from sdguard.deploy import serve_key_add
    from sdguard.deploy.app import create_app
    from sdguard.deploy.service import Guard, ServeConfig
    from sdguard.harden.watermark.base import detect_bits
    from sdguard.train.federated.deploy import free_port

    write_key_file(root / "wm.key", new_secret())
    token = serve_key_add(str(root / "keys.json"), name="bench")
    cfg = ServeConfig(model=str(root / "enc"), api_keys=str(root / "keys.json"), log=str(root / "prompts.log"),
                      log_key=f"file:{root / 'keys' / 'prompt-log.key'}", watermark="sdguard-spread",
                      key=f"file:{root / 'wm.key'}", size=128, max_n=1, max_steps=4, default_steps=4,
                      max_queue=max_queue, rate=10_000.0, burst=10_000, device="cpu")
    guard = Guard(cfg)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(cfg, guard), host="127.0.0.1", port=port, log_level="error",
                                           access_log=False, limit_concurrency=4 * requests))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300, limits=limits) as client:
        def one(i):
            t = time.perf_counter()
            r = client.post("/generate", json={"prompt": "a red circle", "seed": i}, headers=headers)
            return r.status_code, time.perf_counter() - t, r.json() if r.status_code == 200 else None

        t0 = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            results = list(pool.map(one, range(requests)))
        wall = time.perf_counter() - t0
    server.should_exit = True
    thread.join(15)
    codes = [c for c, _, _ in results]
    served = sorted(t for c, t, _ in results if c == 200)
    scheme, key, payload = guard.marker
    marks = []
    for _, _, body in results:
        for im in (body or {}).get("images", []):
            if not im["blocked"]:
                arr = np.asarray(Image.open(io.BytesIO(base64.b64decode(im["png_base64"]))).convert("RGB"))
                marks.append(detect_bits(scheme.decode(arr, key), payload, 1e-6).detected)
    out = {"requests": requests, "clients": clients, "max_queue": max_queue, "wall_seconds": round(wall, 2),
           "codes": {str(c): codes.count(c) for c in sorted(set(codes))}, "lost": requests - len(results),
           "p50_seconds": round(served[len(served) // 2], 3) if served else None,
           "p95_seconds": round(served[int(len(served) * 0.95)], 3) if served else None,
           "served_images": len(marks), "watermark_detected": int(sum(marks))}
    print(f"service: {out['codes']} in {wall:.1f} s; p50 {out['p50_seconds']} s, p95 {out['p95_seconds']} s; "
          f"watermark detected in {out['watermark_detected']} of {out['served_images']} served images")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--max-queue", type=int, default=8)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "deploy.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        result = {"machine": machine(), "load": load_overhead(root, args.repeats),
                  "service": service_load(root, args.requests, args.clients, args.max_queue)}
    write_results(args.out, result)


if __name__ == "__main__":
    main()
