"""File-name-safe forms of labels: one rule for stage names, report files and record ids."""

from __future__ import annotations

import re


def slug(text: str, *, keep: str = "A-Za-z0-9_.-", sep: str = "_", default: str = "") -> str:
    """``text`` with every run of characters outside ``keep`` replaced by ``sep`` and ``sep``
    stripped from both ends (``default`` when nothing is left).

    ``":"`` becomes ``"-"`` and ``"/"`` becomes ``"--"`` first, so ``"human:test"`` →
    ``"human-test"`` and ``"t/single:a/seed1"`` → ``"t--single-a--seed1"`` stay readable.
    """
    text = str(text).replace(":", "-").replace("/", "--")
    return re.sub(f"[^{keep}]+", sep, text).strip(sep) or default


def id_slug(text: str) -> str:
    """A lowercase id-safe form (``"Pride and Prejudice"`` → ``"pride-and-prejudice"``)."""
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-")
