"""``collapselab ls``."""

from __future__ import annotations

from rich.table import Table

from collapselab.cli.common import console, user_errors
from collapselab.errors import CollapselabError

CONDITION_KINDS = {
    "vanilla": "the target without fine-tuning",
    "human": "fine-tuned on the human responses",
    "single:SRC": "fine-tuned on one source's answers to all train prompts",
    "multi:A,B[,..]": "each source answers its share of the train prompts (equal shares by default)",
    "multi:A=0.7,B=0.3": "weighted shares",
    "multi:tier=NAME": "all sources of a tier, equal shares",
}


def _registry_table(title: str, registry) -> Table:
    table = Table(title=title)
    table.add_column("name")
    table.add_column("description")
    for name in registry:
        table.add_row(name, registry.info(name).get("description", ""))
    return table


def ls_command(what: str) -> None:
    with user_errors():
        from collapselab.corpora.base import CORPORA
        from collapselab.models.base import BACKENDS
        from collapselab.models.packaged import PACKAGED

        sections = {
            "metrics": _metrics,
            "models": lambda: _registry_table("packaged models (hf/<name>)", PACKAGED),
            "backends": lambda: _registry_table("model backends (<backend>/<name>)", BACKENDS),
            "corpora": lambda: _registry_table("corpora (corpus.kind)", CORPORA),
            "judges": _judges,
            "conditions": _conditions,
            "stages": _stages,
        }
        if what != "all" and what not in sections:
            raise CollapselabError(f"ls: unknown section {what!r} (known: {', '.join(sections)}, all)")
        for name, make in sections.items():
            if what in ("all", name):
                console.print(make())


def _metrics() -> Table:
    from collapselab.metrics import METRICS

    table = Table(title="metrics (collapse.metrics)")
    for column in ("name", "family", "better", "description"):
        table.add_column(column)
    for name in METRICS:
        info = METRICS.info(name)
        table.add_row(name, info["family"], info["direction"], info["description"])
    return table


def _judges() -> Table:
    from collapselab.judges import JUDGES

    table = Table(title="judges (safety and preference read-outs)")
    for column in ("name", "read-out", "template fields", "scale", "description"):
        table.add_column(column)
    for name in JUDGES:
        info = JUDGES.info(name)
        table.add_row(name, info["readout"], info["fields"] or "-", info["scale"], info["description"])
    return table


def _stages() -> Table:
    from collapselab.pipeline.graph import all_kinds  # imports every experiment: registers its kinds

    table = Table(title="stage kinds (inputs before consumers)")
    for column in ("name", "experiment", "description"):
        table.add_column(column)
    for kind in all_kinds():
        table.add_row(kind.name, kind.experiment, kind.description)
    return table


def _conditions() -> Table:
    table = Table(title="conditions")
    table.add_column("syntax")
    table.add_column("meaning")
    for k, v in CONDITION_KINDS.items():
        table.add_row(k, v)
    return table

