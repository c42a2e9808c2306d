"""Job state, events and cancel requests shared by the workers of a server.
May import the bottom modules (records, events, errors, settings); nothing above them."""

from zserve.broker.base import Broker
from zserve.broker.memory import MemoryBroker

__all__ = ["Broker", "MemoryBroker", "open_broker"]


def open_broker(url: str) -> Broker:
    """``memory://`` or ``sqlite:///path/broker.db``."""
    if url.startswith("memory:"):
        return MemoryBroker()
    if url.startswith("sqlite:"):
        from zserve.broker.sqlite import SQLiteBroker

        path, _, query = url.removeprefix("sqlite://").partition("?file=")
        return SQLiteBroker(path, file_id=query or None)
    from zserve.errors import UsageError

    raise UsageError(f"Unknown broker URL {url!r}: use memory:// or sqlite:///path/broker.db")
