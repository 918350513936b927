"""The report's "Training" section: one row per fine-tuning run, shared by every experiment
(the conditions' models are trained once and used by all of them). The loss curves are
:func:`collapselab.report.collapse_plots.training_curves`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from collapselab.report.format import Table, empty_table, fmt_int, fmt_num, fmt_text, is_missing


def training_table(training: Sequence[Mapping[str, Any]]) -> Table:
    """One row per fine-tuning run: steps, final train loss, best validation loss, early stop."""
    if not training:
        return empty_table("no fine-tuning in this run")
    body = []
    for run in training:
        curve = list(run.get("curve") or [])
        train = [c["train_loss"] for c in curve if not is_missing(c.get("train_loss"))]
        body.append({
            "target": fmt_text(run.get("target")),
            "condition": fmt_text(run.get("condition")),
            "seed": fmt_text(run.get("seed")),
            "steps": fmt_int(max((int(c.get("step", 0)) for c in curve), default=None) if curve else None),
            "final train loss": fmt_num(train[-1] if train else None),
            "best val loss": fmt_num(run.get("best_val_loss")),
            "stopped early": fmt_num(run.get("stopped_early")),
            "examples": fmt_int(run.get("examples")),
            "sources (realised share)": shares_text(run.get("realised_shares"), run.get("requested_shares")),
        })
    return Table(pd.DataFrame(body), "Loss is mean token cross-entropy on the training tokens. A multi-source "
                 "condition's realised shares are those of the examples it trained on (requested in brackets).",
                 set(), {"steps", "final train loss", "best val loss", "examples"})


def shares_text(realised: Mapping[str, float] | None, requested: Mapping[str, float] | None) -> str:
    """``a 33.3% (33.3%) · b …``: each source's realised share of a mix, requested in brackets."""
    if not realised:
        return ""
    requested = requested or {}
    return " · ".join(f"{s} {v:.1%}" + (f" ({requested[s]:.1%})" if s in requested else "")
                      for s, v in realised.items())

