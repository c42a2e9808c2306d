"""The hand-written FastAPI baseline that scripts/bench-baseline measures zserve against.

``POST /invoke`` does the work of zserve's run-only invoke of the weather pipeline the ordinary
way: an ``async def`` endpoint with a pydantic body calling both step
functions inline, served by uvicorn with zserve's flags (one worker, uvloop + httptools via
"auto", access log off, no server header). ``python benchmarks/baseline_app.py`` binds port 0
and prints ``baseline: serving at http://127.0.0.1:PORT`` to stderr.

With ``--def`` the endpoint is a plain ``def`` instead, which FastAPI runs in its threadpool: the
fair comparison for a pipeline whose steps are plain ``@step`` (each run in a worker thread).
With ``--raw`` it is a bare ASGI callable doing the same work: the floor under uvicorn.
"""

from __future__ import annotations

import json
import socket
import sys
import time
import uuid

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict

from zserve.examples.weather import analyze_data, fetch_data


class Parameters(BaseModel):
    model_config = ConfigDict(extra="forbid")
    city: str
    days: int = 1


class InvokeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    parameters: Parameters


app = FastAPI(title="zserve benchmark baseline")


def answer(request: InvokeRequest) -> dict:
    job_id = str(uuid.uuid4())
    start = time.perf_counter()
    data = fetch_data.fn(request.parameters.city)
    output = analyze_data.fn(data, request.parameters.days)
    elapsed = time.perf_counter() - start
    return {
        "success": True,
        "outputs": {"output": output},
        "job_id": job_id,
        "run_id": None,
        "capture": "none",
        "execution_time_ms": round(elapsed * 1000, 3),
    }


async def raw_app(scope: dict, receive, send) -> None:  # type: ignore[no-untyped-def]
    """The floor: a bare ASGI callable doing the same work (no framework, no validation)."""
    if scope["type"] == "lifespan":
        while (message := await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["path"] == "/health":
        body = b'{"status":"healthy"}'
    else:
        chunks, more = [], True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        params = json.loads(b"".join(chunks))["parameters"]
        job_id = str(uuid.uuid4())
        start = time.perf_counter()
        output = analyze_data.fn(fetch_data.fn(params["city"]), params.get("days", 1))
        elapsed = time.perf_counter() - start
        body = json.dumps({"success": True, "outputs": {"output": output}, "job_id": job_id,
                           "run_id": None, "capture": "none",
                           "execution_time_ms": round(elapsed * 1000, 3)}).encode()  # fmt: skip
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})


if "--def" in sys.argv:

    @app.post("/invoke")
    def invoke_in_threadpool(request: InvokeRequest):
        return answer(request)

else:

    @app.post("/invoke")
    async def invoke(request: InvokeRequest):
        return answer(request)


@app.get("/health")
async def health():
    return {"status": "healthy"}


def main() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    port = sock.getsockname()[1]
    print(f"baseline: serving at http://127.0.0.1:{port}", file=sys.stderr, flush=True)
    target = raw_app if "--raw" in sys.argv else app
    config = uvicorn.Config(
        target, access_log=False, server_header=False, timeout_graceful_shutdown=30
    )
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
