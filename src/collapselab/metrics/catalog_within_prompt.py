"""Registration of the within_prompt families (kept apart so listing metrics imports nothing heavy)."""

from collapselab.metrics.base import register_metric  # noqa: F401
