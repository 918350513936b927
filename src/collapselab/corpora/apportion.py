"""Largest-remainder apportionment with exact arithmetic: how many of ``total`` items each key gets
in proportion to its weight (Hamilton's method).

The split uses it to spread the test set over categories, the stratified samples and the sources
of a multi-source condition (:mod:`collapselab.corpora.shares`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from fractions import Fraction
from typing import TypeVar

K = TypeVar("K", str, int)


def exact(weight: float) -> Fraction:
    """The decimal the user wrote, not its binary approximation: 0.6/0.3/0.1 of 4 shards must tie
    exactly at .4 remainders instead of being decided by rounding noise."""
    return Fraction(str(float(weight)))


def apportion(weights: Mapping[K, float], total: int, caps: Mapping[K, int] | None = None) -> dict[K, int]:
    """Split ``total`` over the keys in proportion to ``weights`` by largest remainder, never giving
    a key more than its cap (what a cap withholds goes to the next-largest remainders).

    Each key first gets ``floor(total · w / Σw)`` (its quota's whole part); the items left go one
    each to the keys with the largest fractional parts. Without caps every count is the floor or
    the ceiling of its quota, so it differs from ``total · w / Σw`` by less than one. Exact
    arithmetic and ties broken by key order keep the result the same on every machine.
    """
    shares = {key: exact(weight) for key, weight in weights.items()}
    whole = sum(shares.values())
    limits = caps if caps is not None else dict.fromkeys(weights, total)
    total = min(total, sum(limits.values()))
    quotas = {key: total * share / whole for key, share in shares.items()}
    counts = {key: min(math.floor(quota), limits[key]) for key, quota in quotas.items()}
    by_remainder = sorted(weights, key=lambda key: (-(quotas[key] - math.floor(quotas[key])), key))
    while sum(counts.values()) < total:
        for key in by_remainder:
            if counts[key] < limits[key] and sum(counts.values()) < total:
                counts[key] += 1
    return counts
