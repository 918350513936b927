"""Curation between generate and mix (issue 13, the mitigation arm): score every synthetic example
of a condition, then keep, drop or reweight it by a rule (:class:`~collapselab.config.spec.CurationSpec`).

Scores (:func:`score_examples`; one float per example, NaN when there is none):

* ``perplexity`` — PPL = exp(−(1/T)·Σ_t log p(a_t | a_<t, prompt)) of the answer's T tokens given
  its prompt (and the training system prompt) under the scoring model, teacher-forced: the
  definition of :func:`collapselab.metrics.perplexity.per_text_perplexity`. Low perplexity is the
  classic "keep what the model finds likely" filter; it is also the one that speeds up collapse
  towards the mode (Shumailov et al., Nature 2024), which is why the arm measures it;
* ``judge`` — the expected 1–5 quality rating Σ r·p_r of the ``quality-rating`` judge, read from
  its probabilities over the digit tokens (:mod:`collapselab.judges.readout`; Zheng et al. 2023
  for the scale);
* ``length`` — the answer's whitespace-separated words;
* ``detector`` — P(human-written | answer) from a machine-text detector, an
  ``AutoModelForSequenceClassification`` (softmax over its labels, the human class's share).

Rules (:func:`select`; ``n`` is the number of *eligible* examples — non-empty answers with a
score; empty answers are dropped as the mix drops them, unscored ones are dropped and named):

* ``keep_rate`` — keep the k = ⌈keep_rate·n⌉ best by the kept end (at least one);
* ``threshold`` — keep score ≤ threshold (``keep: low``) or score ≥ threshold (``keep: high``);
* ``resample`` — importance resampling (Drayson, Yilmaz & Lampos, "Machine-generated text detection
  prevents language model collapse", EMNLP 2025): n draws with replacement, example i drawn with
  probability p_i = w_i / Σ_j w_j, w_i = P_i / (1 − P_i) with P_i = P(human) clipped to
  [:data:`P_CLIP`, 1 − :data:`P_CLIP`] (so a detector certain of "human" does not divide by zero,
  and one certain of "machine" still leaves the example a tiny weight). An example's ``times`` is
  how often it was drawn; its ``weight`` is its expected number of copies n·p_i.

Ties (``keep_rate``): examples with equal scores are ordered by a hash of (seed, prompt id,
source), so which of them is kept depends on the seed only — never on the order the rows come in.
Everything is deterministic given the seed.

The stage (``curate``, :func:`run_curate`) writes ``curation.jsonl`` — one row per synthetic
example — and ``summary.json``; the mix keeps what it says (:func:`apply_curation`).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from collapselab.config.spec import Condition, CurationSpec, ModelSpec
from collapselab.errors import ConfigError, DataError
from collapselab.pipeline.kinds import StageKind, register_kind
from collapselab.pipeline.sizing import CHARS_PER_TOKEN, Estimate, PlanContext, estimate_tokens, system_chars

if TYPE_CHECKING:
    from collapselab.pipeline.context import StageContext
    from collapselab.pipeline.stage import Stage

#: P(human) is clipped to [P_CLIP, 1 − P_CLIP] before w = P / (1 − P): a finite weight for every example
P_CLIP = 1e-6
#: how each score is named in reasons and tables
SCORE_NAMES = {"perplexity": "perplexity", "judge": "quality rating", "length": "length", "detector": "P(human)"}
#: labels a detector's human class goes by when ``human_label`` is not set (compared case-insensitively)
HUMAN_LABELS = ("human", "real", "human-written", "human_written", "human written", "humanwritten")
#: the rating judge the ``judge`` score reads
RATING_JUDGE = "quality-rating"


# -- parameters ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CurateParams:
    """Runtime parameters of a curate stage: the condition and its step; ``owner`` (a multi-source
    condition: prompt id → the source that answers it) keeps only each prompt's owner's rows, as
    the mix does; ``generation`` and ``data_seed`` as the condition's mix has them."""

    condition: Condition
    step: CurationSpec
    owner: Mapping[str, str] | None = None
    generation: int = 0
    data_seed: int | None = None


# -- scoring ---------------------------------------------------------------------------------------
def score_examples(step: CurationSpec, rows: Sequence[Mapping[str, Any]], *, models: Any,
                   system_prompt: str | None, default_model: ModelSpec,
                   progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Each row's score (``prompt_id``, ``prompt``, ``response``) by ``step.score`` (see the module
    docstring); NaN where a row has none (an empty answer's perplexity). ``models`` is a
    :class:`~collapselab.pipeline.context.ModelPool` (anything with ``.get(ModelSpec)``);
    ``default_model`` scores perplexity when the step names no model (the first target)."""
    if not rows:
        return np.zeros(0)
    if step.score == "length":
        out = np.array([len(str(r["response"]).split()) for r in rows], dtype=np.float64)
        if progress:
            progress(len(rows))
        return out
    if step.score == "perplexity":
        return _perplexities(models.get(step.model or default_model), rows, system_prompt, progress)
    if step.score == "judge":
        return _ratings(step, models, rows, system_prompt, progress)
    if step.score == "detector":
        close = getattr(models, "close", None)
        if callable(close):  # the detector is loaded here, not by the pool: free the pool's model first
            close()
        return detector_scores(step, [str(r["response"]) for r in rows], progress=progress)
    raise ConfigError(f"curation.{step.name}.score: unknown score {step.score!r}")


def _perplexities(model: Any, rows: Sequence[Mapping[str, Any]], system_prompt: str | None,
                  progress: Callable[[int], None] | None) -> np.ndarray:
    from collapselab.metrics.perplexity import per_text_perplexity
    from collapselab.models.base import ChatPrompt

    prompts = [ChatPrompt(str(r["prompt_id"]), r["prompt"], system_prompt) for r in rows]
    logprobs = model.continuation_logprobs(prompts, [r["response"] for r in rows], progress=progress)
    if len(logprobs) != len(rows):
        raise DataError(f"scoring model {model.spec.id}: {len(logprobs)} log-probability lists for {len(rows)} answers")
    return per_text_perplexity([np.asarray(lp, dtype=np.float64) for lp in logprobs])


def _ratings(step: CurationSpec, models: Any, rows: Sequence[Mapping[str, Any]], system_prompt: str | None,
             progress: Callable[[int], None] | None) -> np.ndarray:
    from collapselab.judges import JUDGES
    from collapselab.judges.readout import judge_model_spec, read_items
    from collapselab.judges.run import JudgeItem

    judge = JUDGES.get(RATING_JUDGE)
    template = rating_template(step)
    assert step.model is not None  # CurationSpec requires a model for the judge score
    model = models.get(judge_model_spec(judge, step.model))
    # ids only need to be unique within this call: the row position (prompt ids repeat across sources)
    items = [JudgeItem(str(i), r["prompt"], r["response"]) for i, r in enumerate(rows)]
    judgements = read_items(model, judge, items, template, system_prompt=system_prompt, progress=progress)
    return np.array([math.nan if j.score is None else float(j.score) for j in judgements], dtype=np.float64)


def rating_template(step: CurationSpec) -> str:
    """The rating judge's template: ``step.template`` (a file) or the packaged quality-rating
    prompt, validated — a typo'd field fails naming ``curation.NAME.template`` before any model runs."""
    from dataclasses import replace

    from collapselab.judges import JUDGES
    from collapselab.judges.templates import read_template

    spec = JUDGES.get(RATING_JUDGE).template_spec
    assert spec is not None  # the rating judge fills a template
    return read_template(replace(spec, config_field=f"curation.{step.name}.template"), step.template)


def human_label_index(id2label: Mapping[Any, str], human_label: str | None, where: str) -> int:
    """The index of a detector's human class: ``human_label`` (exactly, else case-insensitively) or,
    when it is None, the one label among :data:`HUMAN_LABELS`. A :class:`ConfigError` naming
    ``where`` and listing the labels when none (or more than one) matches."""
    labels = {int(i): str(label) for i, label in id2label.items()}
    listed = ", ".join(repr(labels[i]) for i in sorted(labels))
    if human_label is not None:
        exact = [i for i, label in labels.items() if label == human_label]
        loose = [i for i, label in labels.items() if label.lower() == human_label.lower()]
        found = exact or loose
        if len(found) != 1:
            raise ConfigError(f"{where}.human_label: {human_label!r} is not one of the detector's labels ({listed})")
        return found[0]
    found = [i for i, label in labels.items() if label.strip().lower() in HUMAN_LABELS]
    if len(found) != 1:
        what = "none of" if not found else "more than one of"
        raise ConfigError(f"{where}.human_label: {what} the detector's labels ({listed}) reads as the human "
                          f"class ({', '.join(HUMAN_LABELS)}); name it with human_label")
    return found[0]


def detector_max_length(tokenizer: Any, config: Any) -> int:
    """The longest input the detector takes: the tokenizer's ``model_max_length`` when it is set
    (transformers uses a huge sentinel when it is not), else the model's position embeddings —
    less the two offset positions of RoBERTa-style models, whose positions start after the pad id."""
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < 1_000_000:
        return limit
    positions = int(getattr(config, "max_position_embeddings", 512))
    offset = 2 if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert") else 0
    return positions - offset


def detector_scores(step: CurationSpec, texts: Sequence[str], *,
                    progress: Callable[[int], None] | None = None) -> np.ndarray:
    """P(human-written) of each text under the step's detector: an ``hf/`` sequence classifier
    (hub id or folder, :func:`collapselab.models.hf.resolve_weights`: safetensors only), run in
    batches of the model spec's ``batch_size`` in float32, inputs cut to :func:`detector_max_length`
    tokens; the softmax over the labels, the human class's share."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from collapselab.models.hf import resolve_weights

    where = f"curation.{step.name}"
    if step.model is None:
        raise ConfigError(f"{where}.model: score 'detector' needs a model")
    folder = resolve_weights(step.model)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token is None:  # GPT-2-style detectors have none; the mask hides the padding anyway
        tokenizer.pad_token = tokenizer.eos_token
    # use_safetensors=True: a folder with only pickled weights fails instead of being unpickled
    model = AutoModelForSequenceClassification.from_pretrained(folder, use_safetensors=True, dtype=torch.float32)
    if model.config.num_labels < 2:
        raise ConfigError(f"{where}.model: {step.model.id} has {model.config.num_labels} output label; a "
                          "detector needs a human and a machine class")
    if model.config.pad_token_id is None:  # last-token poolers (GPT-2 style) find the end by the pad id
        model.config.pad_token_id = tokenizer.pad_token_id
    human = human_label_index(model.config.id2label, step.human_label, where)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device).eval()
    max_length = detector_max_length(tokenizer, model.config)
    out = np.empty(len(texts), dtype=np.float64)
    with torch.inference_mode():
        for start in range(0, len(texts), step.model.batch_size):
            batch = list(texts[start:start + step.model.batch_size])
            enc = tokenizer(batch, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
            logits = model(**{k: v.to(device) for k, v in enc.items()}).logits.float()
            out[start:start + len(batch)] = torch.softmax(logits, dim=-1)[:, human].cpu().numpy()
            if progress:
                progress(len(batch))
    del model
    return out


# -- selection -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Selection:
    """What a rule decided, per example (arrays in the examples' order): ``kept`` (drawn at least
    once), ``times`` (copies that go into the mix, ≥ 0; more than one only by ``resample``),
    ``weight`` (1/0 for keep_rate and threshold; the expected copies n·p_i for resample) and
    ``reason`` (one sentence); ``cut`` the score at the boundary (keep_rate: the last kept score;
    threshold: the threshold; resample: None), ``n`` the eligible examples."""

    kept: np.ndarray
    times: np.ndarray
    weight: np.ndarray
    reason: list[str]
    cut: float | None
    n: int


def tie_order(ids: Sequence[str], seed: int) -> np.ndarray:
    """A seeded order of ``ids`` that does not depend on their positions: each id's rank by
    sha256(seed, id) (how equal scores are ordered)."""
    keys = [hashlib.sha256(f"{seed}\x00{i}".encode()).digest() for i in ids]
    ranks = np.empty(len(ids), dtype=np.int64)
    ranks[sorted(range(len(ids)), key=lambda j: keys[j])] = np.arange(len(ids))
    return ranks


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def select(step: CurationSpec, scores: Sequence[float] | np.ndarray, ids: Sequence[str], *, seed: int,
           empty: Sequence[bool] | np.ndarray | None = None) -> Selection:
    """Apply ``step.rule`` to ``scores`` (see the module docstring). ``ids`` must be unique (they
    order ties); ``empty`` marks empty answers, which are dropped ("dropped: empty answer") and not
    counted in n; a NaN score is dropped too ("dropped: no score")."""
    scores = np.asarray(scores, dtype=np.float64)
    n_all = len(scores)
    if len(ids) != n_all:
        raise ValueError(f"{len(ids)} ids for {n_all} scores")
    if len(set(ids)) != n_all:
        raise ValueError("ids must be unique: they order the ties")
    empty_mask = np.zeros(n_all, dtype=bool) if empty is None else np.asarray(empty, dtype=bool)
    eligible = ~empty_mask & np.isfinite(scores)
    reason = ["dropped: empty answer" if empty_mask[i] else "dropped: no score" for i in range(n_all)]
    times = np.zeros(n_all, dtype=np.int64)
    weight = np.zeros(n_all, dtype=np.float64)
    idx = np.flatnonzero(eligible)
    n = len(idx)
    name = SCORE_NAMES[step.score]
    low = step.kept_end == "low"
    cut: float | None = None
    if step.rule == "keep_rate" and n:
        k = max(1, math.ceil(round(step.keep_rate * n, 6)))  # round: 0.3 × 10 is 3.0000000000000004
        oriented = scores[idx] if low else -scores[idx]
        ties = tie_order([ids[i] for i in idx], seed)
        order = idx[np.lexsort((ties, oriented))]  # best first; equal scores by the seeded order
        cut = float(scores[order[k - 1]])
        sign = "≤" if low else "≥"
        share = f"{step.keep_rate * 100:.4g}%"
        for rank, i in enumerate(order, start=1):
            s = _fmt(scores[i])
            if rank <= k:
                times[i], weight[i] = 1, 1.0
                reason[i] = f"kept: {name} {s} {sign} {_fmt(cut)} (rank {rank} of {n})"
            else:
                reason[i] = (f"dropped: {name} {s}, rank {rank} of {n}: outside the {'lowest' if low else 'highest'} "
                             f"{share} (cut {_fmt(cut)})")
    elif step.rule == "threshold":
        assert step.threshold is not None  # CurationSpec requires it for this rule
        cut = float(step.threshold)
        for i in idx:
            s = scores[i]
            ok = s <= cut if low else s >= cut
            if ok:
                times[i], weight[i] = 1, 1.0
                reason[i] = f"kept: {name} {_fmt(s)} {'≤' if low else '≥'} {_fmt(cut)} (threshold)"
            else:
                reason[i] = f"dropped: {name} {_fmt(s)} {'>' if low else '<'} {_fmt(cut)} (threshold)"
    elif step.rule == "resample" and n:
        p_human = np.clip(scores[idx], P_CLIP, 1.0 - P_CLIP)
        w = p_human / (1.0 - p_human)
        p = w / w.sum()
        draws = np.random.default_rng(seed).choice(n, size=n, replace=True, p=p)
        counts = np.bincount(draws, minlength=n)
        for j, i in enumerate(idx):
            times[i], weight[i] = int(counts[j]), float(n * p[j])
            about = f"{name} {_fmt(scores[i])}, expected {_fmt(weight[i])} copies"
            reason[i] = (f"kept ×{counts[j]}: {about} (importance resampling, {n} draws)" if counts[j]
                         else f"dropped: drawn 0 of {n} times; {about} (importance resampling)")
    return Selection(times > 0, times, weight, reason, cut, n)


def curation_seed(step: CurationSpec, data_seed: int | None) -> int:
    """The seed of a stage's selection: the step's seed, combined with the data seed when each
    seed draws its own data (so each draw is curated with its own ties and resamples)."""
    if data_seed is None:
        return step.seed
    return int(np.random.SeedSequence([step.seed, data_seed]).generate_state(1)[0])


# -- the stage -------------------------------------------------------------------------------------
def condition_owner(ctx: StageContext, train: list[dict[str, Any]] | None) -> Mapping[str, str] | None:
    """prompt id → the source that answers it in a multi-source condition, as the mix assigns it:
    ``params.owner`` when the graph gives one, else the split's assignment
    (:func:`collapselab.corpora.shares.assign_examples` with the prepare stage's shards and seed);
    None for a single source and for a closed multi-source loop's later generations (its own model
    writes every answer)."""
    p = ctx.stage.params
    if p.owner is not None:
        return p.owner
    cond = p.condition
    if cond.kind != "multi" or (p.generation > 0 and ctx.spec.generations.multi_loop == "closed"):
        return None
    from collapselab.corpora.shares import source_of_prompt

    prepare = next(s for s in ctx.stage.inputs if s.kind == "prepare")
    if train is None:
        raise DataError(f"{ctx.stage.label}: a multi-source condition's curation needs the prepare stage's train split")
    return source_of_prompt(cond, train, prepare.settings)


def curation_inputs(ctx: StageContext) -> list[dict[str, Any]]:
    """The synthetic rows the stage curates: every generate input's ``synthetic.jsonl``, only the
    owner's rows for a multi-source condition (:func:`condition_owner`: the rows the mix reads), in
    the train split's order."""
    from collapselab.store.atomic import read_jsonl

    prepare = [s for s in ctx.stage.inputs if s.kind == "prepare"]
    train = read_jsonl(ctx.input_dir(prepare[0]) / "train.jsonl") if prepare else None
    owner = condition_owner(ctx, train)
    rows: list[dict[str, Any]] = []
    for gen in (s for s in ctx.stage.inputs if s.kind == "generate"):
        rows += [r for r in read_jsonl(ctx.input_dir(gen) / "synthetic.jsonl")
                 if owner is None or owner.get(r["prompt_id"]) == r["source"]]
    seen: set[tuple[str, str]] = set()
    for r in rows:
        key = (str(r["prompt_id"]), str(r["source"]))
        if key in seen:
            raise DataError(f"{ctx.stage.label}: prompt {key[0]!r} is answered twice by source {key[1]!r} in "
                            "its generate inputs")
        seen.add(key)
    if train is not None:  # the mix's order, so curation.jsonl reads alongside its train.jsonl
        order = {r["id"]: i for i, r in enumerate(train)}
        rows.sort(key=lambda r: order.get(r["prompt_id"], len(order)))
    return rows


def _quantiles(values: np.ndarray) -> dict[str, float] | None:
    values = values[np.isfinite(values)]
    if not values.size:
        return None
    q = np.quantile(values, [0.0, 0.25, 0.5, 0.75, 1.0])
    return dict(zip(("min", "q25", "median", "q75", "max"), (float(v) for v in q), strict=True))


def run_curate(ctx: StageContext) -> None:
    """Score a condition's synthetic examples and apply its curation step; writes
    ``curation.jsonl`` (one row per example: prompt_id, source, shard, score, kept, times, weight,
    reason, curation) and ``summary.json``."""
    from collapselab.store.atomic import write_json, write_jsonl
    from collapselab.store.jsonsafe import jsonable

    p: CurateParams = ctx.stage.params
    step = p.step
    rows = curation_inputs(ctx)
    ctx.set_total(len(rows))
    system_prompt = ctx.stage.settings.get("system_prompt", ctx.spec.decoding.system_prompt)
    scorer = step.model or (ctx.spec.targets[0] if step.score == "perplexity" else None)
    scores = score_examples(step, rows, models=ctx.models, system_prompt=system_prompt,
                            default_model=ctx.spec.targets[0], progress=ctx.advance)
    seed = curation_seed(step, p.data_seed)
    empty = np.array([not str(r["response"]).strip() for r in rows], dtype=bool)
    chosen = select(step, scores, [f"{r['prompt_id']}\x00{r['source']}" for r in rows], seed=seed, empty=empty)
    out = [{"prompt_id": r["prompt_id"], "source": r["source"], "shard": r.get("shard"),
            "score": None if not math.isfinite(s) else float(s), "kept": bool(k), "times": int(t),
            "weight": float(w), "reason": why, "curation": step.name}
           for r, s, k, t, w, why in zip(rows, scores, chosen.kept, chosen.times, chosen.weight, chosen.reason,
                                         strict=True)]
    write_jsonl(ctx.out / "curation.jsonl", out)
    kept = np.asarray(chosen.kept)
    eligible = ~empty & np.isfinite(scores)
    write_json(ctx.out / "summary.json", jsonable({
        "condition": p.condition.label, "curation": step.name, "step": step.model_dump(mode="json"),
        "score": step.score, "rule": step.rule, "kept_end": step.kept_end,
        "scoring_model": None if scorer is None else scorer.id, "generation": p.generation,
        "data_seed": p.data_seed, "seed": seed,
        "n": len(rows), "eligible": chosen.n, "kept": int(kept.sum()), "dropped": int((~kept).sum()),
        "dropped_empty": int(empty.sum()), "dropped_unscored": int((~empty & ~np.isfinite(scores)).sum()),
        "copies": int(chosen.times.sum()),
        "keep_rate": float(kept.sum() / len(rows)) if rows else None,
        "cut": chosen.cut,
        "scores_kept": _quantiles(scores[kept]), "scores_dropped": _quantiles(scores[eligible & ~kept]),
    }))


def apply_curation(examples: Sequence[Mapping[str, Any]], curation_rows: Sequence[Mapping[str, Any]]
                   ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The mix's side of curation: ``examples`` (from :func:`collapselab.synth.mix.synthetic_examples`:
    ``id`` is the prompt id, ``origin`` the source) matched to the curate stage's rows by (prompt
    id, source). Returns (the kept examples, each ``times`` times in a row — the first copy keeps
    its id, copy k ≥ 1 is ``f"{id}~{k}"`` — with ``curation``, ``curation_score`` and
    ``curation_weight`` added; and the ``dropped.jsonl`` rows of the examples curation dropped:
    prompt_id, source, shard, score, reason). Empty answers are not among ``examples`` (the mix
    drops and lists them itself), so they are not listed twice. An example without a curation row
    is a :class:`DataError`: the curate stage and the mix read different generate stages."""
    by_key = {(str(r["prompt_id"]), str(r["source"])): r for r in curation_rows}
    kept: list[dict[str, Any]] = []
    dropped: list[dict[str, Any]] = []
    for e in examples:
        row = by_key.get((str(e["id"]), str(e["origin"])))
        if row is None:
            raise DataError(f"example {e['id']!r} of source {e['origin']!r} has no curation row (the curate "
                            "stage read other generate stages than the mix)")
        if int(row["times"]) == 0:
            dropped.append({"prompt_id": row["prompt_id"], "source": row["source"], "shard": row.get("shard"),
                            "score": row["score"], "reason": row["reason"]})
        for k in range(int(row["times"])):
            kept.append({**e, "id": e["id"] if k == 0 else f"{e['id']}~{k}", "curation": row.get("curation"),
                         "curation_score": row["score"], "curation_weight": row["weight"]})
    return kept, dropped


# -- plan ------------------------------------------------------------------------------------------
def plan_curate(stage: Stage, ctx: PlanContext) -> Estimate:
    """Items: the synthetic examples of the generate inputs' shards (each prompt answered once).
    Tokens (characters / 4, answers counted at their sources' ``max_new_tokens``: an upper bound):
    perplexity scores prompt + answer; the judge reads template + prompt + answer; the detector
    reads the answer; length reads nothing."""
    step: CurationSpec = stage.params.step
    answer_chars: dict[int, int] = {}
    for gen in (s for s in stage.inputs if s.kind == "generate"):
        chars = gen.params.decoding.max_new_tokens * CHARS_PER_TOKEN
        answer_chars[gen.params.shard] = max(chars, answer_chars.get(gen.params.shard, 0))
    model = step.model or (ctx.spec.targets[0] if step.score == "perplexity" else None)
    rule = {"keep_rate": f"keep the {step.kept_end}est {step.keep_rate:.0%}",
            "threshold": f"keep {'≤' if step.kept_end == 'low' else '≥'} {step.threshold}",
            "resample": "importance resampling by P(human)/P(machine)"}[step.rule]
    est = Estimate(None if model is None else model.id, None, 0, 0, 0, 0,
                   notes=[f"{SCORE_NAMES[step.score]} of every synthetic answer; {rule}"])
    if ctx.corpus.shards is None:
        est.notes.append(f"unknown: the number of synthetic answers is not known offline ({ctx.corpus.note})")
        est.tokens_score = est.tokens_prefill = None
        return est
    est.n_items = sum(ctx.corpus.shards[s] for s in answer_chars)
    rows = ctx.corpus.train_rows
    if step.score == "length":
        return est
    if rows is None:
        if step.score == "detector":
            est.tokens_score = estimate_tokens(est.n_items * max(answer_chars.values(), default=0))
        else:
            est.tokens_score = est.tokens_prefill = None
            est.notes.append("tokens unknown: the corpus's prompts are not read offline (see prepare)")
        return est
    texts = [(t.user, answer_chars[t.shard]) for t in rows if t.shard in answer_chars]
    system = system_chars(stage.settings.get("system_prompt", ctx.spec.decoding.system_prompt))
    if step.score == "perplexity":
        est.tokens_score = estimate_tokens(sum(system + u + a for u, a in texts))
    elif step.score == "judge":
        template = len(rating_template(step))
        est.tokens_prefill = estimate_tokens(sum(system + template + u + a for u, a in texts))
    else:
        est.tokens_score = estimate_tokens(sum(a for _, a in texts))
    est.notes.append("answers counted at max_new_tokens (an upper bound)")
    return est


CURATE = register_kind(StageKind(
    "curate", 1, run_curate, plan_curate, unit="examples", params=CurateParams, loads_model=True,
    experiment="spine", outputs=("curation.jsonl", "summary.json"),
    description="score a curated condition's synthetic examples and keep, drop or resample them (issue 13)"))
