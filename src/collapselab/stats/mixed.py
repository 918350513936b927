"""Runs as the unit: a linear mixed model with the run as a random effect (audit c4).

With one training run per condition the tests compare *two trained models*: items are the unit,
and a significant difference says these two fine-tuned models differ on these prompts. A claim
about *training recipes* ("multi-source data collapses less than single-source data") needs
several runs (seeds) per condition and a test whose error term is the run-to-run variation. With
several seeds :func:`collapselab.stats.summary.compare_conditions` adds this family next to the
seed-level rank tests (which use one summary per run and are exact but weak: 3 vs 3 runs can reach
at best p = 0.1).

Model (one metric × scope), fitted by REML with ``statsmodels`` ``MixedLM``::

    y_ri − ȳ_·i = β_c(r) + u_r + ε_ri,      u_r ~ N(0, σ_u²),  ε_ri ~ N(0, σ²)

r = a run (condition × seed), i = an item (test prompt), c(r) the run's condition. The per-item
mean ȳ_·i over all runs is subtracted first: the items are **fixed** (every condition answered the
same prompts; the claim is about this prompt set, as in the study), so centring removes their
effects exactly in a complete design and approximately when values are missing. Items are not a
second, crossed random effect: statsmodels fits crossed effects only as variance components of a
single group, with a dense n × (items + runs) design (30,000 × 1,500 for the study's test set),
and the recipe question does not need them.

Tests:

* **omnibus** (``mixed_f``): Wald F for "all conditions equal", F = β̂_Lᵀ V̂_L⁻¹ β̂_L / (k − 1) on
  (k − 1, R − k) degrees of freedom (R runs, k conditions);
* **pairs** (``mixed_t``): the contrast Δ̂ = β̂_a − β̂_b with SE = √(cᵀ V̂ c), t = Δ̂ / SE on
  R − k degrees of freedom, two-sided p, then Holm/Bonferroni across the pairs. The interval of
  the difference is Δ̂ ± t_{1−α/2, R−k}·SE; the minimum detectable difference uses the same SE and
  df (:func:`collapselab.stats.power.mde_from_se`). Effect size: d = Δ̂ / SD(run mean), SD(run
  mean)² = σ̂_u² + σ̂²/m̄ (m̄ = values per run), the difference in units of run-to-run spread.

Why R − k degrees of freedom: the condition effect is estimated from run means, and in a balanced
design the REML fit reproduces the one-way ANOVA of the run means exactly (Fisher's LSD on
k(S − 1) df; ``tests/unit/stats/test_mixed.py`` checks this). Wald z-tests with many items would
treat the thousands of items as replicates of the recipe — the pseudo-replication this model is
there to avoid. (SAS calls this the between-within df; Kenward–Roger gives the same in the
balanced case.)
"""

from __future__ import annotations

import itertools
import warnings
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from collapselab.stats.hypothesis import Correction, adjust_pvalues
from collapselab.stats.power import ALPHA, POWER, mde_from_se


def _row(test: str, **values: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"test": test, "group_a": None, "group_b": None, "statistic": np.nan, "df": np.nan,
                            "p": np.nan, "p_adj": np.nan, "effect": np.nan, "effect_name": "", "n_a": np.nan,
                            "n_b": np.nan, "n_dropped_a": np.nan, "n_dropped_b": np.nan, "note": "",
                            "paired": False, "unit": "runs", "diff": np.nan, "diff_low": np.nan,
                            "diff_high": np.nan, "mde": np.nan}
    base.update(values)
    return base


def mixed_model_family(part: pd.DataFrame, by: str, run: str, value: str, item: str | None,
                       correction: Correction, *, confidence: float = 0.95, alpha: float = ALPHA,
                       power: float = POWER) -> list[dict[str, Any]]:
    """The omnibus F and one t row per pair of ``by`` groups, runs = (``by``, ``run``) pairs as
    the random intercept (module docstring). ``item``: the column of the fixed items (None: no
    centring). Rows use :data:`collapselab.stats.summary.RESULT_COLUMNS`' layout; a model that
    cannot be fitted gives rows with NaN and the reason in ``note``."""
    groups = list(pd.unique(part[by]))
    pairs = list(itertools.combinations(groups, 2))
    ok = np.isfinite(part[value].to_numpy(dtype=float))
    finite = part[ok]
    dropped = pd.Series(~ok, index=part.index).groupby(part[by], sort=False).sum().reindex(groups).astype(int)
    runs = finite.groupby(by, sort=False)[run].nunique().reindex(groups).fillna(0).astype(int)
    k, n_runs = len(groups), int(runs.sum())
    df = n_runs - k

    def empty(note: str) -> list[dict[str, Any]]:
        rows = [_row("mixed_f", df=np.nan, n_a=n_runs, n_dropped_a=int(dropped.sum()), note=note)]
        rows += [_row("mixed_t", group_a=a, group_b=b, effect_name="d_runs", n_a=int(runs[a]), n_b=int(runs[b]),
                      n_dropped_a=int(dropped[a]), n_dropped_b=int(dropped[b]), note=note) for a, b in pairs]
        return rows

    if k < 2:
        return empty(f"needs at least 2 conditions ({k})")
    if (runs == 0).any():
        return empty(f"no values for {', '.join(str(g) for g in runs.index[runs == 0])}")
    if df < 1:
        return empty(f"{n_runs} runs of {k} conditions leave no degrees of freedom for the run variance; "
                     "add seeds")

    y = finite[value].to_numpy(dtype=float)
    if item is not None and item in finite.columns:
        y = y - finite.groupby(item, sort=False)[value].transform("mean").to_numpy(dtype=float)
    codes = pd.Categorical(finite[by], categories=groups).codes
    x = np.column_stack([np.ones(len(y)), *(codes == j for j in range(1, k))]).astype(float)
    run_ids = pd.Series(list(zip(finite[by], finite[run], strict=True))).astype(str).to_numpy()
    if np.ptp(y) == 0:
        return empty("every value equal after centring per item: no test")
    try:
        fit, fit_notes = _fit(y, x, run_ids)
    except (np.linalg.LinAlgError, ValueError) as exc:
        return empty(f"mixed model not fitted: {exc}")
    beta = np.asarray(fit.fe_params, dtype=float)
    cov = np.asarray(fit.cov_params(), dtype=float)[:k, :k]
    sigma2, tau2 = float(fit.scale), float(np.asarray(fit.cov_re).ravel()[0])
    sd_run = float(np.sqrt(tau2 + sigma2 / (len(y) / n_runs)))
    note = (f"{n_runs} runs ({', '.join(f'{g}: {n}' for g, n in runs.items())}); REML σ_run = {np.sqrt(tau2):.4g}, "
            f"σ_item = {np.sqrt(sigma2):.4g}; df = runs − conditions = {df}"
            + ("; values centred per item (items fixed)" if item is not None and item in finite.columns else "")
            + "".join(f"; {n}" for n in fit_notes))

    contrast = np.zeros((k - 1, k))
    contrast[:, 1:] = np.eye(k - 1)
    b_l, v_l = contrast @ beta, contrast @ cov @ contrast.T
    f_stat = float(b_l @ np.linalg.solve(v_l, b_l) / (k - 1))
    rows = [_row("mixed_f", statistic=f_stat, df=float(k - 1), p=float(stats.f.sf(f_stat, k - 1, df)),
                 p_adj=float(stats.f.sf(f_stat, k - 1, df)), n_a=n_runs, n_dropped_a=int(dropped.sum()),
                 note=f"F on ({k - 1}, {df}) df; " + note)]
    t_crit = stats.t.ppf(0.5 + confidence / 2, df)
    for a, b in pairs:
        c = np.zeros(k)
        ia, ib = groups.index(a), groups.index(b)
        c[ia] += 1.0 if ia else 0.0
        c[ib] -= 1.0 if ib else 0.0
        est, se = float(c @ beta), float(np.sqrt(c @ cov @ c))
        t = est / se if se > 0 else np.nan
        rows.append(_row("mixed_t", group_a=a, group_b=b, statistic=t, df=float(df),
                         p=float(2 * stats.t.sf(abs(t), df)) if np.isfinite(t) else np.nan,
                         effect=est / sd_run if sd_run > 0 else np.nan, effect_name="d_runs",
                         n_a=int(runs[a]), n_b=int(runs[b]), n_dropped_a=int(dropped[a]),
                         n_dropped_b=int(dropped[b]), diff=est, diff_low=est - t_crit * se,
                         diff_high=est + t_crit * se, mde=mde_from_se(se, df, alpha, power),
                         note=f"t on {df} df, interval ± t·SE; " + note))
    p_adj = adjust_pvalues(np.array([r["p"] for r in rows[1:]], dtype=float), correction)
    for r, q in zip(rows[1:], p_adj, strict=True):
        r["p_adj"] = float(q)
    return rows


def _fit(y: np.ndarray, x: np.ndarray, groups: np.ndarray):  # type: ignore[no-untyped-def]
    """REML fit of a random intercept per group; the warnings statsmodels raised, as notes."""
    from statsmodels.regression.mixed_linear_model import MixedLM

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = MixedLM(y, x, groups=groups).fit(reml=True, method=["bfgs", "lbfgs", "cg"], gtol=1e-10)
    notes = sorted({str(w.message).split("\n")[0] for w in caught
                    if "Convergence" in w.category.__name__ or "boundary" in str(w.message).lower()
                    or "converge" in str(w.message).lower()})
    if not np.all(np.isfinite(np.asarray(fit.fe_params, dtype=float))):
        raise ValueError("the fit gave non-finite estimates")
    return fit, notes
