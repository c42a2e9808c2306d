"""Job state, events and cancel requests shared by the workers of a server.
May import the bottom modules (records, events, errors, settings); nothing above them."""

from zserve.broker.base import Broker
from zserve.broker.memory import MemoryBroker

__all__ = ["Broker", "MemoryBroker", "open_broker"]


def open_broker(url: str, *, job_ttl_s: float | None = None) -> Broker:
    """``memory://``, ``sqlite:///path/broker.db`` or ``redis://[:password@]host:port/db``
    (``rediss://`` for TLS; ``?prefix=name:`` names its keys' namespace). With the Redis broker,
    ``job_ttl_s`` makes finished jobs expire in Redis itself, even with no server left to prune."""
    if url.startswith("memory:"):
        return MemoryBroker()
    if url.startswith("sqlite:"):
        from zserve.broker.sqlite import SQLiteBroker

        path, _, query = url.removeprefix("sqlite://").partition("?file=")
        return SQLiteBroker(path, file_id=query or None)
    from zserve.errors import UsageError

    if url.startswith(("redis:", "rediss:")):
        try:
            from zserve.broker.redis import RedisBroker
        except ImportError as exc:
            if exc.name is None or not exc.name.startswith("redis"):
                raise
            raise UsageError(
                "The Redis broker needs the redis package: pip install 'zserve[redis]'"
            ) from None
        return RedisBroker(url, job_ttl_s=job_ttl_s)
    from zserve.settings import hide_password

    raise UsageError(
        f"Unknown broker URL {hide_password(url)!r}: use memory://, sqlite:///path/broker.db or "
        "redis://host:port/0"
    )
