"""The package reads top to bottom: no import cycle among jal's modules (counting imports inside functions,
which only hide a cycle until the function runs) and no module too long to read in one sitting."""

import ast
from collections import deque
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "jal"
MAX_LINES = 450  # any module
MAX_TRAIN_LINES = 250  # jal/train.py: the entrypoint, the loop itself lives in the modules it imports


def modules() -> dict[str, Path]:
    return {p.stem: p for p in sorted(PACKAGE.glob("*.py")) if p.stem != "__init__"}


def imports_of(path: Path, names: set[str]) -> dict[str, int]:
    """The jal modules a file imports, anywhere in it (top level or inside a function): {module: first line}.
    `import jal.x`, `from jal.x import y`, `from jal import x` and their relative forms."""
    found = {}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name.split(".")[1] for a in node.names if a.name.startswith("jal.")]
        elif isinstance(node, ast.ImportFrom):
            module = ".".join(["jal"] * (node.level == 1) + [node.module or ""]).strip(".")  # "from . import" is jal
            if module.startswith("jal."):
                targets = [module.split(".")[1]]
            elif module == "jal":  # from jal import x: x a module, or a name of jal/__init__.py
                targets = [a.name for a in node.names]
        for target in targets:
            if target in names and target != path.stem:
                found[target] = min(found.get(target, node.lineno), node.lineno)
    return found


def import_graph() -> dict[str, dict[str, int]]:
    names = set(modules())
    return {name: imports_of(path, names) for name, path in modules().items()}


def shortest_cycle_through(graph: dict[str, dict[str, int]], start: str) -> list[str] | None:
    """start -> ... -> start by the fewest imports, or None."""
    came_from, queue = {}, deque([start])
    while queue:
        node = queue.popleft()
        for nxt in sorted(graph[node]):
            if nxt == start:
                path = [node]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                return [start, *reversed(path[:-1]), start] if node != start else [start, start]
            if nxt not in came_from:
                came_from[nxt] = node
                queue.append(nxt)
    return None


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One shortest cycle through each module on one, each cycle listed once."""
    found, seen = [], set()
    for name in sorted(graph):
        cycle = shortest_cycle_through(graph, name)
        if cycle and frozenset(cycle) not in seen:
            seen.add(frozenset(cycle))
            found.append(cycle)
    return found


def describe(graph: dict[str, dict[str, int]], cycle: list[str]) -> str:
    """config -> train (config.py:12) -> config (train.py:40)"""
    steps = [f"{b} (jal/{a}.py:{graph[a][b]})" for a, b in zip(cycle, cycle[1:])]
    return " -> ".join([cycle[0], *steps])


def test_the_graph_reader_sees_every_form_of_import(tmp_path):
    (tmp_path / "a.py").write_text("import jal.b\nfrom jal.c import f\nfrom jal import d, not_a_module\n"
                                   "def g():\n    from . import e\n    from .f import h\n    import json\n")
    assert imports_of(tmp_path / "a.py", {"a", "b", "c", "d", "e", "f"}) == {"b": 1, "c": 2, "d": 3, "e": 5, "f": 6}
    graph = {"a": {"b": 1}, "b": {"c": 4}, "c": {"a": 9, "d": 2}, "d": {}}
    assert cycles(graph) == [["a", "b", "c", "a"]]
    assert describe(graph, ["a", "b", "c", "a"]) == "a -> b (jal/a.py:1) -> c (jal/b.py:4) -> a (jal/c.py:9)"
    assert cycles({"a": {"b": 1}, "b": {}}) == []


def test_no_import_cycle_among_jals_modules():
    graph = import_graph()
    assert graph and any(graph.values())  # it read the package, and its imports
    found = [describe(graph, cycle) for cycle in cycles(graph)]
    assert found == [], "import cycles:\n" + "\n".join(found)


def test_every_module_is_short_enough_to_read_in_one_sitting():
    lines = {f"jal/{name}.py": len(path.read_text().splitlines()) for name, path in modules().items()}
    too_long = {name: n for name, n in lines.items() if n > MAX_LINES}
    assert too_long == {}, f"over {MAX_LINES} lines: " + ", ".join(f"{name} {n}" for name, n in too_long.items())
    assert lines["jal/train.py"] < MAX_TRAIN_LINES, f"jal/train.py has {lines['jal/train.py']} lines"
