"""Experiment 3 (self-preference) in the report: per judge, how much probability it puts on a letter
at all (choice mass), the preference matrix (with each judge–source pair's leakage relation and the
judge's log-perplexity on the source's texts), S per source, self-preference (SPB) and pro-synthetic
bias (PSB), SPB's controls (the familiarity-adjusted own effect, the stratified own effect and
self-recognition), position bias, ratings, the tests and the warnings.

Builders return :class:`~collapselab.report.format.Table` objects of formatted, unescaped text (as
every section module); the figures are in :mod:`collapselab.report.preference_plots`.
Definitions (PAPER.md, :mod:`collapselab.preference.scores`): S(source) = mean probability a
source's text wins its comparisons; SPB = S(own family) − mean S(other synthetic sources); PSB =
mean S(synthetic sources) − S(human). The controls: :mod:`collapselab.preference.familiarity`,
:mod:`collapselab.preference.recognition`, :mod:`collapselab.preference.relations`.

The controls' tables come from the ``preference_controls`` stage as ``PreferenceInputs.controls``
(a dict of frames by :data:`CONTROL_TABLES` name; absent or empty for a run without them).
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
#: the ``preference_controls`` stage's tables (``<name>.parquet``) the report reads
CONTROL_TABLES = ("controls", "strata", "relations", "recognition_scores")


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


def matrix_table(matrix: pd.DataFrame, conditions: Sequence[str] = (),
                 relations: pd.DataFrame | None = None) -> Table:
    """Per judge, P(row source's text beats the column source's) — both orders pooled; with
    ``relations`` (the controls' judge × source table), each row's preference-leakage relation
    to the judge and, where measured, the judge's mean log-perplexity on the row source's texts."""
    if matrix.empty:
        return Table(pd.DataFrame(), "no preference matrix")
    records, labels = judge_records(matrix, conditions)
    sources = source_order(pd.DataFrame({"source": [*matrix["row_source"], *matrix["col_source"]]}))
    facts = _pair_facts(relations)
    with_ppl = any(not is_missing(f.get("log_ppl")) for f in facts.values())
    body = []
    for judge in records:
        part = rows_of(matrix, judge)
        cells = {(str(r.row_source), str(r.col_source)): r.p_row_wins for r in part.itertuples(index=False)}
        for row in sources:
            line = {"judge": run_label(judge, labels), "text of": row}
            if facts:
                fact = facts.get((str(judge["judge"]), row), {})
                line["relation"] = fmt_text(fact.get("relation"))
                if with_ppl:
                    line["log-ppl"] = fmt_num(fact.get("log_ppl"))
            line.update({f"vs {col}": MISSING if row == col else fmt_num(cells.get((row, col))) for col in sources})
            body.append(line)
    caption = _caption(matrix, "P(the row source's text is preferred to the column source's), averaged over "
                       "items and both presentation orders; 0.5 = no preference.")
    if facts:
        caption += (" Relation = how the judge is related to the row source (preference leakage, Li et al. "
                    "2025): fine-tuned on its data, same model, same family, unrelated, or human text.")
    if with_ppl:
        caption += (" log-ppl = the judge's mean log-perplexity on the row source's texts (nats per token; "
                    "lower = more familiar).")
    numeric = {f"vs {c}" for c in sources} | ({"log-ppl"} if with_ppl else set())
    return Table(pd.DataFrame(body), caption, set(), numeric)


def _pair_facts(relations: pd.DataFrame | None) -> dict[tuple[str, str], dict[str, Any]]:
    """(judge, source) → its row of the relations table."""
    if relations is None or relations.empty or "relation" not in relations.columns:
        return {}
    return {(str(r["judge"]), str(r["source"])): r for r in relations.to_dict("records")}


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


def controls_table(controls: pd.DataFrame, conditions: Sequence[str] = ()) -> Table:
    """Per judge: plain SPB next to its controls — the own-source effect of the regression of
    p_A on the own contrast without and with Δ log-perplexity, the familiarity coefficient, the
    own effect stratified by Δ log-perplexity, and self-recognition accuracy — each with its
    interval."""
    if controls is None or controls.empty:
        return Table(pd.DataFrame(), "no self-preference controls")
    records, labels = judge_records(controls, conditions)
    notes = ["" if is_missing(r.get("note")) else str(r.get("note") or "") for r in records]
    body = []
    for r, note in zip(records, notes, strict=True):
        line = {c: fmt_text(r.get(c)) for c in labels}
        line["own source"] = MISSING if is_missing(r.get("own_source")) else str(r["own_source"])
        for header, key in CONTROL_COLUMNS:
            line[header] = fmt_ci(r.get(key), r.get(f"{key}_ci_low"), r.get(f"{key}_ci_high"))
        if any(notes):
            line["note"] = note
        body.append(line)
    caption = _caption(controls, (
        "SPB = S(own) − mean S(other synthetic sources), bootstrap interval over items. Own effect: the "
        "coefficient of own_A − own_B in an OLS regression of p_A on it, the human contrast and a "
        "first-slot intercept (P(prefer a text) when it is the judge's own instead of another source's), "
        "without and with Δ log-perplexity (ℓ_A − ℓ_B, nats per token) — adjusted, it is the preference "
        "for the own text beyond its familiarity; intervals cluster-robust by item (Wataoka et al. 2024: "
        "self-preference follows perplexity). Familiarity: the Δ log-perplexity coefficient (< 0: more "
        "familiar texts win). Stratified: the own pairs' preference minus that of other-source pairs "
        "with a similar Δ log-perplexity, weighted over strata (bootstrap interval). Recognition: mean "
        "P(the judge picks its own text when asked which it wrote), both orders (0.5: chance; Panickssery "
        "et al. 2024)."))
    numeric = {header for header, _ in CONTROL_COLUMNS}
    return Table(pd.DataFrame(body), caption, set(), numeric, wide={"note"})


#: the controls table's columns: (header, column of the controls frame; its ``_ci_low`` / ``_ci_high``)
CONTROL_COLUMNS = (("SPB", "SPB"), ("own effect (raw)", "own_unadjusted"),
                   ("own effect (familiarity-adjusted)", "own_adjusted"), ("familiarity (per nat)", "familiarity"),
                   ("own effect (stratified)", "stratified"), ("recognition", "recognition"))


def strata_table(strata: pd.DataFrame, conditions: Sequence[str] = ()) -> Table:
    """Per judge and Δ log-perplexity stratum: how often the own text wins against another
    synthetic source's, next to how often a text wins with the same familiarity advantage when
    neither is the judge's own."""
    if strata is None or strata.empty:
        return Table(pd.DataFrame(), "no familiarity strata")
    records, labels = judge_records(strata, conditions)
    body = []
    for judge in records:
        for r in rows_of(strata, judge).sort_values("bin").to_dict("records"):
            body.append({"judge": run_label(judge, labels),
                         "Δ log-ppl": f"[{fmt_num(r.get('delta_low'))}, {fmt_num(r.get('delta_high'))})",
                         "own pairs": fmt_int(r.get("n_own")), "P(own wins)": fmt_rate(r.get("own_pref")),
                         "other pairs": fmt_int(r.get("n_base")), "P(first of pair wins)": fmt_rate(r.get("base_pref")),
                         "difference": fmt_num(r.get("difference"))})
    caption = _caption(strata, (
        "Strata of Δ log-perplexity (the judge's log-perplexity on the first text minus the second's; < 0: the "
        "first is more familiar) at the quantiles of the own pairs' Δ. P(own wins): the own text's order-"
        "averaged win probability against another synthetic source's; P(first of pair wins): the same for "
        "pairs of two other synthetic sources with Δ in the stratum. The difference is the self-preference "
        "that familiarity does not explain."))
    numeric = {"own pairs", "P(own wins)", "other pairs", "P(first of pair wins)", "difference"}
    return Table(pd.DataFrame(body), caption, set(), numeric)


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
    out += control_warnings(_controls(pref), pref.conditions)
    out += omnibus_notes(pref.tests, prefix="Self-preference: ")
    return out


def control_warnings(controls: Mapping[str, pd.DataFrame], conditions: Sequence[str] = ()) -> list[str]:
    """Judges whose SPB is positive (interval above 0) while the familiarity-adjusted own effect's
    interval contains 0, and recognition read-outs with little mass on the letters."""
    out = []
    frame = controls.get("controls")
    if frame is not None and not frame.empty and "own_adjusted_ci_low" in frame.columns:
        records, labels = judge_records(frame, conditions)
        explained = [run_label(r, labels) for r in records
                     if not is_missing(r.get("SPB_ci_low")) and float(r["SPB_ci_low"]) > 0
                     and not is_missing(r.get("own_adjusted_ci_low")) and not is_missing(r.get("own_adjusted_ci_high"))
                     and float(r["own_adjusted_ci_low"]) <= 0 <= float(r["own_adjusted_ci_high"])]
        if explained:
            out.append(f"Self-preference: SPB > 0 for judge {', '.join(explained)}, but the own effect adjusted "
                       "for the judge's log-perplexity is not distinguishable from 0: familiarity may explain it.")
    scores = controls.get("recognition_scores")
    if scores is not None and not scores.empty and "mean_choice_mass" in scores.columns:
        records, labels = judge_records(scores, conditions)
        low = [f"{run_label(r, labels)} ({fmt_num(r['mean_choice_mass'])})" for r in records
               if not is_missing(r.get("mean_choice_mass")) and float(r["mean_choice_mass"]) < LOW_CHOICE_MASS]
        if low:
            out.append(f"Self-recognition: mean choice mass below {LOW_CHOICE_MASS} for judge {', '.join(low)}: "
                       "its answers to \"which did you write?\" are weak evidence.")
    return out


def _controls(pref: Any) -> dict[str, pd.DataFrame]:
    """The controls' frames of ``pref`` (empty for inputs without them)."""
    controls = getattr(pref, "controls", None) or {}
    return {name: frame for name, frame in controls.items() if frame is not None}


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
    # SPB's controls (shown after the bias table): per judge, and per Δ log-perplexity stratum
    controls: Table = field(default_factory=lambda: Table(pd.DataFrame(), "no self-preference controls"))
    strata: Table = field(default_factory=lambda: Table(pd.DataFrame(), "no familiarity strata"))


def build_preference_tables(pref: PreferenceInputs) -> PreferenceTables:
    """Every table and warning of the self-preference section."""
    c = pref.conditions
    controls = _controls(pref)
    return PreferenceTables(
        choice_mass=choice_mass_table(pref.judges, c),
        matrix=matrix_table(pref.matrix, c, controls.get("relations")),
        source_scores=source_score_table(pref.source_scores, c),
        bias=bias_table(pref.bias, c),
        position=position_table(pref.position, c),
        ratings=rating_table(pref.rating_scores, c),
        omnibus=omnibus_table(pref.tests),
        significant_pairs=pairwise_table(pref.tests, {}, significant_only=True),
        all_tests=all_tests_table(pref.tests),
        warnings=preference_warnings(pref),
        controls=controls_table(controls.get("controls", pd.DataFrame()), c),
        strata=strata_table(controls.get("strata", pd.DataFrame()), c),
    )
