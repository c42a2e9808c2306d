"""What pages on other sites may do: the Host check (DNS rebinding), the WebSocket Origin check,
CORS preflights for allowed origins, and the JSON content type of POST /invoke."""

from __future__ import annotations

import json
from typing import Any

import pytest
from starlette.websockets import WebSocketDisconnect

from tests.server.test_http import WEATHER, assert_problem
from zserve.server.guard import allowed_hosts, host_of

BODY = json.dumps({"parameters": {"city": "Paris"}})


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("localhost:8001", "localhost"),
        ("Example.COM.", "example.com"),
        ("[::1]:8001", "::1"),
        ("[::1]", "::1"),
        ("127.0.0.1", "127.0.0.1"),
        ("::1", "::1"),
    ],
)
def test_host_of_strips_port_brackets_and_case(header: str, name: str) -> None:
    assert host_of(header) == name


def test_allowed_hosts_of_a_loopback_bind_are_loopback_and_configured_names() -> None:
    names, suffixes = allowed_hosts("127.0.0.1", ["api.internal", ".example.com"])
    assert {"localhost", "127.0.0.1", "::1", "api.internal"} <= names
    assert "example.com" not in names and suffixes == (".example.com",)


def test_a_wildcard_bind_answers_to_the_machines_own_addresses() -> None:
    names, _ = allowed_hosts("0.0.0.0", [])
    assert "127.0.0.1" in names and len(names) > len(allowed_hosts("127.0.0.1", [])[0])


def test_foreign_host_is_refused_with_the_fix(make_client: Any) -> None:
    client = make_client(WEATHER)
    response = client.post(
        "/invoke", content=BODY, headers={"content-type": "application/json", "host": "evil.test"}
    )
    doc = assert_problem(response, 400)
    assert "evil.test" in doc["detail"] and "ZSERVE_ALLOWED_HOSTS" in doc["detail"]
    assert doc["type"].endswith("/untrusted-host")


def test_health_answers_any_host(make_client: Any) -> None:
    client = make_client(WEATHER)
    assert client.get("/health", headers={"host": "lb.internal:9000"}).status_code == 200


@pytest.mark.parametrize("host", ["localhost:8001", "127.0.0.1", "[::1]:80", "127.0.0.2"])
def test_loopback_names_are_answered(make_client: Any, host: str) -> None:
    client = make_client(WEATHER)
    assert client.get("/info", headers={"host": host}).status_code == 200


def test_allowed_hosts_setting_adds_names_and_domains(make_client: Any) -> None:
    client = make_client(WEATHER, allowed_hosts="api.internal, .example.com")
    for host in ("api.internal", "example.com", "a.b.example.com:443"):
        assert client.get("/info", headers={"host": host}).status_code == 200, host
    assert client.get("/info", headers={"host": "example.com.evil.test"}).status_code == 400
    anyone = make_client(WEATHER, allowed_hosts="*")
    assert anyone.get("/info", headers={"host": "whatever.test"}).status_code == 200


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
def test_invoke_takes_json_only(make_client: Any, content_type: str | None) -> None:
    client = make_client(WEATHER)
    headers = {} if content_type is None else {"content-type": content_type}
    doc = assert_problem(client.post("/invoke", content=BODY, headers=headers), 415)
    assert "application/json" in doc["detail"]


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON",
        "application/x+json",
    ],
)
def test_json_content_types_are_accepted(make_client: Any, content_type: str) -> None:
    client = make_client(WEATHER)
    response = client.post("/invoke", content=BODY, headers={"content-type": content_type})
    assert response.status_code == 200, response.text


def test_websocket_from_a_foreign_origin_is_refused_before_the_handshake(
    make_client: Any,
) -> None:
    client = make_client(WEATHER)
    with pytest.raises(WebSocketDisconnect) as refused:  # noqa: SIM117
        with client.websocket_connect("/stream", headers={"origin": "https://evil.test"}):
            pass
    assert refused.value.code == 1008
    assert "ZSERVE_CORS_ORIGINS" in refused.value.reason


@pytest.mark.parametrize(
    ("origin", "settings"),
    [
        (None, {}),  # not a browser
        ("http://127.0.0.1", {}),  # the server's own origin (the client's Host)
        ("https://tool.example", {"cors_origins": "https://tool.example"}),
        ("https://tool.example", {"cors_origins": "*"}),
    ],
)
def test_websocket_from_own_or_allowed_origin_streams(
    make_client: Any, origin: str | None, settings: dict[str, str]
) -> None:
    client = make_client(WEATHER, **settings)
    headers = {} if origin is None else {"origin": origin}
    with client.websocket_connect("/stream", headers=headers) as ws:
        ws.send_text(BODY)
        events = [ws.receive_json()]
        while events[-1]["event"] not in ("job.completed", "job.failed"):
            events.append(ws.receive_json())
    assert events[-1]["event"] == "job.completed"


def test_cors_preflight_of_an_allowed_origin(make_client: Any) -> None:
    client = make_client(WEATHER, cors_origins="https://tool.example", auth_key="k" * 32)
    preflight = client.options(
        "/invoke",
        headers={
            "origin": "https://tool.example",
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization, content-type",
        },
    )
    assert preflight.status_code == 200  # answered before auth: a preflight carries no key
    assert preflight.headers["access-control-allow-origin"] == "https://tool.example"
    response = client.post(
        "/invoke",
        content=BODY,
        headers={
            "origin": "https://tool.example",
            "content-type": "application/json",
            "authorization": "Bearer " + "k" * 32,
        },
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "https://tool.example"


def test_cors_preflight_of_another_origin_is_refused(make_client: Any) -> None:
    client = make_client(WEATHER, cors_origins="https://tool.example")
    preflight = client.options(
        "/invoke",
        headers={"origin": "https://evil.test", "access-control-request-method": "POST"},
    )
    assert preflight.status_code == 400
    assert "access-control-allow-origin" not in preflight.headers


def test_without_cors_origins_no_cors_headers_are_sent(make_client: Any) -> None:
    client = make_client(WEATHER)
    response = client.get("/info", headers={"origin": "https://tool.example"})
    assert "access-control-allow-origin" not in response.headers
