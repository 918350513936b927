"""Where a run spent its time (issue 14): per stage kind, the stages planned and done, the seconds
their runners took (``provenance.json``'s ``seconds``, written when each stage finished) and each
kind's share of the total. ``collapselab status RUN --times`` prints it; the replication's
speed work started from this table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

PROFILE_COLUMNS = ["kind", "planned", "done", "seconds", "share", "mean", "max"]


def stage_seconds(spec: Any, run_dir: str | Path) -> pd.DataFrame:
    """One row per stage of the graph: kind, label, done, seconds (NaN when not done or when the
    stage folder has no provenance) and finished (UTC timestamp or None)."""
    from collapselab.pipeline.graph import build_graph
    from collapselab.store.run import RunStore

    store = RunStore(run_dir)
    rows = []
    for stage in build_graph(spec):
        done = store.is_done(stage.ref)
        seconds, finished = float("nan"), None
        if done:
            path = store.final_dir(stage.ref) / "provenance.json"
            if path.exists():
                record = json.loads(path.read_text())
                seconds = float(record.get("seconds", float("nan")))
                finished = record.get("finished")
        rows.append({"kind": stage.kind, "label": stage.label, "done": done, "seconds": seconds,
                     "finished": finished})
    return pd.DataFrame(rows, columns=["kind", "label", "done", "seconds", "finished"])


def profile(stages: pd.DataFrame) -> pd.DataFrame:
    """Per stage kind (in graph order): planned, done, total seconds, share of all seconds, mean and
    max seconds per stage; a last row ``all``."""
    groups = stages.groupby("kind", sort=False)
    out = pd.DataFrame({
        "kind": list(groups.groups),
        "planned": groups.size().to_numpy(),
        "done": groups["done"].sum().to_numpy(),
        "seconds": groups["seconds"].sum(min_count=1).to_numpy(),
        "mean": groups["seconds"].mean().to_numpy(),
        "max": groups["seconds"].max().to_numpy(),
    })
    total = out["seconds"].sum()
    out["share"] = out["seconds"] / total if total else float("nan")
    out = out.sort_values("seconds", ascending=False, na_position="last", kind="stable")
    all_row = {"kind": "all", "planned": int(out["planned"].sum()), "done": int(out["done"].sum()),
               "seconds": total, "share": 1.0 if total else float("nan"),
               "mean": stages["seconds"].mean(), "max": stages["seconds"].max()}
    return pd.concat([out, pd.DataFrame([all_row])], ignore_index=True)[PROFILE_COLUMNS]


def wall_clock(stages: pd.DataFrame) -> tuple[str | None, str | None]:
    """The first stage's start and the last stage's finish (UTC, ISO) among the done stages, from
    their finish times and durations."""
    done = stages[stages["finished"].notna()]
    if done.empty:
        return None, None
    finished = pd.to_datetime(done["finished"], utc=True, format="ISO8601")
    started = finished - pd.to_timedelta(done["seconds"].fillna(0), unit="s")
    fmt = "%Y-%m-%d %H:%M:%S UTC"
    return started.min().strftime(fmt), finished.max().strftime(fmt)
