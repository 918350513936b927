"""Experiment 3's counterbalanced comparison plan.

The judge prompts themselves are the ``pairwise`` and ``rating`` judges of
:data:`~collapselab.judges.registry.JUDGES` (templates ``preference.pair_template`` /
``preference.rating_template``, loaded, validated and rendered by :mod:`collapselab.judges.templates`).

Counterbalancing (PAPER.md, Experiment 3): every unordered pair of distinct sources is shown in
both orders once per item, so with k sources an item gets k(k − 1) comparisons and every source
sits in the first slot exactly as often as in the second — a judge's position bias then cancels in
S(source) instead of favouring whichever source happened to be listed first.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from collapselab.errors import ConfigError, DataError

# characters that build comparison ids: a source name holding one would make ids ambiguous
_ID_SEPARATORS = ("|", ">")


@dataclass(frozen=True)
class Comparison:
    """One judge prompt: on item ``item_id``, the text of ``first`` is shown as "Text A" and the
    text of ``second`` as "Text B". ``id`` is ``"{item_id}|{first}>{second}"``."""

    id: str
    item_id: str
    first: str
    second: str


def comparison_plan(item_ids: Sequence[str], sources: Sequence[str]) -> list[Comparison]:
    """Every unordered pair of distinct ``sources`` in both orders, once per item.

    Order (stable): items as given; within an item, pairs (i, j), i < j, in the order of
    ``sources``, each as (s_i, s_j) followed by (s_j, s_i). Length: len(item_ids) · k(k − 1)."""
    if len(set(sources)) != len(sources):
        dup = sorted(s for s, n in Counter(sources).items() if n > 1)
        raise ConfigError(f"preference.sources: duplicate source(s) {dup}")
    if len(sources) < 2:
        raise ConfigError("preference.sources: pairwise judging needs at least 2 sources, "
                          f"got {list(sources)}")
    bad = [s for s in sources if any(c in s for c in _ID_SEPARATORS)]
    if bad:
        raise ConfigError(f"preference.sources: source name(s) {bad} contain '|' or '>', "
                          "which comparison ids use as separators")
    if len(set(item_ids)) != len(item_ids):
        dup = sorted(i for i, n in Counter(item_ids).items() if n > 1)[:5]
        raise DataError(f"preference items: duplicate item id(s) {dup}")
    plan = []
    for item in item_ids:
        for a, b in itertools.combinations(sources, 2):
            for first, second in ((a, b), (b, a)):
                plan.append(Comparison(f"{item}|{first}>{second}", item, first, second))
    return plan
