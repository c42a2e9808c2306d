"""Every error zserve raises on purpose, in one tree.

Each class knows the exit code the CLI leaves with and the HTTP status a server answers with, so
that a failure looks the same whether it is met in a terminal, in a script or over HTTP::

    ZServeError                      exit 2   http 500
    ├── UsageError                   exit 2   http 400   bad input from the user
    │   ├── InvalidParameters        exit 2   http 422   every bad field in .errors
    │   ├── IdempotencyKeyReused     exit 2   http 409   a key sent again with another request
    │   ├── SourceError              exit 2              "module:attr" cannot be imported
    │   ├── PipelineDefinitionError  exit 2              a pipeline body that cannot be traced
    │   ├── NotSupported             exit 2   http 501   a feature this server does not offer
    │   │   └── CaptureNotSupported  exit 2   http 501   tracked capture modes (not built yet)
    │   ├── PayloadTooLarge          exit 2   http 413
    │   ├── UnsupportedMediaType     exit 2   http 415   POST /invoke takes application/json
    │   ├── UntrustedHost            exit 2   http 400   a Host the server does not answer to
    │   ├── NotAcceptable            exit 2   http 406   no answer type the client accepts
    │   ├── AmbiguousDeployment      exit 2   http 409   lists the matches
    │   ├── AmbiguousRun             exit 2   http 409   a run id prefix with several matches
    │   ├── DeploymentInUse          exit 2   http 409   delete of a deployment a server serves
    │   └── JobFinished              exit 2   http 409   cancel of a job that already ended
    ├── NotFound                     exit 2   http 404
    │   ├── DeploymentNotFound       exit 2   http 404
    │   ├── JobNotFound              exit 2   http 404   never existed, or finished and forgotten
    │   └── RunNotFound              exit 2   http 404
    ├── Unauthorized                 exit 2   http 401
    ├── ForbiddenOrigin              exit 2   http 403   a browser page of a foreign origin
    ├── ExecutionFailed              exit 1   http 500
    │   ├── StepFailed               exit 1   http 500   names the step and its exception
    │   ├── ExecutionTimeout         exit 1   http 504
    │   └── JobCancelled             exit 5   http 409   cancelled while the caller waited
    └── ServerError                  exit 3   http 503   cannot start or cannot be reached
        ├── SourceChanged            exit 3              code (no snapshot) changed: redeploy
        ├── ResourceFailed           exit 3   http 503   a resource's factory raised at start
        ├── ServerStarting           exit 3   http 503   resources still building: retry later
        ├── PortInUse                exit 3
        ├── ServerUnreachable        exit 3              no server answers at that address
        ├── StoreUnavailable         exit 3   http 503   the store cannot be written or read
        ├── BrokerUnavailable        exit 3   http 503   the jobs' broker cannot be used
        └── Overloaded               exit 3   http 429   too much work: retry later

Errors never carry a traceback to a client: ``str(error)`` is the one line a person reads.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Self

__all__ = [
    "EXIT_CODES",
    "PROBLEM_BASE",
    "AmbiguousDeployment",
    "AmbiguousRun",
    "BrokerUnavailable",
    "CaptureNotSupported",
    "DeploymentInUse",
    "DeploymentNotFound",
    "ExecutionFailed",
    "ExecutionTimeout",
    "ForbiddenOrigin",
    "IdempotencyKeyReused",
    "InvalidParameters",
    "JobCancelled",
    "JobFinished",
    "JobNotFound",
    "NotAcceptable",
    "NotFound",
    "NotSupported",
    "Overloaded",
    "PayloadTooLarge",
    "PipelineDefinitionError",
    "PortInUse",
    "ResourceFailed",
    "RunNotFound",
    "ServerError",
    "ServerStarting",
    "ServerUnreachable",
    "SourceChanged",
    "SourceError",
    "StepFailed",
    "StoreUnavailable",
    "Unauthorized",
    "UnsupportedMediaType",
    "UntrustedHost",
    "UsageError",
    "ZServeError",
    "describe_fields",
]

#: Where problem types live: ``type`` is this plus the class's ``problem``.
PROBLEM_BASE = "https://zserve.dev/problems/"

#: The CLI's exit codes. The README's table is checked against this one by a test.
EXIT_CODES: dict[int, str] = {
    0: "success",
    1: "the pipeline or job failed (a step raised, or it timed out)",
    2: "usage error, bad input or a conflict (invalid parameters, unknown deployment, bad source, "
    "401, deleting a deployment a server serves)",
    3: "a server could not start or could not be reached (or none is running)",
    4: "a bench threshold was missed",
    5: "the job was cancelled",
    130: "interrupted (Ctrl-C)",
}


class ZServeError(Exception):
    """Base of every error zserve raises on purpose."""

    exit_code: int = 2
    http_status: int = 500
    #: Short, stable problem type; the problem+json ``type`` is built from it.
    problem: str = "error"
    title: str = "zserve error"
    #: When the error came over HTTP (``from_problem``): the server's problem document and the
    #: response's status code; None for an error raised here.
    problem_doc: dict[str, Any] | None = None
    status_code: int | None = None
    #: Seconds a client should wait before it tries again (the ``Retry-After`` header of its
    #: HTTP answer); None: trying again will not help by itself.
    retry_after: int | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message

    @classmethod
    def from_problem(
        cls, doc: dict[str, Any], *, detail: str | None = None, status_code: int | None = None
    ) -> Self:
        """The error a server's problem document stands for (the client's side of
        ``to_problem``): ``detail`` defaults to the document's, and the document and status
        code are kept on the error."""
        err = cls._from_document(detail or str(doc.get("detail") or cls.title), doc)
        err.problem_doc = doc
        err.status_code = status_code
        return err

    @classmethod
    def _from_document(cls, message: str, doc: dict[str, Any]) -> Self:
        """Build from a problem document; classes whose constructor takes more override this."""
        return cls(message)

    def problem_fields(self) -> dict[str, Any]:
        """Extra members of the problem+json document (beyond type/title/status/detail)."""
        return {}

    def to_problem(self, **extra: Any) -> dict[str, Any]:
        """The RFC 9457 problem document for this error, as the server answers it."""
        doc: dict[str, Any] = {
            "type": PROBLEM_BASE + self.problem,
            "title": self.title,
            "status": self.http_status,
            "detail": self.message,
            "success": False,
        }
        doc.update(self.problem_fields())
        doc.update(extra)
        return doc


class UsageError(ZServeError):
    http_status = 400
    problem = "bad-request"
    title = "Bad request"


class InvalidParameters(UsageError):
    """Parameters that do not match the pipeline's signature; ``errors`` names every bad field."""

    http_status = 422
    problem = "invalid-parameters"
    title = "Invalid parameters"

    def __init__(self, errors: list[dict[str, Any]], message: str | None = None) -> None:
        self.errors = errors
        super().__init__(message or "Invalid parameters: " + describe_fields(errors))

    @classmethod
    def from_field_errors(
        cls, errors: Iterable[Mapping[str, Any]], *, prefix: Sequence[str | int] = ()
    ) -> Self:
        """From validation errors (pydantic's ``ValidationError.errors()``): each one's
        ``loc`` (after ``prefix``) and ``msg``."""
        return cls([{"loc": [*prefix, *e.get("loc", ())], "msg": e.get("msg", "")} for e in errors])

    @classmethod
    def _from_document(cls, message: str, doc: dict[str, Any]) -> Self:
        return cls(list(doc.get("errors") or []), message=message)

    def problem_fields(self) -> dict[str, Any]:
        return {"errors": self.errors}


class IdempotencyKeyReused(UsageError):
    """An ``Idempotency-Key`` sent again with a request other than the one that first came with
    it: nothing is started (a retry must repeat its request; a new request needs a new key).
    409, not the 422 of the IETF draft: zserve's 422 says the parameters are invalid, and here
    they are not: the key conflicts with what the server holds."""

    http_status = 409
    problem = "idempotency-key-reused"
    title = "Idempotency key reused"

    def __init__(self, message: str, *, job_id: str | None = None) -> None:
        super().__init__(message)
        #: the job that holds the key
        self.job_id = job_id

    @classmethod
    def of(cls, key: str, job_id: str) -> Self:
        return cls(
            f"Idempotency-Key {key!r} came first with another request (body, mode or capture), "
            f"which started job {job_id}: a retry must repeat that request exactly; send a new "
            "key with a new request",
            job_id=job_id,
        )

    @classmethod
    def _from_document(cls, message: str, doc: dict[str, Any]) -> Self:
        job_id = doc.get("job_id")
        return cls(message, job_id=job_id if isinstance(job_id, str) else None)

    def problem_fields(self) -> dict[str, Any]:
        return {} if self.job_id is None else {"job_id": self.job_id}


def describe_fields(errors: Iterable[Mapping[str, Any]]) -> str:
    """``a.b: msg; c: msg``: field errors as one line."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors)


class SourceError(UsageError):
    problem = "bad-source"
    title = "Pipeline source cannot be loaded"


class PipelineDefinitionError(UsageError):
    problem = "bad-pipeline"
    title = "Invalid pipeline definition"


class NotSupported(UsageError):
    http_status = 501
    problem = "not-supported"
    title = "Not supported"


class CaptureNotSupported(NotSupported):
    problem = "capture-not-supported"
    title = "Capture mode not supported"


class PayloadTooLarge(UsageError):
    http_status = 413
    problem = "payload-too-large"
    title = "Payload too large"


class UnsupportedMediaType(UsageError):
    http_status = 415
    problem = "unsupported-media-type"
    title = "Unsupported media type"


class UntrustedHost(UsageError):
    problem = "untrusted-host"
    title = "Host not allowed"


class NotAcceptable(UsageError):
    http_status = 406
    problem = "not-acceptable"
    title = "Not acceptable"


class AmbiguousDeployment(UsageError):
    http_status = 409
    problem = "ambiguous-deployment"
    title = "Ambiguous deployment"


class AmbiguousRun(UsageError):
    http_status = 409
    problem = "ambiguous-run"
    title = "Ambiguous run id"


class DeploymentInUse(UsageError):
    """A deployment a running server serves cannot be deleted (stop the server first)."""

    http_status = 409
    problem = "deployment-in-use"
    title = "Deployment in use"


class JobFinished(UsageError):
    http_status = 409
    problem = "job-finished"
    title = "Job already finished"


class NotFound(ZServeError):
    http_status = 404
    problem = "not-found"
    title = "Not found"


class DeploymentNotFound(NotFound):
    title = "Deployment not found"


class JobNotFound(NotFound):
    """A well-formed job id a server does not know: it cannot tell one that never existed from
    one that finished more than its retention (``ZSERVE_JOB_TTL_S``) ago."""

    title = "Job not found"

    @classmethod
    def unknown(cls, job_id: str, retention_s: float | None) -> Self:
        ago = "" if retention_s is None else f" more than {_duration_text(retention_s)} ago"
        return cls(
            f"No job {job_id!r} on this server: it never existed, or it finished{ago} and was "
            "forgotten (ZSERVE_JOB_TTL_S)"
        )


def _duration_text(seconds: float) -> str:
    """3600 -> 1h, 5400 -> 1h30m, 90 -> 1m30s, 45 -> 45s, 0.5 -> 0.5s."""
    s = int(seconds)
    units = ((s // 86400, "d"), (s % 86400 // 3600, "h"), (s % 3600 // 60, "m"), (s % 60, "s"))
    return f"{seconds:g}s" if s < 60 else "".join(f"{n}{u}" for n, u in units if n)


class RunNotFound(NotFound):
    title = "Run not found"


class Unauthorized(ZServeError):
    http_status = 401
    problem = "unauthorized"
    title = "Unauthorized"


class ForbiddenOrigin(ZServeError):
    http_status = 403
    problem = "forbidden-origin"
    title = "Origin not allowed"


class ExecutionFailed(ZServeError):
    exit_code = 1
    http_status = 500
    problem = "execution-failed"
    title = "Pipeline execution failed"


class StepFailed(ExecutionFailed):
    """A step raised. Carries the step's name and the exception's type and message."""

    problem = "step-failed"
    title = "Step failed"

    def __init__(
        self, step: str | None, exc: BaseException | None = None, *, message: str | None = None
    ) -> None:
        #: The step that raised (None when a server's answer did not name it).
        self.step = step
        self.exc_type = type(exc).__name__ if exc is not None else None
        self.exc_message = str(exc) if exc is not None else None
        if message is None:
            detail = f": {self.exc_message}" if self.exc_message else ""
            message = f"Step '{step}' raised {self.exc_type}{detail}"
        super().__init__(message)

    @classmethod
    def _from_document(cls, message: str, doc: dict[str, Any]) -> Self:
        step = doc.get("step")
        return cls(step if isinstance(step, str) else None, message=message)

    def problem_fields(self) -> dict[str, Any]:
        return {"step": self.step}


class ExecutionTimeout(ExecutionFailed):
    http_status = 504
    problem = "timeout"
    title = "Execution timed out"


class JobCancelled(ExecutionFailed):
    exit_code = 5
    http_status = 409
    problem = "job-cancelled"
    title = "Job cancelled"


class ServerError(ZServeError):
    exit_code = 3
    http_status = 503
    problem = "unavailable"
    title = "Service unavailable"


class SourceChanged(ServerError):
    problem = "source-changed"
    title = "Pipeline source changed since deploy"


class ResourceFailed(ServerError):
    """A resource's factory raised while a worker built it: the server does not start (or,
    under ``zserve dev``, answers 503 until the next change); ``zserve run`` does not run."""

    problem = "resource-failed"
    title = "Resource failed to build"


class ServerStarting(ServerError):
    """The worker is still building its resources: nothing runs until they are built."""

    problem = "starting"
    title = "Server starting"

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PortInUse(ServerError):
    problem = "port-in-use"
    title = "Port already in use"


class ServerUnreachable(ServerError):
    problem = "unreachable"
    title = "Server unreachable"


class StoreUnavailable(ServerError):
    """The store cannot be written (or read): a tracked request is refused before it runs."""

    problem = "store-unavailable"
    title = "Store unavailable"


class BrokerUnavailable(ServerError):
    """The jobs' broker cannot be used: for good when ``lasting`` (its file was deleted or
    replaced), or for now (it cannot be written: a full disk, an I/O error), when writes that
    must land (a job's end) are retried until they do."""

    http_status = 503
    problem = "broker-unavailable"
    title = "Broker unavailable"

    def __init__(self, message: str, *, lasting: bool = True) -> None:
        super().__init__(message)
        self.lasting = lasting
        # only a broker that may come back (Redis unreachable, a full disk) is worth a retry
        self.retry_after = None if lasting else 2


class Overloaded(ServerError):
    http_status = 429
    problem = "overloaded"
    title = "Too many requests"

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after
