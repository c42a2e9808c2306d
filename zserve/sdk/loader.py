"""Load a pipeline from "package.module:attr" or "path/to/file.py:attr"."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from zserve.errors import SourceError
from zserve.sdk.pipeline import Pipeline

__all__ = ["LoadedSource", "file_hashes", "load_pipeline", "split_source"]


@dataclass(frozen=True)
class LoadedSource:
    pipeline: Pipeline
    #: The source, normalised: "module:attr", or "/absolute/file.py:attr".
    source: str
    #: The directory that was put on sys.path to import it.
    import_root: str


def split_source(source: str) -> tuple[str, str]:
    target, sep, attr = source.rpartition(":")
    if not sep or not target or not attr or not attr.replace("_", "a").replace(".", "a").isalnum():
        raise SourceError(
            f"Source {source!r} is not of the form 'package.module:pipeline' or "
            "'path/to/file.py:pipeline'"
        )
    return target, attr


def load_pipeline(source: str, import_root: str | None = None) -> LoadedSource:
    """Import ``source`` and return the pipeline it names.

    ``import_root`` (default: the working directory) goes first on ``sys.path``, so a module
    next to the user's code imports the same way in the CLI and in a server worker.
    """
    target, attr = split_source(source)
    root = str(Path(import_root or Path.cwd()).resolve())
    if root not in sys.path:
        sys.path.insert(0, root)
    if target.endswith(".py") or "/" in target:
        path = Path(target)
        if not path.is_absolute():
            # relative to the working directory, like any CLI path; else to the import root
            here, there = path.resolve(), (Path(root) / path).resolve()
            path = here if here.is_file() or not there.is_file() else there
        module = _import_file(path)
        normalized = f"{path}:{attr}"
    else:
        module = _import_module(target)
        normalized = f"{target}:{attr}"
    obj: object = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            found = [n for n, v in vars(module).items() if isinstance(v, Pipeline)]
            hint = (
                f"; pipelines it defines: {', '.join(found)}"
                if found
                else "; it defines no @pipeline"
            )
            where = f"{target}" if target.endswith(".py") or "/" in target else f"Module '{target}'"
            raise SourceError(f"{where} has no attribute '{attr}'{hint}")
        obj = getattr(obj, part)
    if not isinstance(obj, Pipeline):
        kind = "function" if inspect.isfunction(obj) else type(obj).__name__
        raise SourceError(
            f"'{source}' is a {kind}, not a pipeline: decorate it with @pipeline "
            "(from zserve import pipeline)"
        )
    return LoadedSource(obj, normalized, root)


def _import_module(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
            raise SourceError(
                f"No module named '{exc.name}': check the spelling, run from the directory "
                "that contains it, or pass --app-dir"
            ) from None
        raise SourceError(_import_failure(name, exc)) from None
    except Exception as exc:
        raise SourceError(_import_failure(name, exc)) from None


def _import_file(path: Path) -> ModuleType:
    if not path.is_file():
        raise SourceError(f"No such file: {path}")
    name = "zserve_user_" + hashlib.sha1(str(path).encode()).hexdigest()[:12] + "_" + path.stem
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise SourceError(f"Cannot import {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise SourceError(_import_failure(str(path), exc)) from None
    return module


def _import_failure(name: str, exc: BaseException) -> str:
    """The error as the user needs it: the exception and where in *their* code it was raised."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = str(Path(__file__).resolve().parent.parent)  # the zserve package itself
    user = [f for f in frames if "importlib" not in f.filename and not f.filename.startswith(ours)]
    where = f" ({user[-1].filename}:{user[-1].lineno})" if user else ""
    return f"Importing '{name}' failed: {type(exc).__name__}: {exc}{where}"


def file_hashes(pipe: Pipeline) -> dict[str, str]:
    """sha256 of every file that defines the pipeline or one of its steps."""
    files = {inspect.getsourcefile(pipe.fn)}
    files.update(inspect.getsourcefile(s.fn) for s in pipe.steps())
    hashes: dict[str, str] = {}
    for name in sorted(f for f in files if f):
        path = Path(name).resolve()
        hashes[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return hashes
