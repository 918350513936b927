"""Experiment 3's runners: items, candidates, prefer, preference."""

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
    from collapselab.judges.pairwise import renormalised
    from collapselab.judges.rating import choice_mass
    from collapselab.models.base import ChatPrompt
    from collapselab.preference.prompts import Comparison, comparison_plan
    from collapselab.store.atomic import read_jsonl, write_json, write_jsonl

    pairwise, rating = JUDGES.get("pairwise"), JUDGES.get("rating")

    st, p = ctx.stage.settings, ctx.stage.params
    items = read_jsonl(ctx.input_dir(ctx.stage.input("items")) / "items.jsonl")
    texts: dict[str, dict[str, str]] = {HUMAN: {r["id"]: r["human"] for r in items}}
    for cand in (s for s in ctx.stage.inputs if s.kind == "candidates"):
        texts[cand.params.source] = {r["prompt_id"]: r["response"]
                                        for r in read_jsonl(ctx.input_dir(cand) / "candidates.jsonl")}
    sources = [s.params.source for s in ctx.stage.inputs if s.kind == "candidates"] + [HUMAN]
    instruction = {r["id"]: r["user"] for r in items}
    limit, system = st["max_text_chars"], st["system_prompt"]
    plan = comparison_plan([r["id"] for r in items], sources)
    rating_ids = [f"{r['id']}|{s}" for r in items for s in sources] if st["templates"]["rating"] else []
    ctx.set_total(len(plan) + len(rating_ids))

    judge: ModelSpec = p.target
    if p.condition.kind != "vanilla":
        judge = judge.model_copy(update={"adapter": str(ctx.input_dir(ctx.stage.input("train")) / "adapter")})
    model = None

    def get_model():
        nonlocal model
        model = model or ctx.models.get(judge)
        return model

    def compare(chunk: list[Comparison]) -> list[dict[str, Any]]:
        prompts = [ChatPrompt(c.id, pairwise.render(st["templates"]["pairwise"],
                                                    instruction=instruction[c.item_id],
                                                    text_a=_cut(texts[c.first][c.item_id], limit),
                                                    text_b=_cut(texts[c.second][c.item_id], limit)), system)
                   for c in chunk]
        out = []
        for c, lp in zip(chunk, get_model().choice_logprobs(prompts, pairwise.choices), strict=True):
            p_a, mass = renormalised(lp, *pairwise.choices)
            out.append({"id": c.id, "logp_a": lp["A"], "logp_b": lp["B"], "p_a": p_a, "choice_mass": mass})
        return out

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
    labels = {"judge": ctx.stage.name, "target": p.target_name, "condition": p.condition.label,
              "seed": p.seed, "generation": p.generation}
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
