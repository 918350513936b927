"""Registration of the within-prompt and near-duplicates families (kept apart so listing metrics
imports nothing heavy)."""

from collapselab.metrics.base import register_metric

_WITHIN = "collapselab.metrics.within_prompt"
_NEAR = "collapselab.metrics.near_duplicates"

register_metric("distinct_at_k", family="within-prompt", higher_is_better=True,
                description="NoveltyBench distinct@k: classes among a prompt's k answers (greedy, representative "
                            "linkage, cosine >= threshold); setting: threshold=0.9",
                # a count of classes, 1..k (k varies); "collapsed" is the share of single-class prompts
                module=_WITHIN, factory="DistinctAtK", range=(1, None), ranges={"collapsed": (0, 1)})
register_metric("within_prompt_distance", family="within-prompt", higher_is_better=True,
                description="mean pairwise cosine distance among a prompt's k answers",
                module=_WITHIN, factory="WithinPromptDistance", range=(0, 2))
register_metric("within_prompt_distinct_ngrams", family="within-prompt", higher_is_better=True,
                description="distinct n-grams / total n-grams pooled over a prompt's k answers; setting: n=2",
                module=_WITHIN, factory="WithinPromptDistinctNgrams", range=(0, 1))

# its own family, not "semantic": it measures local redundancy, which the global semantic measures miss
register_metric("nearest_neighbor_distance", family="near-duplicates", higher_is_better=True,
                description="cosine distance of each text to its nearest other text of the set (mean primary), "
                            "share within threshold=0.1 (near-duplicates); jackknife intervals",
                module=_NEAR, factory="NearestNeighborDistance", range=(0, 2), ranges={"near_duplicates": (0, 1)})
