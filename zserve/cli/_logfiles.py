"""The logs of detached servers, one file per server in ``$ZSERVE_HOME/logs/``: pruned at each
`zserve start --detach` (the newest few of stopped servers are kept) and by
`zserve logs --prune` (all of them)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["KEEP_LOGS", "logs_dir", "prune_logs"]

#: `zserve start --detach` keeps the logs of running servers and this many others (the newest).
KEEP_LOGS = 20


def logs_dir(home: str) -> Path:
    return Path(home) / "logs"


def prune_logs(home: str, keep: int = 0) -> tuple[int, int]:
    """Delete the logs of servers that are not running, but the newest ``keep`` of them:
    (how many were deleted, the bytes freed)."""
    from zserve import registry

    logs = sorted(logs_dir(home).glob("*.log"))
    if len(logs) <= keep:  # nothing to do: do not look for running servers
        return 0, 0
    live = registry.live_server_ids(home)
    stopped = []
    for path in logs:
        if path.stem in live:
            continue
        try:
            stat = path.stat()
        except OSError:  # deleted meanwhile
            continue
        stopped.append((stat.st_mtime, stat.st_size, path))
    stopped.sort(reverse=True)
    count = freed = 0
    for _, size, path in stopped[keep:]:
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        count, freed = count + 1, freed + size
    return count, freed
