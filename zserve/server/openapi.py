"""``/openapi.json`` true to the server: FastAPI's document of the routes, plus what FastAPI cannot
see — every error answer as ``application/problem+json`` (400 for any request, since the Host
check answers it; 404 for paths with an id; the statuses each route can give), the probes
(``/health`` and its 503, ``/livez``, ``/readyz``), and the 202 of ``POST /invoke?mode=async``
with its ``Location`` and its ``Idempotency-Key``. Checked by a schemathesis run in the test
suite."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from zserve.server.idempotency import HEADER, MAX_KEY, REPLAYED

__all__ = ["install_openapi"]

PROBLEM = {
    "type": "object",
    "description": "RFC 9457 problem details",
    "required": ["type", "title", "status", "detail", "success"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "success": {"type": "boolean", "const": False},
        "errors": {"type": "array", "items": {"type": "object"}},
        "step": {"type": "string"},
        "job_id": {"type": "string"},
        "run_id": {"type": ["string", "null"]},
    },
}
HEALTH = {
    "type": "object",
    "required": ["status", "deployment_id", "pipeline", "uptime_s", "version", "problems"],
    "properties": {
        "status": {
            "type": "string",
            "enum": ["healthy", "degraded", "starting", "failed", "draining"],
        },
        "problems": {
            "type": "object",
            "description": "What cannot be written just now, by part (`broker`, `store`)",
            "additionalProperties": {"type": "string"},
        },
        "deployment_id": {"type": "string"},
        "pipeline": {"type": "string"},
        "uptime_s": {"type": "number"},
        "version": {"type": "string"},
        "resources": {
            "type": "object",
            "description": "A pipeline with resources: each one's state, by name (`pending`, "
            "`building`, `ready`, `failed`, `closed`)",
            "additionalProperties": {"type": "string"},
        },
        "error": {"type": "string", "description": "With `failed`: the resource that failed"},
    },
}
LIVE = {
    "type": "object",
    "required": ["status", "host_id", "pid"],
    "properties": {
        "status": {"type": "string", "const": "alive"},
        "host_id": {"type": "string"},
        "pid": {"type": "integer"},
    },
}
READY = {
    "type": "object",
    "required": ["status", "host_id"],
    "properties": {
        "status": {"type": "string", "enum": ["ready", "starting", "failed", "draining"]},
        "host_id": {"type": "string"},
    },
}
ACCEPTED = {
    "type": "object",
    "required": ["job_id", "status", "capture", "links"],
    "properties": {
        "job_id": {"type": "string"},
        "status": {
            "type": "string",
            "enum": ["queued", "running", "completed", "failed", "cancelled"],
            "description": "`queued`; a replay (`Idempotent-Replayed: true`): the job's status now",
        },
        "capture": {"type": "string"},
        "capture_requested": {"type": "string"},
        "links": {
            "type": "object",
            "properties": {"job": {"type": "string"}, "stream": {"type": "string"}},
        },
    },
}
IDEMPOTENCY_KEY = {
    "name": HEADER,
    "in": "header",
    "required": False,
    "description": "With `?mode=async`: one key per request, sent again when that request is "
    "retried. A key that a job already holds (on any host sharing the broker) starts nothing: "
    "the answer is that job's 202, with `Idempotent-Replayed: true`; the key with another "
    "request (body, mode) is 409 `idempotency-key-reused`. A key is kept as long as its job "
    "(`ZSERVE_JOB_TTL_S`, `ZSERVE_JOB_MAX_COUNT`). Sync invokes ignore it (a malformed one is "
    "400 all the same)",
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY,
               "pattern": "^[!-~]([ -~]*[!-~])?$"},
}  # fmt: skip
#: Statuses a route can answer besides 400, 422 and 500 (every route) and 404 (a path with an
#: id): (method, path) -> statuses.
EXTRA: dict[tuple[str, str], tuple[int, ...]] = {
    ("post", "/invoke"): (409, 413, 415, 429, 503, 504),
    ("post", "/jobs/{job_id}/cancel"): (409,),
    ("get", "/metrics"): (406,),
    ("get", "/runs"): (503,),
    ("get", "/runs/{run_id}"): (409, 503),
    ("get", "/runs/{run_id}/artifacts/{artifact_id}"): (409, 503),
}


def _problem(status: int) -> dict[str, Any]:
    return {
        "description": f"{HTTPStatus(status).phrase} (problem+json)",
        "content": {
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
        },
    }


def document(app: FastAPI, *, auth: bool) -> dict[str, Any]:
    doc = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    doc.setdefault("components", {}).setdefault("schemas", {})["Problem"] = PROBLEM
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            statuses = {400, 422, 500, *EXTRA.get((method, path), ())}
            if "{" in path:
                statuses.add(404)
            if auth:
                statuses.add(401)
            if method == "post":
                statuses.add(413)
            for status in sorted(statuses):
                responses[str(status)] = _problem(status)
    invoke = doc["paths"]["/invoke"]["post"]["responses"]
    invoke["200"].setdefault("content", {})["text/event-stream"] = {
        "schema": {"type": "string", "description": "Server-Sent Events"}
    }
    invoke["200"]["description"] = (
        "The outputs (JSON); with `Accept: text/event-stream`, the invocation's events as "
        "Server-Sent Events (as `GET /stream/{id}`), its job id in `X-Job-Id`"
    )
    invoke["202"] = {
        "description": "With `?mode=async`: the job was queued; `Location` is its URL. With "
        "an `Idempotency-Key` some job already holds (this request sent before): that job, "
        "and `Idempotent-Replayed: true`",
        "headers": {
            "Location": {"schema": {"type": "string"}},
            REPLAYED: {
                "schema": {"type": "string", "enum": ["true"]},
                "description": "The job is that of an earlier request with this key",
            },
        },
        "content": {"application/json": {"schema": ACCEPTED}},
    }
    doc["paths"]["/invoke"]["post"].setdefault("parameters", []).append(IDEMPOTENCY_KEY)
    doc["paths"]["/health"] = {
        "get": {
            "summary": "Liveness and readiness (any Host; never needs the auth key)",
            "operationId": "health",
            "responses": {
                "200": {
                    "description": "Ready",
                    "content": {"application/json": {"schema": HEALTH}},
                },
                "503": {
                    "description": "Starting (resources still building), failed or draining",
                    "content": {"application/json": {"schema": HEALTH}},
                },
            },
        }
    }
    doc["paths"]["/livez"] = _probe(
        "livez", "Liveness: the process and its event loop answer (any Host; no auth key)",
        {"200": ("Alive (also while starting and draining)", LIVE)},
    )  # fmt: skip
    doc["paths"]["/readyz"] = _probe(
        "readyz", "Readiness: this worker takes requests (any Host; no auth key)",
        {"200": ("Ready", READY), "503": ("Starting, failed or draining", READY)},
    )  # fmt: skip
    return doc


def _probe(name: str, summary: str, answers: dict[str, tuple[str, Any]]) -> dict[str, Any]:
    """A probe's path item: its JSON answers, never problem+json (nothing it refuses)."""
    responses = {
        status: {"description": text, "content": {"application/json": {"schema": schema}}}
        for status, (text, schema) in answers.items()
    }
    return {"get": {"summary": summary, "operationId": name, "responses": responses}}


def install_openapi(app: FastAPI, *, auth: bool) -> None:
    """Serve ``document`` (built once, on first request) as the app's OpenAPI document."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document(app, auth=auth)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
