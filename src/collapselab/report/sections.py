"""Report sections about the collapse loop (issue 13) and any plug-in: each is a builder registered
in :data:`SECTIONS` that reads a run's finished stages and returns a :class:`ReportSection` (or
``None`` when the run has nothing for it). Both renderers show every built section, in
registration order, under "The collapse loop" — the HTML report with its figures, the Markdown
report with its tables.

A builder gets a :class:`SectionContext`: the spec, the graph, the run store and the report's
other inputs (Experiment 1's tables, ...). It reads what stages wrote and never recomputes a
model; a builder that fails is reported in the warning box instead of failing the report.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collapselab.registry import Registry
from collapselab.report.format import Table

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SectionFigure:
    """One figure of a section: ``draw()`` returns a matplotlib Figure (None: nothing to draw)."""

    key: str
    title: str
    caption: str
    draw: Callable[[], Any]


@dataclass
class ReportSection:
    """A built section: ``intro`` (plain text: escaped when shown), its tables (each with its
    caption), figures and warnings (these go into the report's warning box too)."""

    key: str
    title: str
    intro: str = ""
    tables: list[Table] = field(default_factory=list)
    figures: list[SectionFigure] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: condition label → a short note the whole report shows next to that condition's label
    condition_notes: dict[str, str] = field(default_factory=dict)


@dataclass
class SectionContext:
    """What a section builder may read: the spec, the graph's stages, the run store and the
    report's other inputs (:class:`~collapselab.report.inputs.ReportInputs`)."""

    spec: Any
    stages: list
    store: Any
    inputs: Any

    def done(self, kind: str) -> list[tuple[Any, Path]]:
        """The finished stages of a kind with their folders, in graph order."""
        return [(s, self.store.final_dir(s.ref)) for s in self.stages
                if s.kind == kind and self.store.is_done(s.ref)]


@dataclass(frozen=True)
class SectionBuilder:
    key: str
    title: str
    build: Callable[[SectionContext], ReportSection | None]


#: Registered section builders (``key -> SectionBuilder``), shown in registration order.
SECTIONS: Registry[SectionBuilder] = Registry("report section")


def register_section(key: str, title: str, build: Callable[[SectionContext], ReportSection | None]) -> None:
    """Add a section builder (a duplicate key is an error)."""
    SECTIONS.add(key, SectionBuilder(key, title, build), description=title)


def _load_builtin() -> None:
    """Import the built-in section modules (each registers its builders when imported)."""
    import importlib

    for module in BUILTIN_MODULES:
        importlib.import_module(module)


#: the modules of the built-in sections, imported when sections are built
BUILTIN_MODULES: tuple[str, ...] = ("collapselab.report.loop_trajectory", "collapselab.report.homogeneity",
                                     "collapselab.report.decoding",
                                     "collapselab.report.curation", "collapselab.report.perplexity_tails")


def build_sections(ctx: SectionContext) -> tuple[list[ReportSection], list[str]]:
    """Every registered section this run has, and the failures (one warning per failed builder)."""
    _load_builtin()
    sections, failures = [], []
    for key in SECTIONS.in_order():
        builder = SECTIONS.get(key)
        try:
            section = builder.build(ctx)
        except Exception as exc:  # the rest of a long run's report is still worth having
            log.exception("report section %s failed", key)
            failures.append(f"Section \"{builder.title}\" could not be built: {type(exc).__name__}: {exc}")
            continue
        if section is not None:
            sections.append(section)
    return sections, failures
