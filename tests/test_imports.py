"""The package reads top to bottom: its modules stand in layers, each importing only from its own layer or the
ones below (counting imports inside functions, which only hide a dependency until the function runs), and no
import cycle among them. Where code lives is decided by what it is, not by how long a file has grown."""

import ast
from collections import deque
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "jal"

# The layers, lowest first (README.md's Layout names them). A module may import from its own layer and the
# ones before it; a new module is placed here, or the test names it.
LAYERS = {
    "platform": {"paths", "errors", "util", "config", "device", "distributed", "stops"},
    "maths": {"losses", "paper_values", "theory", "models", "noise", "data", "own_data", "real_world"},
    "experiment": {"experiment", "tune", "record", "run_dir", "config_check", "resolvers"},
    "run": {"step", "run", "train", "preflight", "progress_bar", "estimate", "mislabelled", "wandb_run", "fuse.rejoin"},
    "sweeps": {"multirun", "plan", "progress", "launch", "fuse", "fuse.command", "fuse.tasks",
               "fuse.logs", "fuse.__main__"},
    "reports": {"records", "tables", "fidelity", "figures", "precision_report", "bench", "timing",
                "reference_pipeline", "gpu_check"},
    "commands": {"cli"},
}
# Rules the layers imply, each said in its own words, and one they cannot: modules of one layer that must not
# reach each other.
RULES = [
    ("the loop never imports the planner", {"train", "run", "step"}, {"multirun", "plan", "progress"}),
    ("config checks never read run directories", {"config_check", "resolvers"}, {"run_dir", "record"}),
    ("the plan never imports the benchmark", {"plan", "estimate", "multirun", "progress"},
     {"bench", "timing", "reference_pipeline"}),
    ("the platform layer never imports losses", LAYERS["platform"], {"losses"}),
]


def modules() -> dict[str, Path]:
    """jal's modules by their dotted name under jal: `train`, `fuse` (a package's __init__), `fuse.tasks`."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if name:  # jal/__init__.py itself: the package's face
            found[name] = path
    return found


def imports_of(path: Path, names: set[str]) -> dict[str, int]:
    """The jal modules a file imports, anywhere in it (top level or inside a function): {module: first line}.
    `import jal.x`, `from jal.x import y`, `from jal import x`, `from jal.x import y` where y is a module
    (x.y), and their relative forms; a name that is no module counts as its module."""
    own = ".".join(path.relative_to(PACKAGE).with_suffix("").parts) if path.is_relative_to(PACKAGE) else path.stem
    found = {}

    def module_of(dotted: str) -> str | None:  # the longest module that `dotted` (under jal) names or lies in
        parts = dotted.split(".")
        return next((".".join(parts[:n]) for n in range(len(parts), 0, -1) if ".".join(parts[:n]) in names), None)

    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets = []
        if isinstance(node, ast.Import):
            targets = [module_of(a.name.removeprefix("jal.")) for a in node.names if a.name.startswith("jal.")]
        elif isinstance(node, ast.ImportFrom):
            module = ".".join(["jal"] * (node.level == 1) + [node.module or ""]).strip(".")  # "from . import" is jal
            if module == "jal" or module.startswith("jal."):
                base = module.removeprefix("jal").lstrip(".")
                targets = [module_of(f"{base}.{a.name}".lstrip(".")) for a in node.names]
        for target in targets:
            if target is not None and target in names and target != own.removesuffix(".__init__"):
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
    steps = [f"{b} (jal/{a.replace('.', '/')}.py:{graph[a][b]})" for a, b in zip(cycle, cycle[1:])]
    return " -> ".join([cycle[0], *steps])


def test_the_graph_reader_sees_every_form_of_import(tmp_path):
    (tmp_path / "a.py").write_text("import jal.b\nfrom jal.c import f\nfrom jal import d, not_a_module\n"
                                   "def g():\n    from . import e\n    from .f import h\n    import json\n")
    assert imports_of(tmp_path / "a.py", {"a", "b", "c", "d", "e", "f"}) == {"b": 1, "c": 2, "d": 3, "e": 5, "f": 6}
    (tmp_path / "b.py").write_text("from jal.p import q\nfrom jal.p.r import x\nfrom jal import p\nimport jal.p.q\n")
    assert imports_of(tmp_path / "b.py", {"p", "p.q", "p.r"}) == {"p.q": 1, "p.r": 2, "p": 3}  # a package's modules
    graph = {"a": {"b": 1}, "b": {"c": 4}, "c": {"a": 9, "d": 2}, "d": {}}
    assert cycles(graph) == [["a", "b", "c", "a"]]
    assert describe(graph, ["a", "b", "c", "a"]) == "a -> b (jal/a.py:1) -> c (jal/b.py:4) -> a (jal/c.py:9)"
    assert cycles({"a": {"b": 1}, "b": {}}) == []


def test_no_import_cycle_among_jals_modules():
    graph = import_graph()
    assert graph and any(graph.values())  # it read the package, and its imports
    found = [describe(graph, cycle) for cycle in cycles(graph)]
    assert found == [], "import cycles:\n" + "\n".join(found)


def layer_of(module: str) -> int | None:
    return next((n for n, members in enumerate(LAYERS.values()) if module in members), None)


def breaks(graph: dict[str, dict[str, int]]) -> list[str]:
    """Each import that climbs to a higher layer or breaks a rule, as `a -> b (jal/a.py:12): why`."""
    found = []
    for module, targets in sorted(graph.items()):
        for target, line in sorted(targets.items()):
            where = f"{module} -> {target} (jal/{module.replace('.', '/')}.py:{line})"
            if layer_of(target) > layer_of(module):
                names = list(LAYERS)
                found.append(f"{where}: {names[layer_of(module)]} imports {names[layer_of(target)]}, a layer above")
            found += [f"{where}: {rule}" for rule, importers, imported in RULES
                      if module in importers and target in imported]
    return found


def test_every_module_has_a_layer():
    unplaced = sorted(set(modules()) - set().union(*LAYERS.values()))
    assert unplaced == [], f"place these in tests/test_imports.py LAYERS (and README's Layout): {unplaced}"


def test_every_import_goes_down_the_layers_and_keeps_the_rules():
    found = breaks(import_graph())
    assert found == [], "imports that break the layers:\n" + "\n".join(found)


def test_the_layer_check_finds_a_climb_and_a_broken_rule():
    graph = {"train": {"plan": 3}, "config_check": {"run_dir": 7}, "util": {"errors": 1}, "plan": {}, "run_dir": {},
             "errors": {}}
    assert breaks(graph) == [
        "config_check -> run_dir (jal/config_check.py:7): config checks never read run directories",
        "train -> plan (jal/train.py:3): run imports sweeps, a layer above",
        "train -> plan (jal/train.py:3): the loop never imports the planner"]
