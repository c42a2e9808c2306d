"""One frozen ``Settings``, resolved once: flag > environment > default.

Only primitives, so it pickles and travels to worker processes as one JSON environment variable.
The spec's ``ZENML_*`` names are honoured as aliases when the ``ZSERVE_*`` name is unset.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal, get_args

from zserve.errors import UsageError
from zserve.records import CAPTURE_MODES

__all__ = [
    "ENV_VARS",
    "LOG_LEVELS",
    "SETTINGS_ENV",
    "LogLevel",
    "Settings",
    "hide_password",
]

LogLevel = Literal["critical", "error", "warning", "info", "debug", "trace"]
LOG_LEVELS: tuple[str, ...] = get_args(LogLevel)

#: Where the parent process hands resolved settings to its workers.
SETTINGS_ENV = "ZSERVE_SETTINGS_JSON"

#: field name -> (environment variable, spec alias or None)
ENV_VARS: dict[str, tuple[str, str | None]] = {
    "deployment_id": ("ZSERVE_DEPLOYMENT_ID", "ZENML_PIPELINE_DEPLOYMENT_ID"),
    "capture_default": ("ZSERVE_CAPTURE_DEFAULT", "ZENML_DEPLOYMENT_CAPTURE_DEFAULT"),
    "host": ("ZSERVE_HOST", "ZENML_SERVICE_HOST"),
    "port": ("ZSERVE_PORT", "ZENML_SERVICE_PORT"),
    "log_level": ("ZSERVE_LOG_LEVEL", "ZENML_LOG_LEVEL"),
    "workers": ("ZSERVE_WORKERS", None),
    "home": ("ZSERVE_HOME", None),
    "store_url": ("ZSERVE_STORE_URL", None),
    "auth_key": ("ZSERVE_AUTH_KEY", None),
    "max_body_bytes": ("ZSERVE_MAX_BODY_BYTES", None),
    "max_threads": ("ZSERVE_MAX_THREADS", None),
    "access_log": ("ZSERVE_ACCESS_LOG", None),
    "max_concurrency": ("ZSERVE_MAX_CONCURRENCY", None),
    "max_queue": ("ZSERVE_MAX_QUEUE", None),
    "timeout_s": ("ZSERVE_TIMEOUT_S", None),
    "job_ttl_s": ("ZSERVE_JOB_TTL_S", None),
    "job_max_count": ("ZSERVE_JOB_MAX_COUNT", None),
    "sse_ping_s": ("ZSERVE_SSE_PING_S", None),
    "grace_s": ("ZSERVE_GRACE_S", None),
    "broker_url": ("ZSERVE_BROKER_URL", None),
    "url": ("ZSERVE_URL", None),
}


@dataclass(frozen=True)
class Settings:
    deployment_id: str | None = None
    capture_default: str = "none"
    host: str = "127.0.0.1"
    port: int = 8001
    log_level: str = "info"
    workers: int = 1
    home: str = ""
    store_url: str = ""
    auth_key: str | None = None
    max_body_bytes: int = 1024 * 1024
    #: Threads for sync steps, per worker.
    max_threads: int = 64
    access_log: bool = False
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
    url: str | None = None

    def __post_init__(self) -> None:
        home = self.home or str(Path("~/.zserve").expanduser())
        object.__setattr__(self, "home", home)
        if not self.store_url:
            object.__setattr__(self, "store_url", f"sqlite:///{home}/zserve.db")
        if self.capture_default not in CAPTURE_MODES:
            raise UsageError(
                f"Unknown capture mode {self.capture_default!r}: "
                f"use one of {', '.join(CAPTURE_MODES)}"
            )
        if self.log_level not in LOG_LEVELS:
            raise UsageError(
                f"Unknown log level {self.log_level!r}: use one of {', '.join(LOG_LEVELS)}"
            )
        for name in ("job_ttl_s", "sse_ping_s", "timeout_s"):
            seconds = getattr(self, name)
            if seconds is not None and seconds <= 0:
                raise UsageError(f"Invalid {name} {seconds}: it must be a number of seconds > 0")
        if self.grace_s < 0:
            raise UsageError(f"Invalid grace_s {self.grace_s}: it must be >= 0")
        for name in (
            "port",
            "workers",
            "max_body_bytes",
            "max_threads",
            "max_concurrency",
            "job_max_count",
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
        for name, (var, alias) in ENV_VARS.items():
            raw = env.get(var)
            if raw is None and alias is not None:
                raw = env.get(alias)
                var = alias
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
            raise UsageError(f"{var}={raw!r} is not a number of seconds") from None
    if name in ("capture_default", "log_level"):
        return raw.strip().lower()
    return raw


def hide_password(url: str) -> str:
    """A database URL fit to show: its password, if any, replaced by ``***``."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in creds:
        return url
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"
