"""Seeded, category-stratified train/test split; train prompts cut into shards for multi-source
conditions; and the Dolly-style prompt text of a record.

Everything here is a pure function of the records' ids and categories and the seed: the input
order never matters (records are sorted by id first) and each category is shuffled by its own
``random.Random(f"{seed}/{category}")``, so a category's order does not depend on the others.
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from fractions import Fraction
from typing import TypeVar

from collapselab.config.spec import SplitSpec
from collapselab.corpora.base import Record
from collapselab.errors import ConfigError, DataError

K = TypeVar("K", str, int)


def format_prompt(record: Record, context_first: bool = True) -> str:
    """The user text for ``record``, Dolly-style: with a context, ``"context\\n\\ninstruction"``
    (``context_first``) or ``"instruction\\n\\ncontext"``; without one, the prompt alone."""
    if not record.context:
        return record.prompt
    parts = (record.context, record.prompt) if context_first else (record.prompt, record.context)
    return "\n\n".join(parts)


def _by_category(records: Iterable[Record], seed: int) -> dict[str, list[Record]]:
    """Records grouped by category (sorted), each group in a seeded random order independent of
    the input order."""
    groups: dict[str, list[Record]] = defaultdict(list)
    for record in sorted(records, key=lambda r: r.id):
        groups[record.category].append(record)
    for category, group in groups.items():
        random.Random(f"{seed}/{category}").shuffle(group)
    return {category: groups[category] for category in sorted(groups)}


def _exact(weight: float) -> Fraction:
    # the decimal the user wrote, not its binary approximation: 0.6/0.3/0.1 of 4 shards must tie
    # exactly at .4 remainders instead of being decided by rounding noise
    return Fraction(str(float(weight)))


def _apportion(weights: Mapping[K, float], total: int, caps: Mapping[K, int] | None = None) -> dict[K, int]:
    """Split ``total`` over the keys in proportion to ``weights`` by largest remainder, never giving
    a key more than its cap (what a cap withholds goes to the next-largest remainders).

    Exact arithmetic and ties broken by key order keep the result the same on every machine.
    """
    shares = {key: _exact(weight) for key, weight in weights.items()}
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


def _sample(groups: Mapping[str, list[Record]], size: int | None) -> list[Record]:
    """At most ``size`` records, drawn from each (already shuffled) group in proportion to its size."""
    sizes = {category: len(group) for category, group in groups.items()}
    if size is None or size >= sum(sizes.values()):
        chosen = [record for group in groups.values() for record in group]
    else:
        counts = _apportion(sizes, size, sizes)
        # a prefix of a seeded shuffle is a seeded random sample
        chosen = [record for category, group in groups.items() for record in group[:counts[category]]]
    return sorted(chosen, key=lambda r: r.id)


def split_records(records: Sequence[Record], spec: SplitSpec) -> tuple[list[Record], list[Record]]:
    """Split ``records`` into (train, test), each sorted by id.

    The test set takes ``round(len(records) * spec.test_fraction)`` records spread over the
    categories in proportion to their sizes (largest remainder), and every category with at least
    two records keeps at least one for training. Then ``spec.train_size`` / ``spec.test_size``, when
    set, cap each side by stratified sampling. Deterministic for ``spec.seed`` whatever the input
    order. Raises :class:`DataError` on duplicate ids or when either side ends up empty.
    """
    duplicates = sorted(id_ for id_, n in Counter(record.id for record in records).items() if n > 1)
    if duplicates:
        raise DataError(f"split: duplicate record ids {duplicates[:5]}")
    groups = _by_category(records, spec.seed)
    sizes = {category: len(group) for category, group in groups.items()}
    # a category of one record cannot lend its only record to test and still train on itself
    caps = {category: size - 1 if size >= 2 else size for category, size in sizes.items()}
    n_test = _apportion(sizes, round(len(records) * spec.test_fraction), caps)
    test_groups = {category: group[:n_test[category]] for category, group in groups.items()}
    train_groups = {category: group[n_test[category]:] for category, group in groups.items()}
    train = _sample(train_groups, spec.train_size)
    test = _sample(test_groups, spec.test_size)
    for side, chosen in (("train", train), ("test", test)):
        if not chosen:
            raise DataError(
                f"split: the {side} set is empty ({len(records)} records in {len(groups)} categories, "
                f"test_fraction {spec.test_fraction}); use a larger corpus or change split.test_fraction"
            )
    return train, test


def make_shards(train: Sequence[Record], n_shards: int, seed: int) -> list[list[Record]]:
    """Cut ``train`` into ``n_shards`` disjoint shards whose sizes differ by at most one, each
    with about the same category mix.

    Records are shuffled within their category (seeded), the categories laid end to end and dealt
    round-robin, so consecutive records of one category land on consecutive shards. Each shard is
    sorted by id. Deterministic for ``seed`` whatever the input order.
    """
    if n_shards < 1:
        raise ConfigError(f"split.shards: need at least one shard, got {n_shards}")
    if n_shards > len(train):
        raise DataError(f"split: {n_shards} shards need at least {n_shards} train records, there are "
                        f"{len(train)}; lower split.shards or raise split.train_size")
    dealt = [record for group in _by_category(train, seed).values() for record in group]
    return [sorted(dealt[shard::n_shards], key=lambda r: r.id) for shard in range(n_shards)]


def source_spans(n_shards: int, weights: Sequence[float]) -> list[tuple[Fraction, Fraction]]:
    """Each source's span of the shard sequence, in shard units: source ``i`` covers
    ``[C_(i-1), C_i)`` with ``C_i = n_shards · (w_0 + … + w_i) / Σw`` (exact fractions). A span
    need not end on a shard boundary: a shard it cuts is shared by two sources."""
    if not weights or any(w <= 0 for w in weights):
        raise ConfigError(f"mixing weights must be positive, one per source; got {list(weights)}")
    exact = [_exact(w) for w in weights]
    total, spans, start = sum(exact), [], Fraction(0)
    for w in exact:
        end = start + n_shards * w / total
        spans.append((start, end))
        start = end
    return spans


def shards_needed(n_shards: int, weights: Sequence[float]) -> list[list[int]]:
    """The shards whose prompts each source of a multi-source condition answers (some or all of
    them): every shard its span (:func:`source_spans`) overlaps."""
    return [[j for j in range(n_shards) if min(end, j + 1) > max(start, j)]
            for start, end in source_spans(n_shards, weights)]


def _order_key(prompt_id: str) -> str:
    import hashlib

    return hashlib.sha256(prompt_id.encode()).hexdigest()


def assign_examples(shard_of: Mapping[str, int], n_shards: int, weights: Sequence[float]) -> dict[str, int]:
    """Which source (its index) answers each train prompt of a multi-source condition, so that
    the sources' shares are the weights **by example**, not rounded to whole shards.

    A shard inside one source's span (:func:`source_spans`) goes to it whole (so four equal
    sources over four shards are the study's quarters); a shard cut by span boundaries is split
    between the sources in proportion to the overlap lengths (largest remainder over the shard's
    prompts, in the order of the SHA-256 of their ids, so the choice does not depend on the input
    order). Each source's count then differs from ``weight · n`` by less than the number of shards
    it shares (shard sizes differ by at most one).
    """
    spans = source_spans(n_shards, weights)
    by_shard: dict[int, list[str]] = defaultdict(list)
    for prompt_id, shard in shard_of.items():
        by_shard[shard].append(prompt_id)
    out: dict[str, int] = {}
    for shard, ids in by_shard.items():
        overlaps = {i: min(end, shard + 1) - max(start, shard) for i, (start, end) in enumerate(spans)}
        overlaps = {i: float(o) for i, o in overlaps.items() if o > 0}
        counts = _apportion(overlaps, len(ids))
        ordered = sorted(ids, key=_order_key)
        position = 0
        for source in sorted(counts):
            for prompt_id in ordered[position:position + counts[source]]:
                out[prompt_id] = source
            position += counts[source]
    return out


def realised_shares(assignment: Mapping[str, int], sources: Sequence[str]) -> dict[str, dict[str, float]]:
    """``{source: {"count": n_i, "share": n_i / n}}`` of an assignment (source indices)."""
    counts = Counter(assignment.values())
    n = max(1, sum(counts.values()))
    return {name: {"count": counts.get(i, 0), "share": counts.get(i, 0) / n} for i, name in enumerate(sources)}


def shard_sizes(n: int, n_shards: int) -> list[int]:
    """The sizes :func:`make_shards` gives ``n`` records (round-robin: the first ``n % n_shards``
    shards have one more)."""
    return [len(range(shard, n, n_shards)) for shard in range(n_shards)]
