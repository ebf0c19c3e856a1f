"""The layout's promises, read from the source (nothing is imported): no import cycles among the
packages, and the runners stay apart (the translator's package and the other runners import
each other in no direction; they share only runners/base.py).

An import counts when it runs at import time: at module level, also inside if/try blocks, but
not under `if TYPE_CHECKING:` and not inside a function (a deferred import is how a module
names another that needs it). `from package import name` depends on the package, or on the
submodule when `name` is one; a submodule's parent package, which Python initialises first, is
not counted, so a package's __init__ may import its own submodules.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("services", "tensorgate", "training", "bench")
RUNNERS = "services.modelservice.runners"
TRANSLATOR = f"{RUNNERS}.translator"


def modules(root: Path, packages: Iterable[str]) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under the packages."""
    found: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_time_statements(body: list[ast.stmt]) -> Iterable[ast.Import | ast.ImportFrom]:
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                yield from _import_time_statements(node.body)
            yield from _import_time_statements(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, *(h.body for h in node.handlers), node.orelse, node.finalbody):
                yield from _import_time_statements(block)
        elif isinstance(node, (ast.With, ast.For, ast.While)):
            yield from _import_time_statements(node.body)


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules of `known` that `name` (at `path`) imports at import time."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _import_time_statements(ast.parse(path.read_text(), str(path)).body):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in known}
            continue
        base = node.module or ""
        if node.level:
            anchor = package.split(".")
            anchor = anchor[:len(anchor) - (node.level - 1)]
            base = ".".join([*anchor, base] if base else anchor)
        for alias in node.names:
            target = f"{base}.{alias.name}"
            if target in known:
                found.add(target)
            elif base in known:
                found.add(base)
    return found


def graph(root: Path, packages: Iterable[str]) -> dict[str, set[str]]:
    files = modules(root, packages)
    return {name: imports(name, path, set(files)) for name, path in files.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module, or a module importing itself
    (Tarjan), each sorted; sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:  # recursive: the graph is a few hundred modules deep at most
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in edges.get(node, ()):
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return sorted(found)


@pytest.fixture(scope="module")
def edges() -> dict[str, set[str]]:
    return graph(ROOT, PACKAGES)


def test_there_are_no_import_cycles(edges: dict[str, set[str]]) -> None:
    assert {"services", "tensorgate", TRANSLATOR, f"{TRANSLATOR}.runner"} <= set(edges)
    assert cycles(edges) == []


def test_the_translator_and_the_other_runners_import_each_other_in_no_direction(
        edges: dict[str, set[str]]) -> None:
    translator = {m for m in edges if m == TRANSLATOR or m.startswith(TRANSLATOR + ".")}
    others = {m for m in edges if m.startswith(RUNNERS + ".") and m not in translator
              and m != f"{RUNNERS}.base"}
    assert {f"{RUNNERS}.onnx", f"{RUNNERS}.classifier"} <= others
    for module in translator:
        assert not edges[module] & others, f"{module} imports {sorted(edges[module] & others)}"
        assert RUNNERS not in edges[module], f"{module} imports the registry"
    for module in others:
        assert not edges[module] & translator, f"{module} imports {sorted(edges[module] & translator)}"
    # The runtime under the runner knows nothing of the model service (the training job runs it).
    for name in ("translator", "scheduler", "search", "rows", "device"):
        outside = {m for m in edges[f"{TRANSLATOR}.{name}"] if m not in translator}
        assert outside == set(), f"{TRANSLATOR}.{name} imports {sorted(outside)}"


def test_the_walk_finds_a_cycle_when_there_is_one(tmp_path: Path) -> None:
    """The checks above would fail on a cycle: the same walk over a small tree that has one."""
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    files = {
        "pkg/__init__.py": "from pkg.sub import helper\n",  # a package importing its submodule
        "pkg/sub/__init__.py": "",
        "pkg/sub/helper.py": "from pkg.sub import other\n",
        "pkg/sub/other.py": "import typing\nif typing.TYPE_CHECKING:\n    from pkg import a\n",
        "pkg/a.py": "from . import b\n\ndef later():\n    from pkg import c\n",
        "pkg/b.py": "try:\n    from .c import VALUE\nexcept ImportError:\n    VALUE = 0\n",
        "pkg/c.py": "from pkg.a import later\nVALUE = 1\n",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    edges = graph(tmp_path, ["pkg"])
    assert edges["pkg"] == {"pkg.sub.helper"} and edges["pkg.sub.helper"] == {"pkg.sub.other"}
    assert edges["pkg.sub.other"] == set()  # typing only
    assert edges["pkg.a"] == {"pkg.b"}  # the deferred import of c does not count
    assert cycles(edges) == [["pkg.a", "pkg.b", "pkg.c"]]
    (tmp_path / "pkg" / "c.py").write_text("VALUE = 1\n")
    assert cycles(graph(tmp_path, ["pkg"])) == []
