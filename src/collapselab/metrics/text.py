"""Text preprocessing shared by every metric family: markdown stripping, sentences, tokens.

``TextSet.sentences[i]`` is :func:`sentences_of` ``(texts[i])`` (markdown stripped, then split),
so every family that needs sentences sees the same ones; :func:`text_sentences` computes them for
a set built without them.

Which tokenizer serves which metric, and why:

* :func:`word_tokenize` — NLTK's Treebank-style ``NLTKWordTokenizer`` applied per sentence (what
  ``nltk.word_tokenize`` does, minus the punkt data download). Used where the study counted
  "words" with NLTK: the ``length`` metric (word counts) and vocabulary growth (Heaps' law).
* sacreBLEU's own ``13a`` tokenizer — used *only* inside Self-BLEU
  (:mod:`collapselab.metrics.lexical`), because the study scored with sacreBLEU and the fast path
  must reproduce ``BLEU.sentence_score`` exactly.
* :func:`simple_tokens` — a lower-casing regex tokenizer, ~30× faster than Treebank; used for the
  n-gram statistics (distinct-n, n-gram entropy) and, words only, for MATTR. Those metrics are
  defined on "tokens" without a prescribed tokenizer; lower-casing keeps "The"/"the" one type, as
  in Li et al. (2016) and Shaib et al. (2024).

Nothing here needs NLTK data files: sentence splitting uses an untrained punkt model with a small
built-in abbreviation list (the study used NLTK's trained English punkt, which cannot be downloaded
offline; on ordinary prose the two agree, they differ on rarer abbreviations).
"""

from __future__ import annotations

import re
from functools import lru_cache

import numpy as np
from nltk.tokenize import NLTKWordTokenizer
from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer

#: Sentences shorter than this many (whitespace-separated) words are dropped before Self-BLEU —
#: the study's rule (very short fragments such as "Sure!" would dominate the score otherwise).
MIN_BLEU_WORDS = 4

# Lower-cased, without the final period, as punkt stores them ("e.g." -> "e.g").
_ABBREVIATIONS = frozenset({
    "mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "vs", "etc", "e.g", "i.e", "cf", "approx",
    "u.s", "u.k",
})
# After an abbreviation, punkt splits only when the next word is a known frequent sentence
# starter. Without this small list "… apples, pears, etc. They are …" would stay one sentence.
_SENTENCE_STARTERS = frozenset({
    "the", "this", "that", "these", "those", "it", "its", "they", "he", "she", "we", "i", "you",
    "there", "however", "but", "in", "a", "an", "if", "when", "also", "then", "so", "for", "as",
})

# Line-anchored patterns use [ \t], never \s, so that they cannot swallow line breaks.
_FENCE = re.compile(r"^[ \t]*(```|~~~).*$", re.MULTILINE)
_HEADER = re.compile(r"^[ \t]{0,3}#{1,6}[ \t]+(.*?)[ \t]*#*[ \t]*$", re.MULTILINE)
_SETEXT_OR_RULE = re.compile(r"^[ \t]*(?:={2,}|[-*_](?:[ \t]*[-*_]){2,})[ \t]*$", re.MULTILINE)
_QUOTE = re.compile(r"^[ \t]*(?:>[ \t]?)+", re.MULTILINE)
_BULLET = re.compile(r"^[ \t]*(?:[-*+\u2022\u2023\u25e6]|\d{1,3}[.)]|[a-zA-Z][.)])[ \t]+", re.MULTILINE)
_TABLE_CELL_RULE = r"[ \t]*:?-+:?[ \t]*"  # "---", ":-:" …
_TABLE_SEPARATOR = re.compile(rf"^[ \t]*\|?{_TABLE_CELL_RULE}(?:\|{_TABLE_CELL_RULE})*\|?[ \t]*$",
                              re.MULTILINE)
_IMAGE_OR_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_REF_LINK = re.compile(r"\[([^\]]+)\]\[[^\]]*\]")
_AUTOLINK = re.compile(r"<((?:https?|ftp|mailto):[^>\s]+)>")
_HTML_TAG = re.compile(r"</?[a-zA-Z][a-zA-Z0-9]*(?:\s[^<>]*)?/?>")
_INLINE_CODE = re.compile(r"(`+)(.+?)\1")
# Emphasis: the markers must hug the text (``**bold**``, ``_it_``); "2 * 3 * 4" and snake_case
# identifiers are left alone.
_STRONG = re.compile(r"(\*{2,3}|_{2,3})(?=\S)(.+?)(?<=\S)\1")
_EM_STAR = re.compile(r"(?<![\w*])\*(?=[^\s*])(.+?)(?<=[^\s*])\*(?![\w*])")
_EM_UNDERSCORE = re.compile(r"(?<![\w_])_(?=[^\s_])(.+?)(?<=[^\s_])_(?![\w_])")
_STRIKE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~")
_SPACES = re.compile(r"[ \t]{2,}|\t")  # only the runs that change
_LINE_EDGE_SPACE = re.compile(r"^ | $", re.MULTILINE)

# (substrings that must occur for the rule to apply — None: always —, pattern, replacement), in
# order: fences and table rules before bullets/rules, links before emphasis, code before emphasis.
_MARKDOWN_RULES: tuple[tuple[tuple[str, ...] | None, re.Pattern[str], str], ...] = (
    (("```", "~~~"), _FENCE, ""),
    (("-",), _TABLE_SEPARATOR, ""),
    (("#",), _HEADER, r"\1"),
    (("==", "-", "*", "_"), _SETEXT_OR_RULE, ""),
    ((">",), _QUOTE, ""),
    (None, _BULLET, ""),
    (("](",), _IMAGE_OR_LINK, r"\1"),
    (("][",), _REF_LINK, r"\1"),
    (("<",), _AUTOLINK, r"\1"),
    (("<",), _HTML_TAG, " "),
    (("`",), _INLINE_CODE, r"\2"),
    (("**", "__"), _STRONG, r"\2"),
    (("*",), _EM_STAR, r"\1"),
    (("_",), _EM_UNDERSCORE, r"\1"),
    (("~~",), _STRIKE, r"\1"),
)

_SIMPLE_TOKEN = re.compile(r"\w+(?:['\u2019]\w+)*|[^\w\s]")
_SIMPLE_WORD = re.compile(r"\w+(?:['\u2019]\w+)*")


def strip_markdown(text: str) -> str:
    """Markdown reduced to its plain text, one output line per source line.

    Removes code-fence lines (the code itself is kept), header marks, horizontal rules and setext
    underlines, block quotes, bullet and numbered-list markers, emphasis and strike-through marks,
    inline-code backticks, HTML tags and table separator rows; links and images become their text;
    table pipes become spaces. Line breaks are kept because :func:`split_sentences` treats each
    line (e.g. each list item) as its own sentence.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    for triggers, pattern, replacement in _MARKDOWN_RULES:
        # most texts lack most constructs: a substring test is far cheaper than a regex scan
        if triggers is None or any(t in text for t in triggers):
            text = pattern.sub(replacement, text)
    text = _SPACES.sub(" ", text.replace("|", " "))
    return _LINE_EDGE_SPACE.sub("", text)


@lru_cache(maxsize=16384)
def plain_text(text: str) -> str:
    """:func:`strip_markdown`, cached per text: the one markdown-stripping step every token-counting
    metric reads (the lexical family's n-grams, the vocabulary family's word tokens, Heaps' law and
    the JS divergence's n-grams), so formatting marks ("**", "#", "|") never count as words. The
    study stripped ``#`` and ``*`` before its Heaps tokenization and markdown before Self-BLEU; this
    strips the same constructs and the rest of markdown (bullets, links, tables). Cached because a
    set's metrics, their interval replicates and the human references all read the same texts."""
    return strip_markdown(text)


@lru_cache(maxsize=1)
def _punkt() -> PunktSentenceTokenizer:
    params = PunktParameters()
    params.abbrev_types = set(_ABBREVIATIONS)
    params.sent_starters = set(_SENTENCE_STARTERS)
    return PunktSentenceTokenizer(params)


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text``: each non-empty line split by punkt (untrained, built-in
    abbreviations — see the module docstring). Newlines always end a sentence, so list items and
    table rows are sentences of their own. Does not strip markdown (see :func:`sentences_of`)."""
    punkt = _punkt()
    sentences: list[str] = []
    for line in text.split("\n"):
        if line.strip():
            sentences.extend(s.strip() for s in punkt.tokenize(line) if s.strip())
    return sentences


def sentences_of(text: str) -> list[str]:
    """Markdown stripped, then split: what ``TextSet.sentences[i]`` holds for ``texts[i]``."""
    return split_sentences(strip_markdown(text))


def keep_bleu_sentences(sentences: list[str]) -> list[str]:
    """The sentences Self-BLEU scores: those with at least :data:`MIN_BLEU_WORDS` words."""
    return [s for s in sentences if len(s.split()) >= MIN_BLEU_WORDS]


def sentences_for_bleu(text: str) -> list[str]:
    """Markdown stripped, split, sentences of ≥ 4 words kept (the study's Self-BLEU input)."""
    return keep_bleu_sentences(sentences_of(text))


_WORD_TOKENIZER = NLTKWordTokenizer()


def tokenize_sentence(sentence: str) -> list[str]:
    """NLTK Treebank tokens of one sentence (words and punctuation, case kept)."""
    return _WORD_TOKENIZER.tokenize(sentence)


def word_tokenize(text: str) -> list[str]:
    """NLTK Treebank tokens of a text, as ``nltk.word_tokenize`` gives them: split into sentences
    first, because the Treebank tokenizer only detaches a period at the very end of its input."""
    return [tok for sentence in split_sentences(text) for tok in tokenize_sentence(sentence)]


def is_word(token: str) -> bool:
    """A token that counts as a word: it has a letter or digit (punctuation tokens do not)."""
    return any(ch.isalnum() for ch in token)


def simple_tokens(text: str) -> list[str]:
    """Fast lower-cased tokens: runs of word characters (with inner apostrophes, "don't") and
    single punctuation characters."""
    return _SIMPLE_TOKEN.findall(text.lower())


def simple_words(text: str) -> list[str]:
    """:func:`simple_tokens` without the punctuation."""
    return _SIMPLE_WORD.findall(text.lower())


def text_sentences(texts: list[str], sentences: list[list[str]] | None) -> list[list[str]]:
    """``TextSet.sentences`` when the pipeline computed them, else :func:`sentences_of` per text
    (so a metric also works on a bare ``TextSet``)."""
    if sentences is not None:
        if len(sentences) != len(texts):
            raise ValueError(f"{len(sentences)} sentence lists for {len(texts)} texts")
        return sentences
    return [sentences_of(t) for t in texts]


def summarize(values: np.ndarray) -> dict[str, float]:
    """Mean, median, sd (ddof=1), min and max of the defined values, with ``n`` (defined) and
    ``n_undefined`` (NaN) counts — the aggregates of every per-item metric of the text families."""
    values = np.asarray(values, dtype=np.float64)
    valid = values[~np.isnan(values)]
    nan = float("nan")
    return {
        "mean": float(valid.mean()) if valid.size else nan,
        "median": float(np.median(valid)) if valid.size else nan,
        "sd": float(valid.std(ddof=1)) if valid.size > 1 else nan,
        "min": float(valid.min()) if valid.size else nan,
        "max": float(valid.max()) if valid.size else nan,
        "n": float(valid.size),
        "n_undefined": float(values.size - valid.size),
    }
