"""Registration of the perplexity family (kept apart so listing metrics imports nothing heavy)."""

from collapselab.metrics.base import register_metric

# 2: no better direction (was higher = better; incoherent text has a high perplexity too)
register_metric("output_perplexity", family="perplexity", higher_is_better=None,
                description="PPL of the set's texts under the vanilla target (response tokens only); "
                            "no better direction",
                module="collapselab.metrics.perplexity", factory="OutputPerplexity",
                range=(1, None), version=2)
register_metric("output_perplexity_gap", family="perplexity", higher_is_better=False,
                description="|log PPL(set) - log PPL(human references)| under the same vanilla scorer",
                module="collapselab.metrics.perplexity", factory="OutputPerplexityGap",
                range=(0, None), ranges={"log_ratio": (None, None), "ppl": (1, None), "human_ppl": (1, None)})
register_metric("human_perplexity", family="perplexity", higher_is_better=False,
                description="PPL of the human test references under the set's own model",
                module="collapselab.metrics.perplexity", factory="HumanPerplexity",
                range=(1, None))
