"""Lexical family: Self-BLEU lexical diversity (the study's metric), distinct-n, compression ratio,
n-gram entropy and MATTR.

Every metric here reads markdown-stripped text (:func:`~collapselab.metrics.text.strip_markdown`),
as the study did for Self-BLEU, so formatting marks ("**", "#", "|") never count as words or
n-grams. Self-BLEU tokenizes with sacreBLEU's ``13a`` tokenizer (to equal sacreBLEU exactly); the
other metrics use :func:`~collapselab.metrics.text.simple_tokens` (lower-cased words and
punctuation), MATTR its words only (see :mod:`collapselab.metrics.text`).

All counting is vectorised over the whole text set: tokens become integer ids once per set (cached
across metrics) and n-grams become dense integer ids (:func:`ngram_ids`), so a metric is a few
``np.unique``/``np.bincount`` passes. The plain Counter-based versions that the tests and the
benchmark compare against live in :mod:`collapselab.metrics.naive_lexical`.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from collapselab.metrics.base import MetricResult, TextSet, param_name
from collapselab.metrics.text import (
    keep_bleu_sentences,
    simple_tokens,
    simple_words,
    strip_markdown,
    summarize,
    text_sentences,
)

# --------------------------------------------------------------------------------------------------
# Token and n-gram ids, shared by every metric of the family
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Encoded:
    """Token sequences laid end to end as integer ids."""

    tokens: np.ndarray  # int64 token ids
    seq: np.ndarray  # index of the sequence each token belongs to (non-decreasing)
    lengths: np.ndarray  # tokens per sequence

    @property
    def starts(self) -> np.ndarray:
        """Position of each sequence's first token."""
        return np.concatenate(([0], np.cumsum(self.lengths)[:-1])).astype(np.int64)


def encode(token_lists: Sequence[Sequence[str]]) -> Encoded:
    """Integer ids for the tokens of each sequence (ids in order of first appearance)."""
    vocab: dict[str, int] = {}
    ids = [vocab.setdefault(tok, len(vocab)) for toks in token_lists for tok in toks]
    lengths = np.fromiter((len(toks) for toks in token_lists), dtype=np.int64, count=len(token_lists))
    seq = np.repeat(np.arange(len(token_lists), dtype=np.int64), lengths)
    return Encoded(np.asarray(ids, dtype=np.int64), seq, lengths)


def ngram_ids(enc: Encoded, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Every n-gram lying inside one sequence, as ``(start positions, dense ids)``: equal n-grams
    get equal ids in ``0..G-1``.

    An n-gram's code is built order by order — ``code_k = id(prefix (k-1)-gram)·V + token`` —
    re-densifying after each order so codes stay below ``T·V`` (no int64 overflow, unlike a
    ``V**n`` positional code). Codes that straddle two sequences are computed, then dropped.
    """
    tok = enc.tokens
    if n < 1:
        raise ValueError(f"n-gram order must be ≥ 1, got {n}")
    if tok.size < n:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    vocab = int(tok.max()) + 1
    codes = tok
    for k in range(2, n + 1):
        _, dense = np.unique(codes, return_inverse=True)
        codes = dense[:-1].astype(np.int64) * vocab + tok[k - 1:]
    starts = np.flatnonzero(enc.seq[: tok.size - n + 1] == enc.seq[n - 1:])
    _, ids = np.unique(codes[starts], return_inverse=True)
    return starts, ids.astype(np.int64)


def count_pairs(owner: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct ``(owner, id)`` pairs with their counts (sorted by owner, then id)."""
    if ids.size == 0:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty, empty
    width = int(ids.max()) + 1
    keys, counts = np.unique(owner * width + ids, return_counts=True)
    return keys // width, keys % width, counts


@lru_cache(maxsize=8)
def _stripped(texts: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(strip_markdown(t) for t in texts)


@lru_cache(maxsize=8)
def _encoded(texts: tuple[str, ...], words_only: bool) -> Encoded:
    """Token ids of a text set, cached so distinct-1..4, entropy and MATTR tokenize it once."""
    tokenize = simple_words if words_only else simple_tokens
    return encode([tokenize(t) for t in _stripped(texts)])


# --------------------------------------------------------------------------------------------------
# Self-BLEU
# --------------------------------------------------------------------------------------------------


class Tokenizer13a:
    """sacreBLEU's ``13a`` tokenizer (mteval-v13a), same output, ~3× faster.

    sacreBLEU's first rule puts spaces around every character of an ASCII class — *including the
    space itself* — with ``re.sub(…, r' \\1 ')``, which costs a Python template expansion per
    character matched (most of Self-BLEU's run time). Replacing a single-character class by a
    fixed string is exactly ``str.translate``; the remaining rules (periods, commas, dashes after
    digits) match rarely and are applied with sacreBLEU's own compiled patterns. The tests check
    the output equals sacreBLEU's on every test sentence and on random punctuation-heavy strings.
    """

    def __init__(self) -> None:
        from sacrebleu.tokenizers.tokenizer_re import TokenizerRegexp

        (char_class, replacement), *self._rules = TokenizerRegexp()._re
        if replacement != r" \1 ":  # a sacreBLEU change would break the equivalence: fail loudly
            raise RuntimeError(f"unexpected sacreBLEU 13a rule {char_class.pattern!r} -> {replacement!r}")
        self._spacing = {c: f" {chr(c)} " for c in range(128) if char_class.fullmatch(chr(c))}

    def __call__(self, line: str) -> str:
        # the language-independent part of sacreBLEU's Tokenizer13a.__call__, verbatim
        line = line.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
        if "&" in line:
            line = line.replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
        line = f" {line} ".translate(self._spacing)
        for pattern, replacement in self._rules:
            line = pattern.sub(replacement, line)
        return " ".join(line.split())


def _clip_to_others(keys: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """For each entry, ``min(count, max count among the *other* entries with the same key)``.

    This is BLEU's clipped match against "all other sentences of the group": sacreBLEU merges
    several references by taking each n-gram's maximum count. Sorting each key's entries by
    count (descending) gives its best and second-best count; an entry compares against the best
    unless it *is* the best (the first of its run), in which case the second best (0 if alone).
    Ties are harmless: then best == second best.
    """
    order = np.lexsort((-counts, keys))
    k_sorted, c_sorted = keys[order], counts[order]
    first = np.ones(k_sorted.size, dtype=bool)
    first[1:] = k_sorted[1:] != k_sorted[:-1]
    run = np.cumsum(first) - 1
    run_start = np.flatnonzero(first)
    best = c_sorted[run_start]
    following = run_start + 1
    has_second = following < k_sorted.size
    has_second[has_second] = ~first[following[has_second]]
    second = np.where(has_second, c_sorted[np.minimum(following, k_sorted.size - 1)], 0)
    others = np.where(first, second[run], best[run])
    clipped = np.empty_like(c_sorted)
    clipped[order] = np.minimum(c_sorted, others)
    return clipped


def _closest_other_length(lengths: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Per sentence, the length of the other sentence of its group closest to its own, ties going
    to the shorter one — sacreBLEU's ``_get_closest_ref_len``. After sorting by (group, length)
    the candidates are just the two neighbours."""
    order = np.lexsort((lengths, group))
    length, grp = lengths[order].astype(np.float64), group[order]
    same_prev = np.zeros(length.size, dtype=bool)
    same_prev[1:] = grp[1:] == grp[:-1]
    same_next = np.zeros(length.size, dtype=bool)
    same_next[:-1] = grp[:-1] == grp[1:]
    below = np.where(same_prev, np.roll(length, 1), -np.inf)
    above = np.where(same_next, np.roll(length, -1), np.inf)
    closest = np.where(length - below <= above - length, below, above)
    out = np.empty_like(closest)
    out[order] = closest
    return out


def bleu_from_stats(correct: np.ndarray, total: np.ndarray, hyp_len: np.ndarray,
                    ref_len: np.ndarray) -> np.ndarray:
    """sacreBLEU's ``BLEU.compute_bleu`` with ``smooth_method='exp'`` and ``effective_order=True``,
    vectorised over sentences (rows of ``correct``/``total``, one column per n-gram order).

    * effective order: orders up to (not including) the first one with no hypothesis n-gram;
    * 'exp' smoothing (mteval-v13a): the k-th order with zero matches gets precision
      ``100 / (2**k · total)``;
    * brevity penalty ``exp(1 − r/c)`` when the hypothesis (c tokens) is shorter than the
      closest reference (r tokens);
    * a sentence with no match at any order scores 0.
    """
    orders = np.arange(correct.shape[1])
    eff = np.cumprod(total > 0, axis=1).sum(axis=1)
    in_eff = orders[None, :] < eff[:, None]
    smooth = 2.0 ** np.cumsum((correct == 0) & in_eff, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(correct > 0, 100.0 * correct / total, 100.0 / (smooth * total))
        log_sum = np.where(in_eff, np.log(precision), 0.0).sum(axis=1)
        bp = np.where(hyp_len < ref_len, np.exp(1.0 - ref_len / hyp_len), 1.0)
        score = bp * np.exp(log_sum / eff)
    return np.where(correct.sum(axis=1) > 0, score, 0.0)


def sentence_self_bleu(groups: Sequence[Sequence[str]], max_order: int = 3) -> list[np.ndarray]:
    """For each group of sentences, each sentence's sacreBLEU score
    ``BLEU(max_ngram_order=max_order, effective_order=True).sentence_score(s, other sentences)``
    — equal to it to ~1e-12 — without ever building a reference set per sentence.

    Each sentence is tokenized once (``13a``, :class:`Tokenizer13a`, after ``rstrip`` as sacreBLEU
    does) and its n-grams counted once; the clipped matches against the union of the other
    sentences come from each n-gram's best and second-best count in the group
    (:func:`_clip_to_others`). Cost is O(T log T) in the total number of tokens T, instead of
    O(Σ k²·L) for the plain loop (k sentences of L tokens per group).
    """
    sizes = np.array([len(g) for g in groups], dtype=np.int64)
    if (sizes < 2).any():
        raise ValueError("every group needs at least two sentences (one hypothesis, one reference)")
    if sizes.size == 0:
        return []
    tokenize = Tokenizer13a()
    enc = encode([tokenize(s.rstrip()).split() for g in groups for s in g])
    n_sent = int(sizes.sum())
    group = np.repeat(np.arange(sizes.size, dtype=np.int64), sizes)
    hyp_len = enc.lengths.astype(np.float64)

    correct = np.zeros((n_sent, max_order))
    total = np.zeros((n_sent, max_order))
    for k in range(1, max_order + 1):
        total[:, k - 1] = np.maximum(enc.lengths - k + 1, 0)
        starts, ids = ngram_ids(enc, k)
        if ids.size == 0:
            continue
        sent, gram, counts = count_pairs(enc.seq[starts], ids)
        width = int(gram.max()) + 1
        clipped = _clip_to_others(group[sent] * width + gram, counts)
        correct[:, k - 1] = np.bincount(sent, weights=clipped, minlength=n_sent)

    scores = bleu_from_stats(correct, total, hyp_len, _closest_other_length(hyp_len, group))
    return np.split(scores, np.cumsum(sizes)[:-1])


SentenceScorer = Callable[[Sequence[Sequence[str]], int], list[np.ndarray]]


@dataclass
class SelfBleu:
    """Self-BLEU of a set of responses (0–100; lexical diversity is 100 minus it)."""

    value: float  # individual: mean over responses with a value; aggregated: mean over pooled sentences
    per_response: np.ndarray  # mean sentence score per response; NaN where not scored
    used: np.ndarray  # indices of the responses that were scored
    n_sentences: int  # sentences scored


def sample_responses(eligible: Sequence[int], sample: int, seed: int) -> np.ndarray:
    """``sample`` of the eligible response indices drawn without replacement (seeded), sorted;
    all of them when ``sample`` is 0 or not smaller than their number."""
    eligible = np.asarray(eligible, dtype=np.int64)
    if sample <= 0 or sample >= eligible.size:
        return eligible
    return np.sort(np.random.default_rng(seed).choice(eligible, size=sample, replace=False))


def self_bleu(sentence_lists: Sequence[Sequence[str]], *, mode: str = "individual", max_order: int = 3,
              sample: int = 100, seed: int = 0, scorer: SentenceScorer = sentence_self_bleu) -> SelfBleu:
    """Self-BLEU over responses given as their (already filtered) sentences.

    ``individual``: each sentence against the other sentences of its own response, averaged per
    response; responses with fewer than two sentences get NaN. ``aggregated``: the sentences of
    ``sample`` random multi-sentence responses are pooled and each scored against all the others.
    ``scorer`` computes the per-sentence scores (the fast one here; the plain sacreBLEU loop in
    :mod:`collapselab.metrics.naive_lexical`).
    """
    if mode not in ("individual", "aggregated"):
        raise ValueError(f"mode must be 'individual' or 'aggregated', got {mode!r}")
    eligible = [i for i, sents in enumerate(sentence_lists) if len(sents) >= 2]
    per_response = np.full(len(sentence_lists), np.nan)
    if mode == "individual":
        used = np.asarray(eligible, dtype=np.int64)
        groups = [list(sentence_lists[i]) for i in used]
    else:
        used = sample_responses(eligible, sample, seed)
        groups = [[s for i in used for s in sentence_lists[i]]] if used.size else []
    if not groups:
        return SelfBleu(float("nan"), per_response, used, 0)

    scores = scorer(groups, max_order)
    if mode == "individual":
        per_response[used] = [s.mean() for s in scores]
        return SelfBleu(float(per_response[used].mean()), per_response, used, sum(s.size for s in scores))
    pooled = scores[0]
    bounds = np.cumsum([len(sentence_lists[i]) for i in used])[:-1]
    per_response[used] = [chunk.mean() for chunk in np.split(pooled, bounds)]
    return SelfBleu(float(pooled.mean()), per_response, used, pooled.size)


class LexicalDiversity:
    """Lexical diversity = 100 − Self-BLEU, as defined in Schaffelder & Gatt (Experiment 1).

    Self-BLEU of a sentence s against references R: sacreBLEU BLEU (``13a`` tokens, max n-gram
    order ``max_order`` = 3, effective order, 'exp' smoothing, closest-reference brevity
    penalty)::

        BLEU(s, R) = BP · exp( (1/N') Σ_{n ≤ N'} log p_n ),  p_n = clipped n-gram matches / n-grams

    Sentences: markdown stripped, split with punkt (each line separately), only those of ≥ 4 words.

    * ``mode="individual"``: per response with ≥ 2 such sentences, the mean over its sentences of
      BLEU(s, other sentences of the response); per-item value 100 − that mean (NaN, counted in
      ``n_undefined``, for responses with fewer than two sentences). Aggregate ``mean``: the mean
      over the responses with a value.
    * ``mode="aggregated"``: pool the sentences of ``sample`` random multi-sentence responses
      (seeded by ``seed``; ``sample=0`` pools all of them — exact, no sampling), score each
      against all other pooled sentences; one corpus value ``corpus`` = 100 − the mean. No
      per-item values (it is one statistic of the sample); ``details`` lists the sampled ids.
    """

    family = "lexical"
    higher_is_better = True
    needs = frozenset({"sentences"})

    def __init__(self, *, mode: str = "individual", max_order: int = 3, sample: int = 100, seed: int = 0):
        if mode not in ("individual", "aggregated"):
            raise ValueError(f"lexical_diversity: mode must be 'individual' or 'aggregated', got {mode!r}")
        if max_order < 1:
            raise ValueError(f"lexical_diversity: max_order must be ≥ 1, got {max_order}")
        if sample < 0:
            raise ValueError(f"lexical_diversity: sample must be ≥ 0 (0 = all responses), got {sample}")
        self.mode, self.max_order, self.sample, self.seed = mode, max_order, sample, seed
        extra = {"sample": sample, "seed": seed} if mode == "aggregated" else {}
        self.name = param_name("lexical_diversity", mode=mode, max_order=max_order, **extra)

    def compute(self, texts: TextSet) -> MetricResult:
        sentences = [keep_bleu_sentences(s) for s in text_sentences(texts.texts, texts.sentences)]
        result = self_bleu(sentences, mode=self.mode, max_order=self.max_order, sample=self.sample,
                           seed=self.seed)
        n_ineligible = float(sum(len(s) < 2 for s in sentences))
        if self.mode == "individual":
            diversity = 100.0 - result.per_response
            aggregates = summarize(diversity)
            aggregates |= {"self_bleu": 100.0 - aggregates["mean"], "n_sentences": float(result.n_sentences)}
            return MetricResult(per_item={"lexical_diversity": diversity}, aggregates=aggregates)
        aggregates = {"corpus": 100.0 - result.value, "self_bleu": result.value,
                      "n_responses": float(result.used.size), "n_sentences": float(result.n_sentences),
                      "n_undefined": n_ineligible}
        details = {"sampled_ids": [texts.ids[i] for i in result.used],
                   "sampled_self_bleu": result.per_response[result.used].tolist()}
        return MetricResult(aggregates=aggregates, details=details)


# --------------------------------------------------------------------------------------------------
# Distinct-n, n-gram entropy, compression ratio, MATTR
# --------------------------------------------------------------------------------------------------


def _per_text_ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / np.maximum(denominator, 1), np.nan)


class Distinct:
    """distinct-n (Li et al. 2016, "A Diversity-Promoting Objective Function for Neural
    Conversation Models"): number of distinct n-grams / total number of n-grams.

    Tokens: :func:`~collapselab.metrics.text.simple_tokens` of the markdown-stripped text;
    n-grams do not cross responses. Aggregate ``corpus``: over the whole set (the usual corpus
    distinct-n); per item: the same within each response (NaN for a response with no n-gram);
    ``mean`` etc. summarise the per-item values.
    """

    family = "lexical"
    higher_is_better = True
    needs: frozenset[str] = frozenset()

    def __init__(self, *, n: int = 2):
        if n < 1:
            raise ValueError(f"distinct: n must be ≥ 1, got {n}")
        self.n = n
        self.name = param_name("distinct", n=n)

    def compute(self, texts: TextSet) -> MetricResult:
        enc = _encoded(tuple(texts.texts), False)
        starts, ids = ngram_ids(enc, self.n)
        owner = enc.seq[starts]
        total = np.bincount(owner, minlength=len(texts))
        text_of_pair, _, _ = count_pairs(owner, ids)
        distinct = np.bincount(text_of_pair, minlength=len(texts))
        per_item = _per_text_ratio(distinct, total)
        corpus = (int(ids.max()) + 1) / ids.size if ids.size else float("nan")
        return MetricResult(per_item={"distinct": per_item},
                            aggregates=summarize(per_item) | {"corpus": corpus})


def _entropy_bits(counts: np.ndarray, owner: np.ndarray, n_owners: int) -> np.ndarray:
    """Shannon entropy (bits) of each owner's count distribution, using
    H = log2 N − (1/N) Σ c·log2 c (N = the owner's total count); NaN where N = 0."""
    total = np.bincount(owner, weights=counts, minlength=n_owners)
    c_log_c = np.bincount(owner, weights=counts * np.log2(counts), minlength=n_owners)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = np.log2(total) - c_log_c / total
    return np.where(total > 0, np.maximum(h, 0.0), np.nan)  # max: -0.0/rounding for one n-gram type


class NgramEntropy:
    """n-gram entropy: Shannon entropy H = −Σ_g p(g)·log2 p(g) (bits) of the empirical n-gram
    distribution (Shannon 1948; used as a diversity measure e.g. by Zhang et al. 2018,
    "Generating Informative and Diverse Conversational Responses via Adversarial Information
    Maximization", and Shaib et al. 2024).

    Tokens as for :class:`Distinct`. Aggregate ``corpus``: over the pooled n-grams of the whole set;
    per item: within each response (NaN for a response with no n-gram).
    """

    family = "lexical"
    higher_is_better = True
    needs: frozenset[str] = frozenset()

    def __init__(self, *, n: int = 2):
        if n < 1:
            raise ValueError(f"ngram_entropy: n must be ≥ 1, got {n}")
        self.n = n
        self.name = param_name("ngram_entropy", n=n)

    def compute(self, texts: TextSet) -> MetricResult:
        enc = _encoded(tuple(texts.texts), False)
        starts, ids = ngram_ids(enc, self.n)
        text_of_pair, _, counts = count_pairs(enc.seq[starts], ids)
        per_item = _entropy_bits(counts.astype(np.float64), text_of_pair, len(texts))
        if ids.size:
            pooled = np.bincount(ids).astype(np.float64)
            corpus = float(_entropy_bits(pooled, np.zeros(pooled.size, dtype=np.int64), 1)[0])
        else:
            corpus = float("nan")
        return MetricResult(per_item={"ngram_entropy": per_item},
                            aggregates=summarize(per_item) | {"corpus": corpus})


def compression_ratio(text: str) -> float:
    """Raw UTF-8 size / zlib (level 9) compressed size; NaN for an empty text."""
    raw = text.encode("utf-8")
    return len(raw) / len(zlib.compress(raw, 9)) if raw else float("nan")


class CompressionRatio:
    """Compression ratio (Shaib et al. 2024, "Standardizing the Measurement of Text Diversity"):
    CR = |raw bytes| / |compressed bytes| of the (non-empty) texts joined by single spaces.
    Higher means more redundant, i.e. *less* diverse.

    Markdown-stripped UTF-8 text, zlib level 9 (DEFLATE, as gzip; zlib's 6-byte framing instead
    of gzip's 18 bytes, which matters only for very short texts). Aggregate ``corpus``: over the
    joined set; per item: each response alone (small texts compress poorly, so per-item values
    are lower than the corpus value; NaN for an empty response).
    """

    family = "lexical"
    higher_is_better = False
    needs: frozenset[str] = frozenset()
    name = "compression_ratio"

    def compute(self, texts: TextSet) -> MetricResult:
        stripped = _stripped(tuple(texts.texts))
        per_item = np.array([compression_ratio(t) for t in stripped], dtype=np.float64)
        corpus = compression_ratio(" ".join(t for t in stripped if t))
        return MetricResult(per_item={"compression_ratio": per_item},
                            aggregates=summarize(per_item) | {"corpus": corpus})


def mattr_per_sequence(enc: Encoded, window: int) -> np.ndarray:
    """MATTR of each sequence (NaN for an empty one), vectorised.

    Σ over windows of the window's type count = Σ over tokens j of the number of windows in which
    j is the first occurrence of its type: windows starting at s with prev(j) < s ≤ j and
    j − W < s ≤ N − W, where prev(j) is the previous position of the same type (−1 if none).
    """
    n_seq = enc.lengths.size
    if enc.tokens.size == 0:
        return np.full(n_seq, np.nan)
    positions = np.arange(enc.tokens.size, dtype=np.int64)
    local = positions - enc.starts[enc.seq]
    order = np.lexsort((positions, enc.tokens, enc.seq))
    seq_sorted, tok_sorted = enc.seq[order], enc.tokens[order]
    same_type = np.zeros(order.size, dtype=bool)
    same_type[1:] = (seq_sorted[1:] == seq_sorted[:-1]) & (tok_sorted[1:] == tok_sorted[:-1])
    prev = np.full(enc.tokens.size, -1, dtype=np.int64)
    prev[order[1:][same_type[1:]]] = local[order[:-1][same_type[1:]]]

    n = enc.lengths[enc.seq]
    lo = np.maximum(np.maximum(prev + 1, local - window + 1), 0)
    hi = np.minimum(local, n - window)
    first_in_windows = np.maximum(hi - lo + 1, 0)
    window_types = np.bincount(enc.seq, weights=first_in_windows, minlength=n_seq)
    types = np.bincount(enc.seq, weights=(prev < 0), minlength=n_seq)
    with np.errstate(divide="ignore", invalid="ignore"):
        moving = window_types / (window * (enc.lengths - window + 1))
        plain = types / enc.lengths
    return np.where(enc.lengths >= window, moving, np.where(enc.lengths > 0, plain, np.nan))


class Mattr:
    """Moving-average type-token ratio (Covington & McFall 2010, "Cutting the Gordian Knot: The
    Moving-Average Type–Token Ratio (MATTR)"): for a text of N tokens and window W,

        MATTR = 1/(N−W+1) · Σ_{i=1}^{N−W+1} types(tokens[i : i+W]) / W,

    which, unlike TTR, does not fall with text length. Tokens: the lower-cased *words* of the
    markdown-stripped text (:func:`~collapselab.metrics.text.simple_words` — punctuation would add
    a few always-repeated types). A text shorter than W gets its plain TTR (types/N): the single,
    shorter window; an empty text gets NaN. Aggregate: summary of the per-item values.
    """

    family = "lexical"
    higher_is_better = True
    needs: frozenset[str] = frozenset()

    def __init__(self, *, window: int = 50):
        if window < 1:
            raise ValueError(f"mattr: window must be ≥ 1, got {window}")
        self.window = window
        self.name = param_name("mattr", window=window)

    def compute(self, texts: TextSet) -> MetricResult:
        per_item = mattr_per_sequence(_encoded(tuple(texts.texts), True), self.window)
        return MetricResult(per_item={"mattr": per_item}, aggregates=summarize(per_item))
