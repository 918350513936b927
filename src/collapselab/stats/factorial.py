"""Factorial analysis when the grid varies more than one factor: the aligned rank transform (ART)
ANOVA, and the between-seed spread of aggregates.

Why ART
-------
A grid such as source diversity {single, multi} × source size tier {small, medium, large}
(× seed) asks about main effects *and* interactions ("does mixing sources help more for small
sources?"). Kruskal–Wallis answers only one-factor questions. A plain ANOVA on per-item values is
the wrong tool here: per-item perplexity, self-BLEU and judge scores are heavily skewed, bounded or
ordinal, so a handful of extreme items dominate the sums of squares and the F reference
distribution (normal residuals) does not hold. Ranking the raw response first (Conover & Iman's
rank transform) does not fix it for factorial designs: ranks mix the effects, and tests of
interactions then have inflated type I error when main effects are present. The **aligned rank
transform** (Wobbrock, Findlater, Gergle & Higgins 2011, "The aligned rank transform for
nonparametric factorial analyses using only ANOVA procedures", CHI; the ARTool package) first
strips every effect but one from the response, then ranks, then runs the ordinary full-factorial
ANOVA and keeps only that one effect's F test:

1. cell means ȳ_cell over the full combination of factors; residual e = y − ȳ_cell;
2. the estimated effect of E (a main effect or an interaction) from marginal means, by
   inclusion–exclusion over the subsets S of E (ȳ_∅ = grand mean):

       Ê(y) = Σ_{S ⊆ E} (−1)^{|E| − |S|} ȳ_S(y)
       e.g.  Â_i = ȳ_i − ȳ,   ÂB_ij = ȳ_ij − ȳ_i − ȳ_j + ȳ;

3. aligned response y_E = e + Ê; 4. average ranks of y_E; 5. full-factorial ANOVA of the ranks
   (sum-to-zero coding, type III sums of squares), keeping only E's F test, df and p.

Effect size: partial η² = SS_E / (SS_E + SS_residual) on the ranks (= F·df1 / (F·df1 + df2)).

**Blocks** (``blocks=["seed"]``): additive fixed nuisance factors in the rank ANOVA, not part of the
alignment — the fixed-effects analogue of ARTool's ``Error(seed)``/``(1|seed)`` terms, which also
align by the fixed factors only. A seed-wide shift then goes into the block term instead of the
error term.

Validity checks (ARTool's ``summary(art model)``, :func:`art_checks`): for every effect, (a) the
aligned responses sum to ~0 (the residuals sum to 0 within every cell and each estimated effect
sums to 0 over the data), and (b) an ANOVA of the aligned — not yet ranked — responses shows F ≈ 0
for every effect other than the one aligned for (exactly 0 in balanced designs, near 0 when
unbalanced). A failure means the design or the data are not what the model assumes.

Limitations: every cell of the full factorial must hold data (type III tests are undefined
otherwise — e.g. the study's 8B target exists only in the small tier, so analyse targets
separately). Post-hoc contrasts need ART-C (Elkin et al. 2021), not the main-effect ranks.
Per-item values share their prompts across conditions (a repeated factor); like the study, this
treats them as independent.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

ART_COLUMNS = ["effect", "F", "df1", "df2", "p", "partial_eta_squared", "n", "n_dropped"]


def factorial_effects(factors: Sequence[str]) -> list[tuple[str, ...]]:
    """All main effects and interactions of ``factors``: by order, then in factor order."""
    return [combo for k in range(1, len(factors) + 1) for combo in itertools.combinations(factors, k)]


def effect_name(effect: tuple[str, ...]) -> str:
    """``("a", "b")`` → ``"a:b"`` (the statsmodels / R spelling)."""
    return ":".join(effect)


def _prepare(
    df: pd.DataFrame, response: str, factors: Sequence[str], blocks: Sequence[str],
) -> tuple[pd.DataFrame, int]:
    """Rows with a finite response (NaN rows counted), after checking the design is complete."""
    missing = [c for c in [response, *factors, *blocks] if c not in df.columns]
    if missing:
        raise ValueError(f"columns not in the table: {missing}")
    if not factors:
        raise ValueError("at least one factor is needed")
    if overlap := set(factors) & set(blocks):
        raise ValueError(f"columns both factor and block: {sorted(overlap)}")
    for c in [*factors, *blocks]:
        if df[c].isna().any():
            raise ValueError(f"factor/block column {c!r} has missing values")
    y = pd.to_numeric(df[response], errors="raise").astype(float)
    ok = np.isfinite(y)
    data = df.loc[ok, [*factors, *blocks]].copy()
    data["__y"] = y[ok].to_numpy()
    n_dropped = int((~ok).sum())
    levels = [data[f].unique() for f in factors]
    present = set(map(tuple, data[list(factors)].drop_duplicates().itertuples(index=False)))
    empty = [cell for cell in itertools.product(*levels) if cell not in present]
    if empty:
        shown = ", ".join(str(dict(zip(factors, c, strict=True))) for c in empty[:5])
        raise ValueError(f"{len(empty)} empty cell(s) in the {' × '.join(factors)} design (e.g. {shown}); "
                         "analyse a complete sub-grid instead")
    for f in factors:
        if len(data[f].unique()) < 2:
            raise ValueError(f"factor {f!r} has a single level")
    return data.reset_index(drop=True), n_dropped


def _marginal_means(
    data: pd.DataFrame, y: np.ndarray, factors: Sequence[str],
) -> dict[tuple[str, ...], np.ndarray]:
    """For every subset S of factors (∅ included), the mean of y over the rows sharing the row's S
    levels, broadcast back to the rows."""
    frame = data[list(factors)].assign(__v=y)
    means = {(): np.full(len(y), y.mean())}
    for effect in factorial_effects(factors):
        means[effect] = frame.groupby(list(effect), sort=False)["__v"].transform("mean").to_numpy()
    return means


def align(df: pd.DataFrame, response: str, factors: Sequence[str]) -> pd.DataFrame:
    """Aligned responses, one column per effect (named as :func:`effect_name`), rows as the rows of
    ``df`` with a finite response. See the module docstring for the formula."""
    data, _ = _prepare(df, response, factors, ())
    return _align(data, factors)


def _align(data: pd.DataFrame, factors: Sequence[str]) -> pd.DataFrame:
    y = data["__y"].to_numpy()
    means = _marginal_means(data, y, factors)
    residual = y - means[tuple(factors)]
    out = {}
    for effect in factorial_effects(factors):
        estimate = sum(
            (-1) ** (len(effect) - len(sub)) * means[sub]
            for k in range(len(effect) + 1) for sub in itertools.combinations(effect, k)
        )
        out[effect_name(effect)] = residual + estimate
    return pd.DataFrame(out)


def _design(
    data: pd.DataFrame, factors: Sequence[str], blocks: Sequence[str],
) -> tuple[np.ndarray, dict[str, slice]]:
    """Full-factorial design matrix with sum-to-zero (deviation) coding, plus additive blocks.

    Sum coding makes each effect's columns orthogonal to lower-order terms in balanced data and is
    what type III tests need (with treatment coding, type III "main effects" would be simple effects
    at the reference level)."""
    coded: dict[str, np.ndarray] = {}
    for c in [*factors, *blocks]:
        codes, uniques = pd.factorize(data[c], sort=True)
        last = len(uniques) - 1
        coded[c] = np.stack([(codes == j).astype(float) - (codes == last) for j in range(last)], axis=1)
    columns = [np.ones((len(data), 1))]
    slices: dict[str, slice] = {}
    start = 1
    terms = [*factorial_effects(factors), *[(b,) for b in blocks]]
    for effect in terms:
        block = coded[effect[0]]
        for f in effect[1:]:  # interaction columns: products of the factors' columns
            block = (block[:, :, None] * coded[f][:, None, :]).reshape(len(data), -1)
        columns.append(block)
        slices[effect_name(effect)] = slice(start, start + block.shape[1])
        start += block.shape[1]
    return np.hstack(columns), slices


def _rss(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, int]:
    """Residual sums of squares of the least-squares fits of each column of ``y``, and rank(x)."""
    beta, _, rank, _ = np.linalg.lstsq(x, y, rcond=None)
    resid = y - x @ beta
    return (resid**2).sum(axis=0), int(rank)


def _type3(
    x: np.ndarray, slices: dict[str, slice], y: np.ndarray, only: Sequence[str],
) -> dict[str, dict[str, np.ndarray]]:
    """Type III tests of the effects ``only`` for every column of ``y`` (N × c): SS_E is the rise in
    RSS when E's columns are dropped from the full model."""
    rss_full, rank_full = _rss(x, y)
    df2 = x.shape[0] - rank_full
    out = {}
    for name in only:
        keep = np.ones(x.shape[1], dtype=bool)
        keep[slices[name]] = False
        rss_reduced, rank_reduced = _rss(x[:, keep], y)
        df1 = rank_full - rank_reduced
        ss = rss_reduced - rss_full
        with np.errstate(divide="ignore", invalid="ignore"):
            f = (ss / df1) / (rss_full / df2)
            eta = ss / (ss + rss_full)
        out[name] = {"SS": ss, "df1": df1, "df2": df2, "F": f, "p": stats.f.sf(f, df1, df2),
                     "partial_eta_squared": eta}
    return out


def full_factorial_anova(
    df: pd.DataFrame, response: str, factors: Sequence[str], blocks: Sequence[str] = (),
) -> pd.DataFrame:
    """Ordinary full-factorial ANOVA (type III SS, sum-to-zero coding) of ``response`` — the second
    half of ART, exposed for the validity checks and for comparison with statsmodels'
    ``anova_lm(ols("y ~ C(a, Sum) * C(b, Sum)"), typ=3)``. Columns: effect, SS, F, df1, df2, p,
    partial_eta_squared (blocks included as rows)."""
    data, _ = _prepare(df, response, factors, blocks)
    x, slices = _design(data, factors, blocks)
    tests = _type3(x, slices, data[["__y"]].to_numpy(), list(slices))
    return pd.DataFrame([
        {"effect": name, **{k: (float(v[0]) if np.ndim(v) else v) for k, v in t.items()}}
        for name, t in tests.items()
    ])[["effect", "SS", "F", "df1", "df2", "p", "partial_eta_squared"]]


def art_anova(
    df: pd.DataFrame, response: str, factors: Sequence[str], blocks: Sequence[str] = (),
) -> pd.DataFrame:
    """Aligned rank transform ANOVA (Wobbrock et al. 2011): one row per main effect and interaction
    of ``factors``, each tested on its own aligned-and-ranked response.

    Columns: effect ("a", "a:b", ...), F, df1, df2, p, partial_eta_squared (on the ranks), n (rows
    used), n_dropped (rows with a NaN/inf response, left out). ``blocks`` are additive nuisance
    factors (e.g. seed) in every rank ANOVA; they get no row. Raises ``ValueError`` on an
    incomplete design (an empty cell) or a factor with one level.
    """
    data, n_dropped = _prepare(df, response, factors, blocks)
    aligned = _align(data, factors)
    # average ranks, as ARTool (R's rank with ties.method = "average")
    ranked = aligned.apply(stats.rankdata).to_numpy()
    x, slices = _design(data, factors, blocks)
    rows = []
    for j, name in enumerate(aligned.columns):
        t = _type3(x, slices, ranked[:, [j]], [name])[name]
        rows.append({"effect": name, "F": float(t["F"][0]), "df1": int(t["df1"]), "df2": int(t["df2"]),
                     "p": float(t["p"][0]), "partial_eta_squared": float(t["partial_eta_squared"][0]),
                     "n": len(data), "n_dropped": n_dropped})
    return pd.DataFrame(rows, columns=ART_COLUMNS)


def art_checks(df: pd.DataFrame, response: str, factors: Sequence[str], rtol: float = 1e-8) -> pd.DataFrame:
    """ARTool's validity checks, one row per effect E:

    * ``aligned_sum`` — Σ of E's aligned responses (should be ~0); ``sum_ok`` when
      |Σ| ≤ rtol · Σ|y|;
    * ``max_other_F`` — the largest F among the *other* effects in a full-factorial ANOVA of E's
      aligned (unranked) responses (should be ~0: exactly 0 in balanced designs).
    """
    data, _ = _prepare(df, response, factors, ())
    aligned = _align(data, factors)
    x, slices = _design(data, factors, ())
    tests = _type3(x, slices, aligned.to_numpy(), list(slices))
    scale = np.abs(data["__y"]).sum()
    rows = []
    for j, name in enumerate(aligned.columns):
        total = float(aligned[name].sum())
        others = [float(tests[o]["F"][j]) for o in slices if o != name]
        rows.append({"effect": name, "aligned_sum": total, "sum_ok": abs(total) <= rtol * max(scale, 1.0),
                     "max_other_F": max(others) if others else 0.0})
    return pd.DataFrame(rows)


# Identifying columns of the aggregates table (collapselab.metrics.tables) that define "the same
# quantity": the spread is taken over seeds with all of these fixed.
_SPREAD_KEYS = ["set_kind", "condition", "target", "source", "generation", "metric", "statistic"]


def seed_spread(
    df: pd.DataFrame, value: str = "value", seed: str = "seed", by: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Between-seed spread of an aggregate: for every group of ``by`` (default: the aggregates
    table's identifying columns that are present, seed and set_name excepted), the seeds' values'
    n_seeds, mean, sd (ddof = 1; NaN with one seed), min, max, range = max − min and
    cv = sd / |mean|. NaN values are left out and counted in ``n_nan``.

    Raises ``ValueError`` when a group has two rows for the same seed (``by`` too coarse, e.g. both
    the mean and the median statistic in one group)."""
    keys = [c for c in _SPREAD_KEYS if c in df.columns] if by is None else list(by)
    if seed not in df.columns:
        raise ValueError(f"no {seed!r} column")
    dup = df.duplicated(subset=[*keys, seed], keep=False)
    if dup.any():
        raise ValueError(f"{int(dup.sum())} rows share a seed within a group of {keys}: add columns to `by`")
    grouped = df.groupby(keys, dropna=False, sort=True)[value]
    out = grouped.agg(
        n_seeds="count", n_nan=lambda v: int(v.isna().sum()), mean="mean", sd=lambda v: v.std(ddof=1),
        min="min", max="max",
    ).reset_index()
    out["range"] = out["max"] - out["min"]
    with np.errstate(divide="ignore", invalid="ignore"):
        out["cv"] = out["sd"] / out["mean"].abs()
    return out
