"""Plain prose → continuation tasks, shared by the Austen and ``.txt``-folder corpora.

A passage (one paragraph) becomes a :class:`Record` whose prompt is a fixed instruction plus the
passage's opening words and whose response is the rest of the passage, so a model fine-tuned on
these records learns to continue human prose.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from collapselab.config.spec import CorpusSpec
from collapselab.corpora.base import Record
from collapselab.errors import ConfigError

#: Put before every passage opening; the response is the passage's remaining words.
CONTINUATION_INSTRUCTION = "Continue the following passage.\n\n"


def split_paragraphs(lines: Iterable[str]) -> list[str]:
    """Join lines into paragraphs: blank (or whitespace-only) lines separate them.

    Whitespace inside a paragraph is collapsed to single spaces: the line breaks of a printed
    edition carry no meaning, and a normalised paragraph is exactly ``" ".join(its words)``,
    which lets the prompt/response cut happen on word boundaries without losing characters.
    """
    paragraphs: list[str] = []
    current: list[str] = []
    for line in lines:
        words = line.split()
        if words:
            current.extend(words)
        elif current:
            paragraphs.append(" ".join(current))
            current = []
    if current:
        paragraphs.append(" ".join(current))
    return paragraphs


def continuation_records(paragraphs: Sequence[str], *, id_prefix: str, category: str,
                         spec: CorpusSpec) -> list[Record]:
    """Turn the paragraphs of one text into continuation records.

    Keeps paragraphs of ``spec.min_chars``..``spec.max_chars`` characters (inclusive). The prompt
    is :data:`CONTINUATION_INSTRUCTION` + the first ``spec.opening_fraction`` of the words (at
    least one word, and at least one word is left for the response); the response is the rest.
    The id is ``f"{id_prefix}-{i}"`` where ``i`` is the paragraph's position in ``paragraphs``
    (not among the kept ones), so ids stay stable when the length bounds change.
    """
    if spec.min_chars > spec.max_chars:
        raise ConfigError(f"corpus: min_chars ({spec.min_chars}) is larger than max_chars ({spec.max_chars})")
    records = []
    for index, paragraph in enumerate(paragraphs):
        if not spec.min_chars <= len(paragraph) <= spec.max_chars:
            continue
        words = paragraph.split()
        if len(words) < 2:  # nothing to continue (only possible with a tiny min_chars)
            continue
        cut = min(max(round(len(words) * spec.opening_fraction), 1), len(words) - 1)
        records.append(Record(
            id=f"{id_prefix}-{index}",
            prompt=CONTINUATION_INSTRUCTION + " ".join(words[:cut]),
            response=" ".join(words[cut:]),
            category=category,
            context="",
        ))
    return records

