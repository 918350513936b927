"""Table and formatting primitives of the report — no knowledge of any experiment.

Numbers and labels become display text here (:func:`fmt_num`, :func:`fmt_ci`, :func:`fmt_p`, …;
missing values read :data:`MISSING`, never "nan"), long text is cut by :func:`excerpt`, a metric's
better direction is an arrow (:func:`arrow`, :func:`metric_header`), and :class:`Table` is the
display table every section builds: cells of formatted, *unescaped* text with their display flags.
Escaping is the renderer's job, because HTML and Markdown need different escaping.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

#: placeholder of a missing / undefined number (NaN is never shown as "nan")
MISSING = "—"


# ------------------------------------------------------------------------------------------
# Formatting
# ------------------------------------------------------------------------------------------


def is_missing(value: Any) -> bool:
    """True for None, NaN and pandas' NA (the three spellings of "no value" in these frames)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float | np.floating) and math.isnan(value)


def fmt_num(value: Any) -> str:
    """A number at a precision that suits its size: 1234 → "1,234", 75.123 → "75.12",
    0.95471 → "0.9547", 1.2e-5 → "1.2e-05". Integers stay integers; missing → "—"."""
    if is_missing(value):
        return MISSING
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, numbers.Integral):
        return f"{int(value):,}"
    if not isinstance(value, numbers.Real):
        return str(value)
    x = float(value)
    if math.isinf(x):
        return "∞" if x > 0 else "−∞"
    size = abs(x)
    if size >= 1000:
        text = f"{x:,.0f}"
    elif size >= 100:
        text = f"{x:.1f}"
    elif size >= 1:
        text = f"{x:.2f}"
    elif size >= 1e-3 or size == 0:
        text = f"{x:.4f}"
    else:
        text = f"{x:.1e}"
    return text.replace("-", "−") if x < 0 else text  # a real minus sign: "−" reads better than "-"


def fmt_int(value: Any) -> str:
    """A count or degrees of freedom (stored as float next to NaN): 3.0 → "3"; fractional df stay
    fractional."""
    if is_missing(value):
        return MISSING
    x = float(value)
    return f"{int(x):,}" if x.is_integer() else fmt_num(x)


def fmt_rank(value: Any) -> str:
    """A rank: 1 → "1", a tie's average 2.5 → "2.5"."""
    return MISSING if is_missing(value) else f"{float(value):g}"


def fmt_effect(value: Any) -> str:
    """An effect size or correlation in [−1, 1] (r, ε², τ, W, η²): always three decimals, so a
    column of them lines up."""
    if is_missing(value):
        return MISSING
    x = float(value)
    return f"{x:.3f}".replace("-", "−")


def fmt_p(value: Any) -> str:
    """A p-value: three decimals, or scientific below 0.001 (so a tiny p is not shown as 0)."""
    if is_missing(value):
        return MISSING
    p = float(value)
    if p == 0:  # underflow (or scipy's exact 0 for a perfect correlation), not "0.0e+00"
        return "0"
    return f"{p:.1e}" if p < 1e-3 else f"{p:.3f}"


def fmt_ci(value: Any, low: Any, high: Any) -> str:
    """``value [low, high]``; the interval is left out when it is undefined."""
    if is_missing(low) or is_missing(high):
        return fmt_num(value)
    # no-break space inside the brackets: a wrapped cell never splits the interval itself
    return f"{fmt_num(value)} [{fmt_num(low)},\u00a0{fmt_num(high)}]"


def fmt_rate(value: Any) -> str:
    """A share in [0, 1] at a fixed three decimals, so a column of rates (and their interval
    bounds) lines up: 0.5 → "0.500", 1 → "1.000"."""
    return MISSING if is_missing(value) else f"{float(value):.3f}"


def rate_ci(value: Any, low: Any, high: Any) -> str:
    """``rate [low, high]`` (the interval left out when undefined), as :func:`fmt_ci` for rates."""
    if is_missing(low) or is_missing(high):
        return fmt_rate(value)
    return f"{fmt_rate(value)} [{fmt_rate(low)},\u00a0{fmt_rate(high)}]"


def fmt_text(value: Any) -> str:
    """Any label as text: missing → "—", whole floats (a seed read back as 42.0) → "42"."""
    if is_missing(value):
        return MISSING
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


#: characters of a prompt / response shown before it is cut with an ellipsis
EXCERPT_CHARS = 600


def excerpt(text: Any, limit: int = EXCERPT_CHARS) -> str:
    """``text`` cut to ``limit`` characters (at a word boundary when one is near) with "…"."""
    text = "" if text is None or (isinstance(text, float) and math.isnan(text)) else str(text)
    if len(text) <= limit:
        return text
    cut = text[:limit]
    space = cut.rfind(" ")
    if space > limit * 0.8:
        cut = cut[:space]
    return cut.rstrip() + " …"


def direction_of(value: Any) -> bool | None:
    """``higher_is_better`` as True / False / None, whatever the frame's dtype made of it."""
    return None if is_missing(value) else bool(value)


def arrow(direction: bool | None) -> str:
    """↑ higher is better, ↓ lower is better, nothing when the metric has no better direction."""
    return {True: "↑", False: "↓"}.get(direction, "")  # type: ignore[arg-type]


def metric_header(metric: str, direction: bool | None) -> str:
    """Column header of a metric: its name and its direction arrow."""
    mark = arrow(direction)
    return f"{metric} {mark}" if mark else metric


# ------------------------------------------------------------------------------------------
# The display table
# ------------------------------------------------------------------------------------------


@dataclass
class Cell:
    """One displayed cell: its text and how to show it."""

    text: str
    highlight: bool = False
    numeric: bool = False
    wide: bool = False
    reference: bool = False  # a yardstick (the human references), never a contestant


@dataclass
class Table:
    """A table ready to show: ``frame`` holds text cells under display headers.

    ``highlight`` lists (row position, column) cells to emphasise (best value, significant p);
    ``numeric`` the columns to right-align; ``wide`` the columns of running text (notes, metric
    lists) that deserve room to wrap; ``reference`` the columns that are a yardstick, not a
    contestant (the human references).
    """

    frame: pd.DataFrame
    caption: str = ""
    highlight: set[tuple[int, str]] = field(default_factory=set)
    numeric: set[str] = field(default_factory=set)
    wide: set[str] = field(default_factory=set)
    reference: set[str] = field(default_factory=set)

    @property
    def empty(self) -> bool:
        return self.frame.empty

    @property
    def columns(self) -> list[str]:
        return [str(c) for c in self.frame.columns]

    def rows(self) -> list[list[Cell]]:
        """The body, row by row, each cell with its display flags."""
        return [[Cell(str(v), (i, c) in self.highlight, c in self.numeric, c in self.wide,
                      c in self.reference)
                 for c, v in zip(self.columns, values, strict=True)]
                for i, values in enumerate(self.frame.itertuples(index=False, name=None))]



def empty_table(caption: str) -> Table:
    """A table without rows; its caption says why (shown instead of the table)."""
    return Table(pd.DataFrame(), caption)
