"""Token budgets: measuring every text set on the same number of tokens.

Type counts, Heaps' exponent, distinct-n, n-gram entropy and the plug-in JS divergence all move
with the number of tokens they are computed on, not only with the process that wrote the texts:
Heaps' local exponent falls as N grows (one Zipf stream gives β 0.675 on its first 120k tokens
and 0.580 on 360k — science audit c1), and human answers are about 3× shorter than synthetic
ones. A *token budget* N compares sets on a common range:

    budget prefix = the set's texts in a seeded order, concatenated, cut after exactly N tokens
                    (whole texts, then the first tokens of the text that crosses N).

A set with fewer than N tokens gets NaN for every budget statistic, with the reason recorded —
never a value on a silently shorter range.

**Why one prefix of a seeded order, not an average over random subsamples.** The order is keyed
on the texts' ids (:func:`seeded_order`: SHA-256 of ``seed`` and the id), so

* sets answering the same prompts (every condition and the human test references) take their
  budget from the *same prompts*, in the same order, as far as each set's lengths allow — the
  comparison is matched on content as well as on length;
* a jackknife replicate (the set with a group of texts left out) is the same order without those
  texts, so its budget prefix differs from the full set's only by the texts left out and the ones
  that move in at the end — a proper leave-group-out replicate; a fresh random subsample per
  replicate would add subsampling noise to the interval;
* it costs one pass. Averaging K subsamples would lower the variance by at most the share that is
  due to the choice of texts; the jackknife interval reports that variance honestly instead.

The interval needs each jackknife replicate to reach N as well: a set with N ≤ tokens <
N·g/(g − 1) (g jackknife groups; 20 by default, so within 5% of N) has replicates that fall short;
their budget statistics are NaN and the interval rests on the others. Choose N comfortably below
the shortest set (the default leaves the study's human test references 20% above it).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import lru_cache
from typing import TypeVar

import numpy as np

from collapselab.errors import ConfigError

#: The default budget: below the study's shortest set (the human test references, about 120k word
#: tokens over 1,502 answers), so every set of the paper grid is measured on the same 100k tokens.
DEFAULT_TOKEN_BUDGET = 100_000

T = TypeVar("T")


def check_budget(metric: str, token_budget: object, *, optional: bool = True) -> int | None:
    """``token_budget`` as a positive int (None allowed when ``optional``); a clear error otherwise."""
    if token_budget is None and optional:
        return None
    if isinstance(token_budget, bool) or not isinstance(token_budget, int) or token_budget < 1:
        allowed = "a positive integer or null (the whole set)" if optional else "a positive integer"
        raise ConfigError(f"{metric}: token_budget must be {allowed}, not {token_budget!r}")
    return token_budget


def check_seed(metric: str, seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"{metric}: seed must be an integer, not {seed!r}")
    return seed


@lru_cache(maxsize=65536)
def _rank_key(seed: int, id_: str) -> bytes:
    return hashlib.sha256(f"{seed}\x00{id_}".encode()).digest()


def seeded_order(ids: Sequence[str], seed: int = 0) -> np.ndarray:
    """Positions of the texts sorted by SHA-256(``seed``, id); texts sharing an id keep their set
    order (stable sort). The order of a subset is the full set's order restricted to it."""
    keys = [_rank_key(seed, str(i)) for i in ids]
    return np.asarray(sorted(range(len(keys)), key=keys.__getitem__), dtype=np.int64)


def budget_prefix(per_text: Sequence[Sequence[T]], ids: Sequence[str], budget: int,
                  seed: int = 0) -> list[Sequence[T]] | None:
    """The texts' token lists in :func:`seeded_order`, the last one cut so that they hold exactly
    ``budget`` tokens; None when all of them together hold fewer."""
    if len(per_text) != len(ids):
        raise ValueError(f"{len(per_text)} token lists for {len(ids)} ids")
    if sum(map(len, per_text)) < budget:
        return None
    out: list[Sequence[T]] = []
    left = budget
    for i in seeded_order(ids, seed):
        tokens = per_text[i]
        out.append(tokens[:left] if len(tokens) > left else tokens)
        left -= len(out[-1])
        if left == 0:
            break
    return out


def short_reason(budget: int, n_tokens: int, what: str = "the set") -> str:
    """Why a budget statistic is NaN."""
    return (f"token budget {budget} not reached: {what} has {n_tokens} tokens (budget statistics are NaN, "
            "never computed on a shorter range; lower token_budget to compare shorter sets)")
