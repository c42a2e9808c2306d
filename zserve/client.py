"""The HTTP client for a zserve server, used by the CLI and by Python programs.

    from zserve.client import Client

    with Client("http://127.0.0.1:8001") as client:
        result = client.invoke({"city": "Paris"})
        print(result.outputs)

Every error the server answers (problem+json) is raised as the matching ``zserve.errors`` class
(``InvalidParameters`` with ``.errors``, ``StepFailed`` with ``.step``, ...); a server that does
not answer is ``ServerUnreachable``. ``AsyncClient`` is the same API for asyncio programs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx

from zserve import errors
from zserve._version import __version__

__all__ = ["AsyncClient", "Client", "InvokeResult", "error_from_response"]

DEFAULT_TIMEOUT = 300.0


@dataclass(frozen=True)
class InvokeResult:
    """A successful ``POST /invoke``."""

    outputs: dict[str, Any]
    job_id: str
    run_id: str | None
    capture: str
    execution_time_ms: float
    raw: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def output(self) -> Any:
        """The value of a single-output pipeline (``outputs["output"]``)."""
        return self.outputs["output"]


def _by_problem() -> dict[str, type[errors.ZServeError]]:
    found: dict[str, type[errors.ZServeError]] = {}
    pending: list[type[errors.ZServeError]] = [errors.ZServeError]
    while pending:
        cls = pending.pop()
        found.setdefault(cls.problem, cls)
        pending.extend(cls.__subclasses__())
    return found


_BY_STATUS: dict[int, type[errors.ZServeError]] = {
    400: errors.UsageError,
    401: errors.Unauthorized,
    404: errors.NotFound,
    409: errors.UsageError,
    413: errors.PayloadTooLarge,
    422: errors.InvalidParameters,
    429: errors.Overloaded,
    500: errors.ExecutionFailed,
    501: errors.NotSupported,
    503: errors.ServerError,
    504: errors.ExecutionTimeout,
}


def error_from_response(response: httpx.Response) -> errors.ZServeError:
    """The ``zserve.errors`` exception for an error response. ``.problem_doc`` keeps the body."""
    try:
        doc = response.json()
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        doc = {}
    detail = str(doc.get("detail") or response.text.strip() or response.reason_phrase)
    kind = str(doc.get("type", "")).rsplit("/", 1)[-1]
    cls = _by_problem().get(kind) or _BY_STATUS.get(response.status_code, errors.ZServeError)
    err: errors.ZServeError
    if cls is errors.InvalidParameters:
        err = errors.InvalidParameters(list(doc.get("errors") or []), message=detail)
    else:
        # Rebuild without running subclass constructors (StepFailed wants the exception).
        err = cls.__new__(cls)
        errors.ZServeError.__init__(err, detail)
        if cls is errors.StepFailed:
            err.step = doc.get("step")  # type: ignore[attr-defined]
    err.problem_doc = doc  # type: ignore[attr-defined]
    err.status_code = response.status_code  # type: ignore[attr-defined]
    return err


def _invoke_body(
    parameters: dict[str, Any] | None,
    capture: str | None,
    sample_rate: float | None,
    timeout_s: float | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"parameters": parameters or {}}
    if capture is not None:
        override: dict[str, Any] = {"mode": capture}
        if sample_rate is not None:
            override["sample_rate"] = sample_rate
        body["capture_override"] = override
    if timeout_s is not None:
        body["timeout_s"] = timeout_s
    return body


def _result(response: httpx.Response) -> InvokeResult:
    doc = _document(response)
    return InvokeResult(
        outputs=doc["outputs"],
        job_id=doc["job_id"],
        run_id=doc.get("run_id"),
        capture=doc.get("capture", "none"),
        execution_time_ms=doc.get("execution_time_ms", 0.0),
        raw=doc,
    )


def _document(response: httpx.Response) -> dict[str, Any]:
    if response.is_error:
        raise error_from_response(response)
    doc: dict[str, Any] = response.json()
    return doc


def _unreachable(url: str, exc: httpx.TransportError) -> errors.ServerError:
    if isinstance(exc, httpx.ReadTimeout):
        return errors.ServerError(f"The server at {url} did not answer in time ({exc})")
    return errors.ServerUnreachable(
        f"No zserve server answers at {url} ({type(exc).__name__}): start one with "
        "`zserve start --deployment NAME --detach`, or check --url / ZSERVE_URL"
    )


def _headers(auth_key: str | None) -> dict[str, str]:
    headers = {"User-Agent": f"zserve-client/{__version__}"}
    if auth_key:
        headers["Authorization"] = f"Bearer {auth_key}"
    return headers


class Client:
    """A blocking client for one server. Use as a context manager, or call ``close()``."""

    def __init__(
        self,
        url: str,
        *,
        auth_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.url, headers=_headers(auth_key), timeout=timeout, transport=transport
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One HTTP request; transport failures become ServerUnreachable. No status check."""
        try:
            return self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise _unreachable(self.url, exc) from None

    def health(self) -> dict[str, Any]:
        return _document(self.request("GET", "/health"))

    def info(self) -> dict[str, Any]:
        return _document(self.request("GET", "/info"))

    def status(self) -> dict[str, Any]:
        return _document(self.request("GET", "/status"))

    def metrics(self) -> dict[str, Any]:
        return _document(self.request("GET", "/metrics"))

    def invoke_response(
        self,
        parameters: dict[str, Any] | None = None,
        *,
        capture: str | None = None,
        sample_rate: float | None = None,
        timeout_s: float | None = None,
    ) -> httpx.Response:
        """``POST /invoke`` and return the raw response, error or not."""
        body = _invoke_body(parameters, capture, sample_rate, timeout_s)
        return self.request("POST", "/invoke", json=body)

    def invoke(
        self,
        parameters: dict[str, Any] | None = None,
        *,
        capture: str | None = None,
        sample_rate: float | None = None,
        timeout_s: float | None = None,
    ) -> InvokeResult:
        """Run the pipeline and wait for its outputs; raises the matching ZServeError."""
        return _result(
            self.invoke_response(
                parameters, capture=capture, sample_rate=sample_rate, timeout_s=timeout_s
            )
        )


class AsyncClient:
    """``Client`` for asyncio programs: the same methods, awaited."""

    def __init__(
        self,
        url: str,
        *,
        auth_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=self.url, headers=_headers(auth_key), timeout=timeout, transport=transport
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise _unreachable(self.url, exc) from None

    async def health(self) -> dict[str, Any]:
        return _document(await self.request("GET", "/health"))

    async def info(self) -> dict[str, Any]:
        return _document(await self.request("GET", "/info"))

    async def invoke(
        self,
        parameters: dict[str, Any] | None = None,
        *,
        capture: str | None = None,
        sample_rate: float | None = None,
        timeout_s: float | None = None,
    ) -> InvokeResult:
        body = _invoke_body(parameters, capture, sample_rate, timeout_s)
        return _result(await self.request("POST", "/invoke", json=body))
