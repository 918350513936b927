"""Registration of the memorization families (kept apart so listing metrics imports nothing heavy)."""

from collapselab.metrics.base import register_metric  # noqa: F401
