"""The package's layering, read from its source with `ast`: no import cycle, the bottom layers import nothing back.

Every import of a `cxr_mtclip` module is an edge, wherever it stands: module level, inside a function (the lazy
imports the CLI and recipes use), under ``TYPE_CHECKING``, and the names a package ``__init__`` loads on demand
through its ``_LAZY`` table. An edge goes to the module named (``from .data.build import x`` -> ``data.build``;
``from .data import build`` -> ``data.build`` when ``build`` is a submodule, else ``data``, the package
``__init__``). The parent packages Python initialises on the way are not edges (every module would otherwise
depend on ``cxr_mtclip/__init__``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "cxr_mtclip"
PACKAGE = "cxr_mtclip"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {
    module_name(path): path
    for path in SRC.rglob("*.py")
    if "cxr_retrieval" not in path.parts  # the `evaluate` metric script: loaded by `evaluate`, not by the package
}


def resolve(importer: str, is_package: bool, level: int, module: str | None) -> str:
    """The absolute module name of a (possibly relative) import."""
    if level == 0:
        return module or ""
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def imports_of(name: str, path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()

    def add(target: str) -> None:
        # the longest known module prefix: `cxr_mtclip.data.build.load_openi` -> `cxr_mtclip.data.build`
        while target and target not in MODULES:
            target = target.rpartition(".")[0]
        if target and target != name:
            found.add(target)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == PACKAGE:
                    add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            target = resolve(name, is_package, node.level, node.module)
            if target.split(".")[0] != PACKAGE:
                continue
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                add(submodule if submodule in MODULES else target)
        elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "_LAZY" for t in node.targets):
            for value in ast.literal_eval(node.value).values():  # {"name": "relative.module"}
                add(f"{name}.{value}")
    return found


GRAPH = {name: imports_of(name, path) for name, path in MODULES.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_graph_sees_the_package():
    assert len(MODULES) > 40
    # a module-level, a function-level and a lazy-table edge are all found
    assert "cxr_mtclip.losses" in GRAPH["cxr_mtclip.modeling_cxr_mtclip"]
    assert "cxr_mtclip.recipes.demo" in GRAPH["cxr_mtclip.cli"]  # imported inside cmd_demo
    assert "cxr_mtclip.training" in GRAPH["cxr_mtclip"]  # through _LAZY
    assert "cxr_mtclip.data.build" in GRAPH["cxr_mtclip.data"]


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_module_import_graph_has_no_cycle():
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


LOSSES = {name for name in MODULES if name.startswith("cxr_mtclip.losses")}


@pytest.mark.parametrize("bottom, allowed", [
    *((name, LOSSES) for name in sorted(LOSSES)),  # the losses package: only its own modules
    ("cxr_mtclip.data.findings", set()),
    ("cxr_mtclip.evaluation.finding_metrics", {"cxr_mtclip.evaluation.statistics"}),
    ("cxr_mtclip.utils", set()),
    ("cxr_mtclip.argparsing", set()),
    ("cxr_mtclip.preflight", set()),
    ("cxr_mtclip.registry", set()),
    ("cxr_mtclip.data.schema", {"cxr_mtclip.data.findings"}),  # the finding_labels column type
    ("cxr_mtclip.evaluation.statistics", set()),
    ("cxr_mtclip.evaluation.duplicates", set()),
    ("cxr_mtclip.evaluation.paper_metrics", {"cxr_mtclip.evaluation.statistics"}),
    ("cxr_mtclip.evaluation.metrics", {"cxr_mtclip.evaluation.statistics", "cxr_mtclip.evaluation.paper_metrics",
                                       "cxr_mtclip.evaluation.duplicates"}),
])
def test_bottom_layers_import_nothing_from_the_package(bottom, allowed):
    assert GRAPH[bottom] <= allowed, sorted(GRAPH[bottom] - allowed)


def test_library_layers_never_import_a_recipe_or_the_cli():
    top = {name for name in MODULES if name.startswith(f"{PACKAGE}.recipes") or name == f"{PACKAGE}.cli"}
    for name, targets in GRAPH.items():
        if name in top:
            continue
        assert not targets & top, f"{name} imports {sorted(targets & top)}"


def test_only_backbone_the_clip_baseline_and_the_simulated_hub_import_open_clip():
    importers = set()
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            if any(n.split(".")[0] == "open_clip" for n in names):
                importers.add(name)
    # testing.hub has open_clip itself write the simulated checkpoints (the reference implementation, on purpose)
    assert importers == {f"{PACKAGE}.backbone", f"{PACKAGE}.recipes.clip_baseline", f"{PACKAGE}.testing.hub"}


def test_no_module_is_long_without_saying_why():
    for name, path in MODULES.items():
        lines = path.read_text(encoding="utf-8").splitlines()
        if len(lines) > 600:
            head = ast.get_docstring(ast.parse("\n".join(lines))) or ""
            assert "Why one module" in head, f"{name} has {len(lines)} lines and no 'Why one module' note at its top"
