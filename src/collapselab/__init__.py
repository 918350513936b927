"""collapselab: what synthetic training data does to fine-tuned language models."""

__version__ = "0.1.0"
