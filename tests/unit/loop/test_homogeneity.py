"""Inter-source homogeneity: every number against a plain loop, hand-made cases, and the stage run by
the local executor on a tiny pipeline (mock sources; the embed stages' folders written here with
bag-of-words embeddings, so no embedding model is loaded)."""

from __future__ import annotations

import io
import itertools
import json
import math
import re
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.cluster import KMeans

from collapselab.loop import homogeneity as H
from collapselab.stats.bootstrap import bootstrap_ci

# -- plain slow references ------------------------------------------------------------------------------


def slow_cos(x, y):
    return float(np.dot(x, y) / math.sqrt(np.dot(x, x) * np.dot(y, y)))


def slow_similarity(a, b):
    """(paired mean, unpaired baseline, per-prompt excess) by loops over prompts."""
    n = len(a)
    paired = [slow_cos(a[p], b[p]) for p in range(n)]
    others = [slow_cos(a[p], b[q]) for p in range(n) for q in range(n) if p != q]
    excess = []
    for p in range(n):
        row = sum(slow_cos(a[p], b[q]) for q in range(n) if q != p)
        col = sum(slow_cos(a[q], b[p]) for q in range(n) if q != p)
        excess.append(paired[p] - (row + col) / (2 * (n - 1)))
    return sum(paired) / n, sum(others) / len(others), excess


def slow_ngrams(text, n):
    """Words as the docstring defines them, for texts without markdown: lower-cased word runs."""
    words = re.findall(r"\w+(?:'\w+)*", text.lower())
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def slow_jaccard(a, b, n):
    ga, gb = slow_ngrams(a, n), slow_ngrams(b, n)
    return len(ga & gb) / len(ga | gb) if ga | gb else float("nan")


def slow_overlap(labels_a, labels_b):
    ca, cb = Counter(labels_a), Counter(labels_b)
    return sum(min(ca[c] / len(labels_a), cb[c] / len(labels_b)) for c in set(ca) | set(cb))


def random_units(rng, n, d=6):
    x = rng.normal(size=(n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# -- embeddings -----------------------------------------------------------------------------------------


def test_paired_similarity_baseline_and_excess_match_loops():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(11, 5)) * 3  # not unit length: the cosines must normalise
    b = a + rng.normal(size=(11, 5))
    paired, baseline, excess = slow_similarity(a, b)
    got = H.paired_similarity(a, b, bootstrap=200, confidence=0.9, seed=4)
    assert got.similarity.estimate == pytest.approx(paired, abs=1e-12)
    assert got.baseline == pytest.approx(baseline, abs=1e-12)
    assert got.excess.estimate == pytest.approx(paired - baseline, abs=1e-12)
    assert np.mean(excess) == pytest.approx(paired - baseline, abs=1e-12)  # the decomposition is exact
    # the intervals: the shared bootstrap over the loop's per-prompt values
    per_prompt = [slow_cos(a[p], b[p]) for p in range(11)]
    ref = bootstrap_ci(per_prompt, np.mean, n_resamples=200, confidence=0.9, seed=4)
    assert (got.similarity.low, got.similarity.high) == pytest.approx((ref.low, ref.high), abs=1e-12)
    ref = bootstrap_ci(excess, np.mean, n_resamples=200, confidence=0.9, seed=4)
    assert (got.excess.low, got.excess.high) == pytest.approx((ref.low, ref.high), abs=1e-12)
    assert got.similarity.low < got.similarity.estimate < got.similarity.high
    assert got.similarity.estimate > got.baseline  # b is a noisy copy of a: same-prompt answers are closer


def test_identical_sources_have_similarity_one_and_unrelated_ones_no_excess():
    rng = np.random.default_rng(2)
    a = random_units(rng, 30)
    same = H.paired_similarity(a, a.copy(), bootstrap=100)
    assert same.similarity.estimate == pytest.approx(1.0)
    assert same.excess.estimate == pytest.approx(1.0 - same.baseline)
    # independent draws: paired answers are no closer than unpaired ones (excess ≈ 0, within its interval)
    far = H.paired_similarity(random_units(rng, 400), random_units(rng, 400), bootstrap=300)
    assert abs(far.excess.estimate) < 0.05 and far.excess.low < 0 < far.excess.high


def test_degenerate_sizes_give_missing_values_not_errors():
    one = H.paired_similarity(np.ones((1, 3)), np.ones((1, 3)), bootstrap=50)
    assert one.similarity.estimate == pytest.approx(1.0) and math.isnan(one.similarity.low)
    assert math.isnan(one.baseline) and math.isnan(one.excess.estimate)
    none = H.paired_similarity(np.zeros((0, 3)), np.zeros((0, 3)), bootstrap=50)
    assert math.isnan(none.similarity.estimate)
    with pytest.raises(ValueError, match="zero vector"):
        H.paired_cosines(np.zeros((2, 3)), np.ones((2, 3)))
    no_boot = H.paired_similarity(np.eye(3), np.eye(3)[::-1], bootstrap=0)
    assert no_boot.similarity.estimate == pytest.approx(1 / 3) and math.isnan(no_boot.similarity.high)


def test_shared_prompts_align_by_id_and_keep_first_answers():
    ia, ib = H.shared_prompts(["p1", "p2", "p3", "p2", "p5"], ["p3", "p9", "p1", "p1"])
    assert ia.tolist() == [0, 2] and ib.tolist() == [2, 0]


# -- n-grams --------------------------------------------------------------------------------------------


TEXTS = ["The river ran past the garden in the morning light",
         "In the morning the river ran quickly past the old garden wall",
         "A letter came for my sister this evening",
         "Music and dance fill the winter evening with warmth",
         "one two"]


@pytest.mark.parametrize("n", [1, 2, 3])
def test_ngram_jaccard_matches_sets_built_by_hand(n):
    for x, y in itertools.product(TEXTS, repeat=2):
        want, got = slow_jaccard(x, y, n), H.ngram_jaccard(x, y, n)
        assert (math.isnan(want) and math.isnan(got)) or got == pytest.approx(want)
    # by hand: text 0 has 8 distinct 3-grams, text 1 has 10; they share "the river ran" and "in the morning"
    assert H.ngram_jaccard(TEXTS[0], TEXTS[1], 3) == pytest.approx(2 / (8 + 10 - 2))


def test_ngram_rate_extremes_and_markdown():
    assert H.ngram_jaccard("**The** River ran _past_ here.", "the river ran past here", 3) == 1.0
    assert H.ngram_jaccard("alpha beta gamma delta", "one two three four", 3) == 0.0
    assert H.ngram_jaccard("alpha beta gamma", "one two", 3) == 0.0  # one side without a 3-gram
    assert math.isnan(H.ngram_jaccard("hi there", "ok", 3))  # neither: undefined
    rates = H.ngram_rates(TEXTS[:3], TEXTS[:3], 2)
    assert rates.tolist() == [1.0, 1.0, 1.0]


# -- clusters -------------------------------------------------------------------------------------------


def test_histogram_intersection_matches_counts_and_total_variation():
    rng = np.random.default_rng(3)
    for _ in range(20):
        la, lb = rng.integers(0, 5, size=17), rng.integers(0, 5, size=23)
        ha, hb = H.cluster_histogram(la, 5), H.cluster_histogram(lb, 5)
        got = H.histogram_intersection(ha, hb)
        assert got == pytest.approx(slow_overlap(la.tolist(), lb.tolist()))
        assert got == pytest.approx(1 - 0.5 * np.abs(ha - hb).sum())
    assert H.histogram_intersection(H.cluster_histogram([0, 1, 1], 3), H.cluster_histogram([1, 0, 1], 3)) == 1.0
    assert H.histogram_intersection(H.cluster_histogram([0, 0], 3), H.cluster_histogram([2, 1], 3)) == 0.0


def test_cluster_overlap_interval_resamples_prompts_jointly():
    rng = np.random.default_rng(4)
    la, lb = rng.integers(0, 4, size=40), rng.integers(0, 4, size=40)
    got = H.cluster_overlap(la, lb, 4, bootstrap=300, confidence=0.9, seed=2)
    assert got.estimate == pytest.approx(slow_overlap(la.tolist(), lb.tolist()))
    # the same resamples drawn by hand (the shared bootstrap's index stream) and a loop per resample
    idx = np.random.default_rng(2).integers(0, 40, size=(300, 40))
    boot = [slow_overlap(la[i].tolist(), lb[i].tolist()) for i in idx]
    assert (got.low, got.high) == pytest.approx(tuple(np.quantile(boot, [0.05, 0.95])))
    same = H.cluster_overlap(la, la, 4, bootstrap=100)
    assert (same.estimate, same.low, same.high) == pytest.approx((1.0, 1.0, 1.0))


def test_fit_clusters_caps_k_at_the_distinct_texts():
    pool = np.repeat(np.eye(3), 4, axis=0)  # three distinct points
    model = H.fit_clusters(pool, 8, seed=0)
    assert model.n_clusters == 3
    labels = H.cluster_labels(model, np.eye(3))
    assert len(set(labels.tolist())) == 3


# -- the tables -----------------------------------------------------------------------------------------


def make_sources(seed=5):
    """a, b: answer p0…p19, b close to a; c: p10…p24 (a subset shared); human: every prompt."""
    rng = np.random.default_rng(seed)
    words = "river garden letter morning sister dance fortune carriage visit evening".split()

    def texts(ids, shift):
        return [" ".join(words[(int(i[1:]) * 3 + k + shift) % len(words)] for k in range(6)) for i in ids]

    ids_ab = [f"p{i}" for i in range(20)]
    base = random_units(rng, 25)
    a = H.SourceTexts(ids_ab, texts(ids_ab, 0), base[:20])
    b = H.SourceTexts(ids_ab, texts(ids_ab, 1), base[:20] + 0.3 * random_units(rng, 20))
    ids_c = [f"p{i}" for i in range(10, 25)]
    c = H.SourceTexts(ids_c, texts(ids_c, 4), random_units(rng, 15))
    ids_h = [f"p{i}" for i in range(25)]
    human = H.SourceTexts(ids_h, texts(ids_h, 0), random_units(rng, 25))
    return {"a": a, "b": b, "c": c, "human": human}


def slow_pair(sa, sb, labels_a, labels_b, n):
    """One pair's estimates by loops: prompts matched through a dict."""
    where_b = {pid: j for j, pid in enumerate(sb.ids)}
    shared = [(i, where_b[pid]) for i, pid in enumerate(sa.ids) if pid in where_b]
    ea = np.array([sa.embeddings[i] for i, _ in shared])
    eb = np.array([sb.embeddings[j] for _, j in shared])
    paired, baseline, _ = slow_similarity(ea, eb)
    rates = [slow_jaccard(sa.texts[i], sb.texts[j], n) for i, j in shared]
    overlap = slow_overlap([labels_a[i] for i, _ in shared], [labels_b[j] for _, j in shared])
    return {"n_shared": len(shared), "similarity": paired, "baseline": baseline, "excess": paired - baseline,
            "ngram_rate": float(np.nanmean(rates)), "cluster_overlap": overlap}


def test_tables_match_loops_pair_by_pair_and_group_by_group():
    sources = make_sources()
    tiers = {"big": ["a", "b"], "small": ["c", "z"]}
    conditions = [{"label": "multi:a,b,c", "sources": ["a", "b", "c"], "weights": [0.6, 0.2, 0.2]},
                  {"label": "multi:a,z", "sources": ["a", "z"], "weights": [0.5, 0.5]}]
    pairs, tier_t, cond_t, summary = H.homogeneity_tables(
        sources, tiers=tiers, conditions=conditions, ngram=2, clusters=4, bootstrap=100, seed=7)
    # the clusters: one k-means (sklearn, same settings) on the synthetic sources only
    pool = np.concatenate([sources[s].embeddings for s in "abc"])
    km = KMeans(n_clusters=4, n_init=4, random_state=7).fit(pool / np.linalg.norm(pool, axis=1, keepdims=True))
    labels = {s: km.predict(src.embeddings / np.linalg.norm(src.embeddings, axis=1, keepdims=True)).tolist()
              for s, src in sources.items()}
    assert summary["clusters"] == 4 and summary["sources"] == ["a", "b", "c"] and summary["reference"] == "human"
    assert [tuple(p) for p in pairs[["source_a", "source_b"]].to_numpy()] == [
        ("a", "b"), ("a", "c"), ("b", "c"), ("human", "a"), ("human", "b"), ("human", "c")]
    assert pairs["reference"].tolist() == [False] * 3 + [True] * 3
    for _, row in pairs.iterrows():
        want = slow_pair(sources[row["source_a"]], sources[row["source_b"]], labels[row["source_a"]],
                         labels[row["source_b"]], 2)
        for key, value in want.items():
            assert row[key] == pytest.approx(value, abs=1e-10), (row["source_a"], row["source_b"], key)
        assert row["similarity_low"] <= row["similarity"] <= row["similarity_high"]
    assert pairs.set_index(["source_a", "source_b"]).loc[("a", "c"), "n_shared"] == 10
    # a and b are noisy copies: the closest pair, with a clear excess
    ab = pairs.iloc[0]
    assert ab["similarity"] == pairs["similarity"].max() and ab["excess_low"] > 0

    def sim(x, y):
        return pairs[(pairs["source_a"] == x) & (pairs["source_b"] == y)]["similarity"].item()

    by_tier = tier_t.set_index("tier")
    assert by_tier.loc["big", "similarity"] == pytest.approx(sim("a", "b"))
    assert by_tier.loc["small", "n_pairs"] == 0 and math.isnan(by_tier.loc["small", "similarity"])
    synthetic = pairs[~pairs["reference"]]
    for metric in H.PAIR_METRICS:  # "all sources": the plain mean over the three synthetic pairs
        assert by_tier.loc["all sources", metric] == pytest.approx(sum(synthetic[metric]) / 3)
    cond = cond_t.set_index("condition")
    s_ab, s_ac, s_bc = sim("a", "b"), sim("a", "c"), sim("b", "c")
    assert cond.loc["multi:a,b,c", "similarity"] == pytest.approx((s_ab + s_ac + s_bc) / 3)
    w = {"a": 0.6, "b": 0.2, "c": 0.2}
    weighted = (w["a"] * w["b"] * s_ab + w["a"] * w["c"] * s_ac + w["b"] * w["c"] * s_bc) / (
        w["a"] * w["b"] + w["a"] * w["c"] + w["b"] * w["c"])
    assert cond.loc["multi:a,b,c", "similarity_weighted"] == pytest.approx(weighted)
    assert cond.loc["multi:a,z", "n_pairs"] == 0 and cond.loc["multi:a,z", "missing_pairs"] == 1
    assert math.isnan(cond.loc["multi:a,z", "similarity"])


def test_identical_sources_score_one_everywhere():
    rng = np.random.default_rng(6)
    ids = [f"p{i}" for i in range(12)]
    texts = [f"answer number {i} talks about the river and the garden" for i in range(12)]
    emb = random_units(rng, 12)
    sources = {"x": H.SourceTexts(ids, texts, emb), "y": H.SourceTexts(ids[::-1], texts[::-1], emb[::-1])}
    pairs, *_ = H.homogeneity_tables(sources, clusters=3, bootstrap=50)
    row = pairs.iloc[0]
    assert (row["similarity"], row["ngram_rate"], row["cluster_overlap"]) == pytest.approx((1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="two or more sources"):
        H.homogeneity_tables({"x": sources["x"], "human": sources["y"]})


def test_disjoint_vocabularies_share_no_ngrams():
    ids = ["p0", "p1", "p2"]
    x = H.SourceTexts(ids, ["alpha beta gamma delta", "epsilon zeta eta theta", "iota kappa lambda mu"], np.eye(3))
    y = H.SourceTexts(ids, ["one two three four", "five six seven eight", "nine ten eleven twelve"], np.eye(3)[::-1])
    pairs, *_ = H.homogeneity_tables({"x": x, "y": y}, clusters=2, bootstrap=50)
    assert pairs.iloc[0]["ngram_rate"] == 0.0 and pairs.iloc[0]["ngram_undefined"] == 0


# -- the stage ------------------------------------------------------------------------------------------


def bag_of_words(text: str, d: int = 64) -> np.ndarray:
    """A deterministic stand-in for a sentence embedding: hashed word counts, unit length."""
    v = np.zeros(d)
    for word in re.findall(r"\w+", text.lower()):
        v[zlib.crc32(word.encode()) % d] += 1.0
    v[d - 1] += 0.5  # never the zero vector
    return v / np.linalg.norm(v)


def make_run(tmp: Path, **changes):
    """A tiny run: mock sources a (random words), b and c (the same echo; c answers one shard only),
    tiers and two multi-source conditions. Prepare and generate run for real; each source set's embed
    folder is written here. Returns (spec, graph stages + the homogeneity stage, store, that stage)."""
    from collapselab.config.load import load_config
    from collapselab.executors import run_stages
    from collapselab.pipeline.experiments.collapse.run import read_set_rows
    from collapselab.pipeline.graph import build_graph
    from collapselab.store.atomic import write_bytes, write_json
    from collapselab.store.run import RunStore
    from tests.helpers import tiny_config, write_corpus

    tmp.mkdir(parents=True, exist_ok=True)
    cfg = tiny_config(tmp, tmp / "no-target-model", write_corpus(tmp / "corpus.jsonl"),
                      sources=[{"name": name, "model": {"id": model}}
                               for name, model in (("a", "mock/random"), ("b", "mock/echo"), ("c", "mock/echo"))],
                      conditions=["single:a", "multi:a,b", "multi:b,c"], tiers={"rand": ["a"], "echo": ["b", "c"]},
                      collapse={"bootstrap": 200, "homogeneity": {"clusters": 3, "ngram": 2}}, **changes)
    spec = load_config(cfg, use_env=False)
    graph = build_graph(spec)
    embeds = {s.settings["set"]: s for s in graph if s.kind == "embed"}
    stages = H.homogeneity_stages(spec, embeds)
    run_dir = tmp / "out"
    run_stages(spec, run_dir, stages=[s for s in graph if s.kind in ("prepare", "generate")])
    store = RunStore(run_dir)

    class Reader:  # read_set_rows only asks for the producers' folders
        input_dir = staticmethod(lambda s: store.final_dir(s.ref))

    for name, embed in embeds.items():
        if not name.startswith("source:"):
            continue
        rows = read_set_rows(Reader, embed.params.text_set)
        folder = store.begin(embed.ref)
        buffer = io.BytesIO()
        np.save(buffer, np.array([bag_of_words(r["text"]) for r in rows], dtype=np.float32), allow_pickle=False)
        write_bytes(folder / "embeddings.npy", buffer.getvalue())
        write_json(folder / "ids.json", [r["id"] for r in rows])
        store.commit(embed.ref, embed.settings, [i.ref for i in embed.inputs], 0.0)
    if stages:
        run_stages(spec, run_dir, stages=stages)
    return spec, graph + stages, store, (stages[0] if stages else None)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("homogeneity"))


def test_stage_settings_inputs_and_plan(tiny_run):
    spec, _, _, stage = tiny_run
    assert stage.label == "homogeneity/sources"
    assert stage.settings["sets"] == ["source:a", "source:b", "source:c", "source:human"]
    assert stage.settings["tiers"] == {"echo": ["b", "c"], "rand": ["a"]}
    assert [c["label"] for c in stage.settings["conditions"]] == ["multi:a,b", "multi:b,c"]
    kinds = Counter(s.kind for s in stage.inputs)
    assert kinds["embed"] == 4 and kinds["generate"] == 5 and kinds["prepare"] == 1  # c: one shard
    # what changes the output changes the key
    embeds = {s.settings["set"]: s for s in stage.inputs if s.kind == "embed"}
    other = spec.model_copy(update={"collapse": spec.collapse.model_copy(
        update={"homogeneity": spec.collapse.homogeneity.model_copy(update={"ngram": 3})})})
    assert H.homogeneity_stages(other, embeds)[0].key != stage.key
    assert H.homogeneity_stages(spec, dict(embeds))[0].key == stage.key
    estimate = H.plan_homogeneity(stage, None)
    assert estimate.n_items == 3 + 3 and estimate.model is None


def test_no_stage_when_disabled_or_fewer_than_two_sources(tiny_run):
    spec, _, _, stage = tiny_run
    embeds = {s.settings["set"]: s for s in stage.inputs if s.kind == "embed"}
    off = spec.model_copy(update={"collapse": spec.collapse.model_copy(
        update={"homogeneity": spec.collapse.homogeneity.model_copy(update={"enabled": False})})})
    assert H.homogeneity_stages(off, embeds) == []
    assert H.homogeneity_stages(spec, {k: embeds[k] for k in ("source:a", "source:human")}) == []
    # sets that are not sources are ignored
    assert H.homogeneity_stages(spec, {k: embeds[k] for k in ("source:a", "source:b")})[0].settings["sets"] == [
        "source:a", "source:b"]


def test_runner_outputs_match_a_recomputation_from_the_stage_files(tiny_run):
    spec, _, store, stage = tiny_run
    out = store.final_dir(stage.ref)
    assert store.is_done(stage.ref)
    pairs = pd.read_parquet(out / "pairs.parquet")
    summary = json.loads((out / "summary.json").read_text())
    # the sources' answers straight from the generate stages' files
    answers: dict[str, dict[str, str]] = {}
    for gen in (s for s in stage.inputs if s.kind == "generate"):
        for line in (store.final_dir(gen.ref) / "synthetic.jsonl").read_text().splitlines():
            r = json.loads(line)
            answers.setdefault(gen.params.source, {})[r["prompt_id"]] = r["response"]
    assert summary["texts"] == {"a": 16, "b": 16, "c": 8, "human": 16}
    assert summary["clusters"] == 3 and summary["reference"] == "human"
    row = pairs.set_index(["source_a", "source_b"])
    for x, y in [("a", "b"), ("a", "c"), ("b", "c")]:
        shared = sorted(set(answers[x]) & set(answers[y]))
        ea = np.array([bag_of_words(answers[x][p]) for p in shared])
        eb = np.array([bag_of_words(answers[y][p]) for p in shared])
        paired, baseline, _ = slow_similarity(ea, eb)
        rates = [slow_jaccard(answers[x][p], answers[y][p], 2) for p in shared]
        assert row.loc[(x, y), "n_shared"] == len(shared)
        assert row.loc[(x, y), "similarity"] == pytest.approx(paired, abs=1e-6)  # float32 embeddings
        assert row.loc[(x, y), "baseline"] == pytest.approx(baseline, abs=1e-6)
        assert row.loc[(x, y), "ngram_rate"] == pytest.approx(np.mean(rates))
    # b and c are the same echo script: on the shard c answered they write the same answers
    bc = row.loc[("b", "c")]
    assert (bc["n_shared"], bc["similarity"], bc["ngram_rate"], bc["cluster_overlap"]) == pytest.approx(
        (8, 1.0, 1.0, 1.0))
    assert row.loc[("a", "b"), "similarity"] < 1.0
    tiers = pd.read_parquet(out / "tiers.parquet").set_index("tier")
    assert tiers.loc["echo", "similarity"] == pytest.approx(bc["similarity"])
    assert tiers.loc["rand", "n_pairs"] == 0
    conditions = pd.read_parquet(out / "conditions.parquet").set_index("condition")
    assert conditions.loc["multi:a,b", "similarity"] == pytest.approx(row.loc[("a", "b"), "similarity"])
    assert conditions.loc["multi:b,c", "similarity"] == pytest.approx(1.0)
