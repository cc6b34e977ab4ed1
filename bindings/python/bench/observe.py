"""Prints what KeyClient.observe costs per response, against a real `keyman serve`
on a private redis-server and nats-server (started here, as the tests do):

- a lease kept (the call is counted, nothing is sent),
- a 1-call lease renewed on every response (REPORT + NEW with a lease, one round trip),
- a plain key kept.

    KEYMAN_BIN=target/debug/keyman python bindings/python/bench/observe.py
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import conftest  # noqa: E402
from keyman_client import KeyClient, KeyPublisher  # noqa: E402

KEPT = 20_000
RENEWED = 300


def main() -> None:
    keyman = os.path.abspath(os.environ.get("KEYMAN_BIN") or conftest.REPO / "target" / "debug" / "keyman")
    folder = tempfile.mkdtemp(prefix="keyman-bench-")
    try:
        for kind, start in (("redis", conftest.start_redis), ("nats", conftest.start_nats)):
            broker, url = start(conftest.subfolder(folder))
            serve = conftest.start_serve(keyman, url, conftest.subfolder(folder))
            try:
                run(kind, url)
            finally:
                serve.stop()
                broker.stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run(kind: str, url: str) -> None:
    with KeyPublisher(url=url, timeout=5) as admin:
        admin.publish("ghp_bench_0123456789abcdef", "bench", limit=10_000_000)
        assert admin.wait(5)
    headers = {
        "X-RateLimit-Limit": "10000000",
        "X-RateLimit-Remaining": "9000000",
        "X-RateLimit-Reset": str(int(time.time()) + 3600),
    }
    with KeyClient("bench", None, url=url, timeout=10) as client:
        with client.lease(1_000_000) as lease:
            started = time.perf_counter()
            for _ in range(KEPT):
                client.observe(lease, 200, headers)
            kept = (time.perf_counter() - started) / KEPT
        with client.lease(1) as lease:
            started = time.perf_counter()
            for _ in range(RENEWED):
                client.observe(lease, 200, headers)
            renewed = (time.perf_counter() - started) / RENEWED
        key = client.request()
        started = time.perf_counter()
        for _ in range(KEPT):
            client.observe(key, 200, headers)
        plain = (time.perf_counter() - started) / KEPT
    print(
        f"{kind}: observe(lease) kept {kept * 1e6:.1f} us; renewed on every response "
        f"{renewed * 1e3:.2f} ms; observe(key) kept {plain * 1e6:.1f} us"
    )


if __name__ == "__main__":
    main()
