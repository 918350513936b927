"""Experiment 3 (self-preference) in the report: per judge, how much probability it puts on a letter
at all (choice mass), the preference matrix, S per source, self-preference (SPB) and pro-synthetic
bias (PSB), position bias, ratings, the tests and the warnings.

Builders return :class:`~collapselab.report.format.Table` objects of formatted, unescaped text (as
every section module); the figures are in :mod:`collapselab.report.preference_plots`.
Definitions (PAPER.md, :mod:`collapselab.preference.scores`): S(source) = mean probability a
source's text wins its comparisons; SPB = S(own family) − mean S(other synthetic sources); PSB =
mean S(synthetic sources) − S(human).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from collapselab.report.format import MISSING, Table, fmt_ci, fmt_int, fmt_num, fmt_rate, fmt_text, is_missing
from collapselab.report.inputs import PreferenceInputs
from collapselab.report.labels import constant_labels, run_columns, run_label, sort_runs
from collapselab.report.stat_tests import all_tests_table, omnibus_notes, omnibus_table, pairwise_table

HUMAN = "human"
#: below this mean probability on "A" + "B", a judge's preferences are weak evidence
LOW_CHOICE_MASS = 0.5
LOW_MASS_TEXT = "the judge rarely answers with a letter at all; its A/B preferences are weak evidence"


def source_order(frame: pd.DataFrame, column: str = "source") -> list[str]:
    """Sources in order of appearance, the human texts last."""
    if frame.empty or column not in frame.columns:
        return []
    seen = [str(s) for s in pd.unique(frame[column].astype(object)) if not is_missing(s)]
    return [s for s in seen if s != HUMAN] + [s for s in seen if s == HUMAN]


def judge_records(frame: pd.DataFrame, conditions: Sequence[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """One record per judge (first row of each, config order) and the label columns."""
    labels = run_columns(frame)
    key = "judge" if "judge" in frame.columns else labels
    return sort_runs(frame.drop_duplicates(key), conditions).to_dict("records"), labels


def rows_of(frame: pd.DataFrame, judge: Mapping[str, Any]) -> pd.DataFrame:
    """The rows of one judge."""
    return frame[frame["judge"].astype(str) == str(judge["judge"])]


def _caption(frame: pd.DataFrame, text: str) -> str:
    shared = constant_labels(frame)
    return text + (f" All judges: {shared}." if shared else "")


# ------------------------------------------------------------------------------------------
# Tables
# ------------------------------------------------------------------------------------------


def choice_mass_table(judges: Sequence[Mapping[str, Any]], conditions: Sequence[str] = ()) -> Table:
    """Per judge: comparisons, undefined read-outs and the mean choice mass — the probability it
    put on "A" + "B" at all (the pairwise preference is renormalised over the two letters, so a
    judge with little mass on them still yields a preference, but a weak one)."""
    if not judges:
        return Table(pd.DataFrame(), "no judges")
    frame = pd.DataFrame(list(judges))
    records, labels = judge_records(frame, conditions)
    body = [{**{c: fmt_text(r.get(c)) for c in labels},
             "comparisons": fmt_int(r.get("comparisons")),
             "undefined": fmt_int(r.get("undefined_comparisons")),
             "mean choice mass": fmt_num(r.get("mean_choice_mass"))} for r in records]
    caption = _caption(frame, "Choice mass = P(\"A\") + P(\"B\") in the judge's next-token distribution, "
                       "averaged over its comparisons (1: it always answers with a letter). Below "
                       f"{LOW_CHOICE_MASS}: {LOW_MASS_TEXT}.")
    return Table(pd.DataFrame(body), caption, set(), {"comparisons", "undefined", "mean choice mass"})


def matrix_table(matrix: pd.DataFrame, conditions: Sequence[str] = ()) -> Table:
    """Per judge, P(row source's text beats the column source's) — both orders pooled."""
    if matrix.empty:
        return Table(pd.DataFrame(), "no preference matrix")
    records, labels = judge_records(matrix, conditions)
    sources = source_order(pd.DataFrame({"source": [*matrix["row_source"], *matrix["col_source"]]}))
    body = []
    for judge in records:
        part = rows_of(matrix, judge)
        cells = {(str(r.row_source), str(r.col_source)): r.p_row_wins for r in part.itertuples(index=False)}
        for row in sources:
            body.append({"judge": run_label(judge, labels), "text of": row,
                         **{f"vs {col}": MISSING if row == col else fmt_num(cells.get((row, col)))
                            for col in sources}})
    caption = _caption(matrix, "P(the row source's text is preferred to the column source's), averaged over "
                       "items and both presentation orders; 0.5 = no preference.")
    return Table(pd.DataFrame(body), caption, set(), {f"vs {c}" for c in sources})


def _per_source(frame: pd.DataFrame, value: str, conditions: Sequence[str], caption: str) -> Table:
    """Judges × sources: ``value`` with its interval, the judge's favourite in bold."""
    if frame.empty:
        return Table(pd.DataFrame(), "no scores")
    records, labels = judge_records(frame, conditions)
    sources = source_order(frame)
    body, highlight = [], set()
    for i, judge in enumerate(records):
        part = rows_of(frame, judge).set_index("source")
        line = {c: fmt_text(judge.get(c)) for c in labels}
        for s in sources:
            r = part.loc[s] if s in part.index else None
            line[s] = MISSING if r is None else fmt_ci(r[value], r["ci_low"], r["ci_high"])
        values = part[value].dropna()
        if values.nunique() > 1:
            highlight |= {(i, str(s)) for s in values.index[values == values.max()]}
        body.append(line)
    return Table(pd.DataFrame(body), _caption(frame, caption), highlight, set(sources))


def source_score_table(scores: pd.DataFrame, conditions: Sequence[str] = ()) -> Table:
    """S per judge and source with its cluster-bootstrap interval."""
    return _per_source(scores, "S", conditions,
                       "S = mean probability a source's text wins its comparisons (0.5: chance), with a "
                       "bootstrap interval over items [low, high]. Bold: the judge's favourite.")


def rating_table(ratings: pd.DataFrame, conditions: Sequence[str] = ()) -> Table:
    """Mean expected rating (1–5) per judge and source."""
    return _per_source(ratings, "rating", conditions,
                       "Mean expected rating (1–5; the rating's expectation under the judge's next-token "
                       "probabilities on \"1\"…\"5\") with a bootstrap interval over items. Bold: highest.")


def bias_table(bias: pd.DataFrame, conditions: Sequence[str] = ()) -> Table:
    """SPB and PSB per judge with intervals, the S values behind them and, where SPB is
    undefined, the note saying why."""
    if bias.empty:
        return Table(pd.DataFrame(), "no bias scores")
    records, labels = judge_records(bias, conditions)
    notes = [str(r.get("note") or "") if not is_missing(r.get("note")) else "" for r in records]
    body = []
    for r, note in zip(records, notes, strict=True):
        line = {c: fmt_text(r.get(c)) for c in labels}
        line.update({
            "own source": MISSING if is_missing(r.get("own_source")) else str(r["own_source"]),
            "SPB": fmt_ci(r.get("SPB"), r.get("SPB_ci_low"), r.get("SPB_ci_high")),
            "PSB": fmt_ci(r.get("PSB"), r.get("PSB_ci_low"), r.get("PSB_ci_high")),
            "S own": fmt_num(r.get("S_own")), "S other synthetic": fmt_num(r.get("S_other_synthetic")),
            "S human": fmt_num(r.get("S_human")), "items": fmt_int(r.get("n_items")),
            "undefined": fmt_int(r.get("n_undefined")),
        })
        if any(notes):  # the note column only when some judge has one (e.g. SPB undefined)
            line["note"] = note
        body.append(line)
    caption = _caption(bias, "SPB (self-preference bias) = S(own family) − mean S(other synthetic "
                       "sources); PSB (pro-synthetic bias) = mean S(synthetic) − S(human); > 0: the judge "
                       "favours its own family / synthetic text. Bootstrap intervals over items.")
    return Table(pd.DataFrame(body), caption, set(),
                 {"SPB", "PSB", "S own", "S other synthetic", "S human", "items", "undefined"}, wide={"note"})


def position_table(position: pd.DataFrame, conditions: Sequence[str] = ()) -> Table:
    """Position bias per judge: how often the first slot wins and how often a verdict flips when
    the two texts swap places."""
    if position.empty:
        return Table(pd.DataFrame(), "no position statistics")
    records, labels = judge_records(position, conditions)
    body = [{**{c: fmt_text(r.get(c)) for c in labels},
             "first-slot win rate": fmt_rate(r.get("first_slot_win_rate")),
             "mean P(first)": fmt_rate(r.get("mean_p_first")),
             "flip rate": fmt_rate(r.get("flip_rate")),
             "pairs": fmt_int(r.get("n_pairs")), "incomplete pairs": fmt_int(r.get("n_pairs_incomplete")),
             "undefined": fmt_int(r.get("n_undefined"))} for r in records]
    caption = _caption(position, "First-slot win rate = share of comparisons the text shown first wins "
                       "(0.5: no position bias); flip rate = share of pairs whose winner changes when the "
                       "order is swapped (1: the judge follows the position, not the text).")
    numeric = {"first-slot win rate", "mean P(first)", "flip rate", "pairs", "incomplete pairs", "undefined"}
    return Table(pd.DataFrame(body), caption, set(), numeric)


# ------------------------------------------------------------------------------------------
# Warnings
# ------------------------------------------------------------------------------------------


def preference_warnings(pref: PreferenceInputs) -> list[str]:
    """Judges with little mass on the letters, undefined read-outs, SPB undefined and why, and
    tests not computed."""
    out = []
    frame = pd.DataFrame(list(pref.judges))
    if not frame.empty and "mean_choice_mass" in frame.columns:
        records, labels = judge_records(frame, pref.conditions)
        low = [f"{run_label(r, labels)} ({fmt_num(r['mean_choice_mass'])})" for r in records
               if not is_missing(r.get("mean_choice_mass"))
               and float(r["mean_choice_mass"]) < LOW_CHOICE_MASS]
        if low:
            out.append(f"Self-preference: mean choice mass below {LOW_CHOICE_MASS} for judge "
                       f"{', '.join(low)}: {LOW_MASS_TEXT}.")
    for key, what in (("undefined_comparisons", "comparisons"), ("undefined_ratings", "ratings")):
        n = pref.info.get(key)
        if n:
            out.append(f"Self-preference: {int(n)} {what} undefined (no probability on any choice); "
                       "left out of every score.")
    if not pref.bias.empty and "SPB" in pref.bias.columns:
        records, labels = judge_records(pref.bias, pref.conditions)
        by_note: dict[str, list[str]] = {}
        for r in records:
            if is_missing(r.get("SPB")):
                note = "" if is_missing(r.get("note")) else str(r.get("note") or "")
                by_note.setdefault(note, []).append(run_label(r, labels))
        out += [f"Self-preference: SPB undefined for {', '.join(judges)}" + (f": {note}" if note else "")
                for note, judges in by_note.items()]
    out += omnibus_notes(pref.tests, prefix="Self-preference: ")
    return out


# ------------------------------------------------------------------------------------------
# Everything, in order
# ------------------------------------------------------------------------------------------


@dataclass
class PreferenceTables:
    """Experiment 3's section, in the order both renderers show it."""

    choice_mass: Table
    matrix: Table
    source_scores: Table
    bias: Table
    position: Table
    ratings: Table
    omnibus: Table
    significant_pairs: Table
    all_tests: Table
    warnings: list[str] = field(default_factory=list)


def build_preference_tables(pref: PreferenceInputs) -> PreferenceTables:
    """Every table and warning of the self-preference section."""
    c = pref.conditions
    return PreferenceTables(
        choice_mass=choice_mass_table(pref.judges, c),
        matrix=matrix_table(pref.matrix, c),
        source_scores=source_score_table(pref.source_scores, c),
        bias=bias_table(pref.bias, c),
        position=position_table(pref.position, c),
        ratings=rating_table(pref.rating_scores, c),
        omnibus=omnibus_table(pref.tests),
        significant_pairs=pairwise_table(pref.tests, {}, significant_only=True),
        all_tests=all_tests_table(pref.tests),
        warnings=preference_warnings(pref),
    )
