"""Registration of the perplexity family (kept apart so listing metrics imports nothing heavy)."""

from collapselab.metrics.base import register_metric

register_metric("output_perplexity", family="perplexity", higher_is_better=True,
                description="PPL of the set's texts under the vanilla target (response tokens only)",
                module="collapselab.metrics.perplexity", factory="OutputPerplexity",
                range=(1, None))
register_metric("human_perplexity", family="perplexity", higher_is_better=False,
                description="PPL of the human test references under the set's own model",
                module="collapselab.metrics.perplexity", factory="HumanPerplexity",
                range=(1, None))
