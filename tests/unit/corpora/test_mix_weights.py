"""Multi-source weights are realised by example, not rounded to whole shards (audit a3).

Before the fix, four shards turned an equal three-source mix into 50/25/25 and 0.7/0.3 into
0.75/0.25 while the label showed the requested weights. Each source now answers its
largest-remainder share of the prompts (checked here against a plain Hamilton apportionment),
except where a source boundary sits exactly on a shard edge (whole shards are kept there)."""

import math
import random
from collections import Counter
from fractions import Fraction

import pytest

from collapselab.corpora.shares import (
    assign_examples,
    boundaries,
    cuts_a_shard,
    prompt_order,
    realised_shares,
    shard_counts,
    shards_needed,
    source_counts,
    source_spans,
    whole_shards,
)
from collapselab.corpora.split import make_shards, shard_sizes
from collapselab.errors import ConfigError, DataError


def hamilton(n: int, weights) -> list[int]:
    """Largest remainder, written out slowly: floors of the quotas, then one each to the largest
    fractional parts (ties to the earlier source)."""
    ws = [Fraction(str(float(w))) for w in weights]
    quotas = [n * w / sum(ws) for w in ws]
    counts = [math.floor(q) for q in quotas]
    order = sorted(range(len(ws)), key=lambda i: (-(quotas[i] - counts[i]), i))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    return counts


def rows(n: int, n_shards: int, categories: str = "xyz") -> list[dict]:
    """``n`` train prompts dealt into shards as make_shards sizes them, categories cycling."""
    out = []
    for j, size in enumerate(shard_sizes(n, n_shards)):
        out += [{"id": f"p{j}-{i}", "shard": j, "category": categories[i % len(categories)]} for i in range(size)]
    return out


def counts_of(assignment: dict[str, int], m: int) -> list[int]:
    c = Counter(assignment.values())
    return [c.get(i, 0) for i in range(m)]


CUT = [(300, 4, [1, 1, 1]), (301, 4, [1, 1, 1]), (300, 4, [0.7, 0.3]), (97, 4, [0.6, 0.3, 0.1]),
       (1000, 20, [1, 2]), (13509, 20, [1, 1, 1]), (50, 3, [5, 1]), (10, 4, [1, 1, 1]), (16, 4, [0.7, 0.3]),
       (13509, 4, [1, 1, 1]), (613, 7, [0.2, 0.45, 0.35])]


@pytest.mark.parametrize(("n", "n_shards", "weights"), CUT)
def test_counts_are_the_largest_remainder_shares_when_boundaries_cut_shards(n, n_shards, weights):
    assert cuts_a_shard(n_shards, weights)
    assignment = assign_examples(rows(n, n_shards), n_shards, weights, seed=1)
    assert len(assignment) == n  # every prompt answered by exactly one source
    assert counts_of(assignment, len(weights)) == hamilton(n, weights)
    assert source_counts(shard_sizes(n, n_shards), weights) == hamilton(n, weights)


def test_the_audits_cases_within_one_example():
    # before the fix: 150/75/75 and 225/75
    equal = counts_of(assign_examples(rows(300, 4), 4, [1, 1, 1], seed=42), 3)
    assert all(abs(c - 100) <= 1 for c in equal)
    weighted = counts_of(assign_examples(rows(300, 4), 4, [0.7, 0.3], seed=42), 2)
    assert abs(weighted[0] - 210) <= 1 and abs(weighted[1] - 90) <= 1
    uneven = counts_of(assign_examples(rows(301, 4), 4, [1, 1, 1], seed=42), 3)
    assert all(abs(c - 301 / 3) < 1 for c in uneven)


@pytest.mark.parametrize(("n", "n_shards", "weights"), [
    (13509, 4, [1, 1, 1, 1]), (10, 4, [1, 1]), (14, 4, [1, 1]), (1000, 8, [2, 1, 1]), (30, 2, [1, 1])])
def test_a_boundary_on_a_shard_edge_keeps_whole_shards(n, n_shards, weights):
    sizes = shard_sizes(n, n_shards)
    expected = [sum(sizes[j] for j in full) for full in whole_shards(n_shards, weights)]
    assert source_counts(sizes, weights) == expected
    # the price: off by at most n_shards / 4 examples from the exact share
    assert all(abs(c - q) <= max(1, n_shards / 4) for c, q in zip(expected, hamilton(n, weights), strict=True))


def test_equal_sources_over_as_many_shards_are_the_studys_quarters():
    prompts = rows(13509, 4)
    owner = assign_examples(prompts, 4, [1, 1, 1, 1], seed=42)
    assert all(owner[r["id"]] == r["shard"] for r in prompts)
    assert shards_needed(4, [1, 1, 1, 1]) == [[0], [1], [2], [3]]
    assert counts_of(owner, 4) == hamilton(13509, [1, 1, 1, 1]) == [3378, 3377, 3377, 3377]


@pytest.mark.parametrize(("n", "n_shards", "weights"), [*CUT, (10, 4, [1, 1]), (100, 4, [0.999, 0.001])])
def test_sources_answer_only_their_shards_and_whole_ones_whole(n, n_shards, weights):
    prompts = rows(n, n_shards)
    owner = assign_examples(prompts, n_shards, weights, seed=3)
    needed, whole = shards_needed(n_shards, weights), whole_shards(n_shards, weights)
    per_shard = Counter((owner[r["id"]], r["shard"]) for r in prompts)
    sizes = shard_sizes(n, n_shards)
    for i in range(len(weights)):
        assert {j for (s, j) in per_shard if s == i} <= set(needed[i])
        assert all(per_shard[(i, j)] == sizes[j] for j in whole[i])
    expected = shard_counts(sizes, weights)  # what plan and the partial generate stages count
    assert [{j: per_shard.get((i, j), 0) for j in needed[i]} for i in range(len(weights))] == expected


def test_a_boundary_near_a_shard_edge_stays_in_its_shard():
    # 0.999/0.001 of 100 prompts: the exact counts are 100/0, the boundary stays inside shard 3
    assert boundaries([25, 25, 25, 25], [0.999, 0.001]) == [0, 100, 100]
    assert source_counts([25, 25, 25, 25], [0.999, 0.001]) == [100, 0]


def test_assignment_does_not_depend_on_input_order_but_on_the_seed():
    prompts = rows(120, 4)
    shuffled = prompts[:]
    random.Random(0).shuffle(shuffled)
    base = assign_examples(prompts, 4, [1, 1, 1], seed=7)
    assert assign_examples(shuffled, 4, [1, 1, 1], seed=7) == base
    other = assign_examples(prompts, 4, [1, 1, 1], seed=8)
    assert other != base and counts_of(other, 3) == counts_of(base, 3)  # which prompts, not how many


def test_a_cut_shard_is_split_by_category_in_proportion():
    """The part of a cut shard each source answers is stratified like the shard itself."""
    prompts = rows(400, 4, categories="aabbbccccd")  # shard categories 20/30/40/10 %
    owner = assign_examples(prompts, 4, [1, 1, 1], seed=5)
    shard1 = [r for r in prompts if r["shard"] == 1]
    total = Counter(r["category"] for r in shard1)
    first = Counter(r["category"] for r in shard1 if owner[r["id"]] == 0)  # 1/3 of shard 1
    k = sum(first.values())
    assert k == 134 - 100  # source 0: its largest-remainder 134 of 400, shard 0 whole
    for category, size in total.items():
        assert abs(first[category] - k * size / len(shard1)) <= 1, (category, first, total)
    order = prompt_order(shard1, seed=5)
    for prefix in range(1, len(order) + 1):
        seen = Counter(next(r["category"] for r in shard1 if r["id"] == pid) for pid in order[:prefix])
        assert all(abs(seen[c] - prefix * size / len(shard1)) <= 1 for c, size in total.items())


def test_spans_and_needed_shards():
    assert source_spans(4, [1, 1, 1]) == [(0, Fraction(4, 3)), (Fraction(4, 3), Fraction(8, 3)), (Fraction(8, 3), 4)]
    assert shards_needed(4, [1, 1, 1]) == [[0, 1], [1, 2], [2, 3]]
    assert whole_shards(4, [1, 1, 1]) == [[0], [], [3]]
    assert shards_needed(4, [0.7, 0.3]) == [[0, 1, 2], [2, 3]]
    assert shards_needed(4, [1, 1]) == [[0, 1], [2, 3]] and not cuts_a_shard(4, [1, 1])
    with pytest.raises(ConfigError, match="positive"):
        source_spans(4, [1, 0])


def test_bad_input_is_named():
    with pytest.raises(DataError, match="duplicate"):
        assign_examples([{"id": "a", "shard": 0, "category": "x"}] * 2, 1, [1, 1], seed=0)
    with pytest.raises(DataError, match="shard 4, but there are 4 shards"):
        assign_examples([{"id": "a", "shard": 4, "category": "x"}], 4, [1, 1], seed=0)


def test_realised_shares():
    shares = realised_shares({"p": 0, "q": 0, "r": 1, "s": 2}, ["a", "b", "c"])
    assert shares == {"a": {"count": 2, "share": 0.5}, "b": {"count": 1, "share": 0.25},
                      "c": {"count": 1, "share": 0.25}}


def test_shard_sizes_match_make_shards():
    from collapselab.corpora.base import Record

    records = [Record(id=f"r{i}", prompt="p", response="r", category="abc"[i % 3]) for i in range(23)]
    assert [len(s) for s in make_shards(records, 4, seed=1)] == shard_sizes(23, 4)
