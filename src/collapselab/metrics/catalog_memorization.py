"""Registration of the memorization family and the human-perplexity tail (kept apart so listing
metrics imports nothing heavy)."""

from collapselab.metrics.base import register_metric

_MEMORIZATION = "collapselab.metrics.memorization"

register_metric("verbatim_ngrams", family="memorization", higher_is_better=False,
                description="share of a text's word n-grams found verbatim in its model's training texts "
                            "(Carlini et al. 2023); setting: n=8",
                module=_MEMORIZATION, factory="VerbatimNgrams", range=(0, 1))
register_metric("longest_copy", family="memorization", higher_is_better=False,
                description="longest word sequence a text shares with one training text (suffix automaton); "
                            "setting: min_words=40 (share_long_copy)",
                module=_MEMORIZATION, factory="LongestCopy", range=(0, None), ranges={"share_long_copy": (0, 1)})
register_metric("human_perplexity_tail", family="perplexity", higher_is_better=False,
                description="quantiles q50/q90/q99 of the human references' per-text PPL under the set's model "
                            "(Shumailov et al. 2024); settings: base_quantile=0.9, threshold",
                module="collapselab.metrics.perplexity_tails", factory="HumanPerplexityTail",
                range=(1, None), ranges={"share_above_base": (0, 1), "share_above": (0, 1)})
