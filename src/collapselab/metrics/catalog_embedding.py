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
                module=_DISTANCE, factory="Mauve", range=(0, 1), version=2)  # 2: bootstrap interval
register_metric("js_divergence", family="distance_to_human", higher_is_better=False,
                description="Jensen-Shannon divergence (bits) of n-gram distributions vs human references",
                module=_DISTANCE, factory="JSDivergence", range=(0, 1), version=2)  # bits; 2: intervals
register_metric("frechet", family="distance_to_human", higher_is_better=False,
                description="Frechet distance of Gaussian fits to the set's and human embeddings",
                module=_DISTANCE, factory="Frechet", range=(0, None), version=2)  # 2: intervals

register_metric("heaps", family="vocabulary", higher_is_better=True,
                description="Heaps' law V = K*N^beta fitted to vocabulary growth (beta reported)",
                module=_VOCABULARY, factory="Heaps", range=(0, None), version=2)  # 2: intervals
register_metric("vocabulary_size", family="vocabulary", higher_is_better=True,
                description="distinct lower-cased word types, and type/token ratio at a token budget",
                module=_VOCABULARY, factory="VocabularySize", range=(0, None),
                ranges={"ttr_budget": (0, 1)}, version=2)  # 2: intervals
register_metric("rare_tail_coverage", family="vocabulary", higher_is_better=True,
                description="share of the human references' rare word types (count <= max_count) used",
                module=_VOCABULARY, factory="RareTailCoverage", range=(0, 1), version=2)  # 2: intervals
