"""One frozen ``Settings``, resolved once: flag > environment > default.

Only primitives, so it pickles and travels to worker processes as one JSON environment variable.
The spec's ``ZENML_*`` names are honoured as aliases when the ``ZSERVE_*`` name is unset.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

from zserve.errors import UsageError
from zserve.records import CAPTURE_MODES

__all__ = [
    "ENV_VARS",
    "FLUSH_MODES",
    "LOG_LEVELS",
    "SETTINGS_ENV",
    "STORE_MIGRATE_MODES",
    "LogLevel",
    "Settings",
    "default_host_id",
    "hide_password",
    "parse_duration",
    "store_url_of",
]

LogLevel = Literal["critical", "error", "warning", "info", "debug", "trace"]
LOG_LEVELS: tuple[str, ...] = get_args(LogLevel)

#: Where the parent process hands resolved settings to its workers.
SETTINGS_ENV = "ZSERVE_SETTINGS_JSON"
#: Set by `zserve start --detach` for the server it spawns: its settings and deployment come on
#: its stdin (``zserve.server.boot.handover``), not from the environment and the store.
HANDED_ENV = "ZSERVE_HANDED_ON_STDIN"

#: field name -> (environment variable, spec aliases in the order they are read)
ENV_VARS: dict[str, tuple[str, tuple[str, ...]]] = {
    "deployment_id": ("ZSERVE_DEPLOYMENT_ID", ("ZENML_PIPELINE_DEPLOYMENT_ID",)),
    "capture_default": (
        "ZSERVE_CAPTURE_DEFAULT",
        ("ZENML_DEPLOYMENT_CAPTURE_DEFAULT", "ZENML_SERVING_CAPTURE_DEFAULT"),
    ),
    "host": ("ZSERVE_HOST", ("ZENML_SERVICE_HOST",)),
    "port": ("ZSERVE_PORT", ("ZENML_SERVICE_PORT",)),
    "log_level": ("ZSERVE_LOG_LEVEL", ("ZENML_LOG_LEVEL",)),
    "log_format": ("ZSERVE_LOG_FORMAT", ()),
    "workers": ("ZSERVE_WORKERS", ()),
    "home": ("ZSERVE_HOME", ()),
    "store_url": ("ZSERVE_STORE_URL", ()),
    "store_migrate": ("ZSERVE_STORE_MIGRATE", ()),
    "auth_key": ("ZSERVE_AUTH_KEY", ()),
    "max_body_bytes": ("ZSERVE_MAX_BODY_BYTES", ()),
    "max_threads": ("ZSERVE_MAX_THREADS", ()),
    "access_log": ("ZSERVE_ACCESS_LOG", ()),
    "server_timing": ("ZSERVE_SERVER_TIMING", ()),
    "adaptive_steps": ("ZSERVE_ADAPTIVE_STEPS", ()),
    "max_concurrency": ("ZSERVE_MAX_CONCURRENCY", ()),
    "max_queue": ("ZSERVE_MAX_QUEUE", ()),
    "timeout_s": ("ZSERVE_TIMEOUT_S", ()),
    "job_ttl_s": ("ZSERVE_JOB_TTL_S", ()),
    "job_max_count": ("ZSERVE_JOB_MAX_COUNT", ()),
    "sse_ping_s": ("ZSERVE_SSE_PING_S", ()),
    "grace_s": ("ZSERVE_GRACE_S", ()),
    "broker_url": ("ZSERVE_BROKER_URL", ()),
    "host_id": ("ZSERVE_HOST_ID", ()),
    "url": ("ZSERVE_URL", ()),
    # tracked mode
    "capture_max": ("ZSERVE_CAPTURE_MAX", ("ZENML_DEPLOYMENT_CAPTURE_MAX",)),
    "create_runs": (
        "ZSERVE_CREATE_RUNS",
        ("ZENML_DEPLOYMENT_CREATE_RUNS", "ZENML_SERVING_CREATE_RUNS"),
    ),
    "sample_rate": (
        "ZSERVE_SAMPLE_RATE",
        ("ZENML_DEPLOYMENT_CAPTURE_SAMPLE_RATE", "ZENML_SERVING_CAPTURE_SAMPLE_RATE"),
    ),
    "sample_seed": ("ZSERVE_SAMPLE_SEED", ()),
    "redact": (
        "ZSERVE_REDACT",
        ("ZENML_DEPLOYMENT_CAPTURE_REDACT", "ZENML_SERVING_CAPTURE_REDACT"),
    ),
    "artifact_max_bytes": (
        "ZSERVE_ARTIFACT_MAX_BYTES",
        ("ZENML_DEPLOYMENT_CAPTURE_MAX_BYTES", "ZENML_SERVING_CAPTURE_MAX_BYTES"),
    ),
    "artifact_dir": ("ZSERVE_ARTIFACT_DIR", ()),
    "capture_flush": ("ZSERVE_CAPTURE_FLUSH", ()),
    "capture_queue": ("ZSERVE_CAPTURE_QUEUE", ()),
    "run_ttl": ("ZSERVE_RUN_TTL", ()),
    # browsers
    "allowed_hosts": ("ZSERVE_ALLOWED_HOSTS", ()),
    "max_header_bytes": ("ZSERVE_MAX_HEADER_BYTES", ()),
    "max_headers": ("ZSERVE_MAX_HEADERS", ()),
    "header_timeout_s": ("ZSERVE_HEADER_TIMEOUT_S", ()),
    "max_connections": ("ZSERVE_MAX_CONNECTIONS", ()),
    "cors_origins": ("ZSERVE_CORS_ORIGINS", ()),
    "ui": ("ZSERVE_UI", ()),
}

#: How a tracked request's record reaches the store: committed before the response ("sync"),
#: or queued and committed after it ("background").
FLUSH_MODES = ("sync", "background")

#: What opening a store whose schema is behind does: "auto" migrates it (SQLite under a file
#: lock, PostgreSQL under an advisory lock), "never" refuses it (`zserve db upgrade` migrates).
STORE_MIGRATE_MODES = ("auto", "never")
#: The schemes of the brokers ``zserve.broker.open_broker`` opens.
_BROKER_SCHEMES = ("memory", "sqlite", "redis", "rediss")
#: A password given as a URL's query parameter (redis-py and libpq both take one).
_PASSWORD_PARAM = re.compile(r"([?&]password=)[^&#]*", re.IGNORECASE)

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str, *, what: str = "duration") -> float:
    """``"90s"``, ``"15m"``, ``"12h"``, ``"7d"``, ``"2w"`` or plain seconds -> seconds (> 0)."""
    raw = text.strip().lower()
    number, unit = (raw[:-1], raw[-1]) if raw and raw[-1] in _UNITS else (raw, "s")
    try:
        seconds = float(number) * _UNITS[unit]
    except ValueError:
        seconds = -1.0
    if not seconds > 0 or seconds == float("inf"):
        raise UsageError(
            f"Invalid {what} {text!r}: use a number and a unit, e.g. 90s, 15m, 12h, 7d or 2w"
        )
    return seconds


@dataclass(frozen=True)
class Settings:
    deployment_id: str | None = None
    capture_default: str = "none"
    host: str = "127.0.0.1"
    port: int = 8001
    log_level: str = "info"
    #: "text", or "json" (one object a line)
    log_format: str = "text"
    workers: int = 1
    home: str = ""
    store_url: str = ""
    store_migrate: str = "auto"
    auth_key: str | None = None
    max_body_bytes: int = 1024 * 1024
    #: Threads for sync steps, per worker.
    max_threads: int = 64
    access_log: bool = False
    #: A Server-Timing header on every sync invoke answer (else only when asked for, by
    #: ``zserve bench``'s request header)
    server_timing: bool = False
    #: Plain ``@step`` sync steps move to the event loop once shown to be short
    #: (``zserve.engine.placement``).
    adaptive_steps: bool = True
    #: Executions running at once per worker; beyond it they queue, and past the queue, 429.
    max_concurrency: int = 64
    max_queue: int = 1000
    #: Default per-request timeout (seconds); None waits as long as the pipeline runs.
    timeout_s: float | None = None
    #: Finished jobs are kept this long, and at most this many.
    job_ttl_s: float = 3600.0
    job_max_count: int = 10_000
    #: Seconds between SSE comment pings on an idle stream.
    sse_ping_s: float = 15.0
    #: On SIGTERM, running jobs and requests get this long to finish.
    grace_s: float = 30.0
    #: memory:// for one worker; several workers share a SQLite file in $ZSERVE_HOME.
    broker_url: str = ""
    #: This host's name among several sharing a broker and a store; empty = "hostname:port".
    host_id: str = ""
    url: str | None = None
    #: The most any request may record (none < errors_only < sampled < metadata < full).
    capture_max: str = "full"
    #: false switches every kind of recording off, whatever else asks for it.
    create_runs: bool = True
    #: The share of ``sampled`` requests recorded, and the seed of that choice.
    sample_rate: float = 0.1
    sample_seed: str = ""
    #: Comma-separated secret words for redaction; empty keeps the built-in list.
    redact: str = ""
    #: A recorded value bigger than this is truncated.
    artifact_max_bytes: int = 256 * 1024
    #: Where large artifacts go: a directory (shared by every host, for a shared store); empty
    #: = $ZSERVE_HOME/artifacts with a SQLite store, the database itself with any other.
    artifact_dir: str = ""
    capture_flush: str = "sync"
    #: Records waiting for the store with capture_flush=background; more are dropped (counted).
    capture_queue: int = 10_000
    #: Recorded runs older than this are pruned by the server ("7d"); empty keeps them.
    run_ttl: str = ""
    #: Host names the server answers to besides its own addresses (".example.com", "*").
    allowed_hosts: str = ""
    #: Origins whose browser pages may call the server (CORS) and open its WebSocket.
    cors_origins: str = ""
    #: The dashboard at /ui (false: left out).
    ui: bool = True
    #: A request head (line and headers) larger than this, or with more headers, gets 431.
    max_header_bytes: int = 64 * 1024
    max_headers: int = 100
    #: Seconds a connection has to send a complete request head (slowloris).
    header_timeout_s: float = 10.0
    #: Connections per worker; 0 = as many as the open-file limit allows (at most 4096).
    max_connections: int = 0

    def __post_init__(self) -> None:
        home = self.home or str(Path("~/.zserve").expanduser())
        object.__setattr__(self, "home", home)
        if not self.store_url:
            object.__setattr__(self, "store_url", f"sqlite:///{home}/zserve.db")
        if not self.artifact_dir and self.store_kind == "sqlite":
            object.__setattr__(self, "artifact_dir", str(Path(home) / "artifacts"))
        for name in ("capture_default", "capture_max"):
            if getattr(self, name) not in CAPTURE_MODES:
                var = ENV_VARS[name][0]
                raise UsageError(
                    f"Unknown capture mode {getattr(self, name)!r} ({var}): "
                    f"use one of {', '.join(CAPTURE_MODES)}"
                )
        if self.store_migrate not in STORE_MIGRATE_MODES:
            raise UsageError(
                f"Unknown store migration policy {self.store_migrate!r} (ZSERVE_STORE_MIGRATE): "
                f"use one of {', '.join(STORE_MIGRATE_MODES)}"
            )
        if self.broker_url and (problem := _broker_url_problem(self.broker_url)):
            raise UsageError(
                f"Invalid broker URL {hide_password(self.broker_url)!r} (ZSERVE_BROKER_URL, "
                f"--broker): {problem}; use memory://, sqlite:///path/broker.db or "
                "redis://[:password@]host:port/db"
            )
        if self.capture_flush not in FLUSH_MODES:
            raise UsageError(
                f"Unknown capture flush {self.capture_flush!r} (ZSERVE_CAPTURE_FLUSH): "
                f"use one of {', '.join(FLUSH_MODES)}"
            )
        if not 0.0 <= self.sample_rate <= 1.0:
            raise UsageError(
                f"Invalid sample rate {self.sample_rate} (ZSERVE_SAMPLE_RATE): "
                "it must be from 0 to 1"
            )
        if self.run_ttl:
            parse_duration(self.run_ttl, what="ZSERVE_RUN_TTL")
        if self.log_format not in ("text", "json"):
            raise UsageError(
                f"Unknown log format {self.log_format!r} (ZSERVE_LOG_FORMAT): use text or json"
            )
        if self.log_level not in LOG_LEVELS:
            raise UsageError(
                f"Unknown log level {self.log_level!r}: use one of {', '.join(LOG_LEVELS)}"
            )
        for name in ("max_header_bytes", "max_headers"):
            if getattr(self, name) < 1:
                raise UsageError(f"Invalid {name} {getattr(self, name)}: it must be at least 1")
        if self.max_connections < 0:
            raise UsageError(f"Invalid max_connections {self.max_connections}: use 0 or more")
        for name in ("job_ttl_s", "sse_ping_s", "timeout_s", "header_timeout_s"):
            seconds = getattr(self, name)
            if seconds is not None and seconds <= 0:
                raise UsageError(f"Invalid {name} {seconds}: it must be a number of seconds > 0")
        if self.host_id and not _fit_host_id(self.host_id):
            raise UsageError(
                f"Invalid host id {self.host_id[:140]!r} (ZSERVE_HOST_ID): use up to 128 "
                "printable ASCII characters without spaces, e.g. web-1 or web-1.example.com:8001"
            )
        if self.grace_s < 0:
            raise UsageError(f"Invalid grace_s {self.grace_s}: it must be >= 0")
        for name in (
            "port",
            "workers",
            "max_body_bytes",
            "max_threads",
            "max_concurrency",
            "job_max_count",
            "artifact_max_bytes",
            "capture_queue",
        ):
            value = getattr(self, name)
            low = 0 if name == "port" else 1
            if value < low or (name == "port" and value > 65535):
                raise UsageError(f"Invalid {name} {value}: it must be a number >= {low}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Resolve settings: ``overrides`` (flags; None means unset) > environment > defaults."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        types = {f.name: f.type for f in fields(cls)}
        for name, (var, aliases) in ENV_VARS.items():
            raw = env.get(var)
            for alias in aliases:
                if raw is not None and raw != "":
                    break
                raw, var = env.get(alias), alias
            if raw is None or raw == "":
                continue
            values[name] = _coerce(name, var, raw, str(types[name]))
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Settings:
        return cls(**json.loads(text))

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @property
    def store_kind(self) -> str:
        return self.store_url.split(":", 1)[0].split("+", 1)[0]

    def public(self) -> dict[str, Any]:
        """A snapshot safe to show anyone: secrets are never included."""
        data = dataclasses.asdict(self)
        data["auth_key"] = "set" if self.auth_key else None
        data["store_url"] = hide_password(self.store_url)
        data["broker_url"] = hide_password(self.broker_url)
        return data


def _coerce(name: str, var: str, raw: str, type_name: str) -> Any:
    if "bool" in type_name:
        low = raw.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise UsageError(f"{var}={raw!r} is not a boolean: use true or false")
    if "int" in type_name:
        try:
            return int(raw)
        except ValueError:
            raise UsageError(f"{var}={raw!r} is not a whole number") from None
    if "float" in type_name:
        try:
            return float(raw)
        except ValueError:
            what = "a number" if name == "sample_rate" else "a number of seconds"
            raise UsageError(f"{var}={raw!r} is not {what}") from None
    if name in ("capture_default", "capture_max", "capture_flush", "log_level", "log_format",
                "store_migrate"):  # fmt: skip
        return raw.strip().lower()
    return raw


def _broker_url_problem(url: str) -> str | None:
    """What is wrong with a broker URL, or None (the broker checks the rest when it opens)."""
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme not in _BROKER_SCHEMES:
        return "its scheme is not one of a broker"
    if scheme.startswith("redis"):
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 (raises ValueError when it is not a port number)
        except ValueError:
            return "its address or port is not valid"
        if not url.startswith(f"{scheme}://"):
            return "it has no address"
        database = parts.path.strip("/")
        if database and not database.isdigit():
            return "its database (the path) is not a number"
    return None


def store_url_of(given: str) -> str:
    """A store URL from what a person gives: a URL (``sqlite:///...``, ``postgresql://...``) as
    it is, anything else as the path of a SQLite file."""
    if "://" in given:
        return given
    return f"sqlite:///{Path(given).expanduser().absolute()}"


def _fit_host_id(name: str) -> bool:
    return len(name) <= 128 and name.isascii() and name.isprintable() and " " not in name


def default_host_id(port: int) -> str:
    """The host id of a server that was given none (``ZSERVE_HOST_ID``): this machine's name
    and the port the server listens on."""
    return f"{socket.gethostname()}:{port}"


def hide_password(url: str) -> str:
    """A URL fit to show: its password (``user:password@``, ``password=``) replaced by ``***``."""
    url = _PASSWORD_PARAM.sub(r"\1***", url)
    scheme, sep, rest = url.partition("://")
    if not sep:  # not a URL: whatever comes before an "@" may be a password
        before, at, host = url.rpartition("@")
        return f"{before.split(':', 1)[0]}:***@{host}" if at else url
    creds, at, host = rest.rpartition("@")
    if not at or ":" not in creds:
        return url
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"
