"""``collapselab lineage``: the chain of stages behind a run's results, each marked done or missing."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.tree import Tree

from collapselab.cli.common import console, load_run_spec, user_errors
from collapselab.errors import CollapselabError

STYLE = {"done": "green", "running": "cyan", "interrupted": "yellow", "missing": "red"}


@dataclass
class LineageNode:
    """A stage, its state in the run folder and the stages it reads. A stage reached a second time
    (``repeated``) is not expanded again: its inputs are shown where it first appears."""

    stage: Any  # collapselab.pipeline.graph.Stage
    state: str
    children: list[LineageNode] = field(default_factory=list)
    repeated: bool = False


def final_stages(stages: Sequence[Any]) -> list[Any]:
    """The stages no other stage reads (a run's end results), in graph order."""
    read = {i.label for s in stages for i in s.inputs}
    return [s for s in stages if s.label not in read]


def find_stage(stages: Sequence[Any], label: str) -> Any:
    """The stage labelled ``label`` (``kind/name``); a CollapselabError with suggestions otherwise."""
    by_label = {s.label: s for s in stages}
    if label in by_label:
        return by_label[label]
    close = difflib.get_close_matches(label, list(by_label), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else " (collapselab status RUN_DIR lists them)"
    raise CollapselabError(f"lineage: no stage {label!r} in this run{hint}")


def lineage_nodes(
    stages: Sequence[Any], states: Mapping[str, str], label: str | None = None
) -> list[LineageNode]:
    """Trees from the final stages (or from the stage ``label``) back to ``prepare``.

    Inputs are listed latest stage first, so the first branch of a node reads as the chain that
    produced it (respond ← train ← mix ← generate ← prepare); a stage shared by several branches
    is expanded once.
    """
    order = {s.label: i for i, s in enumerate(stages)}
    seen: set[str] = set()

    def build(stage: Any) -> LineageNode:
        node = LineageNode(stage, states.get(stage.label, "missing"))
        if stage.label in seen:
            node.repeated = True
            return node
        seen.add(stage.label)
        inputs = sorted(stage.inputs, key=lambda s: -order.get(s.label, -1))
        node.children = [build(i) for i in inputs]
        return node

    roots = final_stages(stages) if label is None else [find_stage(stages, label)]
    return [build(r) for r in roots]


def _node_text(node: LineageNode) -> str:
    colour = STYLE.get(node.state, "white")
    text = f"[{colour}]{node.state}[/] {escape(node.stage.label)} [dim]{node.stage.key}[/]"
    if node.repeated and node.stage.inputs:
        text += " [dim](inputs shown above)[/]"
    return text


def render_tree(roots: Sequence[LineageNode], title: str) -> Tree:
    """The nodes as one rich tree under ``title``."""
    tree = Tree(title, guide_style="dim")

    def add(parent: Tree, node: LineageNode) -> None:
        branch = parent.add(_node_text(node))
        for child in node.children:
            add(branch, child)

    for root in roots:
        add(tree, root)
    return tree


def lineage_command(run_dir: Path, label: str | None) -> None:
    with user_errors():
        from collapselab.executors import stage_status

        spec = load_run_spec(run_dir)
        rows = stage_status(spec, run_dir)
        stages = [stage for stage, _ in rows]
        states = {stage.label: state for stage, state in rows}
        roots = lineage_nodes(stages, states, label)
        what = f"ancestry of {label}" if label else "final stages back to prepare"
        console.print(render_tree(roots, f"{escape(spec.name)} — {escape(str(run_dir))}: {what}"))
        shown = {n.stage.label for n in _walk(roots)}
        counts = {s: sum(1 for lbl in shown if states[lbl] == s) for s in STYLE}
        console.print(" · ".join(f"{n} {s}" for s, n in counts.items() if n), highlight=False)


def _walk(nodes: Sequence[LineageNode]) -> list[LineageNode]:
    out = []
    for node in nodes:
        out.append(node)
        out += _walk(node.children)
    return out
