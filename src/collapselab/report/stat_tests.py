"""The tables of the statistical tests every experiment runs (omnibus, pairwise, all test rows) and
the warnings about tests that could not be computed.

Experiments 1, 2 and 3 store their tests in one layout (:mod:`collapselab.stats`' test rows), so
their sections share these builders.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from collapselab.report.format import (
    MISSING,
    Table,
    empty_table,
    fmt_effect,
    fmt_int,
    fmt_num,
    fmt_p,
    fmt_text,
    is_missing,
)
from collapselab.report.labels import metric_direction
from collapselab.stats.endpoints import PAIR_TESTS, unit_of, untested_endpoints

#: significance level of the "significant pairs" table and of the p-value highlights
ALPHA = 0.05

#: how test and effect-size identifiers read in a table (the CSV keeps the identifiers)
TEST_NAMES = {"kruskal_wallis": "Kruskal–Wallis", "stratified_kruskal_wallis": "stratified Kruskal–Wallis",
              "mann_whitney": "Mann–Whitney U", "van_elteren": "van Elteren", "friedman": "Friedman",
              "wilcoxon": "Wilcoxon signed-rank", "epsilon_squared": "ε²", "rank_biserial": "rank-biserial r",
              "kendalls_w": "Kendall's W", "matched_rank_biserial": "matched-pairs rank-biserial r",
              "mixed_f": "mixed model F (run random)", "mixed_t": "mixed model t (run random)",
              "d_runs": "d (run SDs)"}

#: what a claim is about, by the unit of the tests behind it
CLAIMS = {
    "items": ("One training run per condition: the tests use the items (prompts) as the unit, so a difference "
              "is a difference between the trained models at hand; whether it holds for the training recipes "
              "needs several seeds per condition (runs as the unit)."),
    "runs": ("Several seeds per condition: the primary tests use the runs as the unit (a mixed model with the run "
             "as a random effect, or one value per run), so a difference is a claim about the training recipes; "
             "the per-seed and pooled tests use the items as the unit and describe these runs only."),
}



def _readable(value: Any) -> str:
    """A test or effect-size identifier as a table shows it."""
    return TEST_NAMES.get(str(value), fmt_text(value))


# ------------------------------------------------------------------------------------------
# Statistical tests
# ------------------------------------------------------------------------------------------


def _scopes(scope: pd.Series) -> tuple[pd.Series, str]:
    """Shorter scope labels: parts equal to nan (an unset generation) and parts shared by every
    row are dropped; the shared parts are returned once, for the caption."""
    split = scope.fillna("").astype(str).map(
        lambda s: [p for p in s.split(", ") if p and not p.endswith(("=nan", "=None", "=<NA>"))])
    common = set.intersection(*(set(p) for p in split)) if len(split) else set()
    short = split.map(lambda parts: ", ".join(p for p in parts if p not in common))
    shared = ", ".join(p for p in (split.iloc[0] if len(split) else []) if p in common)
    return short, shared


def _with_scope(frame: pd.DataFrame, tests: pd.DataFrame, caption: str) -> tuple[pd.DataFrame, str]:
    """Insert the scope column after the metric (dropped when every row has the same scope)."""
    if "scope" not in tests.columns:
        return frame, caption
    short, shared = _scopes(tests["scope"])
    if short.str.len().gt(0).any():
        frame.insert(1, "scope", short.to_numpy())
    if shared:
        caption += f" All tests: {shared}."
    return frame, caption


def omnibus_table(tests: pd.DataFrame) -> Table:
    """One omnibus test per metric and scope (Friedman, Kruskal–Wallis, stratified Kruskal–Wallis
    or the mixed model's F) with its effect size."""
    if tests.empty:
        return empty_table("no tests were run")
    rows = tests[~tests["test"].isin(PAIR_TESTS)].reset_index(drop=True)
    if rows.empty:
        return empty_table("no omnibus tests")
    frame = pd.DataFrame({
        "metric": rows["metric"].map(fmt_text),
        "test": rows["test"].map(_readable),
        "statistic": rows["statistic"].map(fmt_num),
        "df": rows["df"].map(fmt_int),
        "p": rows["p"].map(fmt_p),
        "effect": rows["effect"].map(fmt_effect),
        "effect size": rows["effect_name"].map(_readable),
        "n": rows["n_a"].map(fmt_int),
        "NaN dropped": rows["n_dropped_a"].map(fmt_int),
    })
    caption = ("Omnibus tests across conditions: Friedman on complete blocks (items, or items × seeds when "
               "pooled) where the conditions answered the same items, with Kendall's W; Kruskal–Wallis H "
               "(stratified Q when pooled over seeds) with ε² where they did not, or with stats.paired: "
               "false; with several seeds also the mixed model's F (run as a random effect). n counts blocks "
               "(paired; NaN dropped: incomplete blocks), values (unpaired) or runs (mixed model, seed-level). "
               f"Bold: p < {ALPHA}.")
    frame, caption = _with_scope(frame, rows, caption)
    highlight = {(i, "p") for i, p in enumerate(rows["p"]) if not is_missing(p) and p < ALPHA}
    return Table(frame, caption, highlight, {"statistic", "df", "p", "effect", "n", "NaN dropped"})


def pairwise_table(tests: pd.DataFrame, metric_directions: Mapping[str, bool | None],
                   significant_only: bool = True) -> Table:
    """Pairwise rows (Wilcoxon, Mann–Whitney, van Elteren, mixed-model t): adjusted p, effect
    size, which group tends larger — and, for directed metrics, which is therefore better — and,
    where the table has them, the difference with its interval, the detectable difference and the
    primary/exploratory label with the family-corrected p."""
    if tests.empty:
        return empty_table("no tests were run")
    rows = tests[tests["test"].isin(PAIR_TESTS)]
    endpoints = "endpoint" in rows.columns
    if significant_only:
        keep = rows["p_adj"].astype(float) < ALPHA
        if endpoints:
            keep |= rows["p_primary"].astype(float) < ALPHA
        rows = rows[keep]
    if endpoints:  # primary endpoints first
        rows = rows.sort_values("endpoint", key=lambda s: s.ne("primary"), kind="stable")
    rows = rows.reset_index(drop=True)
    if rows.empty:
        return empty_table(f"no pair of conditions differs at adjusted p < {ALPHA}" if significant_only
                      else "no pairwise tests")

    def larger(r) -> str:
        if is_missing(r.effect) or r.effect == 0:
            return MISSING
        return fmt_text(r.group_a if r.effect > 0 else r.group_b)

    def better(r) -> str:
        direction = metric_direction(str(r.metric), metric_directions)
        if direction is None or is_missing(r.effect) or r.effect == 0:
            return MISSING
        a_larger = r.effect > 0
        return fmt_text(r.group_a if a_larger == direction else r.group_b)

    frame = pd.DataFrame({
        "metric": rows["metric"].map(fmt_text),
        "a": rows["group_a"].map(fmt_text),
        "b": rows["group_b"].map(fmt_text),
        "test": rows["test"].map(_readable),
        "statistic": rows["statistic"].map(fmt_num),
        "p (adj.)": rows["p_adj"].map(fmt_p),
        "r": rows["effect"].map(fmt_effect),
        "tends larger": [larger(r) for r in rows.itertuples(index=False)],
        "better": [better(r) for r in rows.itertuples(index=False)],
    })
    numeric = {"statistic", "p (adj.)", "r"}
    if "diff" in rows.columns:
        frame["a − b [CI]"] = [difference(r) for r in rows.itertuples(index=False)]
        frame["detectable"] = rows["mde"].map(fmt_num)
        numeric |= {"a − b [CI]", "detectable"}
    if endpoints:
        frame.insert(0, "endpoint", rows["endpoint"].map(fmt_text).to_numpy())
        frame["p (primary)"] = rows["p_primary"].map(fmt_p)
        numeric.add("p (primary)")
    if frame["test"].nunique() == 1:  # say it once in the caption instead
        frame = frame.drop(columns="test")
    caption = ("Pairwise tests: Wilcoxon signed-rank on the items both conditions answered (paired; r = "
               "matched-pairs rank-biserial, zero differences dropped), or Mann–Whitney U (van Elteren when "
               "pooled over seeds; r = P(a > b) − P(a < b)) for sets that do not share items or with "
               "stats.paired: false; with several seeds also a mixed model with the run as a random effect "
               "(r = d in run SDs). p (adj.) corrects within each metric's pairs. a − b: difference of the mean "
               "per-item values with its interval (paired bootstrap: items resampled together; mixed model: "
               "± t·SE); detectable: the difference these data detect with 80% power at α = 0.05. ")
    if endpoints:
        caption += ("endpoint: primary rows (stats.primary) form one family across experiments, metrics and pairs, "
                    "p (primary) is corrected across all of them (stats.correction); every other row is "
                    "exploratory. ")
    caption += claim_sentence(tests) + " "
    caption += (f"Only pairs with p < {ALPHA} after correction." if significant_only else "")
    frame, caption = _with_scope(frame, rows, caption)
    return Table(frame, caption.strip(), set(), numeric)


def claim_sentence(tests: pd.DataFrame) -> str:
    """Whether the tests' claims are about two trained models (items as the unit) or about two
    training recipes (runs as the unit), in plain words."""
    return CLAIMS[unit_of(tests)]


def primary_table(tests: Mapping[str, pd.DataFrame], primary: Mapping[str, Any], correction: str) -> Table:
    """Every primary-endpoint row of every experiment (significant or not), with the difference
    and its interval, the detectable difference, the raw and the family-corrected p. ``tests``:
    experiment name → its test table marked by :func:`collapselab.stats.endpoints.mark_endpoints`."""
    frames = [frame[frame["endpoint"] == "primary"].assign(experiment=name) for name, frame in tests.items()
              if not frame.empty and "endpoint" in frame.columns]
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    missing = untested_endpoints(tests, primary)
    declared = "; ".join(f"{k}: {', '.join(v) or 'none'}" for k, v in primary.items() if k in tests)
    if rows.empty:
        note = f" Declared (stats.primary): {declared}." if declared else ""
        return empty_table("No primary-endpoint test in this run." + note)
    frame = pd.DataFrame({
        "experiment": rows["experiment"].map(fmt_text),
        "metric": rows["metric"].map(fmt_text),
        "a": rows["group_a"].map(fmt_text),
        "b": rows["group_b"].map(fmt_text),
        "test": rows["test"].map(_readable),
        "a − b [CI]": [difference(r) for r in rows.itertuples(index=False)],
        "detectable": rows["mde"].map(fmt_num) if "mde" in rows.columns else MISSING,
        "effect": rows["effect"].map(fmt_effect),
        "p": rows["p"].map(fmt_p),
        "p (primary)": rows["p_primary"].map(fmt_p),
        "unit": rows["unit"].map(fmt_text) if "unit" in rows.columns else MISSING,
    })
    frame, caption = _with_scope(frame, rows, "")
    name = {"holm": "Holm", "bonferroni": "Bonferroni"}.get(correction, correction)
    caption = (f"Primary endpoints ({declared}). Their {len(rows)} pairwise tests form one family, corrected "
               f"together with {name} across endpoints, pairs and experiments: p (primary). Every other test "
               "in this report is exploratory: corrected only within its metric's pairs, a description rather "
               "than a confirmed finding. a − b: difference of the mean per-item values (the items both "
               "conditions answered when paired; the conditions' effects in the mixed model) with its interval; "
               "detectable: the difference these data detect with 80% power at α = 0.05. "
               + claim_sentence(rows) + caption
               + (f" No test for: {', '.join(missing)} (a corpus-level metric has no per-item values; a metric "
                  "the run did not measure has none)." if missing else ""))
    highlight = {(i, "p (primary)") for i, p in enumerate(rows["p_primary"]) if not is_missing(p) and p < ALPHA}
    return Table(frame, caption.strip(), highlight, {"a − b [CI]", "detectable", "effect", "p", "p (primary)"})


def difference(r: Any) -> str:
    """``0.12 [0.05, 0.19]`` for a pair row's mean difference and its interval."""
    value = getattr(r, "diff", None)
    if is_missing(value):
        return MISSING
    low, high = getattr(r, "diff_low", None), getattr(r, "diff_high", None)
    interval = "" if is_missing(low) or is_missing(high) else f" [{fmt_num(low)}, {fmt_num(high)}]"
    return f"{fmt_num(value)}{interval}"


def all_tests_table(tests: pd.DataFrame) -> Table:
    """Every test row as computed, notes included (for the collapsible block and the CSV)."""
    if tests.empty:
        return empty_table("no tests were run")
    rows = tests.reset_index(drop=True)
    frame = pd.DataFrame({
        "metric": rows["metric"].map(fmt_text),
        "test": rows["test"].map(_readable),
        "a": rows["group_a"].map(fmt_text),
        "b": rows["group_b"].map(fmt_text),
        "statistic": rows["statistic"].map(fmt_num),
        "df": rows["df"].map(fmt_int),
        "p": rows["p"].map(fmt_p),
        "p (adj.)": rows["p_adj"].map(fmt_p),
        "effect": rows["effect"].map(fmt_effect),
        "effect size": rows["effect_name"].map(_readable),
        "n (a / b)": list(map(_pair, rows["n_a"], rows["n_b"])),
        "NaN dropped (a / b)": list(map(_pair, rows["n_dropped_a"], rows["n_dropped_b"])),
        "note": rows["note"].map(lambda v: "" if is_missing(v) else str(v)),
    })
    frame, caption = _with_scope(frame, rows, "All test rows, including non-significant ones. For the "
                                 "omnibus tests n and dropped count all conditions together.")
    return Table(frame, caption, set(),
                 {"statistic", "df", "p", "p (adj.)", "effect", "n (a / b)", "NaN dropped (a / b)"},
                 wide={"note"})


def _pair(a: Any, b: Any) -> str:
    """Two counts as "a / b", or one when the second is missing (the omnibus tests' total)."""
    return fmt_int(a) if is_missing(b) else f"{fmt_int(a)} / {fmt_int(b)}"


# ------------------------------------------------------------------------------------------
# Warnings
# ------------------------------------------------------------------------------------------


def omnibus_notes(tests: pd.DataFrame, prefix: str = "") -> list[str]:
    """Omnibus tests that could not be computed (and why), and the undefined per-item values the
    tests left out — one line each, ``prefix`` naming the experiment."""
    if tests.empty:
        return []
    out = []
    omnibus = tests[~tests["test"].isin(PAIR_TESTS)]
    scope = omnibus["scope"] if "scope" in omnibus.columns else pd.Series("", index=omnibus.index)
    short, _ = _scopes(scope)
    dropped = []
    for r, where in zip(omnibus.itertuples(index=False), short, strict=True):
        name = f"{r.metric} ({where})" if where else str(r.metric)
        if is_missing(r.p):
            out.append(f"{prefix}{_readable(r.test)} for {name} not computed: {r.note}")
        if not is_missing(r.n_dropped_a) and int(r.n_dropped_a):
            dropped.append(f"{name} ({int(r.n_dropped_a)})")
    if dropped:
        out.append(f"{prefix}Undefined (NaN) per-item values left out of the tests: " + ", ".join(dropped))
    return out
