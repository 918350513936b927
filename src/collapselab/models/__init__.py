"""Models behind one protocol: hf (transformers), packaged offline models, mock."""

from collapselab.models.base import BACKENDS, ChatPrompt, Generation, LanguageModel, check_model, load_model

__all__ = ["BACKENDS", "ChatPrompt", "Generation", "LanguageModel", "check_model", "load_model"]
