"""User-facing errors.

Every problem a user can fix (a bad config, a missing file, a corrupt line) is raised as a
:class:`CollapselabError`; the CLI prints its message and exits non-zero without a traceback.
"""

from __future__ import annotations


class CollapselabError(Exception):
    """An error caused by the user's input, with a message that says where and what."""

    exit_code = 2


class ConfigError(CollapselabError):
    """A config file or override that does not validate."""


class DataError(CollapselabError):
    """A data file (corpus, prompt set) that cannot be read; names the file and line."""


class ModelError(CollapselabError):
    """A model that cannot be found or used (unknown name, prompt too long, ...)."""


class TrainingError(CollapselabError):
    """Training failed in a way the user must act on (e.g. a NaN loss)."""


class RunLockedError(CollapselabError):
    """Another process holds the run folder's lock."""
