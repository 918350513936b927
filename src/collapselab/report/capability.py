"""The report's "Capability" section: lm-evaluation-harness scores of the vanilla target and every
fine-tuned model, and each condition's difference from the vanilla model on the same items (the
``capability_summary`` stage's tables, :mod:`collapselab.capability.compare`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd

from collapselab.report.format import MISSING, Table, arrow, fmt_ci, fmt_int, fmt_num, fmt_p, fmt_text, is_missing
from collapselab.stats.power import ALPHA

INTRO = ("Each model — the vanilla target and every fine-tuned adapter — ran the configured "
         "lm-evaluation-harness tasks (no chat template: the same plain prompts for every model). "
         "Scores are lm-eval's own, ± its standard error over the items. A difference from the vanilla "
         "model is taken on the items both answered: condition minus vanilla, with a paired bootstrap "
         "interval over items, McNemar's exact test for a 0/1 metric with one seed and the Wilcoxon "
         "signed-rank test of the per-item differences otherwise (each item averaged over the seeds); "
         "p (adj.) corrects each target's comparisons as one family.")

TESTS = {"mcnemar_exact": "McNemar (exact)", "wilcoxon": "Wilcoxon signed-rank", "mann_whitney": "Mann–Whitney U"}


@dataclass
class CapabilityTables:
    """The section's intro, its two tables and its warnings."""

    intro: str
    scores: Table
    differences: Table
    warnings: list[str] = field(default_factory=list)


def _metric(row: pd.Series) -> str:
    name = str(row["metric"]) + ("" if row["filter"] in ("none", None) else f" ({row['filter']})")
    mark = arrow(None if is_missing(row["higher_is_better"]) else bool(row["higher_is_better"]))
    return f"{name} {mark}" if mark else name


def _order(frame: pd.DataFrame, conditions: Sequence[str]) -> pd.DataFrame:
    """Rows in the config's condition order (vanilla first), then generation, seed, task."""
    order = {c: i for i, c in enumerate(["vanilla", *(c for c in conditions if c != "vanilla")])}
    rank = frame["condition"].map(lambda c: order.get(c, len(order)))
    keys = [k for k in ("generation", "seed", "task", "metric") if k in frame.columns]
    return frame.assign(_rank=rank).sort_values(["target", "_rank", *keys], kind="stable").drop(columns="_rank")


def scores_table(scores: pd.DataFrame, conditions: Sequence[str] = ()) -> Table:
    """One row per model run × configured task × metric: lm-eval's score ± its standard error."""
    if scores.empty:
        return Table(pd.DataFrame(), "no capability scores")
    rows = _order(scores[scores["top_level"].astype(bool)], conditions)
    generations = rows["generation"].astype(int).gt(0).any()
    body = {"target": rows["target"].map(fmt_text), "condition": rows["condition"].map(fmt_text),
            "seed": [MISSING if c == "vanilla" else fmt_text(s) for c, s in zip(rows["condition"], rows["seed"],
                                                                               strict=True)]}
    if generations:
        body["generation"] = rows["generation"].map(fmt_int)
    body.update({"task": rows["task"].map(fmt_text), "metric": rows.apply(_metric, axis=1),
                 "score": rows["value"].map(fmt_num),
                 "± stderr": rows["stderr"].map(fmt_num), "items": rows["n"].map(fmt_int)})
    caption = ("lm-eval's score of every model on every configured task (a group: lm-eval's aggregate of its "
               "tasks), ± its standard error over the items; the vanilla target is evaluated once.")
    return Table(pd.DataFrame(body).reset_index(drop=True), caption, set(), {"score", "± stderr", "items"})


def differences_table(diffs: pd.DataFrame, conditions: Sequence[str] = ()) -> Table:
    """One row per condition × task × metric: its difference from the vanilla model [interval],
    the test and its p-values."""
    if diffs.empty:
        return Table(pd.DataFrame(), "no fine-tuned model to compare with the vanilla target")
    rows = _order(diffs, conditions).reset_index(drop=True)
    confidence = float(rows["confidence"].dropna().iloc[0]) if rows["confidence"].notna().any() else 0.95
    body = {"target": rows["target"].map(fmt_text), "condition": rows["condition"].map(fmt_text)}
    if rows["generation"].astype(int).gt(0).any():
        body["generation"] = rows["generation"].map(fmt_int)
    discordant = [f"{int(b)} / {int(c)}" if not (is_missing(b) or is_missing(c)) else MISSING
                  for b, c in zip(rows["only_condition"], rows["only_vanilla"], strict=True)]
    body.update({
        "task": rows["task"].map(fmt_text), "metric": rows.apply(_metric, axis=1),
        "items": rows["n_items"].map(fmt_int), "seeds": rows["n_seeds"].map(fmt_int),
        "vanilla": rows["vanilla"].map(fmt_num), "condition score": rows["value"].map(fmt_num),
        f"difference [{confidence:.0%} CI]": [fmt_ci(d, lo, hi) for d, lo, hi in
                                              zip(rows["difference"], rows["ci_low"], rows["ci_high"], strict=True)],
        "test": rows["test"].map(lambda t: TESTS.get(t, MISSING) if isinstance(t, str) else MISSING),
        "only cond. / only vanilla right": discordant,
        "p": rows["p"].map(fmt_p), "p (adj.)": rows["p_adj"].map(fmt_p),
        "note": rows["note"].map(lambda n: n if isinstance(n, str) and n else "")})
    frame = pd.DataFrame(body)
    highlight = {(i, "p (adj.)") for i, p in enumerate(rows["p_adj"]) if not is_missing(p) and float(p) < ALPHA}
    caption = ("Condition minus vanilla on the items both answered (seeds pooled: each item's value is its mean "
               "over the seeds). For a 0/1 metric the discordant items are counted: those only the condition's "
               f"model got right / those only the vanilla model got right. Highlighted: p (adj.) < {ALPHA:g}.")
    numeric = {"items", "seeds", "vanilla", "condition score", f"difference [{confidence:.0%} CI]", "p", "p (adj.)"}
    return Table(frame, caption, highlight, numeric, {"note"})


def capability_warnings(info: dict) -> list[str]:
    """What to read before the numbers: models evaluated with different lm-eval releases."""
    versions = [v for v in info.get("lm_eval_versions", []) if v and v != "None"]
    if len(versions) > 1:
        return [f"Capability: the models were evaluated with different lm-eval releases ({', '.join(versions)}); "
                "their scores may not be comparable."]
    return []


def build_capability_tables(capability) -> CapabilityTables:  # type: ignore[no-untyped-def]
    """The section's tables from the report's :class:`~collapselab.report.inputs.CapabilityInputs`."""
    return CapabilityTables(INTRO, scores_table(capability.scores, capability.conditions),
                            differences_table(capability.differences, capability.conditions),
                            capability_warnings(capability.info))
