"""The Hub repositories an export goes to: ``ORG/NAME`` for the dataset, ``ORG/NAME-<adapter>`` for
each adapter, every id checked against the Hub's rules before anything is written or uploaded."""

from __future__ import annotations

from collapselab.errors import CollapselabError


def adapter_repo_id(repo_id: str, adapter: str) -> str:
    """The model repository of one adapter of the export pushed to ``repo_id``."""
    return f"{repo_id}-{adapter}"


def check_repo_id(repo_id: str) -> None:
    """A :class:`CollapselabError` naming ``repo_id`` unless it is a valid ``ORG/NAME``."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if repo_id.count("/") != 1:
        raise CollapselabError(f"--push {repo_id!r}: expected ORG/NAME (an organisation or user, then a name)")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise CollapselabError(f"--push: {exc} (names: letters, digits, '-', '_', '.'; at most 96 characters; "
                               "each adapter's repository appends '-<adapter name>': keep NAME short)") from None
