"""The report package has no import circle and keeps its layers: primitives, shared tables, one
module per section, the orchestrator.

The import graph is :func:`tests.unit.test_import_cycles.import_graph`'s: every module is parsed
(not imported) and every import of a collapselab module counts — at module level *and* inside
functions, absolute and relative (imports under ``if TYPE_CHECKING:`` never run, so they do not) —
so a circle that a lazy import inside a function hides is found too.
"""

from __future__ import annotations

from tests.unit.test_import_cycles import cycles, import_graph

PACKAGE = "collapselab.report"

#: each module's layer: a module imports only modules of a lower layer, so the sections never
#: import each other (one layer) nor the orchestrator (above them), and no primitive knows a section
LAYERS = {
    # primitives: no knowledge of any experiment
    "format": 0,
    "labels": 1,
    "figures": 1,
    "plot_registry": 1,
    "findings": 1,  # the preregistered hypotheses' tables (collect computes them, build shows them)
    "sections": 1,  # the registry of the collapse-loop sections (they register into it, at layer 4)
    "inputs": 2,
    # tables every experiment shares
    "stat_tests": 3,
    "training": 3,
    "judges": 3,  # the safety section's judge report tables
    "results_json": 3,  # results.json in lm-evaluation-harness's shape (reads the inputs' tables)
    # one module per section
    "collapse": 4,
    "safety": 4,
    "preference": 4,
    "capability": 4,  # lm-evaluation-harness scores and the differences from vanilla
    "generations": 4,
    # the collapse-loop sections (registered in report.sections)
    "decoding": 4,
    "loop_trajectory": 4,
    "homogeneity": 4,
    "curation": 4,
    "perplexity_tails": 4,
    # each section's figures (they may read their own section's helpers)
    "collapse_plots": 5,
    "safety_plots": 5,
    "preference_plots": 5,
    # the orchestrator: builds and renders the sections, writes the folder
    "build": 6,
    "html": 7,
    "markdown": 7,
    "write": 8,
    "comparison": 8,  # a sweep's comparison of its points (their results.json; rendered like the report)
    "__init__": 9,
}


def _short(module: str) -> str:
    return "__init__" if module == PACKAGE else module.removeprefix(PACKAGE + ".")


def report_graph() -> dict[str, set[str]]:
    """report module (short name, ``__init__`` for the package) → the report modules it imports."""
    return {_short(m): {_short(e) for e in edges if e == PACKAGE or e.startswith(PACKAGE + ".")}
            for m, edges in import_graph().items() if m == PACKAGE or m.startswith(PACKAGE + ".")}


def test_the_graph_is_read():
    graph = report_graph()
    assert {"build", "html", "markdown", "write", "format", "collapse", "safety", "preference"} <= set(graph)
    # "from collapselab.report.x import y" and "from collapselab.report import x" both count
    assert "collapse" in graph["build"] and "collapse_plots" in graph["html"]


def test_no_import_circle_inside_report():
    assert cycles(import_graph(), (PACKAGE,)) == []


def test_every_report_module_imports_only_lower_layers():
    graph = report_graph()
    unplaced = sorted(set(graph) - set(LAYERS))
    assert not unplaced, f"give these report modules a layer in LAYERS: {unplaced}"
    wrong = [f"{m} (layer {LAYERS[m]}) imports {t} (layer {LAYERS[t]})"
             for m, targets in sorted(graph.items()) for t in sorted(targets) if LAYERS[t] >= LAYERS[m]]
    assert not wrong, "\n".join(wrong)


def test_a_lazy_import_back_is_a_circle_and_a_layer_breach():
    """What the checks above would see if a primitive imported the orchestrator inside a function."""
    graph = {f"{PACKAGE}.{m}": {f"{PACKAGE}.{t}" for t in targets} for m, targets in report_graph().items()}
    graph[f"{PACKAGE}.format"].add(f"{PACKAGE}.build")
    assert cycles(graph, (PACKAGE,)) != []
