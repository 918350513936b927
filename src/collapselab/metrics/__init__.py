"""Metric families (one file each), registered by name; ``collapselab ls metrics`` lists them."""

from collapselab.metrics.base import METRICS, Metric, MetricResult, TextSet, build_metric

__all__ = ["METRICS", "Metric", "MetricResult", "TextSet", "build_metric"]

# Registration only (no heavy imports): each catalog registers its family's factories lazily.
from collapselab.metrics import (
    catalog_embedding,  # noqa: E402,F401
    catalog_lexical,  # noqa: E402,F401
    catalog_memorization,  # noqa: E402,F401
    catalog_perplexity,  # noqa: E402,F401
    catalog_within_prompt,  # noqa: E402,F401
)
