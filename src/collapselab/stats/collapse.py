"""Experiment 1's statistics, from the evaluation tables to files the report reads.

* ``tests.parquet`` — for every per-item metric (per target and generation) the tests across
  conditions via :func:`collapselab.stats.summary.compare_conditions`: paired by test prompt
  (Friedman, Wilcoxon signed-rank with paired bootstrap intervals of the differences) by default,
  the study's Kruskal–Wallis and Mann–Whitney U with ``paired=False``; Bonferroni within each
  metric's pairs; with several seeds also pooled, seed-level and mixed-model (run as random
  effect) families;
* ``concordance/<target>/{ranks,value_ranks,correlations,pairwise}.parquet`` — how the metrics rank
  the conditions and where they disagree (with recursive generations: on generation 0);
* ``factorial.parquet`` — an aligned-rank-transform ANOVA over the grid's varying factors
  (source diversity, source tier, target) when more than one varies (generation 0 likewise);
* ``seed_spread.parquet`` — between-seed spread of each metric's primary aggregate;
* ``stats.json`` — what was run and every note (skipped tests and why).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from collapselab.store.atomic import write_json
from collapselab.store.frames import write_parquet

FACTOR_COLUMNS = ("diversity", "tier", "target")


def _write(frame: pd.DataFrame, path: Path) -> None:
    write_parquet(frame, path)


def collapse_statistics(aggregates: pd.DataFrame, per_item: pd.DataFrame, labels: dict[str, dict[str, Any]],
                        out: Path, *, seed: int = 0, paired: bool = True) -> dict[str, Any]:
    from collapselab.stats.concordance import metric_concordance
    from collapselab.stats.factorial import art_anova, seed_spread
    from collapselab.stats.summary import compare_conditions

    notes: list[str] = []
    cond_items = per_item[per_item["set_kind"] == "condition"].copy()
    cond_aggs = aggregates[(aggregates["set_kind"] == "condition") & aggregates["primary"]].copy()

    # 1. rank tests across conditions
    if cond_items.empty:
        tests = pd.DataFrame()
        notes.append("no per-item values for conditions: no tests")
    else:
        tests = compare_conditions(cond_items, by="condition", within=("metric", "target", "generation"),
                                   paired="auto" if paired else False, random_state=seed)
    _write(tests, out / "tests.parquet")

    # 2. concordance: conditions × metrics (primary aggregate, mean over seeds), per target — on
    # generation 0, the round every condition has: a mean over a chain's generations would mix
    # different models (and set vanilla's one round against a chain's average)
    round0 = cond_aggs
    if "generation" in cond_aggs and cond_aggs["generation"].nunique() > 1:
        round0 = cond_aggs[cond_aggs["generation"] == 0]
        notes.append("concordance and factorial analysis on generation 0 (the round every condition has); "
                     "later generations are in the tests and the report's generation tables")
    concordance_summary = []
    for target, group in round0.groupby("target", dropna=False):
        table = group.pivot_table(index="condition", columns="metric", values="value", aggfunc="mean")
        directions = group.drop_duplicates("metric").set_index("metric")["higher_is_better"].to_dict()
        directions = {k: (None if pd.isna(v) else bool(v)) for k, v in directions.items()}
        # one vote per metric family (its variants are not independent evidence)
        families = group.drop_duplicates("metric").set_index("metric")["family"].astype(str).to_dict()
        result = metric_concordance(table, directions, families)
        folder = out / "concordance" / str(target)
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("ranks", "value_ranks", "family_ranks"):
            frame = getattr(result, name).reset_index().rename(columns={"index": "condition"})
            _write(frame, folder / f"{name}.parquet")
        for name in ("correlations", "pairwise"):
            _write(getattr(result, name).copy(), folder / f"{name}.parquet")
        concordance_summary.append({"target": target, **result.kendalls_w})

    # 3. factorial analysis over the synthetic conditions, when the grid varies several factors
    factorial_frames = []
    synth = cond_items.copy()
    for column in FACTOR_COLUMNS:
        synth[column] = synth["set_name"].map(lambda s, c=column: labels.get(s, {}).get(c))
    synth = synth[synth["diversity"].isin(["single", "multi"])]
    if "generation" in synth and synth["generation"].nunique() > 1:
        synth = synth[synth["generation"] == 0]
    varying = [c for c in FACTOR_COLUMNS if synth[c].nunique(dropna=True) > 1]
    if len(varying) >= 2:
        blocks = ["seed"] if synth["seed"].nunique() > 1 else []
        for metric, group in synth.groupby("metric"):
            try:
                frame = art_anova(group.dropna(subset=varying), "value", varying, blocks=blocks)
            except ValueError as exc:  # e.g. empty cells in an unbalanced grid
                notes.append(f"factorial {metric}: {exc}")
                continue
            frame.insert(0, "metric", metric)
            factorial_frames.append(frame)
    else:
        notes.append("factorial analysis skipped: the grid varies fewer than two factors "
                     f"among {', '.join(FACTOR_COLUMNS)}")
    _write(pd.concat(factorial_frames, ignore_index=True) if factorial_frames else pd.DataFrame(),
           out / "factorial.parquet")

    # 4. seed spread
    if cond_aggs["seed"].nunique() > 1:
        # a chain's generations are different models: their seeds spread separately
        by = ["target", "condition", "metric"] + (["generation"] if cond_aggs["generation"].nunique() > 1 else [])
        spread = seed_spread(cond_aggs, value="value", seed="seed", by=by)
    else:
        spread = pd.DataFrame()
        notes.append("one seed per condition: no between-seed spread")
    _write(spread, out / "seed_spread.parquet")

    summary = {"notes": notes, "kendalls_w": concordance_summary, "factors": varying,
               "tests": int(len(tests)), "seeds": sorted(int(s) for s in cond_aggs["seed"].dropna().unique())}
    write_json(out / "stats.json", summary)
    return summary
