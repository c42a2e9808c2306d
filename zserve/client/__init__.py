"""The HTTP client for a zserve server, used by the CLI and by Python programs.

    from zserve.client import Client

    with Client("http://127.0.0.1:8001") as client:
        result = client.invoke({"city": "Paris"})
        print(result.outputs)

Every error the server answers (problem+json) is raised as the matching ``zserve.errors`` class
(``InvalidParameters`` with ``.errors``, ``StepFailed`` with ``.step``, ...); a server that does
not answer is ``ServerUnreachable``. ``AsyncClient`` is the same API for asyncio programs.

Jobs run in the background and are followed by their events (Server-Sent Events)::

    with Client("http://127.0.0.1:8001") as client:
        job_id = client.submit({"prompt": "hello"})["job_id"]
        for event in client.events(job_id):          # ends after the terminal event
            print(event["seq"], event["event"], event.get("chunk", ""))
        print(client.job(job_id)["status"])

``events`` reconnects by itself (``Last-Event-ID``) when the connection drops, and when a host
that stops ends the stream early (``retry:``) so that its clients resume on another host behind
the load balancer; it never yields an event twice.

One invocation's events, as they happen, on the answer to its own request (a server that lists
``INVOKE_STREAM`` in ``GET /info``'s ``features``; with an older one, a job submitted and
followed); leaving the loop early cancels the invocation::

    with Client("http://127.0.0.1:8001") as client:
        for event in client.invoke_stream({"prompt": "hello"}):
            if event["event"] == "step.chunk":
                print(event["chunk"], end=" ", flush=True)
            elif event["event"] == "job.completed":
                print(event["outputs"])
"""

from zserve.client._async import AsyncClient
from zserve.client._common import (
    DEFAULT_TIMEOUT,
    INVOKE_STREAM,
    InvokeResult,
    error_from_response,
)
from zserve.client._sync import Client

__all__ = [
    "DEFAULT_TIMEOUT",
    "INVOKE_STREAM",
    "AsyncClient",
    "Client",
    "InvokeResult",
    "error_from_response",
]
