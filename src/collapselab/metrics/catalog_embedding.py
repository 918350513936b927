"""Registration of the semantic, distance-to-human and vocabulary families (kept apart so
listing metrics imports neither numpy-heavy modules nor torch)."""

from collapselab.metrics.base import register_metric

_SEMANTIC = "collapselab.metrics.semantic"
_DISTANCE = "collapselab.metrics.distance"
_VOCABULARY = "collapselab.metrics.vocabulary"

register_metric("semantic_diversity", family="semantic", higher_is_better=True,
                description="mean pairwise cosine distance of all sentence (or response) embeddings, exact",
                module=_SEMANTIC, factory="SemanticDiversity", range=(0, 2), version=2)  # 2: intervals
register_metric("vendi", family="semantic", higher_is_better=True,
                description="Vendi score: exp(entropy of the cosine-kernel spectrum) of the embeddings",
                module=_SEMANTIC, factory="Vendi", range=(1, None), version=2)  # 2: intervals

register_metric("mauve", family="distance_to_human", higher_is_better=True,
                description="MAUVE between the set's and the human references' MiniLM embeddings",
                module=_DISTANCE, factory="Mauve", range=(0, 1), version=3)
# 2: bootstrap interval; 3: the bootstrap draws a response with its prompt's reference (paired)
register_metric("js_divergence", family="distance_to_human", higher_is_better=False,
                description="Jensen-Shannon divergence (bits) of n-gram distributions vs human references",
                module=_DISTANCE, factory="JSDivergence", range=(0, 1), ranges={"budget_tokens": (0, None)},
                version=3)  # bits; 2: intervals; 3: markdown stripped, optional token_budget
register_metric("frechet", family="distance_to_human", higher_is_better=False,
                description="Frechet distance of Gaussian fits to the set's and human embeddings",
                module=_DISTANCE, factory="Frechet", range=(0, None), version=3)
# 2: intervals; 3: round-off below 0 clipped (two equal sets: −1e-7 before)

register_metric("heaps", family="vocabulary", higher_is_better=True,
                description="Heaps' law V = K*N^beta fitted to vocabulary growth (beta reported), "
                            "primary on a common token budget; settings: step, token_budget, seed",
                # 2: intervals; 3: markdown stripped, beta on the token budget primary
                module=_VOCABULARY, factory="Heaps", range=(0, None), version=3)
register_metric("vocabulary_size", family="vocabulary", higher_is_better=True,
                description="distinct lower-cased word types after a common token budget (primary), "
                            "after fixed N, and over the whole set; settings: token_budget, checkpoints, seed",
                module=_VOCABULARY, factory="VocabularySize", range=(0, None),
                # 2: intervals; 3: markdown stripped, V at the token budget primary (NaN for shorter sets)
                ranges={"ttr_budget": (0, 1)}, version=3)
register_metric("rare_tail_coverage", family="vocabulary", higher_is_better=True,
                description="share of the human references' rare word types (count <= max_count) used",
                module=_VOCABULARY, factory="RareTailCoverage", range=(0, None),
                ranges={"value": (0, 1), "value_budget": (0, 1)}, version=4)
# 2: intervals; 3: the type counts' intervals were confined to [0, 1]; 4: markdown stripped, coverage at the
# token budget primary
