"""The server's own cost of one sync ``POST /invoke``, in process: no network, no wrk, no uvicorn.

Builds the app the way a worker does, then calls it as an ASGI application with a ready-made
request, many times, and prints the microseconds per request (best and median of the batches).
Less noisy than an HTTP benchmark on a shared machine, so it shows small changes to the hot
path; compare two trees by running it in each (``PYTHONPATH=/path/to/other/tree``).

    .venv/bin/python benchmarks/inprocess.py [--pipeline module:attr] [--params JSON]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from typing import Any

from zserve.engine.deployments import load_plan
from zserve.records import DeploymentRecord
from zserve.server.app import create_app
from zserve.settings import Settings

WEATHER = "zserve.examples.weather:weather_pipeline"
#: CPU microseconds per request of the last measure() (all threads: the run writer too)
CPU: list[float] = []


async def measure(
    source: str,
    params: dict[str, Any],
    batches: int,
    per_batch: int,
    capture: str | None = None,
    concurrency: int = 1,
) -> list[float]:
    record = DeploymentRecord(
        id="bench", name="bench", version=1, source=source, import_root=".",
        pipeline_name="bench", code_hash="",
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as home:
        app = create_app(Settings(home=home), record, load_plan(record))
        doc: dict[str, Any] = {"parameters": params}
        if capture is not None:
            doc["capture_override"] = {"mode": capture}
        body = json.dumps(doc).encode()
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
            "scheme": "http", "path": "/invoke", "raw_path": b"/invoke", "query_string": b"",
            "root_path": "", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
            "headers": [(b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode())],
        }  # fmt: skip
        statuses: list[int] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        async with app.router.lifespan_context(app):
            for _ in range(per_batch // 3):  # warm up
                await app({**scope, "state": {}}, receive, send)
            if statuses[-1] != 200:
                raise SystemExit(f"POST /invoke answered {statuses[-1]}: check --params")
            results = []

            async def client(n: int) -> None:
                for _ in range(n):
                    await app({**scope, "state": {}}, receive, send)

            cpu_start = time.process_time()
            done = 0
            for _ in range(batches):
                start = time.perf_counter()
                share = per_batch // concurrency
                await asyncio.gather(*(client(share) for _ in range(concurrency)))
                results.append((time.perf_counter() - start) / (share * concurrency) * 1e6)
                done += share * concurrency
            CPU.append((time.process_time() - cpu_start) / done * 1e6)
            if set(statuses) != {200}:
                raise SystemExit(f"POST /invoke answered {sorted(set(statuses))}")
            return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", default=WEATHER, help=f"module:attr (default {WEATHER})")
    parser.add_argument("--params", default='{"city": "Paris"}', help="parameters as JSON")
    parser.add_argument("--batches", type=int, default=7)
    parser.add_argument("--requests", type=int, default=10_000, help="per batch")
    parser.add_argument("--capture", default=None, help="capture_override mode of each request")
    parser.add_argument("--concurrency", type=int, default=1, help="requests in flight at once")
    args = parser.parse_args()
    us = asyncio.run(
        measure(
            args.pipeline,
            json.loads(args.params),
            args.batches,
            args.requests,
            args.capture,
            args.concurrency,
        )
    )
    mode = args.capture or "default capture"
    print(
        f"{args.pipeline}: sync POST /invoke in process ({mode}, {args.concurrency} in flight), "
        f"{args.batches} x {args.requests}"
    )
    print(
        f"best {min(us):.2f} us   median {statistics.median(us):.2f} us per request, "
        f"{CPU[-1]:.1f} us CPU per request"
    )


if __name__ == "__main__":
    main()
