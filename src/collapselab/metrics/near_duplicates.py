"""Near-duplicates family: how close each text of a set lies to its nearest other text.

* ``nearest_neighbor_distance`` — per text, the cosine distance to its nearest other text.

Why a separate family from the semantic one: Vendi and the mean pairwise distance are global
averages over all n² pairs, so a handful of near-copies (n of them among n² pairs) barely moves
them: a set in which every text appears twice has exactly the Vendi score of the set without the
copies and a mean pairwise distance lower only by the factor (2n − 2)/(2n − 1). The nearest-neighbour distance is a
*local* measure: a twin sets its text's value to 0, whatever the rest of the set looks like. Pooled
into the semantic family's vote (one vote per family in the concordance), it would be outvoted by
exactly the global measures it is there to complement.
"""

from __future__ import annotations

import numpy as np

from collapselab.errors import ConfigError
from collapselab.metrics.base import MetricResult, TextSet, param_name
from collapselab.metrics.embeddings import unit_embeddings
from collapselab.metrics.text import summarize

#: cosine distance at or below which a text's nearest neighbour counts as a near-duplicate: the
#: complement of distinct@k's similarity threshold (0.9), so both families agree on "the same answer"
#: (all-MiniLM-L6-v2: paraphrases of one answer ≈ 0.03, two different answers on one theme ≈ 0.35–0.4)
DEFAULT_THRESHOLD = 0.1

#: rows of the similarity matrix computed at once: bounds memory at BLOCK × n floats
BLOCK = 1024


def nearest_neighbor_distances(e: np.ndarray, block: int = BLOCK) -> np.ndarray:
    """For each row of ``e`` (unit rows), min over the *other* rows j of 1 − e_i·e_j, in [0, 2].

    O(n²·d) time in blocks of ``block`` rows, O(block·n) memory. Each row's own similarity is masked
    (−∞), so an exact copy elsewhere in the set gives 0 and the row itself never does."""
    n = e.shape[0]
    out = np.empty(n, dtype=np.float64)
    for start in range(0, n, block):
        stop = min(start + block, n)
        sim = e[start:stop] @ e.T
        sim[np.arange(stop - start), np.arange(start, stop)] = -np.inf
        out[start:stop] = 1.0 - sim.max(axis=1)
    # unit rows in float64: two equal rows give 1 − (1 ± 1e-16); the range is [0, 2]
    return np.clip(out, 0.0, 2.0)


class NearestNeighborDistance:
    """Nearest-neighbour cosine distance of each text within its set,

        δ_i = min_{j ≠ i} (1 − cos(e_i, e_j)),   0 ≤ δ_i ≤ 2,

    on the shared text embeddings (all-MiniLM-L6-v2, unit rows). Its mean is the one-sided chamfer
    distance of the set to itself with the self-match excluded (the chamfer distance, Barrow et al.
    1977, "Parametric correspondence and chamfer matching", averages each point's distance to its
    nearest point of the other set); the same nearest-neighbour distances define the k-NN radii of
    improved precision and recall (Kynkäänniemi et al. 2019, k = 1). Unlike Vendi and the mean
    pairwise distance it is sensitive to near-duplicates: a text with a near-copy in the set scores
    ≈ 0 however spread out the rest is (see the module docstring). Higher is more diverse.

    Per text: δ_i. Aggregates: ``mean`` (primary), ``median``, ``sd``, ``min``, ``max``, ``n``,
    ``n_undefined`` of the δ_i, and ``near_duplicates`` — the share of texts with δ_i ≤ ``threshold``
    (default 0.1, :data:`DEFAULT_THRESHOLD`; lower is better, unlike the metric's direction). A set
    of fewer than 2 texts is undefined. δ_i falls as the set grows (more candidates for a neighbour):
    compare sets of similar size.

    **Intervals: the delete-a-group jackknife, recomputed on each replicate** (no
    ``aggregate_items``, so :mod:`collapselab.metrics.evaluate` recomputes the metric on the set
    with a group left out). δ_i depends on the other texts of the set, so the per-text values
    cannot be resampled as if independent, and the metric must not be recomputed on a bootstrap
    resample either: drawing n of n texts with replacement repeats about 63% of the draws, and every
    repeated text then has an exact copy — δ = 0 — so the resampled mean collapses towards 0 and the
    near-duplicate share jumps to ≈ 0.6 on a set without a single duplicate. Deduplicating the
    resample instead leaves ≈ 63% of the texts, a smaller set with systematically larger δ. Leaving
    groups out never duplicates a text and keeps every replicate the same size, so the
    size-dependence moves all replicates alike and cancels from their spread (the jackknife SE); the
    groups are large (n/20 texts by default), which is what makes the delete-a-group jackknife
    consistent for the non-smooth statistics here (the median; Shao & Wu 1989). Nor are the
    full-set δ_i resampled as fixed numbers (``aggregate_items``): a mutual nearest-neighbour pair
    shares one value, so they are not independent draws. Measured on simulated sets (clustered
    8–64-d Gaussians, 150–400 texts, 0–30% planted near-copies), against the spread of the
    statistics over independent sets: the jackknife half-width came out 1.3–1.7 times 1.96 SD
    (conservative, as the Efron–Stein inequality makes the jackknife variance; 0.9 for the median of
    a bimodal set), resampling the fixed δ_i 0.6–0.9 times (too narrow, most with near-copies).

    Cost: O(n²·d) per computation, and the jackknife repeats it ``jackknife_groups`` times —
    about 2 s for 10,000 texts of 384 dimensions on one core, per computation.
    """

    family = "near-duplicates"
    higher_is_better = True
    primary = "mean"
    needs = frozenset({"embeddings"})

    def __init__(self, *, threshold: float = DEFAULT_THRESHOLD) -> None:
        if not 0.0 <= threshold < 2.0:
            raise ConfigError(f"nearest_neighbor_distance: threshold is a cosine distance in [0, 2), "
                              f"not {threshold!r}")
        self.threshold = float(threshold)
        self.name = param_name("nearest_neighbor_distance", threshold=threshold)

    def compute(self, texts: TextSet) -> MetricResult:
        e = unit_embeddings(texts, "response", who=self.name)
        if e.shape[0] < 2:
            nan = float("nan")
            return MetricResult(per_item={"distance": np.full(e.shape[0], nan)},
                                aggregates={"mean": nan, "median": nan, "near_duplicates": nan},
                                details={"reason": f"needs at least 2 texts, got {e.shape[0]}"})
        delta = nearest_neighbor_distances(e)
        return MetricResult(per_item={"distance": delta},
                            aggregates=summarize(delta) | {"near_duplicates": float(np.mean(delta <= self.threshold))})
