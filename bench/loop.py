"""Benchmark: the collapse-loop metrics of issue 13 against the naive computations they replace,
same answers, in the same run.

    OMP_WAIT_POLICY=PASSIVE python bench/loop.py --record bench/RESULTS.md --out /tmp/loop.json
    python bench/loop.py --tiny                     # seconds: the unit test's size

Five measurements, each a ratio "baseline s / fast s" with the baseline run in the same process
on the same inputs, and a check that both give the same answers (the script exits 1 if not):

1. ``verbatim_ngrams[n=8]`` and ``[n=13]`` (:mod:`collapselab.metrics.memorization`: a hashed
   n-gram index of the training texts) against a quadratic scan: for each n-gram of each
   generated text, a substring search of every training text (words joined by spaces, padded,
   stopping at the first hit). Inputs: ``--train`` synthetic training texts of ``--words`` words
   and ``--generated`` texts of as many words, each made of spans copied from training texts
   (3–80 words) and fresh words (per text a random copy share in 0–0.9; the provenance is kept).
2. ``longest_copy`` (a suffix automaton) against the dynamic-programming longest common substring
   of each text with each training text.
3. ``nearest_neighbor_distance`` (:mod:`collapselab.metrics.near_duplicates`: blocked matrix
   products) against scikit-learn ``NearestNeighbors(metric="cosine", algorithm="brute")``
   (``kneighbors(n_neighbors=1)`` without a query: every point's nearest *other* point) on
   ``--embeddings`` × ``--dim`` float32 vectors (Gaussian clusters, 5% near-copies).
4. ``distinct_at_k`` and ``within_prompt_distance`` (:mod:`collapselab.metrics.within_prompt`)
   against a plain Python double loop over each prompt's pairs of answers (one ``numpy`` dot
   product per pair), ``--prompts`` prompts × ``--k`` answers of ``--dim`` dimensions (a third of
   the prompts near-collapsed).
5. the closed form ``expected_distinct`` (:mod:`collapselab.loop.closed_form`, replace and
   accumulate) against a vectorised Monte-Carlo simulation of the loop (draw n, refit by counting;
   the unit tests' ``simulate``) for the ground-truth test's setting (types 30, Zipf 0.5, n 32, 5
   generations). The replicates are as many as make the simulation's standard error a tenth
   (``--mc-fraction``) of the ground-truth test's: that test's replicates (``--gt-seeds`` 24, its
   slow run, z = 4) run the same Wright–Fisher chain, so its standard error is sd/√24 and the
   simulation's sd/√R; R = 24 / 0.1² = 2,400 makes the simulation's error band z·se a tenth of the
   test's tolerance z·se (used as the expectation in its place, it widens the check's spread by
   √1.01, 0.5%). Agreement: |simulation − closed form| per generation in its standard errors.

Naive sides that would take minutes run on a subset and are **extrapolated linearly**, stated in
the row: the n-gram scan on ``--naive-texts`` of the generated texts (its cost is linear in the
texts scanned; the training side's tokenisation, a fixed cost, is timed apart and added once);
the longest common substring on ``--lcs-texts`` texts × ``--lcs-train`` training texts (linear in
the pairs; the training subset holds the copy sources of the chosen texts, padded with others),
and its answers are compared with a suffix automaton of the same training subset.

Timing: fast sides cold (the memorization caches — tokens, markdown stripping, indexes — are
cleared before each repeat, so the index build and tokenisation are in), best of ``--repeat``;
naive sides once; both with ``--threads`` BLAS/OpenMP threads (default 1, threadpoolctl: see
bench/metrics.py for why on a shared 2-core machine). Rows go to the ``## loop`` table of
``--record`` (a new section is put before ``## gpu``, which stays last); ``--out`` writes JSON.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench/judges.py: spinning threads on 2 shared cores

import numpy as np  # noqa: E402
from _machine import append_table_rows, cpu_model  # noqa: E402  # bench/ is on sys.path when a script runs

SECTION = "## loop"
BEFORE = "## gpu"  # the section the new one is put in front of (gpu.py appends its rows at the file's end)
SECTION_HEADER = """## loop

`python bench/loop.py --record bench/RESULTS.md` — the collapse-loop metrics of issue 13 against
the naive computations they replace, same inputs, same run, same answers (checked; the script
fails otherwise). Memorization: 2,000 synthetic training texts × 200 words and 300 generated texts
of 200 words built from copied spans (3–80 words) and fresh words; `verbatim_ngrams` (hashed
n-gram index) against a substring scan of every training text for every n-gram, `longest_copy`
(suffix automaton) against the dynamic-programming longest common substring with every training
text — both naive sides measured on a subset and extrapolated linearly (the row says which), both
fast sides cold (tokenisation and index build included). `nearest_neighbor_distance` (blocked
matrix products) against scikit-learn `NearestNeighbors(metric="cosine", algorithm="brute")` on
5,000 × 384 float32 embeddings. `distinct_at_k` / `within_prompt_distance` against a Python double
loop over each prompt's answer pairs (1,000 prompts × k 8, 384-d). `expected_distinct` (exact,
per-type binomial chains) against a vectorised Monte-Carlo simulation of the loop (types 30,
Zipf 0.5, n 32, 5 generations) with the replicates that make its standard error a tenth of the
ground-truth test's (24 seeds, z 4: R = 2,400). Fast sides: best of 3; both sides 1 BLAS/OpenMP
thread. Ratio: baseline s / fast s.

"""
COLUMNS = [("date", ""), ("machine", ""), ("versions", ""), ("metric", ""), ("size", ""), ("fast s", ":"),
           ("baseline", ""), ("baseline s", ":"), ("ratio", ":"), ("agreement", ""), ("notes", "")]
SECTION_HEADER += ("| " + " | ".join(name for name, _ in COLUMNS) + " |\n"
                   + "|" + "|".join("---" + align for _, align in COLUMNS) + "|\n")

#: the ground-truth test's loop (tests/unit/loop/test_ground_truth.py): types, Zipf exponent, n, generations
GT_TYPES, GT_ZIPF, GT_N, GT_GENERATIONS = 30, 0.5, 32, 5
AGREE_Z = 4.0  # the Monte-Carlo agreement check: |mean − exact| ≤ z·se, as the ground-truth test
NN_ATOL = 1e-5  # sklearn computes float32 inputs in float32; the metric in float64
WP_ATOL = 1e-9

FULL = {"train": 2000, "words": 200, "generated": 300, "naive_texts": 10, "lcs_texts": 4, "lcs_train": 400,
        "embeddings": 5000, "dim": 384, "prompts": 1000, "k": 8, "gt_seeds": 24, "repeat": 3,
        "tests": 10, "pairs": 12}
TINY = {"train": 60, "words": 60, "generated": 20, "naive_texts": 4, "lcs_texts": 3, "lcs_train": 12,
        "embeddings": 300, "dim": 32, "prompts": 60, "k": 8, "gt_seeds": 4, "repeat": 1,
        "tests": 2, "pairs": 12}


# --------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------


def vocabulary(size: int, rng: np.random.Generator) -> list[str]:
    """``size`` distinct pronounceable lower-case pseudo-words (2–4 syllables)."""
    onsets = list("bdfgklmnprstvz") + ["ch", "sh", "th", "br", "st"]
    vowels = ["a", "e", "i", "o", "u", "ai", "ea", "ou"]
    words: set[str] = set()
    while len(words) < size:
        syllables = rng.integers(2, 5)
        words.add("".join(onsets[rng.integers(len(onsets))] + vowels[rng.integers(len(vowels))]
                          for _ in range(syllables)))
    return sorted(words)


def _as_text(words: list[str]) -> str:
    """Words as prose: sentences of 8–20 words, capitalised, with a full stop (the metrics'
    tokeniser lower-cases and drops the punctuation, so the words are what counts)."""
    out, i, rng = [], 0, np.random.default_rng(len(words))
    while i < len(words):
        j = min(len(words), i + int(rng.integers(8, 21)))
        sentence = words[i:j]
        out.append(" ".join([sentence[0].capitalize(), *sentence[1:]]) + ".")
        i = j
    return " ".join(out)


def memorization_texts(n_train: int, n_generated: int, n_words: int, seed: int
                       ) -> tuple[list[str], list[str], list[set[int]]]:
    """Training texts of ``n_words`` Zipf-distributed words (vocabulary 5,000, exponent 1.1), and
    generated texts of ``n_words`` words: per text a copy share in 0–0.9; a span is copied (3–80
    words from a random training text) with that probability, else fresh words follow. Returns the
    training texts, the generated texts and, per generated text, the training texts it copied from."""
    rng = np.random.default_rng(seed)
    vocab = vocabulary(5000, rng)
    weights = np.arange(1, len(vocab) + 1, dtype=float) ** -1.1
    weights /= weights.sum()

    def fresh(k: int) -> list[str]:
        return [vocab[i] for i in rng.choice(len(vocab), size=k, p=weights)]

    train_words = [fresh(n_words) for _ in range(n_train)]
    generated, sources = [], []
    for _ in range(n_generated):
        share = rng.uniform(0.0, 0.9)
        words: list[str] = []
        used: set[int] = set()
        while len(words) < n_words:
            length = int(rng.integers(3, 81))
            if rng.random() < share:
                t = int(rng.integers(n_train))
                start = int(rng.integers(max(1, n_words - length + 1)))
                words += train_words[t][start:start + length]
                used.add(t)
            else:
                words += fresh(min(length, 20))
        generated.append(words[:n_words])
        sources.append(used)
    return [_as_text(w) for w in train_words], [_as_text(w) for w in generated], sources


def clustered_embeddings(n: int, dim: int, seed: int) -> np.ndarray:
    """``n`` float32 unit rows (the stored embeddings' type): 50 Gaussian clusters of varying
    spread, and 5% near-copies of other rows (tiny noise), so the nearest-neighbour distances run
    from ≈ 0 to ≈ 1."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((50, dim))
    spread = rng.uniform(0.3, 1.5, size=50)
    label = rng.integers(50, size=n)
    x = centres[label] + spread[label, None] * rng.standard_normal((n, dim))
    copies = rng.choice(n, size=n // 20, replace=False)
    x[copies] = x[rng.integers(n, size=copies.size)] + 0.01 * rng.standard_normal((copies.size, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


def prompt_blocks(prompts: int, k: int, dim: int, seed: int) -> list[np.ndarray]:
    """Per prompt, ``k`` float32 unit rows around a prompt centre: a third near-collapsed (cosine
    ≈ 0.95–0.99 to the centre), the rest with a spread that puts pairs on both sides of 0.9."""
    rng = np.random.default_rng(seed)
    blocks = []
    for p in range(prompts):
        centre = rng.standard_normal(dim)
        centre /= np.linalg.norm(centre)
        noise = 0.05 if p % 3 == 0 else rng.uniform(0.1, 1.2)
        x = centre + noise * rng.standard_normal((k, dim)) / np.sqrt(dim)
        blocks.append((x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32))
    return blocks


# --------------------------------------------------------------------------------------------------
# Naive computations
# --------------------------------------------------------------------------------------------------


def naive_verbatim_shares(queries: Sequence[Sequence[str]], padded_training: Sequence[str], n: int) -> list[float]:
    """Per query (a word list), the share of its word n-grams found verbatim in some training text:
    for each n-gram, a substring search (" w1 … wn ") of each padded training text (" " + its words
    joined by spaces + " "), stopping at the first hit. Words hold no spaces, so a substring match
    is a match of n whole consecutive words."""
    shares = []
    for w in queries:
        total = len(w) - n + 1
        if total <= 0:
            shares.append(math.nan)
            continue
        hits = 0
        for j in range(total):
            needle = " " + " ".join(w[j:j + n]) + " "
            for t in padded_training:
                if needle in t:
                    hits += 1
                    break
        shares.append(hits / total)
    return shares


def longest_common_substring(a: Sequence[str], b: Sequence[str]) -> int:
    """The length of the longest common contiguous run of ``a`` and ``b``: the textbook O(|a|·|b|)
    dynamic programme, L[i][j] = L[i−1][j−1] + 1 when a_i = b_j, else 0, one row at a time."""
    best, m = 0, len(b)
    prev = [0] * (m + 1)
    for x in a:
        cur = [0] * (m + 1)
        for j in range(m):
            if x == b[j]:
                v = prev[j] + 1
                cur[j + 1] = v
                if v > best:
                    best = v
        prev = cur
    return best


def naive_longest_copy(queries: Sequence[Sequence[str]], training: Sequence[Sequence[str]]) -> list[int]:
    """Per query, the longest common substring with any training text (every pair by the DP)."""
    return [max((longest_common_substring(q, t) for t in training), default=0) for q in queries]


def _unit(block: np.ndarray) -> list[np.ndarray]:
    rows = [np.asarray(row, dtype=np.float64) for row in block]
    return [row / math.sqrt(float(row @ row)) for row in rows]


def naive_distinct_at_k(blocks: Sequence[np.ndarray], threshold: float) -> list[float]:
    """Per prompt, distinct@k by NoveltyBench's greedy partition written out: each answer against
    each class's first member, one dot product per pair, until one is ≥ ``threshold``."""
    out = []
    for block in blocks:
        e = _unit(block)
        representatives: list[int] = []
        for i in range(len(e)):
            for r in representatives:
                if float(e[i] @ e[r]) >= threshold:
                    break
            else:
                representatives.append(i)
        out.append(float(len(representatives)))
    return out


def naive_within_prompt_distance(blocks: Sequence[np.ndarray]) -> list[float]:
    """Per prompt, the mean of 1 − cos over the ordered pairs i ≠ j of its answers (double loop)."""
    out = []
    for block in blocks:
        e = _unit(block)
        k = len(e)
        total = 0.0
        for i in range(k):
            for j in range(k):
                if i != j:
                    total += 1.0 - float(e[i] @ e[j])
        out.append(total / (k * (k - 1)))
    return out


def simulate_distinct(p: np.ndarray, n: int, generations: int, mode: str, replicates: int,
                      seed: int) -> np.ndarray:
    """The loop by simulation (replicates × generations): draw n samples of the current model,
    count the distinct types among them, refit by counting the newest samples (replace) or all
    samples so far (accumulate) — tests/unit/loop/test_closed_form.py's ``simulate``."""
    rng = np.random.default_rng(seed)
    out = np.zeros((replicates, generations))
    model = np.tile(p, (replicates, 1))
    total = np.zeros_like(model)
    for g in range(generations):
        counts = rng.multinomial(n, model)
        total = total + counts if mode == "accumulate" else counts.astype(float)
        model = total / total.sum(axis=1, keepdims=True)
        out[:, g] = (counts > 0).sum(axis=1)
    return out


# --------------------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------------------


def _clear_memorization_caches() -> None:
    from collapselab.metrics import memorization
    from collapselab.metrics.text import plain_text

    memorization.words_of.cache_clear()
    plain_text.cache_clear()
    for cache in memorization._CACHE.values():
        cache.clear()


def _best(fn: Callable[[], Any], repeat: int, before: Callable[[], None] | None = None) -> tuple[float, Any]:
    """Best wall time of ``repeat`` calls of ``fn`` (``before`` runs untimed ahead of each) and the
    last call's result."""
    best, result = math.inf, None
    for _ in range(repeat):
        if before:
            before()
        started = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - started)
    return best, result


def _spaced(count: int, of: int) -> list[int]:
    """``count`` indices evenly spread over range(of)."""
    return sorted({int(i) for i in np.linspace(0, of - 1, num=min(count, of))})


def bench_memorization(args: argparse.Namespace) -> list[dict[str, Any]]:
    from collapselab.metrics.base import TextSet
    from collapselab.metrics.memorization import LongestCopy, SuffixAutomaton, VerbatimNgrams, words_of

    training, generated, sources = memorization_texts(args.train, args.generated, args.words, args.seed)
    textset = TextSet("bench", "condition", [f"g{i}" for i in range(len(generated))], generated,
                      training_texts=training)
    size = f"{args.train} training × {args.words} words, {args.generated} texts × {args.words} words"
    rows = []
    chosen = _spaced(args.naive_texts, len(generated))
    for n in (8, 13):
        metric = VerbatimNgrams(n=n)
        fast_s, result = _best(lambda m=metric: m.compute(textset), args.repeat, _clear_memorization_caches)
        warm_s, _ = _best(lambda m=metric: m.compute(textset), args.repeat)
        fast = result.per_item["share"]
        _clear_memorization_caches()
        started = time.perf_counter()  # fixed cost: tokenise and pad the training texts once
        padded = [" " + " ".join(words_of(t)) + " " for t in training]
        fixed_s = time.perf_counter() - started
        queries = [words_of(generated[i]) for i in chosen]
        started = time.perf_counter()
        naive = naive_verbatim_shares(queries, padded, n)
        scan_s = time.perf_counter() - started
        scale = len(generated) / len(chosen)
        naive_s = fixed_s + scan_s * scale
        diff = float(np.nanmax(np.abs(np.asarray(naive) - fast[chosen]))) if chosen else 0.0
        rows.append({
            "metric": metric.name, "size": size, "fast_s": fast_s, "warm_s": warm_s,
            "baseline": "substring scan of every training text per n-gram",
            "baseline_s": naive_s, "measured_s": fixed_s + scan_s, "extrapolated": scale != 1,
            "ok": diff == 0.0, "max_abs_diff": diff, "compared": len(chosen),
            "agreement": f"per-text shares equal on the {len(chosen)} scanned texts (max abs diff {diff:.1e})",
            "notes": (f"naive: {len(chosen)} of {len(generated)} texts scanned ({scan_s:.2f} s) × "
                      f"{scale:g}, plus tokenising the training texts once ({fixed_s:.2f} s); fast warm "
                      f"(index cached) {warm_s:.3f} s; mean share {np.nanmean(fast):.3f}"),
        })

    metric = LongestCopy()
    fast_s, result = _best(lambda: metric.compute(textset), args.repeat, _clear_memorization_caches)
    warm_s, _ = _best(lambda: metric.compute(textset), args.repeat)
    fast = result.per_item["words"]
    lcs_chosen = _spaced(args.lcs_texts, len(generated))
    subset = sorted(set().union(*(sources[i] for i in lcs_chosen)))[: args.lcs_train]
    others = [t for t in range(len(training)) if t not in set(subset)]
    subset += others[: max(0, args.lcs_train - len(subset))]
    _clear_memorization_caches()
    queries = [words_of(generated[i]) for i in lcs_chosen]
    train_words = [words_of(training[t]) for t in subset]
    started = time.perf_counter()
    naive = naive_longest_copy(queries, train_words)
    lcs_s = time.perf_counter() - started
    scale = (len(generated) * len(training)) / (len(queries) * len(train_words))
    automaton = SuffixAutomaton([training[t] for t in subset])
    same_subset = [automaton.longest_match(q) for q in queries]
    diff = max((abs(a - b) for a, b in zip(naive, same_subset, strict=True)), default=0)
    bounded = all(fast[i] >= v for i, v in zip(lcs_chosen, naive, strict=True))
    rows.append({
        "metric": metric.name, "size": size, "fast_s": fast_s, "warm_s": warm_s,
        "baseline": "DP longest common substring with every training text",
        "baseline_s": lcs_s * scale, "measured_s": lcs_s, "extrapolated": scale != 1,
        "ok": diff == 0 and bounded, "max_abs_diff": float(diff), "compared": len(queries),
        "agreement": (f"{len(queries)} texts × {len(train_words)} training texts: DP = automaton of the same "
                      f"subset ({naive} words); full-corpus values ≥ them"),
        "notes": (f"naive: {len(queries)} × {len(train_words)} pairs ({lcs_s:.2f} s) × {scale:g} (all "
                  f"{len(generated)} × {len(training)} pairs); the subset holds the texts' copy sources; fast warm "
                  f"(automaton cached) {warm_s:.3f} s; mean {np.mean(fast):.1f} words, max {np.max(fast):.0f}"),
    })
    return rows


def bench_near_duplicates(args: argparse.Namespace) -> dict[str, Any]:
    from sklearn.neighbors import NearestNeighbors

    from collapselab.metrics.base import TextSet
    from collapselab.metrics.near_duplicates import NearestNeighborDistance

    x = clustered_embeddings(args.embeddings, args.dim, args.seed)
    textset = TextSet("bench", "condition", [f"e{i}" for i in range(len(x))], [""] * len(x), embeddings=x)
    metric = NearestNeighborDistance()
    fast_s, result = _best(lambda: metric.compute(textset), args.repeat)
    fast = result.per_item["distance"]

    def sk() -> np.ndarray:
        nn = NearestNeighbors(n_neighbors=1, metric="cosine", algorithm="brute").fit(x)
        return nn.kneighbors(n_neighbors=1, return_distance=True)[0][:, 0]  # no query: self excluded

    sk_s, reference = _best(sk, args.repeat)
    diff = float(np.max(np.abs(fast - reference)))
    return {"metric": metric.name, "size": f"{len(x)} × {args.dim} float32", "fast_s": fast_s,
            "baseline": 'sklearn NearestNeighbors(metric="cosine", algorithm="brute")', "baseline_s": sk_s,
            "measured_s": sk_s, "extrapolated": False, "ok": diff <= NN_ATOL, "max_abs_diff": diff,
            "compared": len(x), "agreement": f"max abs diff {diff:.1e} (tolerance {NN_ATOL:g}: sklearn in float32)",
            "notes": (f"both best of {args.repeat}; mean distance {fast.mean():.3f}, "
                      f"near-duplicates {result.aggregates['near_duplicates']:.3f}")}


def bench_within_prompt(args: argparse.Namespace) -> list[dict[str, Any]]:
    from collapselab.metrics.base import TextSet
    from collapselab.metrics.within_prompt import DistinctAtK, WithinPromptDistance

    blocks = prompt_blocks(args.prompts, args.k, args.dim, args.seed)
    textset = TextSet("bench", "condition", [f"p{i}" for i in range(len(blocks))], [""] * len(blocks),
                      sample_embeddings=blocks)
    distinct_metric, distance_metric = DistinctAtK(), WithinPromptDistance()
    distinct_s, distinct_result = _best(lambda: distinct_metric.compute(textset), args.repeat)
    distance_s, distance_result = _best(lambda: distance_metric.compute(textset), args.repeat)
    naive_distinct_s, naive_distinct = _best(lambda: naive_distinct_at_k(blocks, distinct_metric.threshold), 1)
    naive_distance_s, naive_distance = _best(lambda: naive_within_prompt_distance(blocks), 1)
    k = args.k
    size = f"{args.prompts} prompts × k {k}, {args.dim}-d"
    fast_distinct = distinct_result.per_item["distinct"]
    mismatched = int(np.sum(np.asarray(naive_distinct) != fast_distinct))
    diff = float(np.max(np.abs(np.asarray(naive_distance) - distance_result.per_item["distance"])))
    return [
        {"metric": distinct_metric.name, "size": size, "fast_s": distinct_s,
         "baseline": "Python loop over (answer, class representative) pairs", "baseline_s": naive_distinct_s,
         "measured_s": naive_distinct_s, "extrapolated": False, "ok": mismatched == 0,
         "max_abs_diff": float(np.max(np.abs(np.asarray(naive_distinct) - fast_distinct))),
         "compared": args.prompts,
         "agreement": f"{args.prompts - mismatched}/{args.prompts} prompts' counts equal",
         "notes": (f"fast best of {args.repeat}; mean distinct {np.mean(fast_distinct):.2f}, "
                   f"collapsed {distinct_result.aggregates['collapsed']:.2f}")},
        {"metric": distance_metric.name, "size": size, "fast_s": distance_s,
         "baseline": "Python double loop over answer pairs", "baseline_s": naive_distance_s,
         "measured_s": naive_distance_s, "extrapolated": False, "ok": diff <= WP_ATOL, "max_abs_diff": diff,
         "compared": args.prompts, "agreement": f"max abs diff {diff:.1e}",
         "notes": (f"fast best of {args.repeat}; fast side O(k·d) per prompt (‖Σe‖² identity); "
                   f"mean distance {distance_result.aggregates['mean']:.3f}")},
    ]


def bench_closed_form(args: argparse.Namespace) -> list[dict[str, Any]]:
    from collapselab.loop.closed_form import expected_distinct, within_tolerance
    from collapselab.models.toy import zipf_probabilities

    p = zipf_probabilities(GT_TYPES, GT_ZIPF)
    replicates = math.ceil(args.gt_seeds / args.mc_fraction**2)
    size = f"types {GT_TYPES}, Zipf {GT_ZIPF}, n {GT_N}, {GT_GENERATIONS} generations"
    rows = []
    for mode in ("replace", "accumulate"):
        exact_s, exact = _best(lambda m=mode: expected_distinct(p, GT_N, GT_GENERATIONS, m), max(args.repeat, 5))
        mc_s, sim = _best(lambda m=mode: simulate_distinct(p, GT_N, GT_GENERATIONS, m, replicates, args.seed),
                          args.repeat)
        gt_s, _ = _best(lambda m=mode: simulate_distinct(p, GT_N, GT_GENERATIONS, m, args.gt_seeds, args.seed),
                        max(args.repeat, 5))
        check = within_tolerance(sim, exact, z=AGREE_Z)
        zs = [abs(c.z_score) for c in check.checks]
        se = [c.se for c in check.checks]
        diff = float(np.max(np.abs(sim.mean(axis=0) - exact)))
        rows.append({
            "metric": f"expected_distinct[mode={mode}]", "size": size, "fast_s": exact_s,
            "baseline": f"Monte Carlo, {replicates:,} replicates", "baseline_s": mc_s, "measured_s": mc_s,
            "extrapolated": False, "ok": check.ok, "max_abs_diff": diff, "compared": GT_GENERATIONS,
            "replicates": replicates, "max_z": max(zs),
            "agreement": (f"max abs(MC − exact) {diff:.3f} types = {max(zs):.2f} se (se {min(se):.3f}–{max(se):.3f}; "
                          f"check ≤ {AGREE_Z:g} se)"),
            "notes": (f"R = {args.gt_seeds} seeds / {args.mc_fraction:g}² (MC se = {args.mc_fraction:g} × the "
                      f"ground-truth test's se); MC at the test's own se ({args.gt_seeds} replicates) "
                      f"{gt_s * 1e3:.2f} ms; exact E[distinct] {exact[0]:.2f} → {exact[-1]:.2f}"),
        })
    return rows


def bench_signed_rank(args: argparse.Namespace) -> dict[str, Any]:
    """The stats stage's paired test: :func:`collapselab.stats.paired.signed_rank_test` (the exact
    p-value of few tied differences counted by dynamic programming) against
    ``scipy.stats.wilcoxon`` as scipy runs that case by default (its generic permutation test,
    enumerating all 2^n sign patterns one at a time), on ``tests`` samples of ``pairs`` ≤ 13 tied
    integer differences; the p-values and statistics must be equal."""
    from scipy import stats as sps

    from collapselab.stats.paired import signed_rank_test

    rng = np.random.default_rng(args.seed)
    samples = [rng.integers(-3, 5, size=args.pairs).astype(float) for _ in range(args.tests)]
    fast_s, fast = _best(lambda: [signed_rank_test(d) for d in samples], args.repeat)
    scipy_s, ref = _best(lambda: [sps.wilcoxon(d, zero_method="wilcox") for d in samples], 1)
    diff = max(abs(p - r.pvalue) for (_, p), r in zip(fast, ref, strict=True))
    same_statistic = all(t == r.statistic for (t, _), r in zip(fast, ref, strict=True))
    return {"metric": "signed_rank_test (stats stage)", "size": f"{args.tests} tests × {args.pairs} tied differences",
            "fast_s": fast_s, "baseline": "scipy.stats.wilcoxon, method auto (enumerates 2^n sign patterns)",
            "baseline_s": scipy_s, "measured_s": scipy_s, "extrapolated": False,
            "ok": diff < 1e-12 and same_statistic, "max_abs_diff": diff, "compared": len(samples),
            "agreement": f"p-values equal (max abs diff {diff:.1e}), statistics equal: {same_statistic}",
            "notes": "the loop config's stats stage (8 test prompts, 35 metrics, 4 generations): 369 s → 8.1 s, "
                     "profiled on the same inputs; more than 13 differences, or no ties: scipy's own call"}


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------


def versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for name in ("numpy", "scipy", "scikit-learn"):
        try:
            out.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            pass
    return ", ".join(out + [f"python {platform.python_version()}"])


def _s(x: float) -> str:
    return f"{x:.3g}" if x < 100 else f"{x:.0f}"


def table_row(r: dict[str, Any], *, date: str, machine: str, versions: str, notes: str) -> str:
    """One markdown row of the ``## loop`` table."""
    baseline_s = _s(r["baseline_s"]) + (" (extrapolated)" if r["extrapolated"] else "")
    cells = [date, machine, versions, r["metric"], r["size"], _s(r["fast_s"]), r["baseline"], baseline_s,
             f"{r['baseline_s'] / r['fast_s']:.1f}x", r["agreement"] if r["ok"] else f"**DISAGREE** {r['agreement']}",
             notes]
    return "| " + " | ".join(c.replace("|", "/") for c in cells) + " |"


def record(path: Path, rows: list[str]) -> None:
    """Append ``rows`` to the ``## loop`` table of ``path`` (the section, when missing, in front of ``## gpu``)."""
    append_table_rows(path, SECTION, SECTION_HEADER, rows, before=BEFORE)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="the unit test's sizes (seconds)")
    for name, value in FULL.items():
        parser.add_argument("--" + name.replace("_", "-"), type=int, default=None,
                            help=f"default {value} ({TINY[name]} with --tiny)")
    parser.add_argument("--mc-fraction", type=float, default=0.1,
                        help="Monte-Carlo standard error as a fraction of the ground-truth test's (default 0.1)")
    parser.add_argument("--only", default="memorization,near_duplicates,within_prompt,closed_form,signed_rank",
                        help="comma-separated parts to run")
    parser.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP threads, both sides")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--record", type=Path, default=None, help="append rows to this RESULTS.md")
    parser.add_argument("--out", type=Path, default=None, help="write every result (JSON) here")
    args = parser.parse_args(argv)
    sizes = TINY if args.tiny else FULL
    for name, value in sizes.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if not 0 < args.mc_fraction:
        parser.error("--mc-fraction must be positive")
    if args.gt_seeds < 2:
        parser.error("--gt-seeds must be at least 2")
    return args


PARTS = {"memorization": bench_memorization, "near_duplicates": bench_near_duplicates,
         "within_prompt": bench_within_prompt, "closed_form": bench_closed_form, "signed_rank": bench_signed_rank}


def main(argv: Sequence[str] | None = None) -> int:
    from threadpoolctl import threadpool_limits

    args = parse_args(argv)
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise SystemExit(f"--only: unknown parts {unknown}; expected some of {', '.join(PARTS)}")
    machine = f"{os.cpu_count()} cores, {cpu_model()}"
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    results: list[dict[str, Any]] = []
    with threadpool_limits(limits=args.threads):
        for part in parts:
            out = PARTS[part](args)
            for r in out if isinstance(out, list) else [out]:
                r["part"] = part
                results.append(r)
                print(f"{r['metric']:<42} fast {_s(r['fast_s']):>7} s  baseline {_s(r['baseline_s']):>7} s"
                      f"{' (extrapolated)' if r['extrapolated'] else ''}  {r['baseline_s'] / r['fast_s']:8.1f}x  "
                      f"{'ok' if r['ok'] else 'DISAGREE'}: {r['agreement']}", flush=True)
    load_after = os.getloadavg()[0]
    wall = time.perf_counter() - started
    common = (f"{args.threads} BLAS/OpenMP thread(s), OMP_WAIT_POLICY {os.environ.get('OMP_WAIT_POLICY', '-')}; "
              f"load avg {load_before:.1f} -> {load_after:.1f}")
    print(f"total {wall:.1f} s; {common}")
    date = dt.date.today().isoformat()
    vers = versions()
    if args.out:
        payload = {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "machine": machine,
                   "versions": vers, "settings": {k: v for k, v in vars(args).items() if k not in ("record", "out")},
                   "load_avg": [load_before, load_after], "wall_s": wall, "results": results}
        args.out.write_text(json.dumps(payload, indent=1, default=str))
    if args.record:
        record(args.record, [table_row(r, date=date, machine=machine, versions=vers,
                                       notes=f"{r['notes']}; {common}") for r in results])
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
