"""Length-matched (token-budget) variants of distinct-n, n-gram entropy and the JS divergence, and
markdown stripping before the JS divergence's tokens — against plain loops."""

from __future__ import annotations

import hashlib
import math
from collections import Counter

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon

import collapselab.metrics.catalog_embedding  # noqa: F401  (registers the metrics)
import collapselab.metrics.catalog_lexical  # noqa: F401
from collapselab.errors import ConfigError
from collapselab.metrics.base import TextSet, build_metric
from collapselab.metrics.distance import JSDivergence
from collapselab.metrics.lexical import Distinct, NgramEntropy
from collapselab.metrics.text import simple_tokens, strip_markdown

WORDS = "the a of cat dog sat ran on mat rug sun and then it was warm cold very big small".split()


def random_texts(n: int, seed: int, lo: int = 3, hi: int = 40) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=rng.integers(lo, hi))) + "." for _ in range(n)]


def text_set(texts: list[str], ids: list[str] | None = None, human: TextSet | None = None) -> TextSet:
    return TextSet(name="t", kind="condition", ids=ids or [f"p{i}" for i in range(len(texts))], texts=texts,
                   human=human)


def plain_prefix(texts: list[str], ids: list[str], budget: int, seed: int = 0) -> list[list[str]] | None:
    """Token lists of the markdown-stripped texts sorted by SHA-256 of "seed NUL id", cut after
    ``budget`` tokens, one token at a time (text boundaries kept)."""
    order = sorted(range(len(ids)), key=lambda i: hashlib.sha256(f"{seed}\x00{ids[i]}".encode()).hexdigest())
    out, taken = [], 0
    for i in order:
        kept = []
        for tok in simple_tokens(strip_markdown(texts[i])):
            if taken == budget:
                break
            kept.append(tok)
            taken += 1
        out.append(kept)
        if taken == budget:
            return out
    return None


def ngrams(lists: list[list[str]], n: int) -> list[tuple[str, ...]]:
    return [tuple(t[i:i + n]) for t in lists for i in range(len(t) - n + 1)]


@pytest.mark.parametrize("n", [1, 2, 3])
def test_distinct_and_entropy_at_a_budget_match_plain_loops(n: int) -> None:
    texts = random_texts(60, seed=n)
    ts = text_set(texts)
    prefix = plain_prefix(texts, ts.ids, 500, seed=4)
    grams = ngrams(prefix, n)
    counts = Counter(grams)
    metric = Distinct(n=n, token_budget=500, seed=4)
    distinct = metric.compute(ts)
    assert distinct.aggregates["corpus_budget"] == pytest.approx(len(counts) / len(grams), abs=1e-12)
    entropy_metric = NgramEntropy(n=n, token_budget=500, seed=4)
    entropy = entropy_metric.compute(ts)
    plain_h = -sum(c / len(grams) * math.log2(c / len(grams)) for c in counts.values())
    assert entropy.aggregates["corpus_budget"] == pytest.approx(plain_h, abs=1e-9)
    # whole-set values and per-item values are unchanged by the budget
    assert distinct.aggregates["corpus"] == Distinct(n=n).compute(ts).aggregates["corpus"]
    assert metric.primary == entropy_metric.primary == "corpus_budget"
    assert metric.name == f"distinct[n={n},token_budget=500,seed=4]"


def test_distinct_budget_removes_the_length_effect() -> None:
    """The same process, one set 4× longer: corpus distinct-2 falls with length; at a common budget
    the two agree far more closely."""
    short, long = text_set(random_texts(100, 10), ids=[f"s{i}" for i in range(100)]), text_set(random_texts(400, 11))
    whole = [Distinct(n=2).compute(t).aggregates["corpus"] for t in (short, long)]
    budget = [Distinct(n=2, token_budget=1500).compute(t).aggregates["corpus_budget"] for t in (short, long)]
    assert whole[0] - whole[1] > 0.05
    assert abs(budget[0] - budget[1]) < (whole[0] - whole[1]) / 4


def test_budget_statistics_are_nan_with_a_reason_for_a_short_set() -> None:
    ts = text_set(random_texts(3, 0))
    for metric in (Distinct(token_budget=10**5), NgramEntropy(token_budget=10**5)):
        result = metric.compute(ts)
        assert np.isnan(result.aggregates["corpus_budget"]) and np.isfinite(result.aggregates["corpus"])
        assert "token budget 100000 not reached" in result.details["budget_reason"]
    with pytest.raises(ConfigError, match="token_budget"):
        Distinct(token_budget=-5)
    with pytest.raises(ConfigError, match="seed"):
        NgramEntropy(token_budget=10, seed="x")
    assert build_metric("distinct", n=2).name == "distinct[n=2]"  # default: the whole set, as before
    assert build_metric("distinct", n=2).primary == "corpus"


def test_js_divergence_at_a_budget_matches_scipy_on_the_plain_prefixes() -> None:
    human = text_set(random_texts(80, 20))
    cond = text_set(random_texts(120, 21, lo=10, hi=60), human=human)
    for n in (1, 2):
        result = JSDivergence(n=n, token_budget=900).compute(cond)
        p, q = Counter(ngrams(plain_prefix(cond.texts, cond.ids, 900), n)), \
            Counter(ngrams(plain_prefix(human.texts, human.ids, 900), n))
        keys = sorted(set(p) | set(q))
        expected = jensenshannon([p[k] for k in keys], [q[k] for k in keys], base=2) ** 2
        assert result.aggregates["value_budget"] == pytest.approx(expected, abs=1e-12)
        assert result.aggregates["budget_tokens"] == 900
    short_human = text_set(random_texts(80, 20), human=text_set(random_texts(2, 1)))
    result = JSDivergence(token_budget=900).compute(short_human)
    assert np.isnan(result.aggregates["value_budget"]) and "the human references" in result.details["budget_reason"]
    assert JSDivergence(token_budget=900).primary == "value_budget" and JSDivergence().primary == "value"


def test_js_divergence_tokens_are_markdown_stripped() -> None:
    """Regression (audit b5): formatting marks are not vocabulary. A markdown-formatted copy of the
    human texts is at JS 0 from them (it was > 0 when '#', '*' and '|' counted as unigrams)."""
    plain = ["The cat sat on the mat.", "Dogs bark at night.", "It was warm and sunny."]
    marked = ["# The cat\n\n**sat** on the *mat*.", "- Dogs | bark | at night.", "> It was *warm* and __sunny__."]
    human = text_set(plain)
    assert JSDivergence(n=1).compute(text_set(marked, human=human)).aggregates["value"] == pytest.approx(0.0, abs=1e-12)
