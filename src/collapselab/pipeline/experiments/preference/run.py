"""Experiment 3's runners: items, candidates, prefer, preference, and the controls (familiarity,
recognize, preference_controls)."""

from __future__ import annotations

import math
from typing import Any

from collapselab.config.spec import ModelSpec
from collapselab.pipeline.context import StageContext
from collapselab.pipeline.experiments.spine.run import answer_rows
from collapselab.pipeline.stage import Stage
from collapselab.store.jsonsafe import floats_from_json, jsonable

HUMAN = "human"
#: read-outs checkpointed per chunk (fixed slices of the whole list), so a killed judge stage resumes
CHUNK = 64
#: the tables the ``preference_controls`` stage writes (``<name>.parquet``)
CONTROL_TABLES = ("controls", "regression", "stratified", "strata", "familiarity", "familiarity_sources",
                  "recognition", "recognition_scores", "recognition_sources", "relations")


def run_items(ctx: StageContext) -> None:
    """Choose the items and their human texts."""
    import random

    from collapselab.corpora.base import CORPORA
    from collapselab.corpora.split import format_prompt
    from collapselab.errors import DataError
    from collapselab.store.atomic import read_jsonl, write_json, write_jsonl

    p = ctx.spec.preference
    if p.corpus is None:
        rows = [{"id": r["id"], "prompt": r["user"], "human": r["response"], "category": r["category"]}
                for r in read_jsonl(ctx.input_dir(ctx.stage.input("prepare")) / "test.jsonl")]
        origin = "the experiment's test split"
    else:
        records = CORPORA.get(p.corpus.kind)(p.corpus)
        rows = [{"id": r.id, "prompt": format_prompt(r, p.corpus.context_first), "human": r.response,
                 "category": r.category} for r in records]
        origin = f"corpus {p.corpus.kind}:{p.corpus.name or p.corpus.path or 'built-in'}"
    rows = [r for r in rows if r["human"].strip()]
    if not rows:
        raise DataError(f"preference: {origin} gave no items with a human text")
    if len(rows) > p.items:  # a seeded sample, kept in the source order
        keep = set(random.Random(p.seed).sample(range(len(rows)), p.items))
        rows = [r for i, r in enumerate(rows) if i in keep]
    for r in rows:
        r["user"] = f"{p.instruction}\n\n{r['prompt']}" if p.instruction else r["prompt"]
    write_jsonl(ctx.out / "items.jsonl", rows)
    write_json(ctx.out / "summary.json", {"items": len(rows), "origin": origin, "requested": p.items})


def run_candidates(ctx: StageContext) -> None:
    """One source writes a text for every item."""
    from collapselab.store.atomic import read_jsonl

    p = ctx.stage.params
    rows = read_jsonl(ctx.input_dir(ctx.stage.input("items")) / "items.jsonl")
    rows = [{**r, "response": r["human"]} for r in rows]
    answer_rows(ctx, p.model, rows, p.decoding, {"source": p.source}, "candidates.jsonl")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit].rstrip() + " …"


def _read_pairs(model: Any, judge: Any, template: str, chunk: list[Any], instruction: dict[str, str],
                texts: dict[str, dict[str, str]], limit: int,
                system: str | None) -> list[tuple[Any, dict, float, float]]:
    """A choice judge (pairwise or recognition) on each comparison's pair of texts, "Text A" the
    first: per comparison, its A/B log-probabilities, p_A renormalised over A and B, and their mass."""
    from collapselab.judges.pairwise import renormalised
    from collapselab.models.base import ChatPrompt

    prompts = [ChatPrompt(c.id, judge.render(template, instruction=instruction[c.item_id],
                                             text_a=_cut(texts[c.first][c.item_id], limit),
                                             text_b=_cut(texts[c.second][c.item_id], limit)), system)
               for c in chunk]
    read = model.choice_logprobs(prompts, judge.choices)
    return [(c, lp, *renormalised(lp, *judge.choices)) for c, lp in zip(chunk, read, strict=True)]


def _judge_inputs(ctx: StageContext) -> tuple[list[dict[str, Any]], dict[str, dict[str, str]], list[str]]:
    """A judge stage's items, the texts per source and item (the human one included) and its
    sources in plan order (the candidates' order, then the human text)."""
    from collapselab.store.atomic import read_jsonl

    items = read_jsonl(ctx.input_dir(ctx.stage.input("items")) / "items.jsonl")
    texts: dict[str, dict[str, str]] = {HUMAN: {r["id"]: r["human"] for r in items}}
    for cand in (s for s in ctx.stage.inputs if s.kind == "candidates"):
        texts[cand.params.source] = {r["prompt_id"]: r["response"]
                                        for r in read_jsonl(ctx.input_dir(cand) / "candidates.jsonl")}
    sources = [s.params.source for s in ctx.stage.inputs if s.kind == "candidates"] + [HUMAN]
    return items, texts, sources


def _judge_model(ctx: StageContext):
    """``get_model()``: the stage's judge (with its adapter when fine-tuned), loaded on first use."""
    p = ctx.stage.params
    judge: ModelSpec = p.target
    if p.condition.kind != "vanilla":
        judge = judge.model_copy(update={"adapter": str(ctx.input_dir(ctx.stage.input("train")) / "adapter")})
    model = None

    def get_model():
        nonlocal model
        model = model or ctx.models.get(judge)
        return model

    return get_model


def _labels(ctx: StageContext) -> dict[str, Any]:
    p = ctx.stage.params
    return {"judge": ctx.stage.name, "target": p.target_name, "condition": p.condition.label,
            "seed": p.seed, "generation": p.generation}


def _checkpointed(ctx: StageContext, name: str, items: list[Any], work, item_id) -> list[dict[str, Any]]:
    """``work(chunk) -> records`` over fixed ``CHUNK`` slices of the whole ``items`` list, each
    appended to ``partial-{name}.jsonl`` that a rerun reads back; the records in item order."""
    from collapselab.store.atomic import AppendLog
    from collapselab.store.chunks import run_in_chunks

    return run_in_chunks(items, work, log=AppendLog(ctx.out / f"partial-{name}.jsonl"), item_id=item_id,
                         chunk_size=CHUNK, progress=ctx.advance).records


def run_prefer(ctx: StageContext) -> None:
    """One judge: every pair of sources in both orders per item, and a rating per text."""
    from collapselab.judges import JUDGES
    from collapselab.judges.rating import choice_mass
    from collapselab.models.base import ChatPrompt
    from collapselab.preference.prompts import Comparison, comparison_plan
    from collapselab.store.atomic import write_json, write_jsonl

    pairwise, rating = JUDGES.get("pairwise"), JUDGES.get("rating")

    st = ctx.stage.settings
    items, texts, sources = _judge_inputs(ctx)
    instruction = {r["id"]: r["user"] for r in items}
    limit, system = st["max_text_chars"], st["system_prompt"]
    plan = comparison_plan([r["id"] for r in items], sources)
    rating_ids = [f"{r['id']}|{s}" for r in items for s in sources] if st["templates"]["rating"] else []
    ctx.set_total(len(plan) + len(rating_ids))
    get_model = _judge_model(ctx)

    def compare(chunk: list[Comparison]) -> list[dict[str, Any]]:
        return [{"id": c.id, "logp_a": lp["A"], "logp_b": lp["B"], "p_a": p_a, "choice_mass": mass}
                for c, lp, p_a, mass in _read_pairs(get_model(), pairwise, st["templates"]["pairwise"], chunk,
                                                    instruction, texts, limit, system)]

    def rate(ids: list[str]) -> list[dict[str, Any]]:
        prompts = []
        for i in ids:
            item, source = i.rsplit("|", 1)
            prompts.append(ChatPrompt(i, rating.render(st["templates"]["rating"],
                                                       instruction=instruction[item],
                                                       text=_cut(texts[source][item], limit)), system))
        out = []
        for i, lp in zip(ids, get_model().choice_logprobs(prompts, rating.choices), strict=True):
            out.append({"id": i, "logprobs": lp, "rating": rating.read(lp),
                        "choice_mass": choice_mass(lp, rating.choices)})
        return out

    compared = _checkpointed(ctx, "pairs", plan, compare, lambda c: c.id)
    rated = _checkpointed(ctx, "ratings", rating_ids, rate, str)
    labels = _labels(ctx)
    comparisons = [{**labels, "item_id": c.item_id, "first": c.first, "second": c.second,
                    **{k: v for k, v in r.items() if k != "id"}} for c, r in zip(plan, compared, strict=True)]
    ratings = []
    for i, r in zip(rating_ids, rated, strict=True):
        item, source = i.rsplit("|", 1)
        ratings.append({**labels, "item_id": item, "source": source,
                        **{k: v for k, v in r.items() if k != "id"}})
    write_jsonl(ctx.out / "comparisons.jsonl", [jsonable(r) for r in comparisons])
    write_jsonl(ctx.out / "ratings.jsonl", [jsonable(r) for r in ratings])
    write_json(ctx.out / "summary.json", {
        **labels, "comparisons": len(comparisons), "ratings": len(ratings),
        "undefined_comparisons": sum(1 for r in comparisons if math.isnan(r["p_a"])),
        "mean_choice_mass": (sum(r["choice_mass"] for r in comparisons) / len(comparisons)) if comparisons else None,
    })
    for name in ("pairs", "ratings"):
        (ctx.out / f"partial-{name}.jsonl").unlink(missing_ok=True)


def load_prefer_tables(stages: list[Stage], final_dir) -> tuple[Any, Any]:
    """All judges' comparisons and ratings as two DataFrames (NaN where a read-out failed)."""
    import pandas as pd

    from collapselab.store.atomic import read_jsonl

    comps, rates = [], []
    for s in (x for x in stages if x.kind == "prefer"):
        comps += read_jsonl(final_dir(s) / "comparisons.jsonl")
        rates += read_jsonl(final_dir(s) / "ratings.jsonl")
    comparisons = pd.DataFrame(comps)
    ratings = pd.DataFrame(rates)
    for frame, column in ((comparisons, "p_a"), (ratings, "rating")):
        if column in frame:  # null (a failed read-out) → NaN
            frame[column] = frame[column].astype(float)
    if "logprobs" in ratings:
        ratings = ratings.drop(columns=["logprobs"])
    for frame in (comparisons, ratings):
        for column in ("logp_a", "logp_b"):
            if column in frame:
                frame[column] = frame[column].map(floats_from_json).astype(float)
    return comparisons, ratings


def run_preference(ctx: StageContext) -> None:
    """S per source, SPB and PSB, position bias, preference matrices, ratings and tests."""
    import pandas as pd

    from collapselab.preference.scores import (
        bias_scores,
        per_item_ratings,
        per_item_scores,
        position_bias,
        preference_matrix,
        preference_tests,
        rating_scores,
        source_scores,
    )
    from collapselab.store.atomic import write_json
    from collapselab.store.frames import write_parquet

    st = ctx.stage.settings
    comparisons, ratings = load_prefer_tables(list(ctx.stage.inputs), ctx.input_dir)
    judge_target = dict(zip(comparisons["judge"], comparisons["target"], strict=False)) if len(comparisons) else {}
    own = {judge: st["own"].get(target) for judge, target in judge_target.items()}
    boot = {"n_resamples": st["bootstrap"], "confidence": st["confidence"], "seed": st["seed"]}
    per_item = per_item_scores(comparisons)
    if len(ratings):  # the ratings are tested across judge conditions like S
        per_item = pd.concat([per_item, per_item_ratings(ratings)], ignore_index=True)
    tables = {
        "comparisons": comparisons,
        "ratings": ratings,
        "source_scores": source_scores(comparisons, **boot),
        "bias": bias_scores(comparisons, own, human=HUMAN, **boot),
        "position": position_bias(comparisons),
        "matrix": preference_matrix(comparisons),
        "per_item": per_item,
        "rating_scores": rating_scores(ratings, **boot) if len(ratings) else ratings,
        "tests": preference_tests(per_item, own, human=HUMAN, paired=st.get("stats", {}).get("paired", True)),
    }
    ctx.set_total(len(tables))
    for name, frame in tables.items():
        write_parquet(frame, ctx.out / f"{name}.parquet")
        ctx.advance(1)
    write_json(ctx.out / "summary.json", {
        "judges": len(judge_target), "comparisons": len(comparisons),
        "undefined_comparisons": int(comparisons["p_a"].isna().sum()) if len(comparisons) else 0,
        "undefined_ratings": int(ratings["rating"].isna().sum()) if len(ratings) else 0,
        "own": own,
    })


def run_familiarity(ctx: StageContext) -> None:
    """One judge's log-probabilities of every text (every source and the human one) as the answer
    to its item's instruction: per item × source n_tokens, sum and mean log-prob, log-perplexity
    (:func:`~collapselab.preference.familiarity.familiarity_record`). The text is the one the
    comparisons show (cut to ``max_text_chars``, without the cut marker), in the judge's chat
    format with the experiment's system prompt."""
    from collapselab.models.base import ChatPrompt
    from collapselab.preference.familiarity import familiarity_record
    from collapselab.store.atomic import write_json, write_jsonl

    st = ctx.stage.settings
    items, texts, sources = _judge_inputs(ctx)
    instruction = {r["id"]: r["user"] for r in items}
    limit, system = st["max_text_chars"], st["system_prompt"]
    ids = [f"{r['id']}|{s}" for r in items for s in sources]
    ctx.set_total(len(ids))
    get_model = _judge_model(ctx)

    def shown(item: str, source: str) -> str:
        text = texts[source][item]
        return text if len(text) <= limit else text[:limit].rstrip()

    def score(chunk: list[str]) -> list[dict[str, Any]]:
        pairs = [i.rsplit("|", 1) for i in chunk]
        prompts = [ChatPrompt(i, instruction[item], system) for i, (item, _) in zip(chunk, pairs, strict=True)]
        answers = [shown(item, source) for item, source in pairs]
        logprobs = get_model().continuation_logprobs(prompts, answers)
        return [{"id": i, **familiarity_record(lp)} for i, lp in zip(chunk, logprobs, strict=True)]

    scored = _checkpointed(ctx, "familiarity", ids, score, str)
    labels = _labels(ctx)
    rows = []
    for i, r in zip(ids, scored, strict=True):
        item, source = i.rsplit("|", 1)
        rows.append({**labels, "item_id": item, "source": source, **{k: v for k, v in r.items() if k != "id"}})
    write_jsonl(ctx.out / "familiarity.jsonl", [jsonable(r) for r in rows])
    write_json(ctx.out / "summary.json", {
        **labels, "texts": len(rows), "empty_texts": sum(1 for r in rows if r["n_tokens"] == 0),
        "tokens": sum(r["n_tokens"] for r in rows)})
    (ctx.out / "partial-familiarity.jsonl").unlink(missing_ok=True)


def run_recognize(ctx: StageContext) -> None:
    """One judge, shown its own source's text against every other source's (both orders, per
    item), says which one it wrote: p_A from its next-token distribution, as for preference."""
    from collapselab.judges.recognition import RECOGNITION
    from collapselab.preference.prompts import Comparison
    from collapselab.preference.recognition import recognition_plan, recognition_record
    from collapselab.store.atomic import write_json, write_jsonl

    st = ctx.stage.settings
    items, texts, sources = _judge_inputs(ctx)
    instruction = {r["id"]: r["user"] for r in items}
    limit, system, own = st["max_text_chars"], st["system_prompt"], st["own"]
    plan = recognition_plan([r["id"] for r in items], own, sources)
    ctx.set_total(len(plan))
    get_model = _judge_model(ctx)

    def ask(chunk: list[Comparison]) -> list[dict[str, Any]]:
        return [{"id": c.id, **recognition_record(c, own, p_a, lp["A"], lp["B"], mass)}
                for c, lp, p_a, mass in _read_pairs(get_model(), RECOGNITION, st["template"], chunk, instruction,
                                                    texts, limit, system)]

    asked = _checkpointed(ctx, "recognition", plan, ask, lambda c: c.id)
    labels = _labels(ctx)
    rows = [{**labels, **{k: v for k, v in r.items() if k != "id"}} for r in asked]
    write_jsonl(ctx.out / "recognition.jsonl", [jsonable(r) for r in rows])
    defined = [r for r in rows if not math.isnan(r["p_a"])]
    write_json(ctx.out / "summary.json", {
        **labels, "own": own, "prompts": len(rows), "undefined": len(rows) - len(defined),
        "mean_choice_mass": (sum(r["choice_mass"] for r in rows) / len(rows)) if rows else None})
    (ctx.out / "partial-recognition.jsonl").unlink(missing_ok=True)


def _read_rows(stages: list[Stage], kind: str, filename: str, final_dir) -> Any:
    """The rows of every ``kind`` stage's ``filename`` as one DataFrame (null floats → NaN)."""
    import pandas as pd

    from collapselab.store.atomic import read_jsonl

    rows = [r for s in stages if s.kind == kind for r in read_jsonl(final_dir(s) / filename)]
    return pd.DataFrame([floats_from_json(r) for r in rows])


def relation_rows(relations: dict[str, dict[str, dict[str, Any]]], labels: Any) -> Any:
    """The ``relations`` setting (judge → source → relation facts) as rows with the judges' labels."""
    import pandas as pd

    rows = [{"judge": judge, "source": source, **facts}
            for judge, by_source in relations.items() for source, facts in by_source.items()]
    frame = pd.DataFrame(rows, columns=["judge", "source", "relation", "trained_on", "same_model", "same_family"])
    if len(labels):
        frame = frame.merge(labels, left_on="judge", right_index=True, how="left")
    return frame


def run_controls(ctx: StageContext) -> None:
    """Self-preference next to its controls, per judge: plain SPB, the own-source effect adjusted
    for familiarity (regression on Δ log-perplexity, and stratified by it), recognition accuracy,
    and the relation of every judge–source pair (with S, log-perplexity and recognition per pair)."""
    import numpy as np
    import pandas as pd

    from collapselab.preference.familiarity import familiarity_by_source, familiarity_regression, familiarity_strata
    from collapselab.preference.recognition import recognition_scores
    from collapselab.preference.scores import LABELS, bias_scores, source_scores
    from collapselab.store.atomic import write_json
    from collapselab.store.frames import write_parquet

    st = ctx.stage.settings
    stages = list(ctx.stage.inputs)
    comparisons, _ = load_prefer_tables(stages, ctx.input_dir)
    familiarity = _read_rows(stages, "familiarity", "familiarity.jsonl", ctx.input_dir)
    recognition = _read_rows(stages, "recognize", "recognition.jsonl", ctx.input_dir)
    judge_target = dict(zip(comparisons["judge"], comparisons["target"], strict=False)) if len(comparisons) else {}
    own = {judge: st["own"].get(target) for judge, target in judge_target.items()}
    boot = {"n_resamples": st["bootstrap"], "confidence": st["confidence"], "seed": st["seed"]}
    label_cols = [c for c in LABELS if c in comparisons.columns]
    labels = comparisons.groupby("judge", sort=False)[label_cols].first() if len(comparisons) else pd.DataFrame()

    bias = bias_scores(comparisons, own, human=HUMAN, **boot) if len(comparisons) else pd.DataFrame()
    tables: dict[str, Any] = {name: pd.DataFrame() for name in CONTROL_TABLES}
    tables["familiarity"], tables["recognition"] = familiarity, recognition
    if len(familiarity) and len(comparisons):
        tables["familiarity_sources"] = familiarity_by_source(familiarity)
        tables["regression"] = familiarity_regression(comparisons, familiarity, own, HUMAN,
                                                      confidence=st["confidence"])
        tables["stratified"], tables["strata"] = familiarity_strata(comparisons, familiarity, own, HUMAN,
                                                                    bins=st["bins"], **boot)
    if len(recognition):
        tables["recognition_scores"], tables["recognition_sources"] = recognition_scores(recognition, **boot)

    relations = relation_rows(st["relations"], labels)
    if len(comparisons):  # S, familiarity and recognition of each pair, next to its relation
        scores = source_scores(comparisons, n_resamples=0)[["judge", "source", "S"]]
        relations = relations.merge(scores, on=["judge", "source"], how="left")
    for name, column in (("familiarity_sources", "log_ppl"), ("recognition_sources", "accuracy")):
        frame = tables[name]
        extra = frame[["judge", "source", column]] if len(frame) else pd.DataFrame(columns=["judge", "source", column])
        relations = relations.merge(extra.rename(columns={column: "recognition" if column == "accuracy" else column}),
                                    on=["judge", "source"], how="left")
    tables["relations"] = relations
    tables["controls"] = controls_table(bias, tables["regression"], tables["stratified"],
                                        tables["recognition_scores"])
    ctx.set_total(len(tables))
    for name, frame in tables.items():
        write_parquet(frame, ctx.out / f"{name}.parquet")
        ctx.advance(1)
    adjusted = tables["controls"]
    write_json(ctx.out / "summary.json", {
        "judges": len(judge_target), "familiarity_rows": len(familiarity), "recognition_rows": len(recognition),
        "judges_with_own_effect": int(adjusted["own_adjusted"].notna().sum()) if len(adjusted) else 0,
        "empty_texts": int((familiarity["n_tokens"] == 0).sum()) if len(familiarity) else 0,
        "undefined_recognition": int(np.isnan(recognition["p_a"].astype(float)).sum()) if len(recognition) else 0,
    })


#: the columns of the per-judge controls table
CONTROLS_COLUMNS = ["own_source", "SPB", "SPB_ci_low", "SPB_ci_high",
                    "own_unadjusted", "own_unadjusted_ci_low", "own_unadjusted_ci_high",
                    "own_adjusted", "own_adjusted_ci_low", "own_adjusted_ci_high", "own_adjusted_p",
                    "familiarity", "familiarity_ci_low", "familiarity_ci_high",
                    "own_pair_pref", "own_pair_pref_ci_low", "own_pair_pref_ci_high",
                    "stratified", "stratified_ci_low", "stratified_ci_high",
                    "recognition", "recognition_ci_low", "recognition_ci_high", "note"]


def controls_table(bias: Any, regression: Any, stratified: Any, recognition: Any) -> Any:
    """One row per judge: plain SPB (:func:`~collapselab.preference.scores.bias_scores`), the own
    effect without and with the familiarity term and the familiarity coefficient
    (:func:`~collapselab.preference.familiarity.familiarity_regression`), the unstratified and
    stratified own pair preference (:func:`~collapselab.preference.familiarity.familiarity_strata`)
    and recognition accuracy (:func:`~collapselab.preference.recognition.recognition_scores`), each
    with its interval; missing pieces are NaN. Columns: judge, <labels>, :data:`CONTROLS_COLUMNS`."""
    import pandas as pd

    from collapselab.preference.scores import LABELS

    if bias is None or not len(bias):
        return pd.DataFrame(columns=["judge", *CONTROLS_COLUMNS])
    label_cols = [c for c in LABELS if c in bias.columns]
    out = bias[["judge", *label_cols, "own_source", "SPB", "SPB_ci_low", "SPB_ci_high"]].copy()
    notes: dict[str, list[str]] = {j: [] for j in out["judge"]}
    if len(regression):
        for model, term, name in (("unadjusted", "own", "own_unadjusted"), ("adjusted", "own", "own_adjusted"),
                                  ("adjusted", "delta_log_ppl", "familiarity")):
            rows = regression[(regression["model"] == model) & (regression["term"] == term)]
            part = rows[["judge", "estimate", "ci_low", "ci_high", "p_value"]].rename(columns={
                "estimate": name, "ci_low": f"{name}_ci_low", "ci_high": f"{name}_ci_high", "p_value": f"{name}_p"})
            out = out.merge(part, on="judge", how="left")
        for r in regression[regression["model"] == "adjusted"].drop_duplicates("judge").itertuples(index=False):
            if isinstance(r.note, str) and r.note:
                notes.setdefault(r.judge, []).append(r.note)
    if len(stratified):
        cols = [c for c in stratified.columns if c.startswith(("own_pair_pref", "stratified"))]
        out = out.merge(stratified[["judge", *cols]], on="judge", how="left")
        for r in stratified.itertuples(index=False):
            if isinstance(r.note, str) and r.note and "no own source" not in r.note:
                notes.setdefault(r.judge, []).append(r.note)
    if len(recognition):
        out = out.merge(recognition[["judge", "accuracy", "ci_low", "ci_high"]].rename(columns={
            "accuracy": "recognition", "ci_low": "recognition_ci_low", "ci_high": "recognition_ci_high"}),
            on="judge", how="left")
    out["note"] = [("; ".join(dict.fromkeys(notes.get(j, [])))) for j in out["judge"]]
    for column in CONTROLS_COLUMNS:
        if column not in out.columns:
            out[column] = float("nan")
    return out[["judge", *label_cols, *CONTROLS_COLUMNS]]
