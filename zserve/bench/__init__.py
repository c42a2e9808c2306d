"""``zserve bench``'s engine, without typer or rich: the load generator (``load``, ``procs``),
its connection (``http``), statistics (``stats``) and the result document (``report``).
The command line (``zserve.cli.bench``) draws it."""

from zserve.bench.load import LoadSpec, Tally
from zserve.bench.procs import run_load
from zserve.bench.report import JSON_VERSION, compare, document, gates, load_saved

__all__ = [
    "JSON_VERSION",
    "LoadSpec",
    "Tally",
    "compare",
    "document",
    "gates",
    "load_saved",
    "run_load",
]
