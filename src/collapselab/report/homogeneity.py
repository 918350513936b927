"""The report's "How different are the sources?" section: the ``homogeneity`` stage's tables
(:mod:`collapselab.loop.homogeneity`) — per source pair, per tier and per multi-source condition —
and a heatmap of the pairwise paired similarity.

A multi-source condition protects against collapse only as far as its sources differ; the
condition table is the number a reader needs next to every multi-source result, and
:func:`homogeneity_by_condition` hands it to the other sections. Read-only: nothing is recomputed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from collapselab.report.figures import new_figure, plain, styled
from collapselab.report.format import Table, empty_table, fmt_ci, fmt_int, fmt_num, fmt_text, is_missing
from collapselab.report.labels import condition_text
from collapselab.report.sections import ReportSection, SectionContext, SectionFigure, register_section

KIND = "homogeneity"
#: the human training references' name in the stage's tables (a yardstick, not a source)
HUMAN = "human"


def _folder(ctx: SectionContext) -> Path | None:
    """The finished homogeneity stage's folder (None when the run has none)."""
    done = ctx.done(KIND)
    return done[0][1] if done else None


def read_tables(folder: Path) -> dict[str, Any]:
    """The stage's ``pairs``, ``tiers``, ``conditions`` tables and its ``summary``."""
    tables: dict[str, Any] = {name: pd.read_parquet(folder / f"{name}.parquet")
                              for name in ("pairs", "tiers", "conditions")}
    tables["summary"] = json.loads((folder / "summary.json").read_text())
    return tables


def homogeneity_by_condition(ctx: SectionContext) -> dict[str, float]:
    """Multi-source condition label → the mean paired embedding similarity of its sources' pairs
    (conditions without a measured pair are left out; empty when the run has no homogeneity stage)."""
    folder = _folder(ctx)
    if folder is None:
        return {}
    table = pd.read_parquet(folder / "conditions.parquet")
    return {str(c): float(s) for c, s in zip(table["condition"], table["similarity"], strict=True)
            if not is_missing(s)}


def _name(source: Any) -> str:
    return "human (reference)" if source == HUMAN else fmt_text(source)


def _ci(row: Any, metric: str) -> str:
    return fmt_ci(row[metric], row[f"{metric}_low"], row[f"{metric}_high"])


def pair_table(pairs: pd.DataFrame, summary: dict[str, Any]) -> Table:
    """One row per source pair (the pairs with the human references last)."""
    if pairs.empty:
        return empty_table("no source pairs were measured")
    n, level = summary.get("ngram", 3), f"{summary.get('confidence', 0.95):.0%}"
    ordered = pairs.sort_values("reference", kind="stable")
    body = [{
        "source A": _name(r["source_a"]), "source B": _name(r["source_b"]),
        "shared prompts": fmt_int(r["n_shared"]),
        "paired similarity": _ci(r, "similarity"),
        "unpaired baseline": fmt_num(r["baseline"]),
        "paired excess": _ci(r, "excess"),
        f"shared {n}-gram rate": _ci(r, "ngram_rate"),
        "cluster overlap": _ci(r, "cluster_overlap"),
    } for _, r in ordered.iterrows()]
    caption = (f"On the train prompts both sources answered. Paired similarity: mean cosine of the two answers' "
               f"embeddings to the same prompt; unpaired baseline: mean cosine between answers to different "
               f"prompts; excess = paired − baseline. Shared {n}-gram rate: mean Jaccard of the two answers' word "
               f"{n}-gram sets. Cluster overlap: Σ_c min(share of A, share of B) over {summary.get('clusters')} "
               f"k-means clusters of all sources' answers (1 = the same clusters in the same shares; high whenever "
               f"both follow the shared prompts' topics — the paired measures tell answering alike from answering "
               f"the same questions). "
               f"Brackets: {level} percentile-bootstrap intervals over prompts.")
    numeric = set(body[0]) - {"source A", "source B"}
    return Table(pd.DataFrame(body), caption, set(), numeric)


def _mean_columns(row: Any, n: int) -> dict[str, str]:
    return {"paired similarity": fmt_num(row["similarity"]), "unpaired baseline": fmt_num(row["baseline"]),
            "paired excess": fmt_num(row["excess"]), f"shared {n}-gram rate": fmt_num(row["ngram_rate"]),
            "cluster overlap": fmt_num(row["cluster_overlap"])}


def tier_table(tiers: pd.DataFrame, summary: dict[str, Any]) -> Table:
    """Per tier (and over all sources): the mean of each measure over the tier's source pairs."""
    if tiers.empty:
        return empty_table("no tiers")
    n = summary.get("ngram", 3)
    body = [{"tier": fmt_text(r["tier"]), "sources": fmt_text(r["sources"]), "pairs": fmt_int(r["n_pairs"]),
             **_mean_columns(r, n)} for _, r in tiers.iterrows()]
    return Table(pd.DataFrame(body), "Means over the source pairs within each tier, pairs weighted equally "
                 "(no interval: pairs sharing a source are not independent). A tier with one source has no pair.",
                 set(), set(body[0]) - {"tier", "sources"})


def condition_table(conditions: pd.DataFrame, summary: dict[str, Any]) -> Table:
    """Per multi-source condition: the means over its sources' pairs, and the mix-weighted similarity."""
    if conditions.empty:
        return empty_table("no multi-source conditions")
    n = summary.get("ngram", 3)
    body = [{"condition": condition_text(r["condition"]), "sources": fmt_text(r["sources"]),
             "pairs": fmt_int(r["n_pairs"]) + (f" ({int(r['missing_pairs'])} unmeasured)"
                                               if r["missing_pairs"] else ""),
             **_mean_columns(r, n), "mix-weighted similarity": fmt_num(r["similarity_weighted"]),
             "note": fmt_text(r["note"]) if r["note"] else ""} for _, r in conditions.iterrows()]
    return Table(pd.DataFrame(body), "Means over each condition's source pairs, pairs weighted equally; "
                 "mix-weighted: Σ w_i w_j s_ij / Σ w_i w_j with the condition's source weights (the expected "
                 "similarity of two of its training answers from different sources). The closer to 1, the more "
                 "the condition is one source in disguise.", set(),
                 set(body[0]) - {"condition", "sources", "note"}, {"note"})


def similarity_matrix(pairs: pd.DataFrame) -> pd.DataFrame:
    """Source × source paired similarity (symmetric; the diagonal and unmeasured pairs are NaN),
    the synthetic sources first in table order, the human references last."""
    names = list(dict.fromkeys([*pairs["source_a"], *pairs["source_b"]]))
    names = [s for s in names if s != HUMAN] + [s for s in names if s == HUMAN]
    matrix = pd.DataFrame(np.nan, index=names, columns=names)
    for a, b, s in zip(pairs["source_a"], pairs["source_b"], pairs["similarity"], strict=True):
        matrix.loc[a, b] = matrix.loc[b, a] = s
    return matrix


@styled
def similarity_heatmap(matrix: pd.DataFrame):
    """The pairwise paired similarity as a heatmap, each cell annotated (None for no pair)."""
    if matrix.empty or not np.isfinite(matrix.to_numpy(dtype=float)).any():
        return None
    values = matrix.to_numpy(dtype=float)
    size = 1.2 + 0.55 * len(matrix)
    fig = new_figure(size + 1.0, size)
    ax = fig.subplots()
    finite = values[np.isfinite(values)]
    image = ax.imshow(np.ma.masked_invalid(values), cmap="viridis", vmin=min(0.0, float(finite.min())), vmax=1.0)
    labels = [plain(_name(s)) for s in matrix.index]
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    for i in range(len(values)):
        for j in range(len(values)):
            if np.isfinite(values[i, j]):
                ax.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="black" if values[i, j] > 0.6 else "white")
    fig.colorbar(image, ax=ax, label="paired similarity (mean cosine)")
    return fig


def build(ctx: SectionContext) -> ReportSection | None:
    """The section, or None when the run has no finished homogeneity stage."""
    folder = _folder(ctx)
    if folder is None:
        return None
    t = read_tables(folder)
    pairs, summary = t["pairs"], t["summary"]
    warnings = []
    if summary.get("clusters", 0) < summary.get("clusters_requested", 0):
        warnings.append(f"Source homogeneity: {summary['clusters']} clusters instead of "
                        f"{summary['clusters_requested']} (too few distinct answers).")
    few = pairs[pairs["n_shared"] < 2] if not pairs.empty else pairs
    for _, r in few.iterrows():
        warnings.append(f"Source homogeneity: {_name(r['source_a'])} and {_name(r['source_b'])} share "
                        f"{int(r['n_shared'])} prompt(s): too few to compare.")
    intro = ("Drawing training data from several sources protects against collapse only as far as the sources "
             "answer differently (many models answer alike: Jiang et al. 2025, \"Artificial Hivemind\"). Each "
             "source pair is compared on the train prompts both answered. A paired excess near 0 means two "
             "answers to the same prompt are no more alike than any two answers; a paired similarity near 1 "
             "means the sources say the same thing.")
    matrix = similarity_matrix(pairs) if not pairs.empty else pd.DataFrame()
    figures = [SectionFigure("homogeneity_heatmap", "Paired similarity between sources",
                             "Mean cosine between two sources' answers to the same train prompt; the human "
                             "training references, when shown, are the yardstick.",
                             lambda: similarity_heatmap(matrix))]
    # every multi-source result names how alike its sources answer (the claim rests on it)
    notes = {label: f"sources' paired similarity {value:.2f}" for label, value in homogeneity_by_condition(ctx).items()}
    return ReportSection(KIND, "How different are the sources?", intro,
                         [pair_table(pairs, summary), tier_table(t["tiers"], summary),
                          condition_table(t["conditions"], summary)], figures, warnings, condition_notes=notes)


register_section(KIND, "How different are the sources?", build)
