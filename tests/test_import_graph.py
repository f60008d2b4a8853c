"""The package layout's dependency rules: no import cycles between modules; ``ssga_io`` imports no
project package, ``schemas`` only ``ssga_io``; the trainer never imports the pipelines."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ssga_io", "schemas", "pipelines", "trainer")


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _graph() -> dict[str, set[str]]:
    """module → the project modules it imports (anywhere in the file, lazy imports included)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for t in targets:
                while t and t not in modules:
                    t = t.rpartition(".")[0]
                if t and t != name and not name.startswith(t + "."):  # a package's own __init__ is no edge back
                    deps.add(t)
        graph[name] = deps
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for d in sorted(graph.get(n, ())):
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state and (c := visit(d)):
                return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (c := visit(n)):
            return c
    return None


def test_no_import_cycles():
    assert _cycle(_graph()) is None, " → ".join(_cycle(_graph()) or [])


def test_a_cycle_is_found_when_there_is_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_schemas_and_ssga_io_import_neither_half():
    graph = _graph()
    for name, deps in graph.items():
        top = {d.split(".")[0] for d in deps}
        if name.startswith("schemas"):
            assert top <= {"schemas", "ssga_io"}, (name, deps)
        if name.startswith("ssga_io"):
            assert top <= {"ssga_io"}, (name, deps)


def test_trainer_does_not_import_the_pipelines():
    for name, deps in _graph().items():
        if name.startswith("trainer"):
            assert not any(d.startswith("pipelines") for d in deps), (name, deps)
