"""Figure primitives shared by every section's plots — no knowledge of any experiment.

Figures are built with ``matplotlib.figure.Figure`` directly, never through ``pyplot``: no
global figure registry, no GUI backend, nothing to display — rendering is always Agg (PNG), so
the report builds on a headless server. :func:`figure_to_data_uri` turns a figure into the
``data:`` URI the self-contained HTML embeds.

Colours: every condition keeps one colour across all plots (:func:`condition_colors`); the human
references are always black and dashed (:data:`HUMAN_COLOR`), training-data sources use a second
palette (:data:`SOURCE_PALETTE`). Plot builders run under :func:`styled` (the report's font sizes)
and lay out their panels with :func:`panel_grid`.
"""

from __future__ import annotations

import base64
import functools
import io
import re
import sys
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from collapselab.report.format import arrow, is_missing

# Colour-blind-friendly qualitative palettes (Okabe–Ito for conditions, Tableau for sources).
CONDITION_PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#F0E442", "#7F7F7F"]
SOURCE_PALETTE = ["#4E79A7", "#F28E2B", "#59A14F", "#B07AA1", "#EDC948", "#76B7B2", "#FF9DA7", "#9C755F",
                  "#BAB0AC", "#E15759", "#8CD17D", "#86BCB6"]
HUMAN_COLOR = "#222222"
DPI = 110

_STYLE = {"font.size": 9, "axes.titlesize": 9.5, "axes.labelsize": 9, "legend.fontsize": 8}


def plain(text: Any) -> str:
    """A label safe for matplotlib: ``$`` would start mathtext (and a stray one fails the draw)."""
    return str(text).replace("$", r"\$")


def wrap(name: Any, width: int = 34) -> str:
    """A metric name on lines of about ``width`` characters, broken after ``_ [ , =`` — never
    inside a word (``lexical_diversity[mode=individual,`` / ``max_order=3]``)."""
    pieces = re.findall(r"[^_\[,=]+[_\[,=]?|[_\[,=]", plain(name))
    lines = [""]
    for piece in pieces:
        if lines[-1] and len(lines[-1]) + len(piece) > width:
            lines.append("")
        lines[-1] += piece
    return "\n".join(lines)


def metric_title(metric: str, direction: bool | None, width: int = 34) -> str:
    """A metric's panel title, wrapped at its parameters, with its direction."""
    return f"{wrap(metric, width)} {arrow(direction) or '(no direction)'}"


def condition_colors(names: Iterable[Any], palette: Sequence[str] = CONDITION_PALETTE) -> dict[str, str]:
    """One colour per name, in the given order (cycling when there are more names than colours)."""
    return {str(n): palette[i % len(palette)] for i, n in enumerate(dict.fromkeys(map(str, names)))}


def new_figure(width: float, height: float) -> Figure:
    """An empty figure of the report's resolution, laid out by matplotlib's constrained layout."""
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def panel_grid(n: int, ncols: int = 3, size: tuple[float, float] = (3.7, 2.9)) -> tuple[Figure, list[Any]]:
    """A grid of ``n`` panels (unused grid cells removed)."""
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    fig = new_figure(size[0] * ncols, size[1] * nrows)
    axes = list(np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel())
    for ax in axes[n:]:
        ax.remove()
    for ax in axes[:n]:
        ax.grid(True, axis="y", color="#e4e4e4", linewidth=0.6)
        ax.set_axisbelow(True)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    return fig, axes[:n]


def styled(build):
    """Run a plot builder under the report's font sizes without touching global rcParams."""
    import matplotlib

    @functools.wraps(build)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(_STYLE):
            return build(*args, **kwargs)

    return wrapper


def figure_to_data_uri(fig: Figure, dpi: int = DPI) -> str:
    """The figure as a ``data:image/png;base64,…`` URI; the figure is closed (freed) afterwards."""
    buffer = io.BytesIO()
    try:
        # no "Software" stamp: the same figure gives the same bytes across matplotlib versions
        fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight", facecolor="white",
                    metadata={"Software": None})
    finally:
        if "matplotlib.pyplot" in sys.modules:  # a pyplot-made figure must leave pyplot's registry
            sys.modules["matplotlib.pyplot"].close(fig)
        fig.clear()
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def draw_interval(ax, x: float, value: float, low: float, high: float, color: str, marker: str = "o") -> None:
    """A value with its interval at ``x``: a vertical line from ``low`` to ``high`` plus the point
    (either part left out when undefined)."""
    # drawn as a line from low to high plus the point, not as errorbar(): a corpus-bootstrap
    # interval can lie entirely below the full-set value, which errorbar() cannot show
    if not (is_missing(low) or is_missing(high)):
        ax.plot([x, x], [low, high], color=color, linewidth=1.6, solid_capstyle="butt")
        ax.plot([x, x], [low, high], linestyle="none", marker="_", markersize=7, color=color)
    if not is_missing(value):
        ax.plot([x], [value], marker=marker, markersize=5.5, color=color, linestyle="none")

