"""Benchmark: the whole default metric suite (``DEFAULT_METRICS``) on 1,500 human "responses"
against the naive computations it replaces, same values, in the same run.

    python bench/metrics.py                     # 1,500 texts, 300 human references, 1 repeat
    python bench/metrics.py --n 300 --repeat 3 --no-record

Texts: seeded passages of the offline Austen corpus (each record's prompt opening joined with its
response: the original 300–700-character paragraph, several sentences), ``--n`` as the set and
``--human`` others as its human reference set.

Shared passes, timed and reported apart (they are not part of the ratio — both sides read them):

* sentence splitting (:func:`~collapselab.metrics.text.sentences_of`) and embedding with the
  packaged all-MiniLM-L6-v2 (:class:`~collapselab.metrics.embeddings.Embedder`): sentences/s;
* scoring: token log-probabilities from the packaged SmolLM2-135M-Instruct
  (``continuation_logprobs``) on ``--score-n`` texts: scored tokens/s. The other texts' log-probs
  (for the two perplexity metrics) are *synthetic*: as many values as SmolLM2 has tokens for the
  text, drawn from the measured log-probs — perplexity costs the same for real and synthetic arrays.

The suite: every metric of ``DEFAULT_METRICS``, ``metric.compute(textset)`` (no intervals), timed
one by one, with every per-text cache of the metric modules cleared before each suite run (cold:
the fast side pays its tokenization once per suite, inside the first metric that needs it). The
naive suite: for each metric the plain computation (``collapselab.metrics.naive_lexical`` /
``naive_embedding``, plus a token-by-token perplexity loop written here), re-tokenizing for every
metric as a plain script would. Every value the naive side computes must equal the fast one to
1e-6 relative, or the script exits non-zero. MAUVE has no naive version (the naive side calls
``mauve.compute_mauve`` itself on the same features: same cost) and length neither (the same
function on both sides); the ratio without them is printed too. Both suites run with
``--suite-threads`` BLAS/OpenMP threads (default 1; threadpoolctl): on a shared 2-core machine two
OpenBLAS threads busy-wait on each other, which made a 384×384 ``eigh`` (Fréchet, Vendi) and
MAUVE's PCA/k-means ~50–100× slower; the fast suite is then also timed once with every core, for
information.

Appends a dated block to the ``## metrics`` section of bench/RESULTS.md (``--no-record``: don't).
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local; never wait on a network timeout
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
from _machine import cpu_model  # bench/ is on sys.path when a script runs

RESULTS = Path(__file__).with_name("RESULTS.md")
SECTION = "## metrics"
SECTION_HEADER = """## metrics

`python bench/metrics.py` — the whole default metric suite (`DEFAULT_METRICS`, `metric.compute`,
no intervals) on `n` human texts (seeded Austen paragraphs) against the naive computations
(`collapselab.metrics.naive_lexical` / `naive_embedding`: per-sentence sacreBLEU loop, explicit
n×n cosine matrix, primal Vendi, `Counter` n-grams, `sqrtm` Fréchet, `curve_fit` Heaps on naive
points, a token-by-token perplexity loop), same values (checked to 1e-6 relative), in the same run.
Fast-side caches are cleared before every suite run. MAUVE (`mauve.compute_mauve` on both sides)
and length (same function on both sides) have no naive version. The shared embedding and scoring
passes are not in the ratio; their throughputs are reported with it. Both suites run with the
same number of BLAS/OpenMP threads (`--suite-threads`, default 1; each block says). Target: at
least 20x.
"""
RTOL = 1e-6
ATOL = 1e-12  # for values that are exactly 0 on one side (e.g. a JS divergence of identical sets)


# --------------------------------------------------------------------------------------------------
# Machine and texts
# --------------------------------------------------------------------------------------------------




def austen_texts(n: int, n_human: int, seed: int) -> tuple[list[Any], list[Any]]:
    """``n`` + ``n_human`` distinct Austen records, drawn without replacement (seeded)."""
    from collapselab.config.spec import CorpusSpec
    from collapselab.corpora.austen import load_austen

    records = load_austen(CorpusSpec())
    if n + n_human > len(records):
        raise SystemExit(f"the Austen corpus has {len(records)} passages; asked for {n} + {n_human}")
    order = np.random.default_rng(seed).permutation(len(records))
    return [records[i] for i in order[:n]], [records[i] for i in order[n:n + n_human]]


def paragraph(record: Any) -> str:
    """The whole passage: the prompt's opening (without the instruction) and the response."""
    from collapselab.corpora.continuation import CONTINUATION_INSTRUCTION

    opening = record.prompt.removeprefix(CONTINUATION_INSTRUCTION).strip()
    return f"{opening} {record.response}".strip()


# --------------------------------------------------------------------------------------------------
# Shared passes
# --------------------------------------------------------------------------------------------------


def build_textset(name: str, kind: str, records: list[Any], embedder: Any, timing: dict[str, float]) -> Any:
    from collapselab.metrics.base import TextSet
    from collapselab.metrics.text import sentences_of

    texts = [paragraph(r) for r in records]
    started = time.perf_counter()
    sentences = [sentences_of(t) for t in texts]
    timing["split_s"] += time.perf_counter() - started
    flat = [s for sents in sentences for s in sents]
    started = time.perf_counter()
    text_emb = embedder.encode(texts)
    timing["embed_texts_s"] += time.perf_counter() - started
    started = time.perf_counter()
    sent_emb = embedder.encode(flat)
    timing["embed_sentences_s"] += time.perf_counter() - started
    timing["texts"] += len(texts)
    timing["sentences"] += len(flat)
    owner = np.concatenate([np.full(len(s), i, dtype=np.int64) for i, s in enumerate(sentences)])
    # stored as the pipeline stores them: float32 rows
    return TextSet(name, kind, [r.id for r in records], texts, sentences=sentences,
                   embeddings=text_emb.astype(np.float32), sentence_embeddings=sent_emb.astype(np.float32),
                   sentence_owner=owner)


def scoring_pass(textset: Any, human: Any, n_score: int, batch_size: int, seed: int) -> dict[str, Any]:
    """Real SmolLM2 log-probs for the first ``n_score`` texts (timed), synthetic ones (real token
    counts, values resampled from the measured log-probs) for every other text of both sets."""
    import torch

    from collapselab.config.spec import STUDY_SYSTEM_PROMPT, ModelSpec
    from collapselab.models.base import ChatPrompt
    from collapselab.models.hf import load_hf_model

    spec = ModelSpec(id="hf/smollm2-135m-instruct", batch_size=batch_size)
    started = time.perf_counter()
    model = load_hf_model(spec)
    load_s = time.perf_counter() - started
    instruction = "Write a paragraph of a novel in the style of Jane Austen."
    prompts = [ChatPrompt(i, instruction, STUDY_SYSTEM_PROMPT) for i in textset.ids[:n_score]]
    model.continuation_logprobs(prompts[:2], textset.texts[:2])  # warm-up: first-call dispatch costs
    started = time.perf_counter()
    real = model.continuation_logprobs(prompts, textset.texts[:n_score])
    score_s = time.perf_counter() - started
    scored = sum(len(lp) for lp in real)
    pool = np.concatenate([np.asarray(lp, dtype=np.float64) for lp in real])
    rng = np.random.default_rng(seed)
    tok = model.tokenizer

    def synthetic(texts: list[str]) -> list[np.ndarray]:
        lengths = [len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"]]
        return [rng.choice(pool, size=k) for k in lengths]

    textset.logprobs = [np.asarray(lp, dtype=np.float64) for lp in real] + synthetic(textset.texts[n_score:])
    textset.human_logprobs = synthetic(human.texts)
    human.logprobs = textset.human_logprobs  # one scorer here: the references under the "vanilla" one too
    info = {"model": spec.id, "dtype": spec.dtype, "batch_size": batch_size, "texts": n_score,
            "tokens": scored, "seconds": score_s, "tok_per_s": scored / score_s, "load_s": load_s,
            "threads": torch.get_num_threads(), "mean_logprob": float(pool.mean()),
            "set_tokens": int(sum(len(lp) for lp in textset.logprobs)),
            "human_tokens": int(sum(len(lp) for lp in textset.human_logprobs))}
    model.close()
    return info


# --------------------------------------------------------------------------------------------------
# Naive suite: one function per metric name, returning {"agg:key" | "item:key" | "detail:key": value}
# --------------------------------------------------------------------------------------------------


def _plain_mean(values: Any) -> float:
    valid = [float(v) for v in values if not math.isnan(v)]
    return sum(valid) / len(valid) if valid else math.nan


def _naive_ppl(logprobs: list[np.ndarray]) -> dict[str, Any]:
    ppl = []
    for lp in logprobs:
        total, count = 0.0, 0
        for x in lp:  # token by token
            total += float(x)
            count += 1
        ppl.append(math.exp(-total / count) if count else math.nan)
    valid = [p for p in ppl if not math.isnan(p)]
    q1, _, q3 = statistics.quantiles(valid, n=4, method="inclusive")  # = numpy's linear percentiles
    lo, hi = q1 - 1.5 * (q3 - q1), q3 + 1.5 * (q3 - q1)
    kept = [p for p in valid if lo <= p <= hi]
    return {"item:ppl": np.array(ppl), "agg:mean": statistics.fmean(valid),
            "agg:median": statistics.median(valid), "agg:sd": statistics.stdev(valid),
            "agg:mean_iqr": statistics.fmean(kept),
            "agg:median_iqr": statistics.median(kept), "agg:sd_iqr": statistics.stdev(kept),
            "agg:n_outliers": float(len(valid) - len(kept))}


def _bleu_sentences(ts: Any) -> list[list[str]]:
    from collapselab.metrics.text import keep_bleu_sentences, text_sentences

    return [keep_bleu_sentences(s) for s in text_sentences(ts.texts, ts.sentences)]


def naive_lexical_individual(ts: Any) -> dict[str, Any]:
    from collapselab.metrics.naive_lexical import naive_self_bleu

    res = naive_self_bleu(_bleu_sentences(ts), mode="individual")
    diversity = 100.0 - res.per_response
    return {"item:lexical_diversity": diversity, "agg:mean": _plain_mean(diversity)}


def naive_lexical_aggregated(ts: Any) -> dict[str, Any]:
    from collapselab.metrics.naive_lexical import naive_self_bleu

    res = naive_self_bleu(_bleu_sentences(ts), mode="aggregated", sample=100, seed=0)
    return {"agg:corpus": 100.0 - res.value, "agg:self_bleu": res.value,
            "detail:sampled_self_bleu": res.per_response[res.used]}


def naive_distinct_n(n: int) -> Callable[[Any], dict[str, Any]]:
    def run(ts: Any) -> dict[str, Any]:
        from collapselab.metrics.naive_lexical import naive_distinct

        corpus, per_item = naive_distinct(ts.texts, n)
        return {"agg:corpus": corpus, "item:distinct": per_item, "agg:mean": _plain_mean(per_item)}
    return run


def naive_entropy_n(n: int) -> Callable[[Any], dict[str, Any]]:
    def run(ts: Any) -> dict[str, Any]:
        from collapselab.metrics.naive_lexical import naive_ngram_entropy

        corpus, per_item = naive_ngram_entropy(ts.texts, n)
        return {"agg:corpus": corpus, "item:ngram_entropy": per_item, "agg:mean": _plain_mean(per_item)}
    return run


def naive_compression(ts: Any) -> dict[str, Any]:
    from collapselab.metrics.naive_lexical import naive_compression_ratio

    corpus, per_item = naive_compression_ratio(ts.texts)
    return {"agg:corpus": corpus, "item:compression_ratio": per_item, "agg:mean": _plain_mean(per_item)}


def naive_mattr_50(ts: Any) -> dict[str, Any]:
    from collapselab.metrics.naive_lexical import naive_mattr

    per_item = naive_mattr(ts.texts, 50)
    return {"item:mattr": per_item, "agg:mean": _plain_mean(per_item)}


def naive_semantic(ts: Any) -> dict[str, Any]:
    from collapselab.metrics.naive_embedding import per_item_distance_matrix, semantic_diversity_matrix

    e = ts.sentence_embeddings
    return {"agg:mean": semantic_diversity_matrix(e),
            "item:distance": per_item_distance_matrix(e, ts.sentence_owner, len(ts))}


def naive_vendi(ts: Any) -> dict[str, Any]:
    from collapselab.metrics.naive_embedding import vendi_primal

    return {"agg:value": vendi_primal(ts.embeddings)}


def _naive_word_tokens(texts: list[str]) -> list[list[str]]:
    from collapselab.metrics.text import strip_markdown, word_tokenize

    return [word_tokenize(strip_markdown(t).lower()) for t in texts]


def naive_ppl_gap(ts: Any) -> dict[str, Any]:
    """|log PPL(set) − log PPL(human)| of the IQR-filtered mean per-text perplexities."""
    mine, human = _naive_ppl(ts.logprobs)["agg:mean_iqr"], _naive_ppl(ts.human.logprobs)["agg:mean_iqr"]
    return {"agg:value": abs(math.log(mine) - math.log(human))}


def naive_heaps(ts: Any) -> dict[str, Any]:
    from scipy.optimize import curve_fit

    from collapselab.metrics.naive_embedding import heaps_points_naive

    tokens = [tok for toks in _naive_word_tokens(ts.texts) for tok in toks]
    ns, vs = heaps_points_naive(tokens, 1000)
    # plain curve_fit from its default start (1, 1); converged tightly, as the unit tests' reference
    # fit (naive_embedding.heaps_naive keeps curve_fit's default tolerances, which stop ~1e-6 short of
    # the optimum on this flat K–β ridge: compared separately below, for information)
    (k, beta), _ = curve_fit(lambda x, k, b: k * x ** b, np.array(ns, float), np.array(vs, float),
                             maxfev=10_000, ftol=1e-14, xtol=1e-14, gtol=1e-14)
    return {"agg:beta": float(beta), "agg:K": float(k), "agg:n_tokens": float(len(tokens)),
            "detail:N": np.array(ns, float), "detail:V": np.array(vs, float)}


def naive_vocabulary(ts: Any) -> dict[str, Any]:
    from collapselab.metrics.naive_embedding import vocabulary_size_naive

    per_text = _naive_word_tokens(ts.texts)
    types, v_budget = vocabulary_size_naive(per_text, ts.ids, 100_000)
    return {"agg:types": float(types), "agg:types_budget": v_budget,
            "item:types": np.array([len(set(t)) for t in per_text], float)}


def naive_rare_tail(ts: Any) -> dict[str, Any]:
    from collapselab.metrics.naive_embedding import rare_tail_coverage_naive

    per_text = _naive_word_tokens(ts.texts)
    per_human = _naive_word_tokens(ts.human.texts)
    value = rare_tail_coverage_naive(per_text, per_human, 2)
    counts: dict[str, int] = {}
    for toks in per_human:
        for tok in toks:
            counts[tok] = counts.get(tok, 0) + 1
    share = [sum(1 for tok in toks if counts.get(tok, 0) in (1, 2)) / len(toks) if toks else math.nan
             for toks in per_text]
    return {"agg:value": value, "item:tail_share": np.array(share)}


def naive_mauve(ts: Any) -> dict[str, Any]:
    import mauve

    out = mauve.compute_mauve(p_features=ts.embeddings, q_features=ts.human.embeddings, num_buckets="auto",
                              mauve_scaling_factor=5, seed=25, verbose=False, kmeans_num_redo=5,
                              kmeans_max_iter=500)
    return {"agg:value": float(out.mauve), "agg:mauve_star": float(out.mauve_star),
            "agg:frontier_integral": float(out.frontier_integral)}


def naive_js_n(n: int) -> Callable[[Any], dict[str, Any]]:
    def run(ts: Any) -> dict[str, Any]:
        from collapselab.metrics.naive_embedding import js_divergence_naive
        from collapselab.metrics.text import simple_tokens, strip_markdown

        return {"agg:value": js_divergence_naive([simple_tokens(strip_markdown(t)) for t in ts.texts],
                                                 [simple_tokens(strip_markdown(t)) for t in ts.human.texts], n)}
    return run


def naive_frechet(ts: Any) -> dict[str, Any]:
    from collapselab.metrics.naive_embedding import frechet_naive

    def unit(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    return {"agg:value": frechet_naive(unit(ts.embeddings), unit(ts.human.embeddings))}


def same_length(ts: Any) -> dict[str, Any]:
    """No naive version: the same :class:`Length` on both sides (its word-count cache cleared)."""
    from collapselab.metrics.length import Length, _word_count

    _word_count.cache_clear()
    res = Length().compute(ts)
    return {"item:words": res.per_item["words"], "item:sentences": res.per_item["sentences"],
            "agg:mean": res.aggregates["mean"], "agg:sentences_mean": res.aggregates["sentences_mean"]}


def naive_for(name: str, settings: dict[str, Any]) -> tuple[Callable[[Any], dict[str, Any]], str]:
    """(naive function, note) for one metric of the suite."""
    n = settings.get("n")
    table: dict[str, tuple[Callable[[Any], dict[str, Any]], str]] = {
        "output_perplexity": (lambda ts: _naive_ppl(ts.logprobs), "token-by-token loop"),
        "output_perplexity_gap": (naive_ppl_gap, "token-by-token loop"),
        "human_perplexity": (lambda ts: _naive_ppl(ts.human_logprobs), "token-by-token loop"),
        "compression_ratio": (naive_compression, "direct zlib"),
        "mattr": (naive_mattr_50, "window loop"),
        "semantic_diversity": (naive_semantic, "n×n cosine matrix"),
        "vendi": (naive_vendi, "primal n×n eigvalsh"),
        "heaps": (naive_heaps, "len(set) per point + curve_fit"),
        "vocabulary_size": (naive_vocabulary, "plain loops"),
        "rare_tail_coverage": (naive_rare_tail, "plain loops"),
        "mauve": (naive_mauve, "same mauve call (no naive version)"),
        "frechet": (naive_frechet, "sqrtm"),
        "length": (same_length, "same function (no naive version)"),
    }
    if name == "lexical_diversity":
        if settings.get("mode") == "aggregated":
            return naive_lexical_aggregated, "sacreBLEU per sentence, pool of 100"
        return naive_lexical_individual, "sacreBLEU per sentence"
    if name == "distinct":
        return naive_distinct_n(n), "Counter"
    if name == "ngram_entropy":
        return naive_entropy_n(n), "Counter"
    if name == "js_divergence":
        return naive_js_n(n), "Counter + scipy"
    return table[name]


# --------------------------------------------------------------------------------------------------
# Running and checking
# --------------------------------------------------------------------------------------------------


def clear_metric_caches() -> None:
    """Forget every per-text cache of the metric modules, so the fast suite runs cold."""
    from collapselab.metrics import length, lexical, vocabulary

    lexical._stripped.cache_clear()
    lexical._text_token_ids.cache_clear()
    lexical._VOCABULARY.clear()
    vocabulary._word_tokens.cache_clear()
    vocabulary._simple_tokens.cache_clear()
    length._word_count.cache_clear()


def fast_value(result: Any, key: str) -> Any:
    where, name = key.split(":", 1)
    source = {"agg": result.aggregates, "item": result.per_item, "detail": result.details}[where]
    if name not in source:
        raise KeyError(f"the fast result has no {where} {name!r}")
    return source[name]


def compare(fast: Any, naive: Any) -> tuple[bool, float]:
    """(equal to RTOL, max abs difference) — NaNs must sit in the same places."""
    a = np.atleast_1d(np.asarray(fast, dtype=np.float64))
    b = np.atleast_1d(np.asarray(naive, dtype=np.float64))
    if a.shape != b.shape:
        return False, math.inf
    nan_a, nan_b = np.isnan(a), np.isnan(b)
    if (nan_a != nan_b).any():
        return False, math.inf
    a, b = a[~nan_a], b[~nan_b]
    if a.size == 0:
        return True, 0.0
    diff = np.abs(a - b)
    ok = bool((diff <= RTOL * np.maximum(np.abs(a), np.abs(b)) + ATOL).all())
    return ok, float(diff.max())


def run_fast(metrics: list[Any], ts: Any) -> tuple[list[float], list[Any]]:
    clear_metric_caches()
    seconds, results = [], []
    for metric in metrics:
        started = time.perf_counter()
        results.append(metric.compute(ts))
        seconds.append(time.perf_counter() - started)
    return seconds, results


def run_naive(naives: list[Callable[[Any], dict[str, Any]]],
              ts: Any) -> tuple[list[float], list[dict[str, Any]]]:
    seconds, values = [], []
    for fn in naives:
        started = time.perf_counter()
        values.append(fn(ts))
        seconds.append(time.perf_counter() - started)
    return seconds, values


def fmt_s(s: float) -> str:
    return f"{s:.4f}" if s < 0.1 else f"{s:.3f}" if s < 10 else f"{s:.1f}"


def record(block: str) -> None:
    """Insert ``block`` at the end of the metrics section of RESULTS.md (made if missing), leaving
    every other section as it is."""
    text = RESULTS.read_text() if RESULTS.exists() else (
        "# Benchmark results\n\nEach section is one script in `bench/`, measured against a named baseline "
        "in the same run.\n")
    if SECTION not in text.splitlines():
        text = text.rstrip("\n") + "\n\n" + SECTION_HEADER
    lines = text.rstrip("\n").split("\n")
    start = lines.index(SECTION)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    while end > start + 1 and not lines[end - 1].strip():
        end -= 1
    lines[end:end] = ["", *block.rstrip("\n").split("\n")]
    RESULTS.write_text("\n".join(lines) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1500, help="texts in the measured set")
    parser.add_argument("--human", type=int, default=300, help="texts in the human reference set")
    parser.add_argument("--repeat", type=int, default=1, help="suite runs per side (fastest kept)")
    parser.add_argument("--score-n", type=int, default=64, help="texts scored by SmolLM2 (real log-probs)")
    parser.add_argument("--score-batch", type=int, default=8)
    parser.add_argument("--suite-threads", type=int, default=1,
                        help="BLAS/OpenMP threads while the suites run, both sides (0: every core). "
                             "Default 1: on a shared 2-core machine two OpenBLAS threads make a 384x384 "
                             "eigh ~100x slower")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-record", action="store_true", help="do not append to bench/RESULTS.md")
    args = parser.parse_args()

    load_start = os.getloadavg()
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")

    # one-off imports both sides use, outside every timed region
    import mauve  # noqa: F401
    import sacrebleu
    import sacrebleu.metrics  # noqa: F401
    import scipy
    import torch

    import collapselab.metrics  # noqa: F401  (registers every metric)
    from collapselab.metrics.base import build_metric
    from collapselab.metrics.embeddings import Embedder
    from collapselab.pipeline.experiments.collapse import DEFAULT_METRICS

    print(f"{date}; {os.cpu_count()} cores, {cpu_model()}; load average at start "
          f"{load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}")
    records, human_records = austen_texts(args.n, args.human, args.seed)

    # ---- shared pass 1: sentences and embeddings ------------------------------------------------
    timing = {"split_s": 0.0, "embed_texts_s": 0.0, "embed_sentences_s": 0.0, "texts": 0, "sentences": 0}
    started = time.perf_counter()
    embedder = Embedder()
    embed_load_s = time.perf_counter() - started
    embedder.encode(["A warm-up sentence.", "And another one, a little longer than the first."])
    human = build_textset("human", "human", human_records, embedder, timing)
    ts = build_textset("bench", "condition", records, embedder, timing)
    ts.human = human
    sent_per_s = timing["sentences"] / timing["embed_sentences_s"]
    split_per_s = timing["texts"] / timing["split_s"]
    print(f"shared pass — sentences: {timing['texts']} texts split into {timing['sentences']} sentences in "
          f"{timing['split_s']:.2f} s ({split_per_s:,.0f} texts/s); embedding (MiniLM, "
          f"{torch.get_num_threads()} threads, load {embed_load_s:.1f} s): sentences {sent_per_s:,.0f}/s "
          f"({timing['embed_sentences_s']:.1f} s), texts {timing['texts'] / timing['embed_texts_s']:,.0f}/s "
          f"({timing['embed_texts_s']:.1f} s)")
    del embedder

    # ---- shared pass 2: scoring ---------------------------------------------------------------
    score = scoring_pass(ts, human, args.score_n, args.score_batch, args.seed)
    print(f"shared pass — scoring ({score['model']} {score['dtype']}, batch {score['batch_size']}, "
          f"{score['threads']} threads): {score['tokens']} tokens of {score['texts']} texts in "
          f"{score['seconds']:.1f} s = {score['tok_per_s']:,.0f} scored tok/s; "
          f"the other {len(ts) - score['texts']} texts' log-probs "
          f"({score['set_tokens'] - score['tokens']} tokens) and the {len(human)} human references' "
          f"({score['human_tokens']} tokens) are SYNTHETIC (real SmolLM2 token counts, values resampled from "
          f"the measured log-probs, mean {score['mean_logprob']:.3f})")

    # ---- the suite, both ways -------------------------------------------------------------------
    metrics = [build_metric(spec.name, **spec.settings) for spec in DEFAULT_METRICS]
    naive_pairs = [naive_for(spec.name, spec.settings) for spec in DEFAULT_METRICS]
    naives = [fn for fn, _ in naive_pairs]
    fast_s = [math.inf] * len(metrics)
    naive_s = [math.inf] * len(metrics)
    naive_values: list[dict[str, Any]] = []
    failures: list[str] = []
    max_diff = [0.0] * len(metrics)
    from threadpoolctl import threadpool_limits

    suite_threads = args.suite_threads or os.cpu_count() or 1
    for rep in range(args.repeat):
        with threadpool_limits(suite_threads):
            seconds, results = run_fast(metrics, ts)
        fast_s = [min(a, b) for a, b in zip(fast_s, seconds, strict=True)]
        print(f"run {rep + 1}/{args.repeat}: fast suite {sum(seconds):.2f} s", flush=True)
        with threadpool_limits(suite_threads):
            seconds, values = run_naive(naives, ts)
        naive_s = [min(a, b) for a, b in zip(naive_s, seconds, strict=True)]
        print(f"run {rep + 1}/{args.repeat}: naive suite {sum(seconds):.2f} s", flush=True)
        if not naive_values:
            naive_values = values
        for i, (metric, result) in enumerate(zip(metrics, results, strict=True)):
            for key, expected in naive_values[i].items():
                try:
                    ok, diff = compare(fast_value(result, key), expected)
                except KeyError as e:
                    ok, diff = False, math.inf
                    print(e)
                max_diff[i] = max(max_diff[i], diff)
                if not ok:
                    got = fast_value(result, key) if diff != math.inf else "?"
                    failures.append(f"{metric.name} {key}: fast {got} != naive {expected} "
                                    f"(max abs diff {diff:.3g})")

    # for information: the fast suite again with every core in the BLAS/OpenMP pools (the
    # pipeline's default, run.threads unset), when the suites above ran with fewer
    all_cores = os.cpu_count() or 1
    threads_note = ""
    if suite_threads != all_cores:
        with threadpool_limits(all_cores):
            seconds_all, _ = run_fast(metrics, ts)
        top = sorted(zip(seconds_all, (m.name for m in metrics), strict=True), reverse=True)[:3]
        threads_note = (f"the same fast suite with {all_cores} BLAS/OpenMP threads (the pipeline's default): "
                        f"{sum(seconds_all):.2f} s (" + ", ".join(f"{n} {s:.2f} s" for s, n in top) + ")")
        print(threads_note)

    # for information: the library's heaps_naive (curve_fit's default tolerances) vs the fast fit
    from collapselab.metrics.naive_embedding import heaps_naive
    heaps_i = next(i for i, m in enumerate(metrics) if m.name.startswith("heaps"))
    k_default, beta_default = heaps_naive(
        [tok for toks in _naive_word_tokens(ts.texts) for tok in toks], 1000)
    beta_fast = results[heaps_i].aggregates["beta"]
    heaps_note = (f"heaps_naive (curve_fit default tolerances) beta {beta_default:.9f} vs fast "
                  f"{beta_fast:.9f}: rel diff {abs(beta_default - beta_fast) / abs(beta_fast):.1e}")
    print(heaps_note)

    # ---- report ---------------------------------------------------------------------------------
    rows = []
    for metric, (_, note), f, nv, d in zip(metrics, naive_pairs, fast_s, naive_s, max_diff, strict=True):
        rows.append((metric.name, f, nv, nv / f if f > 0 else math.inf, d, note))
    total_fast, total_naive = sum(fast_s), sum(naive_s)
    ratio = total_naive / total_fast
    same = [i for i, m in enumerate(metrics) if m.name.startswith(("mauve", "length"))]
    rest_fast = total_fast - sum(fast_s[i] for i in same)
    rest_naive = total_naive - sum(naive_s[i] for i in same)
    ratio_rest = rest_naive / rest_fast
    header = "| metric | fast s | naive s | ratio | max abs diff | naive side |"
    table = [header, "|---|---:|---:|---:|---:|---|"]
    for name, f, nv, r, d, note in rows:
        table.append(f"| {name} | {fmt_s(f)} | {fmt_s(nv)} | {r:,.1f}x | {d:.1e} | {note} |")
    table.append(f"| **total** | **{fmt_s(total_fast)}** | **{fmt_s(total_naive)}** | **{ratio:,.1f}x** "
                 "| | |")
    table.append(f"| total without mauve, length | {fmt_s(rest_fast)} | {fmt_s(rest_naive)} | "
                 f"{ratio_rest:,.1f}x | "
                 "| (no naive version) |")
    print()
    print("\n".join(table))
    print()
    share = sorted(((f / total_fast, name) for name, f, *_ in rows), reverse=True)[:5]
    print(f"total: naive {total_naive:.1f} s / fast {total_fast:.2f} s = {ratio:.1f}x "
          f"({'meets' if ratio >= 20 else 'BELOW'} the 20x target); "
          f"without mauve and length: {ratio_rest:.1f}x")
    print("fast side's time: " + ", ".join(f"{name} {100 * s:.0f}%" for s, name in share))
    load_end = os.getloadavg()

    if failures:
        print(f"\nFAIL: {len(failures)} values differ between the fast and the naive suite:", file=sys.stderr)
        for line in failures:
            print("  " + line, file=sys.stderr)
        return 1
    print(f"all values equal to {RTOL:g} relative")

    if not args.no_record:
        versions = (f"torch {torch.__version__}, sacrebleu {sacrebleu.__version__}, numpy {np.__version__}, "
                    f"scipy {scipy.__version__}, mauve-text {_version('mauve-text')}, "
                    f"sentence-transformers {_version('sentence-transformers')}, "
                    f"transformers {_version('transformers')}, python {platform.python_version()}")
        block = "\n".join([
            f"### {date} — n = {args.n} texts, {args.human} human references, repeat {args.repeat}",
            "",
            f"- machine: {os.cpu_count()} cores, {cpu_model()}; load average {load_start[0]:.2f} "
            f"{load_start[1]:.2f} {load_start[2]:.2f} at start, {load_end[0]:.2f} at end",
            f"- versions: {versions}",
            f"- texts: seeded (seed {args.seed}) Austen paragraphs, {timing['sentences']} sentences in all "
            f"({len(ts.sentence_embeddings)} in the set)",
            f"- **total: naive {total_naive:.1f} s / fast {total_fast:.2f} s = {ratio:.1f}x** "
            f"(without mauve and length, which run the same code on both sides: {ratio_rest:.1f}x); "
            f"fast side's time: " + ", ".join(f"{name} {100 * s:.0f}%" for s, name in share),
            f"- shared pass, sentences + embeddings (not in the ratio): "
            f"splitting {split_per_s:,.0f} texts/s; "
            f"MiniLM {sent_per_s:,.0f} sentences/s, {timing['texts'] / timing['embed_texts_s']:,.0f} texts/s "
            f"({torch.get_num_threads()} torch threads)",
            f"- shared pass, scoring (not in the ratio): {score['model']} {score['dtype']} batch "
            f"{score['batch_size']}, `continuation_logprobs` on {score['texts']} texts: "
            f"{score['tok_per_s']:,.0f} scored tokens/s ({score['tokens']} tokens in "
            f"{score['seconds']:.1f} s); the perplexity metrics read synthetic log-probs for the other texts "
            "(real token counts, resampled values)",
            f"- both suites ran with {suite_threads} BLAS/OpenMP thread(s) (threadpoolctl)"
            + (f"; {threads_note}" if threads_note else ""),
            f"- values: every naive value equals the fast one to {RTOL:g} relative; {heaps_note}",
            "",
            *table,
        ])
        record(block)
        print(f"recorded in {RESULTS}")
    return 0


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


if __name__ == "__main__":
    raise SystemExit(main())
