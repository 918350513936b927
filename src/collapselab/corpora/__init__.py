"""Human corpora: built-in offline text, local files, Hugging Face datasets; split and shards."""

from collapselab.corpora.base import CORPORA, Record

__all__ = ["CORPORA", "Record"]
