"""The folder tree is the floor plan: imports between sdeflow's layers point down only, and no module imports
itself back through others. The imports are read from the source (every `import`, inside functions too),
so a lazy import that would close a loop counts like any other."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sdeflow"

# Bottom to top. Each layer may import the layers below it and itself; "sdeflow" is the public API
# (sdeflow/__init__.py), which re-exports the library; only the console scripts sit above it.
LAYERS = [
    "core",
    "noise",
    "sde",
    "nets",
    "score",
    "samplers",
    "eval",
    "conditioning",
    "tuning",
    "problems",
    "training",
    "hub",
    "sdeflow",
    "apps",
]


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the sdeflow modules it imports (`from pkg import submodule` is an arrow to the submodule)."""
    mods = modules()

    def known(name: str) -> str:
        while name not in mods:
            name = name.rpartition(".")[0]
        return name

    graph = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets |= {known(a.name) for a in node.names if a.name.split(".")[0] == "sdeflow"}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(
                        package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                    )
                if base.split(".")[0] == "sdeflow":
                    targets |= {f"{base}.{a.name}" if f"{base}.{a.name}" in mods else known(base) for a in node.names}
        graph[name] = targets - {name}
    return graph


def layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "sdeflow"
    if parts[1] not in LAYERS:
        pytest.fail(f"{module} sits outside every layer: put it in one of {LAYERS}")
    return parts[1]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_import_points_down_the_layers():
    rank = {name: i for i, name in enumerate(LAYERS)}
    upward = [
        f"{source} ({layer(source)}) imports {target} ({layer(target)})"
        for source, targets in sorted(import_graph().items())
        for target in sorted(targets)
        if rank[layer(target)] > rank[layer(source)]
    ]
    assert not upward, "imports that point up the layers:\n" + "\n".join(upward)


def test_no_module_imports_itself_back():
    assert cycles(import_graph()) == []


def test_the_checks_see_an_upward_arrow_and_a_cycle():
    # The two checks above on a graph made to break them: they can fail.
    rank = {name: i for i, name in enumerate(LAYERS)}
    assert rank[layer("sdeflow.apps.sample")] > rank[layer("sdeflow.core.io")]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    graph = import_graph()
    assert "sdeflow.samplers.base" in graph["sdeflow.samplers.solvers.ddim"]  # the reader sees real arrows


if __name__ == "__main__":  # the figures of the floor plan: python tests/test_architecture.py
    graph = import_graph()
    arrows = sum(len(targets) for targets in graph.values())
    between = {(layer(s), layer(t)) for s, targets in graph.items() for t in targets if layer(s) != layer(t)}
    print(
        f"{len(graph)} modules in {len(LAYERS)} layers, {arrows} import arrows "
        f"({len(between)} between layers), {len(cycles(graph))} cycles"
    )
