"""The import graph of ``zserve``: no import cycles, and no import that climbs a layer.

Pure static analysis (``ast``), so it sees every import statement: module level, lazy ones
inside functions and ``if TYPE_CHECKING:`` blocks alike; only code under
``if __name__ == "__main__":`` is exempt. ``LAYERS`` below is the one statement of the rules;
``docs/architecture.md`` explains the layers.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "zserve"
SKIP = ("zserve.store.migrations",)  # Alembic scripts, run by Alembic, not imported

BOTTOM = frozenset(
    {"zserve._version", "zserve.errors", "zserve.events", "zserve.paths", "zserve.records"}
    | {"zserve.pages", "zserve.settings"}
)
EVERYTHING = frozenset({"*"})
# unit (a module, or a package with all its modules) -> the other units it may import
LAYERS: dict[str, frozenset[str]] = {
    **dict.fromkeys(BOTTOM, BOTTOM),
    "zserve.sdk": BOTTOM,
    "zserve.broker": BOTTOM,
    "zserve.store": BOTTOM,
    "zserve.engine": BOTTOM | {"zserve.sdk"},
    "zserve.jobs": BOTTOM | {"zserve.sdk", "zserve.engine", "zserve.broker"},
    "zserve.registry": BOTTOM,
    "zserve.client": BOTTOM,
    "zserve.bench": BOTTOM | {"zserve.client"},
    "zserve.server": BOTTOM
    | {"zserve.sdk", "zserve.engine", "zserve.broker", "zserve.store", "zserve.jobs"}
    | {"zserve.registry"},
    "zserve.cli": EVERYTHING,
    "zserve": BOTTOM | {"zserve.sdk", "zserve.engine"},  # the root __init__ only: a facade
    "zserve.__main__": frozenset({"zserve.cli"}),
    "zserve.examples": BOTTOM | {"zserve", "zserve.sdk"},
}
CLI, CLI_IMPORTERS = "zserve.cli", frozenset({"zserve.__main__", "zserve.cli"})


class Edge(NamedTuple):
    src: str
    dst: str
    where: str  # "zserve/broker/base.py:19"


def _is_main_guard(test: ast.expr) -> bool:
    if not (isinstance(test, ast.Compare) and [type(op) for op in test.ops] == [ast.Eq]):
        return False
    sides = [test.left, *test.comparators]
    names = {s.id for s in sides if isinstance(s, ast.Name)}
    values = {s.value for s in sides if isinstance(s, ast.Constant)}
    return names == {"__name__"} and values == {"__main__"}


def _import_nodes(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    found: list[ast.Import | ast.ImportFrom] = []
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_main_guard(node.test):
            stack.extend(node.orelse)  # the body runs only as __main__, another module object
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        stack.extend(ast.iter_child_nodes(node))
    return sorted(found, key=lambda n: (n.lineno, n.col_offset))


def build_graph(
    root: Path, package: str, skip: tuple[str, ...] = SKIP
) -> tuple[dict[str, Path], list[Edge]]:
    """Modules of ``root/package`` (name -> file) and every import edge between them."""
    modules: dict[str, Path] = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if not any(name == s or name.startswith(s + ".") for s in skip):
            modules[name] = path
    edges: list[Edge] = []
    for name, path in modules.items():
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in _import_nodes(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = [here.rsplit(".", node.level - 1)[0]] if node.level else []
                mod = ".".join(base + ([node.module] if node.module else []))
                targets = [
                    f"{mod}.{a.name}" if f"{mod}.{a.name}" in modules else mod for a in node.names
                ]
            where = f"{path.relative_to(root).as_posix()}:{node.lineno}"
            edges += [
                Edge(name, t, where)
                for t in dict.fromkeys(targets)
                if t != name and (t == package or t.startswith(package + "."))
            ]
    return modules, edges


def find_cycles(modules: dict[str, Path], edges: list[Edge]) -> list[str]:
    """One message per strongly connected component of more than one module (Tarjan)."""
    graph: dict[str, list[str]] = {m: [] for m in modules}
    for e in edges:
        graph.setdefault(e.src, []).append(e.dst)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    sccs: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, []):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc: list[str] = []
            while not scc or scc[-1] != v:
                scc.append(stack.pop())
            if len(scc) > 1:
                sccs.append(sorted(scc))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [
        f"cycle {' <-> '.join(scc)}:\n"
        + "".join(
            f"    {e.where} {e.src} -> {e.dst}\n" for e in edges if e.src in scc and e.dst in scc
        )
        for scc in sorted(sccs)
    ]


def unit_of(module: str, package: str = PACKAGE) -> str | None:
    if module in LAYERS:
        return module
    units = [u for u in LAYERS if u != package and module.startswith(u + ".")]
    return max(units, key=len, default=None)


def find_climbs(modules: dict[str, Path], edges: list[Edge], root: Path) -> list[str]:
    """One message per module missing from LAYERS and per import its layer does not allow."""
    problems = [
        f"{path.relative_to(root).as_posix()}: {name} is in no layer; add its unit to LAYERS "
        "in tests/test_layers.py"
        for name, path in modules.items()
        if unit_of(name) is None
    ]
    for e in edges:
        src, dst = unit_of(e.src), unit_of(e.dst)
        if src is None:
            continue
        allowed = LAYERS[src]
        if dst is None:
            problems.append(f"{e.where} imports {e.dst}, which is in no layer; add it to LAYERS")
        elif dst == CLI and src not in CLI_IMPORTERS:
            problems.append(f"{e.where} imports {e.dst}: only zserve.__main__ imports {CLI}")
        elif dst != src and dst not in allowed and allowed != EVERYTHING:
            only = ", ".join(sorted(allowed)) or "nothing else"
            problems.append(f"{e.where} imports {e.dst}: {src} may import only {only}")
    return problems


def test_no_import_cycles() -> None:
    cycles = find_cycles(*build_graph(ROOT, PACKAGE))
    if cycles:
        pytest.fail(f"{len(cycles)} import cycle(s):\n" + "".join(cycles), pytrace=False)


def test_no_import_climbs_a_layer() -> None:
    problems = find_climbs(*build_graph(ROOT, PACKAGE), ROOT)
    if problems:
        pytest.fail(f"{len(problems)} layer violation(s):\n" + "\n".join(problems), pytrace=False)


def test_checker_catches_a_fake_package(tmp_path: Path) -> None:
    files = {
        "__init__.py": "",
        "events.py": "from zserve.engine import a\n",
        "errors.py": 'if __name__ == "__main__":\n    from zserve.server import app\n',
        "newthing.py": "",
        "engine/__init__.py": "",
        "engine/a.py": "import typing\nif typing.TYPE_CHECKING:\n    from .b import f\n",
        "engine/b.py": "def f():\n    from . import a\n",
        "server/__init__.py": "",
        "server/app.py": "from .. import cli\n",
        "cli.py": "",
        "store/migrations/env.py": "import zserve.cli\n",
    }
    for name, text in files.items():
        (tmp_path / "zserve" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "zserve" / name).write_text(text)
    modules, edges = build_graph(tmp_path, "zserve")
    assert find_cycles(modules, edges) == [
        "cycle zserve.engine.a <-> zserve.engine.b:\n"
        "    zserve/engine/a.py:3 zserve.engine.a -> zserve.engine.b\n"
        "    zserve/engine/b.py:2 zserve.engine.b -> zserve.engine.a\n"
    ]
    assert find_climbs(modules, edges, tmp_path) == [
        "zserve/newthing.py: zserve.newthing is in no layer; add its unit to LAYERS "
        "in tests/test_layers.py",
        "zserve/events.py:1 imports zserve.engine.a: zserve.events may import only "
        + ", ".join(sorted(BOTTOM)),
        "zserve/server/app.py:1 imports zserve.cli: only zserve.__main__ imports zserve.cli",
    ]
