"""Seeded, category-stratified train/test split; train prompts cut into shards for multi-source
conditions (how the sources share them: :mod:`collapselab.corpora.shares`); and the Dolly-style
prompt text of a record.

Everything here is a pure function of the records' ids and categories and the seed: the input
order never matters (records are sorted by id first) and each category is shuffled by its own
``random.Random(f"{seed}/{category}")``, so a category's order does not depend on the others.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence

from collapselab.config.spec import SplitSpec
from collapselab.corpora.apportion import apportion as _apportion
from collapselab.corpora.base import Record

# how a multi-source condition's sources share the shards lives in shares.py; re-exported here,
# where it lived before
from collapselab.corpora.shares import shards_needed, source_spans  # noqa: F401
from collapselab.errors import ConfigError, DataError


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


def shard_sizes(n: int, n_shards: int) -> list[int]:
    """The sizes :func:`make_shards` gives ``n`` records (round-robin: the first ``n % n_shards``
    shards have one more)."""
    return [len(range(shard, n, n_shards)) for shard in range(n_shards)]
