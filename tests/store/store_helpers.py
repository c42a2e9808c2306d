"""Helpers for the store tests, importable by name in spawned child processes."""

from __future__ import annotations

import multiprocessing
import queue
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from zserve.store import Store


def deployment_args(**overrides: Any) -> dict[str, Any]:
    """Keyword arguments of ``Store.add_deployment`` for a plausible deployment."""
    args: dict[str, Any] = {
        "name": "weather",
        "source": "zserve.examples.weather:weather_pipeline",
        "import_root": "/srv/app",
        "pipeline_name": "weather_pipeline",
        "code_hash": "a" * 64,
        "file_hashes": {"/srv/app/zserve/examples/weather.py": "b" * 64},
        "spec": {
            "steps": [{"name": "fetch_data", "inputs": ["city"], "outputs": ["output"]}],
            "parameters": {"city": {"type": "str", "required": True}},
            "outputs": ["output"],
        },
        "settings": {"capture": "none"},
        "capture_default": "none",
    }
    args.update(overrides)
    return args


# -- run in child processes (multiprocessing, spawn) ---------------------------------------------


def _child(
    fn: Callable[..., Any],
    results: Any,
    barrier: Any,
    index: int,
    args: tuple[Any, ...],
) -> None:
    try:
        barrier.wait(timeout=60)
        results.put((index, "ok", fn(*args)))
    except BaseException:
        results.put((index, "error", traceback.format_exc()))
        raise


def run_in_processes(
    fn: Callable[..., Any], args_list: Sequence[tuple[Any, ...]], timeout: float = 90.0
) -> list[Any]:
    """Run ``fn(*args)`` in one spawned process per ``args``, all released at once by a barrier.

    Returns the results in order; fails with the child's traceback when one raised.
    """
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    barrier = ctx.Barrier(len(args_list))
    procs = [
        ctx.Process(target=_child, args=(fn, results, barrier, i, args))
        for i, args in enumerate(args_list)
    ]
    for proc in procs:
        proc.start()
    collected: dict[int, Any] = {}
    errors: list[str] = []
    try:
        for _ in procs:
            try:
                index, status, value = results.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError("a child process did not report in time") from None
            if status == "ok":
                collected[index] = value
            else:
                errors.append(value)
    finally:
        for proc in procs:
            proc.join(timeout=timeout)
            if proc.is_alive():
                proc.kill()
                proc.join()
    assert not errors, "\n".join(errors)
    assert [proc.exitcode for proc in procs] == [0] * len(procs)
    return [collected[i] for i in range(len(procs))]


def open_store(url: str) -> tuple[bool, str | None]:
    with Store(url) as store:
        return store.migrated, store.current_revision()


def add_versions(url: str, name: str, code_hashes: Sequence[str]) -> list[tuple[str, int, bool]]:
    out = []
    with Store(url) as store:
        for code_hash in code_hashes:
            record, created = store.add_deployment(
                **deployment_args(name=name, code_hash=code_hash)
            )
            out.append((record.id, record.version, created))
    return out
