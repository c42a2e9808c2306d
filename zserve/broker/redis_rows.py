"""How the Redis broker writes jobs and events: each job field as JSON in the job's hash,
each event as one JSON document in its stream (``redis_scripts`` has the key layout), the
arguments its scripts take fields in, and what a worker knows of the jobs it owns (``Owned``)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from zserve.events import Event
from zserve.records import JobRecord

__all__ = [
    "FIELDS",
    "SUMMARY_FIELDS",
    "Owned",
    "decode",
    "dump",
    "encode",
    "field_args",
    "record_of",
    "split_url",
]

FIELDS = frozenset(f.name for f in fields(JobRecord))
SUMMARY_FIELDS = sorted(FIELDS - {"outputs"})


def split_url(url: str) -> tuple[str, str]:
    """(the URL for the redis client, the key prefix): ``?prefix=NAME:`` picks a namespace of
    its own, so that several services share one Redis; ``zserve:`` otherwise."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefix = next((v for k, v in query if k == "prefix"), "zserve:")
    rest = urlencode([(k, v) for k, v in query if k != "prefix"])
    return urlunsplit(parts._replace(query=rest)), prefix


def dump(value: Any) -> str:
    return json.dumps(value, default=repr, separators=(",", ":"))


def encode(event: Event) -> str:
    return dump({"t": event.type, "ts": event.ts, "s": event.step, "d": event.data})


def decode(job_id: str, entries: Any) -> list[Event]:
    """Stream entries ``(id, {"e": JSON})``, as XRANGE and XREAD give them, as events."""
    found = []
    for entry_id, body in entries:
        doc = json.loads(body["e"])
        seq = int(entry_id.split("-")[0])
        found.append(Event(doc["t"], job_id, doc["ts"], doc["s"], doc["d"], seq))
    return found


def record_of(values: dict[str, str]) -> JobRecord:
    return JobRecord.from_row({k: json.loads(v) for k, v in values.items() if k in FIELDS})


def field_args(changes: dict[str, Any], *, creating: bool = False) -> list[str]:
    """``n, field, JSON, field, JSON...``: the arguments the scripts take fields in."""
    unknown = set(changes) - FIELDS
    if unknown or ("job_id" in changes and not creating):
        raise ValueError(f"Not a changeable job field: {sorted(unknown or {'job_id'})}")
    return [str(len(changes))] + [a for k, v in changes.items() for a in (k, dump(v))]


@dataclass(slots=True)
class Owned:
    """A job this worker created and runs: its fencing token, how many of its events it knows
    written (so that a write retried after its answer was lost appends nothing twice), and the
    lock that keeps its writes one at a time (so that count stays true)."""

    fence: int = 1
    own: int = 1
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
