"""No import circles where the design forbids them: between the graph and the experiments, between
the executors, inside the report — counting imports at module level and inside functions."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_nodes(tree: ast.AST):
    """Every node of ``tree`` except those under ``if TYPE_CHECKING:`` (annotations only: never
    imported at run time)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                todo.extend(child.orelse)
                continue
            todo.append(child)


def import_graph() -> dict[str, set[str]]:
    """collapselab module → the collapselab modules it imports anywhere in its body, functions
    included (``from a.b
    import c`` counts as importing ``a.b.c`` when that is a module, else ``a.b``)."""
    modules = {module_name(p): p for p in SRC.joinpath("collapselab").rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in runtime_nodes(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                edges |= {a.name for a in node.names if a.name in modules}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + [base]).strip(".")
                for alias in node.names:
                    target = f"{base}.{alias.name}"
                    edges.add(target if target in modules else base)
        graph[name] = {e for e in edges if e in modules and e != name}
    return graph


def cycles(graph: dict[str, set[str]], scope: tuple[str, ...]) -> list[list[str]]:
    """Every elementary cycle's representative among modules whose names start with ``scope``
    (Tarjan's strongly connected components of size > 1)."""
    nodes = [n for n in graph if n.startswith(scope)]
    sub = {n: {e for e in graph[n] if e.startswith(scope)} for n in nodes}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sub[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for n in nodes:
        if n not in index:
            visit(n)
    return out


@pytest.mark.parametrize("scope", [
    ("collapselab.pipeline",),
    ("collapselab.executors",),
    ("collapselab.report",),
    ("collapselab.pipeline", "collapselab.executors", "collapselab.report", "collapselab.cli"),
])
def test_no_import_cycles(scope):
    assert cycles(import_graph(), scope) == []


def test_the_checker_finds_a_cycle():
    graph = {"x.a": {"x.b"}, "x.b": {"x.c"}, "x.c": {"x.a"}, "x.d": {"x.a"}}
    assert cycles(graph, ("x",)) == [["x.a", "x.b", "x.c"]]


def test_graph_reaches_experiments_only_through_their_package():
    graph = import_graph()
    assert "collapselab.pipeline.experiments" in graph["collapselab.pipeline.graph"]
    for name, edges in graph.items():
        if name.startswith("collapselab.pipeline.experiments"):
            assert "collapselab.pipeline.graph" not in edges, f"{name} imports the graph"
    assert "collapselab.executors.local" not in graph["collapselab.executors.ray_executor"]
