"""Jobs: every invocation is one. Admission, running, step states, events and upkeep.
May import the bottom modules, zserve.sdk, zserve.engine and zserve.broker; never server or cli."""

from zserve.jobs.manager import JobManager
from zserve.jobs.outcome import Outcome

__all__ = ["JobManager", "Outcome"]
