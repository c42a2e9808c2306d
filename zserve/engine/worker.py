"""``Worker``: the resources of one plan in one process (``zserve.sdk.resources``), built once
before it serves and closed once it has drained.

``start`` builds them in the order the steps first ask for them, on the event loop that will
serve: an async factory is awaited there (a client pool binds to that loop), a sync one runs in a
thread of its own, so the loop keeps answering ``/health`` while a model loads (and a server
stopped meanwhile exits without waiting for the load). Each
value fills its ``ResourceSlot``, which the steps' argument getters read. A factory that raises
stops the build: what was built is closed, in reverse order, and ``ResourceFailed`` names the
resource, its factory and the error (the factory's exception is its ``__cause__``). ``aclose``
runs the teardowns (the code after ``yield``, a context's exit) in reverse order, a sync one in
a thread; one that raises is logged and the others still run.

``run_once`` is ``zserve run``: build, run the plan once, tear down (also when the run fails).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import threading
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Literal

from zserve.engine.observer import Observer
from zserve.engine.plan import Plan
from zserve.engine.resources import ResourceSlot
from zserve.engine.runner import execute
from zserve.errors import ResourceFailed
from zserve.sdk.resources import ResourceSpec

__all__ = ["ResourceState", "Worker", "run_once"]

logger = logging.getLogger("zserve.engine")

State = Literal["pending", "building", "ready", "failed", "closed"]
ExitFn = Callable[[type[BaseException] | None, BaseException | None, TracebackType | None], Any]


class ResourceState:
    """One resource of a worker: its state and how long its factory took."""

    __slots__ = ("build_ms", "slot", "state")

    def __init__(self, slot: ResourceSlot) -> None:
        self.slot = slot
        self.state: State = "pending"
        self.build_ms: float | None = None

    def to_dict(self) -> dict[str, Any]:
        spec = self.slot.spec
        return {"name": spec.name, "factory": spec.label, "kind": spec.kind,
                "state": self.state, "build_ms": self.build_ms}  # fmt: skip


class Worker:
    """The resources of ``plan`` in this process: ``await start()``, then ``await aclose()``
    (or ``async with Worker(plan):``)."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.resources = [ResourceState(slot) for slot in plan.resources.values()]
        self._stack = contextlib.AsyncExitStack()

    def states(self) -> dict[str, str]:
        """``{name: state}``: what ``/health`` shows while the worker starts."""
        return {r.slot.spec.name: r.state for r in self.resources}

    def status(self) -> list[dict[str, Any]]:
        """Each resource's name, factory, kind, state and build time (``/status``)."""
        return [r.to_dict() for r in self.resources]

    async def start(self) -> None:
        """Build every resource; ResourceFailed (what was built is closed) when one fails."""
        loop = asyncio.get_running_loop()
        for res in self.resources:
            spec = res.slot.spec
            res.state = "building"
            began = loop.time()
            try:
                res.slot.value = await self._build(spec)
            except BaseException as exc:
                res.state = "failed"
                await self.aclose()
                if not isinstance(exc, Exception):
                    raise  # cancelled (the server stops while it starts), Ctrl-C
                detail = f": {exc}" if str(exc) else ""
                raise ResourceFailed(
                    f"resource '{spec.name}' ({spec.label}) failed to build: "
                    f"{type(exc).__name__}{detail}"
                ) from exc
            res.build_ms = round((loop.time() - began) * 1000, 3)
            res.state = "ready"
            logger.info("Resource '%s' built in %.1f ms", spec.name, res.build_ms)

    async def _build(self, spec: ResourceSpec) -> Any:
        factory, kind = spec.factory, spec.kind
        if kind == "async":
            return await factory()
        if kind == "sync":
            return await _in_daemon_thread(factory)
        if kind in ("async-generator", "async-context-manager"):
            acm = factory() if kind == "async-context-manager" else _async_cm(factory)
            value = await acm.__aenter__()
            self._stack.push_async_exit(_teardown(spec, acm.__aexit__, in_thread=False))
            return value
        # a sync generator or context manager: entered in a thread, exited in one
        if kind == "context-manager":
            cm = await _in_daemon_thread(factory)
        else:
            cm = contextlib.contextmanager(factory)()
        value = await _in_daemon_thread(cm.__enter__)
        self._stack.push_async_exit(_teardown(spec, cm.__exit__, in_thread=True))
        return value

    async def aclose(self) -> None:
        """Tear down what was built, in reverse order; empty the slots. Idempotent."""
        for res in self.resources:
            if res.state == "ready":
                res.state = "closed"
            with contextlib.suppress(AttributeError):
                del res.slot.value
        stack, self._stack = self._stack, contextlib.AsyncExitStack()
        await stack.aclose()

    async def __aenter__(self) -> Worker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _in_daemon_thread(fn: Callable[[], Any]) -> asyncio.Future[Any]:
    """``fn()`` in a thread of its own, which a process that stops while a model loads does not
    wait for (the loop's executor would be joined at exit). A result that comes after the
    caller stopped waiting is dropped."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()
    context = contextvars.copy_context()

    def settle(ok: bool, value: Any) -> None:
        if not future.done():
            future.set_result(value) if ok else future.set_exception(value)

    def target() -> None:
        try:
            outcome = (True, context.run(fn))
        except BaseException as exc:  # handed to the waiting task, which raises it
            outcome = (False, exc)
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(settle, *outcome)

    threading.Thread(target=target, name="zserve-resource", daemon=True).start()
    return future


def _async_cm(factory: Callable[[], Any]) -> contextlib.AbstractAsyncContextManager[Any]:
    return contextlib.asynccontextmanager(factory)()


def _teardown(spec: ResourceSpec, exit_fn: ExitFn, *, in_thread: bool) -> Callable[..., Any]:
    """A resource's teardown (a sync one in a thread): one that raises is logged, and the
    others still run."""

    async def teardown(*exc: Any) -> bool:
        try:
            if in_thread:
                await asyncio.to_thread(exit_fn, *exc)
            else:
                await exit_fn(*exc)
        except Exception as exc:
            logger.warning("The teardown of resource '%s' (%s) raised %s: %s", spec.name,
                           spec.label, type(exc).__name__, exc)  # fmt: skip
            logger.debug("The teardown's traceback", exc_info=exc)
        return False

    return teardown


async def run_once(
    plan: Plan,
    params: dict[str, Any],
    *,
    job_id: str,
    timeout_s: float | None = None,
    observers: Sequence[Observer] = (),
) -> tuple[dict[str, Any], float]:
    """Build the plan's resources, run it once, tear them down (also when the run fails):
    (its outputs, the seconds the run took, the build and the teardown left out)."""
    async with contextlib.AsyncExitStack() as stack:
        if plan.resources:
            await stack.enter_async_context(Worker(plan))
        start = time.perf_counter()
        outputs = await execute(plan, params, job_id=job_id, timeout_s=timeout_s,
                                observers=observers)  # fmt: skip
        return outputs, time.perf_counter() - start
