"""Report plots added from outside the built-in sections: each is a :class:`ReportPlot`
registered in :data:`PLOTS`, drawn from the run's :class:`~collapselab.report.inputs.ReportInputs`
(what the stages wrote: the report never recomputes) and shown under "More figures" in the HTML
report, in registration order. A plot that fails to draw is listed in the report's warning box
instead of failing the report."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from collapselab.registry import Registry


@dataclass(frozen=True)
class ReportPlot:
    """One figure: ``name`` (its anchor is ``plot-<name>``), ``title``, ``caption``, and
    ``draw(inputs) -> matplotlib Figure | None`` (None: the run has no data for it, and ``empty``
    is shown instead)."""

    name: str
    title: str
    caption: str
    draw: Callable[[Any], Any]
    empty: str = "No data for this plot in this run."


#: Registered report plots (``name -> ReportPlot``), drawn in registration order.
PLOTS: Registry[ReportPlot] = Registry("report plot")


def register_plot(plot: ReportPlot) -> ReportPlot:
    """Add ``plot`` to :data:`PLOTS` (a duplicate name is an error); returns it."""
    PLOTS.add(plot.name, plot, description=plot.title)
    return plot
