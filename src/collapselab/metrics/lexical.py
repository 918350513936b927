"""Lexical family: Self-BLEU lexical diversity (the study's metric), distinct-n, compression ratio,
n-gram entropy and MATTR.

Every metric here reads markdown-stripped text (:func:`~collapselab.metrics.text.plain_text`),
as the study did for Self-BLEU, so formatting marks ("**", "#", "|") never count as words or
n-grams. Self-BLEU tokenizes with sacreBLEU's ``13a`` tokenizer (to equal sacreBLEU exactly); the
other metrics use :func:`~collapselab.metrics.text.simple_tokens` (lower-cased words and
punctuation), MATTR its words only (see :mod:`collapselab.metrics.text`).

All counting is vectorised over the whole text set: tokens become integer ids once per set (cached
across metrics) and n-grams become dense integer ids (:func:`iter_ngram_ids`), so a metric is a
few hash, sort and ``np.bincount`` passes. The plain Counter-based versions that the tests and the
benchmark compare against live in :mod:`collapselab.metrics.naive_lexical`.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import chain

import numpy as np
import pandas as pd

from collapselab.metrics.base import MetricResult, TextSet, param_name
from collapselab.metrics.budget import budget_prefix, check_budget, check_seed, short_reason
from collapselab.metrics.text import (
    keep_bleu_sentences,
    plain_text,
    simple_tokens,
    simple_words,
    summarize,
    text_sentences,
)

# --------------------------------------------------------------------------------------------------
# Token and n-gram ids, shared by every metric of the family
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Encoded:
    """Token sequences laid end to end as integer ids (equal tokens, equal ids)."""

    tokens: np.ndarray  # int64 token ids, ≥ 0
    seq: np.ndarray  # index of the sequence each token belongs to (non-decreasing)
    lengths: np.ndarray  # tokens per sequence

    @property
    def starts(self) -> np.ndarray:
        """Position of each sequence's first token."""
        return np.concatenate(([0], np.cumsum(self.lengths)[:-1])).astype(np.int64)


def encode(token_lists: Sequence[Sequence[str]]) -> Encoded:
    """Integer ids for the tokens of each sequence (dense, in order of first appearance)."""
    flat = list(chain.from_iterable(token_lists))
    # dict.fromkeys and map(dict.__getitem__) run in C: ~3× faster than a setdefault loop
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(flat))}
    ids = np.fromiter(map(vocab.__getitem__, flat), dtype=np.int64, count=len(flat))
    lengths = np.fromiter(map(len, token_lists), dtype=np.int64, count=len(token_lists))
    return Encoded(ids, np.repeat(np.arange(len(token_lists), dtype=np.int64), lengths), lengths)


def iter_ngram_ids(enc: Encoded, max_n: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """For n = 1 … ``max_n``: every n-gram lying inside one sequence, as
    ``(n, start positions, dense ids)`` — equal n-grams get equal ids in ``0..G_n-1``.

    Built order by order: an n-gram's code is ``id((n-1)-gram prefix)·V + last token``, densified
    with one ``pandas.factorize`` per order, so codes stay below ``T·V`` (no int64 overflow,
    unlike a ``V**n`` positional code) and order n reuses order n−1's work.
    """
    if max_n < 1:
        raise ValueError(f"n-gram order must be ≥ 1, got {max_n}")
    tok, seq, size = enc.tokens, enc.seq, enc.tokens.size
    starts = np.arange(size, dtype=np.int64)
    ids = pd.factorize(tok)[0].astype(np.int64)
    yield 1, starts, ids
    vocab = int(tok.max()) + 1 if size else 0
    prefix = np.empty(size, dtype=np.int64)  # id of the (n-1)-gram starting at each valid start
    for n in range(2, max_n + 1):
        prefix[starts] = ids
        # an n-gram is the (n-1)-gram at the same start plus one token of the same sequence
        starts = starts[starts + n - 1 < size]
        starts = starts[seq[starts + n - 1] == seq[starts]]
        # hash-based factorize: ~3× faster than np.unique(return_inverse=True); ids need only be dense
        ids = pd.factorize(prefix[starts] * vocab + tok[starts + n - 1])[0].astype(np.int64)
        yield n, starts, ids


def ngram_ids(enc: Encoded, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(start positions, dense ids)`` of the n-grams of one order (see :func:`iter_ngram_ids`)."""
    *_, (_, starts, ids) = iter_ngram_ids(enc, n)
    return starts, ids


def count_pairs(owner: np.ndarray, ids: np.ndarray,
                n_owners: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct ``(owner, id)`` pairs with their counts, sorted by id, then owner (one sort)."""
    n_owners = max(n_owners, 1)
    keys, counts = np.unique(ids * n_owners + owner, return_counts=True)
    return keys % n_owners, keys // n_owners, counts


# Token ids are process-wide and cached per text, so the family's metrics on one set, its bootstrap
# resamples (the same texts, repeated) and other sets sharing texts tokenize each text once.
_VOCABULARY: dict[str, int] = {}


#: the markdown stripping every token-counting metric shares (one place: :func:`text.plain_text`)
_stripped = plain_text


@lru_cache(maxsize=16384)
def _text_token_ids(text: str, words_only: bool) -> np.ndarray:
    tokens = (simple_words if words_only else simple_tokens)(_stripped(text))
    new = [tok for tok in dict.fromkeys(tokens) if tok not in _VOCABULARY]
    _VOCABULARY.update(zip(new, range(len(_VOCABULARY), len(_VOCABULARY) + len(new)), strict=True))
    ids = np.fromiter(map(_VOCABULARY.__getitem__, tokens), dtype=np.int64, count=len(tokens))
    ids.flags.writeable = False  # shared by every caller of the cache
    return ids


def _encoded(texts: Sequence[str], words_only: bool) -> Encoded:
    """The simple tokens (``words_only``: words) of each markdown-stripped text, as ids."""
    return _encode_arrays([_text_token_ids(t, words_only) for t in texts])


def _budget_encoded(texts: TextSet, budget: int, seed: int) -> tuple[Encoded | None, int]:
    """The first ``budget`` simple tokens of the set, texts in the seeded id-keyed order of
    :mod:`collapselab.metrics.budget` (the last text cut), as ids; None when the set is shorter.
    Also returns the set's token count."""
    arrays = [_text_token_ids(t, False) for t in texts.texts]
    prefix = budget_prefix(arrays, texts.ids, budget, seed)
    return (None if prefix is None else _encode_arrays(prefix)), int(sum(map(len, arrays)))


def _encode_arrays(arrays: Sequence[np.ndarray]) -> Encoded:
    lengths = np.fromiter(map(len, arrays), dtype=np.int64, count=len(arrays))
    tokens = np.concatenate(arrays) if arrays else np.empty(0, dtype=np.int64)
    return Encoded(tokens, np.repeat(np.arange(len(arrays), dtype=np.int64), lengths), lengths)


# --------------------------------------------------------------------------------------------------
# Self-BLEU
# --------------------------------------------------------------------------------------------------


class Tokenizer13a:
    """sacreBLEU's ``13a`` tokenizer (mteval-v13a): the same tokens, ~7× faster, for many lines.

    sacreBLEU runs four ``re.sub`` rules per line with backreference templates, i.e. a Python-level
    template expansion per match; its first rule (spaces around punctuation) matches every
    punctuation mark *and every space*. Here the lines are joined with newlines (which 13a has
    already turned into spaces inside a line, and which no rule can match across) and each rule
    runs once on the joined text, without backreferences:

    * rule 1, a one-character class replaced by itself between spaces, is a ``re.split`` on the
      class (minus the space, whose padding only adds whitespace) joined with spaces;
    * rules 2–3 put spaces around a period/comma after (before) a non-digit. Their matches also
      consume that neighbour, which matters only when two of [.,] are adjacent ("a..5"); lines with
      such a pair keep sacreBLEU's own patterns, the others use lookarounds with a literal
      replacement (the same text);
    * rule 4 (a dash after a digit) consumes only the digit and the dash: a lookbehind is exact.

    Only whitespace can differ from sacreBLEU's string, never the tokens; the tests check the token
    lists equal sacreBLEU's on every test sentence and on random punctuation-heavy strings.
    """

    _EXPECTED_RULES = (r"([^0-9])([\.,])", r"([\.,])([^0-9])", r"([0-9])(-)")
    _ADJACENT = re.compile(r"[.,]{2}")
    _LOOKAROUND_RULES = (
        # the literal first lets the regex engine jump from one "." to the next
        (re.compile(r"\.(?<=[^0-9]\.)"), " . "), (re.compile(r",(?<=[^0-9],)"), " , "),  # rule 2
        (re.compile(r"\.(?=[^0-9])"), " . "), (re.compile(r",(?=[^0-9])"), " , "),  # rule 3
    )
    _DIGIT_DASH = re.compile(r"-(?<=[0-9]-)")  # rule 4

    def __init__(self) -> None:
        from sacrebleu.tokenizers.tokenizer_re import TokenizerRegexp

        (char_class, replacement), *rules = TokenizerRegexp()._re
        if replacement != r" \1 " or tuple(p.pattern for p, _ in rules) != self._EXPECTED_RULES:
            # a sacreBLEU change would break the equivalence: fail loudly rather than differ
            raise RuntimeError("sacreBLEU's 13a rules changed; update collapselab's Tokenizer13a")
        punctuation = "".join(chr(c) for c in range(128) if chr(c) != " " and char_class.fullmatch(chr(c)))
        self._punctuation = re.compile(f"([{re.escape(punctuation)}])")
        self._exact_rules = rules[:2]

    @staticmethod
    def _normalize(line: str) -> str:
        # the language-independent part of sacreBLEU's Tokenizer13a.__call__, in its order; the
        # entities are replaced later, on the joined text (no replacement involves a newline)
        if "\n" in line or "<skipped>" in line:
            line = line.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
        return line

    @staticmethod
    def _replace_entities(text: str) -> str:
        if "&" in text:
            text = text.replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
        return text

    def _tokenize_joined(self, lines: list[str], exact: bool) -> list[list[str]]:
        # each line padded with a space on both sides, as sacreBLEU does, then joined
        text = self._replace_entities(" " + " \n ".join(lines) + " ")
        text = " ".join(self._punctuation.split(text))
        for pattern, replacement in self._exact_rules if exact else self._LOOKAROUND_RULES:
            text = pattern.sub(replacement, text)
        text = self._DIGIT_DASH.sub(" - ", text)
        return [part.split() for part in text.split("\n")]

    def tokenize(self, lines: Sequence[str]) -> list[list[str]]:
        """The 13a tokens of each line (sacreBLEU's ``tokenizer(line).split()``)."""
        normalized = [self._normalize(line) for line in lines]
        adjacent = [self._ADJACENT.search(line) is not None for line in normalized]
        tokens: list[list[str]] = [[] for _ in lines]
        for exact in (False, True):
            chosen = [i for i, a in enumerate(adjacent) if a == exact]
            if chosen:
                joined = self._tokenize_joined([normalized[i] for i in chosen], exact)
                for i, toks in zip(chosen, joined, strict=True):
                    tokens[i] = toks
        return tokens


def _clip_to_others(key: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """For each (sentence, n-gram) entry with ``key`` = (n-gram, group) code: ``min(count, max count
    of that n-gram among the *other* sentences of the group)`` — BLEU's clipped match against "all
    other sentences", since sacreBLEU merges references by taking each n-gram's maximum count.

    Per key, the best count and the best after removing one occurrence of it (the second best,
    or the best again on a tie): an entry holding the best compares against the latter, every
    other entry against the best. Hash-based (``factorize`` + ``np.maximum.at``), no sorting.
    """
    code, uniques = pd.factorize(key)
    best = np.zeros(uniques.size, dtype=counts.dtype)
    np.maximum.at(best, code, counts)
    is_best = counts == best[code]
    rest = np.zeros_like(best)
    np.maximum.at(rest, code, np.where(is_best, 0, counts))
    second = np.where(np.bincount(code, weights=is_best, minlength=best.size) > 1, best, rest)
    return np.minimum(counts, np.where(is_best, second[code], best[code]))


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
    enc = encode(Tokenizer13a().tokenize([s.rstrip() for g in groups for s in g]))
    n_sent = int(sizes.sum())
    n_groups = sizes.size
    group = np.repeat(np.arange(n_groups, dtype=np.int64), sizes)
    hyp_len = enc.lengths.astype(np.float64)

    correct = np.zeros((n_sent, max_order))
    total = np.zeros((n_sent, max_order))
    for k, starts, ids in iter_ngram_ids(enc, max_order):
        total[:, k - 1] = np.maximum(enc.lengths - k + 1, 0)
        sent, gram, counts = count_pairs(enc.seq[starts], ids, n_sent)
        clipped = _clip_to_others(gram * n_groups + group[sent], counts)
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
      against all other pooled sentences; one corpus value ``corpus`` = 100 − the mean, with
      ``n_undefined`` = the responses that could not enter the pool (fewer than two sentences).
      No per-item values (it is one statistic of the sample); ``details`` lists the sampled ids.
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
        self.pinned_ids: frozenset[str] | None = None  # aggregated mode: the sample, fixed by text id
        self.primary = "mean" if mode == "individual" else "corpus"
        extra = {"sample": sample, "seed": seed} if mode == "aggregated" else {}
        self.name = param_name("lexical_diversity", mode=mode, max_order=max_order, **extra)

    def compute(self, texts: TextSet) -> MetricResult:
        sentences = [keep_bleu_sentences(s) for s in text_sentences(texts.texts, texts.sentences)]
        n_ineligible = float(sum(len(s) < 2 for s in sentences))
        sample = self.sample
        if self.pinned_ids is not None:  # a replicate: the full set's sample ∩ these texts, no new draw
            sentences = [s if i in self.pinned_ids else [] for i, s in zip(texts.ids, sentences, strict=True)]
            sample = 0
        result = self_bleu(sentences, mode=self.mode, max_order=self.max_order, sample=sample, seed=self.seed)
        if self.mode == "individual":
            diversity = 100.0 - result.per_response
            aggregates = self.aggregate_items(diversity) | {"n_sentences": float(result.n_sentences)}
            return MetricResult(per_item={"lexical_diversity": diversity}, aggregates=aggregates)
        aggregates = {"corpus": 100.0 - result.value, "self_bleu": result.value,
                      "n_responses": float(result.used.size), "n_sentences": float(result.n_sentences),
                      "n_undefined": n_ineligible}
        details = {"sampled_ids": [texts.ids[i] for i in result.used],
                   "sampled_self_bleu": result.per_response[result.used].tolist()}
        return MetricResult(aggregates=aggregates, details=details)

    def pinned(self, result: MetricResult, texts: TextSet) -> LexicalDiversity:
        """For the interval's replicates: aggregated mode keeps the full set's sample (by text id)
        and scores the sampled texts a replicate kept, instead of drawing a new sample of
        ``sample`` — a fresh draw per replicate adds the sampling noise once per replicate and
        inflates the jackknife's spread (about 3× on 600 texts with ``sample=100``)."""
        if self.mode != "aggregated":
            return self
        twin = LexicalDiversity(mode=self.mode, max_order=self.max_order, sample=self.sample, seed=self.seed)
        twin.pinned_ids = frozenset(result.details.get("sampled_ids", ()))
        return twin

    def aggregate_items(self, values: np.ndarray) -> dict[str, float]:
        """Individual mode's aggregates from per-item values (what a bootstrap resamples)."""
        aggregates = summarize(values)
        return aggregates | {"self_bleu": 100.0 - aggregates["mean"]}


# --------------------------------------------------------------------------------------------------
# Distinct-n, n-gram entropy, compression ratio, MATTR
# --------------------------------------------------------------------------------------------------


def _per_text_ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / np.maximum(denominator, 1), np.nan)


class _Budgeted:
    """The optional token budget of a corpus n-gram statistic: with ``token_budget`` N set, the
    statistic is also computed (``corpus_budget``, then primary) on the first N simple tokens of the
    set in a seeded, id-keyed order (:mod:`collapselab.metrics.budget`) — every set on the same
    number of tokens, since the corpus value moves with the set's length; NaN with the reason in
    ``details["budget_reason"]`` when the set has fewer. Unset (the default), the statistic is
    the whole set's, as before."""

    def _init_budget(self, base: str, token_budget: int | None, seed: int, **params: int) -> None:
        self.token_budget = check_budget(base, token_budget)
        self.seed = check_seed(base, seed)
        self.primary = "corpus" if self.token_budget is None else "corpus_budget"
        extra = {} if self.token_budget is None else {"token_budget": self.token_budget}
        self.name = param_name(base, **params, **extra, **({"seed": seed} if seed else {}))

    def _with_budget(self, texts: TextSet, result: MetricResult, corpus: Callable[[Encoded], float]) -> MetricResult:
        if self.token_budget is None:
            return result
        enc, n_tokens = _budget_encoded(texts, self.token_budget, self.seed)
        if enc is None:
            result.details["budget_reason"] = short_reason(self.token_budget, n_tokens)
        result.aggregates.update(corpus_budget=corpus(enc) if enc is not None else float("nan"),
                                 budget_tokens=float(self.token_budget))
        return result


class Distinct(_Budgeted):
    """distinct-n (Li et al. 2016, "A Diversity-Promoting Objective Function for Neural
    Conversation Models"): number of distinct n-grams / total number of n-grams.

    Tokens: :func:`~collapselab.metrics.text.simple_tokens` of the markdown-stripped text;
    n-grams do not cross responses. Aggregate ``corpus``: over the whole set (the usual corpus
    distinct-n); per item: the same within each response (NaN for a response with no n-gram);
    ``mean`` etc. summarise the per-item values. Corpus distinct-n falls as the set grows (more
    n-grams repeat): ``token_budget`` adds ``corpus_budget``, the length-matched value (see
    :class:`_Budgeted`).
    """

    family = "lexical"
    higher_is_better = True
    needs: frozenset[str] = frozenset()

    def __init__(self, *, n: int = 2, token_budget: int | None = None, seed: int = 0):
        if n < 1:
            raise ValueError(f"distinct: n must be ≥ 1, got {n}")
        self.n = n
        self._init_budget("distinct", token_budget, seed, n=n)

    def _corpus(self, enc: Encoded) -> float:
        _, ids = ngram_ids(enc, self.n)
        return (int(ids.max()) + 1) / ids.size if ids.size else float("nan")

    def compute(self, texts: TextSet) -> MetricResult:
        enc = _encoded(texts.texts, False)
        starts, ids = ngram_ids(enc, self.n)
        owner = enc.seq[starts]
        total = np.bincount(owner, minlength=len(texts))
        text_of_pair, _, _ = count_pairs(owner, ids, len(texts))
        distinct = np.bincount(text_of_pair, minlength=len(texts))
        per_item = _per_text_ratio(distinct, total)
        corpus = (int(ids.max()) + 1) / ids.size if ids.size else float("nan")
        result = MetricResult(per_item={"distinct": per_item}, aggregates=summarize(per_item) | {"corpus": corpus})
        return self._with_budget(texts, result, self._corpus)


def _entropy_bits(counts: np.ndarray, owner: np.ndarray, n_owners: int) -> np.ndarray:
    """Shannon entropy (bits) of each owner's count distribution, using
    H = log2 N − (1/N) Σ c·log2 c (N = the owner's total count); NaN where N = 0."""
    total = np.bincount(owner, weights=counts, minlength=n_owners)
    c_log_c = np.bincount(owner, weights=counts * np.log2(counts), minlength=n_owners)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = np.log2(total) - c_log_c / total
    return np.where(total > 0, np.maximum(h, 0.0), np.nan)  # max: -0.0/rounding for one n-gram type


def _pooled_entropy(ids: np.ndarray) -> float:
    """Entropy (bits) of the pooled n-gram ids; NaN when there are none."""
    if not ids.size:
        return float("nan")
    pooled = np.bincount(ids).astype(np.float64)
    return float(_entropy_bits(pooled, np.zeros(pooled.size, dtype=np.int64), 1)[0])


class NgramEntropy(_Budgeted):
    """n-gram entropy: Shannon entropy H = −Σ_g p(g)·log2 p(g) (bits) of the empirical n-gram
    distribution (Shannon 1948; used as a diversity measure e.g. by Zhang et al. 2018,
    "Generating Informative and Diverse Conversational Responses via Adversarial Information
    Maximization", and Shaib et al. 2024).

    Tokens as for :class:`Distinct`. Aggregate ``corpus``: over the pooled n-grams of the whole set;
    per item: within each response (NaN for a response with no n-gram). The plug-in entropy grows
    with the number of n-grams observed: ``token_budget`` adds ``corpus_budget``, the
    length-matched value (see :class:`_Budgeted`).
    """

    family = "lexical"
    higher_is_better = True
    needs: frozenset[str] = frozenset()

    def __init__(self, *, n: int = 2, token_budget: int | None = None, seed: int = 0):
        if n < 1:
            raise ValueError(f"ngram_entropy: n must be ≥ 1, got {n}")
        self.n = n
        self._init_budget("ngram_entropy", token_budget, seed, n=n)

    def _corpus(self, enc: Encoded) -> float:
        return _pooled_entropy(ngram_ids(enc, self.n)[1])

    def compute(self, texts: TextSet) -> MetricResult:
        enc = _encoded(texts.texts, False)
        starts, ids = ngram_ids(enc, self.n)
        text_of_pair, _, counts = count_pairs(enc.seq[starts], ids, len(texts))
        per_item = _entropy_bits(counts.astype(np.float64), text_of_pair, len(texts))
        result = MetricResult(per_item={"ngram_entropy": per_item},
                              aggregates=summarize(per_item) | {"corpus": _pooled_entropy(ids)})
        return self._with_budget(texts, result, self._corpus)


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
    primary = "corpus"

    def compute(self, texts: TextSet) -> MetricResult:
        stripped = [_stripped(t) for t in texts.texts]
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
    primary = "mean"

    def __init__(self, *, window: int = 50):
        if window < 1:
            raise ValueError(f"mattr: window must be ≥ 1, got {window}")
        self.window = window
        self.name = param_name("mattr", window=window)

    def compute(self, texts: TextSet) -> MetricResult:
        per_item = mattr_per_sequence(_encoded(texts.texts, True), self.window)
        return MetricResult(per_item={"mattr": per_item}, aggregates=self.aggregate_items(per_item))

    def aggregate_items(self, values: np.ndarray) -> dict[str, float]:
        """The aggregates from per-item values (what a bootstrap resamples)."""
        return summarize(values)
