"""Stratified train/test split, shards, shard assignment and prompt formatting."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from collapselab.config.spec import SplitSpec
from collapselab.corpora.base import Record
from collapselab.corpora.split import format_prompt, make_shards, split_records
from collapselab.errors import ConfigError, DataError

SIZES = {"a": 50, "b": 30, "c": 17, "d": 2, "e": 1}


def corpus(sizes=SIZES) -> list[Record]:
    return [Record(f"{cat}-{i:03d}", f"prompt {cat} {i}", f"response {i}", cat)
            for cat, n in sizes.items() for i in range(n)]


def ids(records) -> list[str]:
    return [r.id for r in records]


def test_split_is_disjoint_complete_and_stratified():
    records = corpus()
    train, test = split_records(records, SplitSpec(test_fraction=0.2, seed=1))
    assert set(ids(train)).isdisjoint(ids(test))
    assert sorted(ids(train) + ids(test)) == sorted(ids(records))
    assert len(test) == round(len(records) * 0.2)  # 20 of 100
    test_counts = Counter(r.category for r in test)
    for cat, n in SIZES.items():
        assert abs(test_counts[cat] - n * 0.2) < 1, (cat, test_counts)
    train_counts = Counter(r.category for r in train)
    assert all(train_counts[cat] >= 1 for cat in SIZES)  # "e" has one record: it trains
    assert ids(train) == sorted(ids(train)) and ids(test) == sorted(ids(test))


def test_every_category_with_two_records_keeps_one_for_training():
    train, test = split_records(corpus({"x": 2, "y": 2, "z": 10}), SplitSpec(test_fraction=0.9))
    train_counts, test_counts = Counter(r.category for r in train), Counter(r.category for r in test)
    assert train_counts == {"x": 1, "y": 1, "z": 1}
    assert test_counts == {"x": 1, "y": 1, "z": 9}  # what x and y could not give went to z


def test_split_ignores_input_order_and_follows_the_seed():
    records = corpus()
    shuffled = records[:]
    random.Random(0).shuffle(shuffled)
    spec = SplitSpec(test_fraction=0.3, seed=7)
    assert split_records(records, spec) == split_records(shuffled, spec)
    other = split_records(records, SplitSpec(test_fraction=0.3, seed=8))
    assert ids(other[1]) != ids(split_records(records, spec)[1])


def test_size_caps_sample_proportionally_from_the_uncapped_split():
    records = corpus()
    full_train, full_test = split_records(records, SplitSpec(test_fraction=0.2, seed=3))
    train, test = split_records(records, SplitSpec(test_fraction=0.2, seed=3, train_size=16, test_size=5))
    assert len(train) == 16 and len(test) == 5
    assert set(ids(train)) <= set(ids(full_train)) and set(ids(test)) <= set(ids(full_test))
    # uncapped test: a 10, b 6, c 4 (c and d tie on remainder .4 for the 20th; c sorts first)
    assert Counter(r.category for r in full_test) == {"a": 10, "b": 6, "c": 4}
    # train a 40, b 24, c 13, d 2, e 1; x16/80 = 8, 4.8, 2.6, .4, .2 -> 8, 4, 2 + the 2 largest remainders
    assert Counter(r.category for r in train) == {"a": 8, "b": 5, "c": 3}
    # test x5/20 = 2.5, 1.5, 1 -> floors 2, 1, 1; a and b tie on .5, a sorts first
    assert Counter(r.category for r in test) == {"a": 3, "b": 1, "c": 1}
    big = split_records(records, SplitSpec(test_fraction=0.2, seed=3, train_size=10_000))
    assert big == (full_train, full_test)  # a cap above the size changes nothing


def test_empty_sides_and_duplicates_are_errors():
    with pytest.raises(DataError, match=r"test set is empty \(3 records in 1 categories, test_fraction 0\.1"):
        split_records(corpus({"a": 3}), SplitSpec(test_fraction=0.1))
    with pytest.raises(DataError, match="train set is empty"):
        split_records(corpus({"a": 1, "b": 1}), SplitSpec(test_fraction=0.9))
    records = corpus({"a": 5})
    with pytest.raises(DataError, match=r"duplicate record ids \['a-001'\]"):
        split_records([*records, records[1]], SplitSpec())


def test_shards_are_balanced_disjoint_stratified_and_deterministic():
    train = corpus()
    shards = make_shards(train, 6, seed=5)
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == len(train)
    flat = [r.id for shard in shards for r in shard]
    assert sorted(flat) == sorted(ids(train))  # every record in exactly one shard
    for cat in SIZES:
        per_shard = [sum(r.category == cat for r in shard) for shard in shards]
        assert max(per_shard) - min(per_shard) <= 1, (cat, per_shard)
    assert make_shards(list(reversed(train)), 6, seed=5) == shards
    assert make_shards(train, 6, seed=6) != shards


def test_shard_errors():
    with pytest.raises(DataError, match="5 shards need at least 5 train records, there are 3"):
        make_shards(corpus({"a": 3}), 5, seed=0)
    with pytest.raises(ConfigError, match="at least one shard"):
        make_shards(corpus({"a": 3}), 0, seed=0)


def test_format_prompt():
    with_context = Record("1", "Summarise this.", "r", context="The text.")
    assert format_prompt(with_context) == "The text.\n\nSummarise this."
    assert format_prompt(with_context, context_first=False) == "Summarise this.\n\nThe text."
    assert format_prompt(Record("2", "Just ask.", "r")) == "Just ask."
