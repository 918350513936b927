"""Statistics over the evaluation tables: rank tests across conditions (the study's Kruskal–Wallis
and pairwise Mann–Whitney U with Bonferroni, plus seed-stratified versions), bootstrap confidence
intervals, aligned-rank-transform factorial ANOVA, and metric concordance.

``compare_conditions`` (:mod:`~collapselab.stats.summary`) is the entry point for the report.
"""

from collapselab.stats.bootstrap import BootstrapResult, bootstrap_ci, bootstrap_ci_func
from collapselab.stats.concordance import Concordance, kendalls_w, metric_concordance, rank_conditions
from collapselab.stats.factorial import art_anova, art_checks, full_factorial_anova, seed_spread
from collapselab.stats.hypothesis import (
    adjust_pvalues,
    kruskal_wallis,
    pairwise_mannwhitney,
    pairwise_van_elteren,
    stratified_kruskal_wallis,
)
from collapselab.stats.summary import compare_conditions

__all__ = [
    "BootstrapResult", "Concordance", "adjust_pvalues", "art_anova", "art_checks", "bootstrap_ci",
    "bootstrap_ci_func", "compare_conditions", "full_factorial_anova", "kendalls_w", "kruskal_wallis",
    "metric_concordance", "pairwise_mannwhitney", "pairwise_van_elteren", "rank_conditions", "seed_spread",
    "stratified_kruskal_wallis",
]
