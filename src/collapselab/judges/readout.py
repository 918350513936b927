"""Judges that read a verdict from next-token probabilities: no sampling, no parsing, a verdict
for every item.

The judge prompt ends where the verdict goes; the backend returns, for each of the judge's choice
tokens ("1" … "5" for a rating judge, "safe"/"unsafe" or "Yes"/"No" for a classifier), log P(the
answer starts with that choice), summed over its single-token spellings ("4" and " 4"). The
judge's ``read`` turns those into its score — the expected rating Σ r·p_r renormalised over the
digits (StrongREJECT's fine-tuned evaluator, Souly et al. 2024), or the renormalised probability
of the positive choice (Llama Guard's P(unsafe), Inan et al. 2023; HarmBench's P("Yes"), Mazeika
et al. 2024). The renormalised distribution is kept (``probs``) with the mass the choices had at
all (``mass``): a judge that put little mass on its choices wanted to say something else, and the
report shows it.

Over HTTP only the top log-probabilities are visible: a choice outside them reads as probability
0 (a lower bound), and when *every* choice is outside them there is no verdict — the judgement
gets an error naming that, is counted, and is never imputed.

How a prompt is laid out (:attr:`~collapselab.judges.registry.Judge.layout`): a ``template``
filled with the request and the answer (as the user turn; raw text for a ``raw`` judge, whose
model is loaded with ``chat: never``), or a ``conversation`` — the request as the user turn and
the answer as an assistant turn, rendered by the judge model's own chat template.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

from collapselab.config.spec import ModelSpec
from collapselab.errors import ModelError
from collapselab.judges.registry import Judge
from collapselab.judges.run import JudgeItem, Judgement, _check_ids
from collapselab.judges.templates import render
from collapselab.models.base import ChatPrompt, LanguageModel, Progress
from collapselab.store.atomic import AppendLog
from collapselab.store.chunks import run_in_chunks

#: items read (and checkpointed) per chunk by :func:`read_in_chunks`
READ_CHUNK = 64


def judge_model_spec(judge: Judge, spec: ModelSpec) -> ModelSpec:
    """The model spec a judge runs on: a ``raw`` judge's template is the whole prompt, so its
    model is loaded without its chat template (``chat: never``)."""
    return spec.model_copy(update={"chat": "never"}) if judge.raw else spec


def judge_prompt(judge: Judge, template: str | None, item: JudgeItem, system_prompt: str | None) -> ChatPrompt:
    """The prompt that asks ``judge`` about one item (see the module docstring for the layouts).
    A conversation or raw judge gets no system prompt: its format is fixed by its fine-tuning."""
    if judge.layout == "conversation":
        return ChatPrompt(item.id, item.prompt, None, item.response, judge.answer_prefix)
    if template is None:
        raise ValueError(f"judge {judge.name!r} needs its template")
    text = render(template, prompt=item.prompt, response=item.response)
    return ChatPrompt(item.id, text, None if judge.raw else system_prompt, answer_prefix=judge.answer_prefix)


def prompt_tokens(model: LanguageModel, prompt: ChatPrompt) -> int | None:
    """How many tokens ``prompt`` is for ``model`` (None when the backend cannot say: HTTP)."""
    from collapselab.models.formatting import render_prompt_ids

    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is not None:
        return len(render_prompt_ids(tokenizer, prompt, model.is_chat))
    count = getattr(model, "prompt_ids", None)  # llama.cpp renders with its own tokenizer
    return len(count(prompt)) if callable(count) else None


def verdict(item_id: str, judge: Judge, logprobs: dict[str, float], tokens: int | None) -> Judgement:
    """One judgement from the choices' log-probabilities (over the whole vocabulary)."""
    values = {c: logprobs.get(c, -math.inf) for c in judge.choices}
    if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in values.values()):
        raise ModelError(f"judge {judge.name!r}: the backend returned no log-probability for item {item_id!r}")
    top = max(values.values())
    if top == -math.inf:
        return Judgement(item_id, None, None, "", 1, f"no probability on any of {list(judge.choices)} "
                         "(outside the backend's top log-probabilities)", probs=None, mass=0.0, tokens=tokens)
    weights = {c: math.exp(v - top) for c, v in values.items()}
    total = sum(weights.values())
    score = float(judge.read(values))
    return Judgement(item_id, None if math.isnan(score) else score, None, "", 1, None,
                     probs={c: w / total for c, w in weights.items()}, mass=math.exp(top) * total, tokens=tokens)


def read_items(model: LanguageModel, judge: Judge, items: Sequence[JudgeItem], template: str | None, *,
               system_prompt: str | None = None, progress: Progress | None = None) -> list[Judgement]:
    """One :class:`~collapselab.judges.run.Judgement` per item, in order, read from the
    probabilities of ``judge.choices`` after each item's prompt (:func:`judge_prompt`)."""
    if not judge.reads_probabilities:
        raise ValueError(f"judge {judge.name!r} generates text ({judge.readout}); use judges.run.run_judge")
    _check_ids(items)
    prompts = [judge_prompt(judge, template, it, system_prompt) for it in items]
    lengths = [prompt_tokens(model, p) for p in prompts]  # rendered once: the check and the cost
    too_long = _too_long(model, prompts, lengths)
    if too_long:
        raise ModelError(f"judge {judge.name!r} ({model.spec.id}): {too_long}")
    try:
        read = model.choice_logprobs(prompts, judge.choices, progress=progress)
    except ModelError as exc:  # e.g. a vocabulary without single-token digits: say which judge
        raise ModelError(f"judge {judge.name!r}: {exc}") from exc
    if len(read) != len(prompts):
        raise ModelError(f"judge {model.spec.id}: {len(read)} read-outs for {len(prompts)} prompts")
    return [verdict(it.id, judge, lp, n) for it, n, lp in zip(items, lengths, read, strict=True)]


def _too_long(model: LanguageModel, prompts: Sequence[ChatPrompt], lengths: Sequence[int | None]) -> str | None:
    """A message for the first prompt longer than the judge's context (None when all fit)."""
    for p, n in zip(prompts, lengths, strict=True):
        if n is not None and n + 1 > model.max_context:
            return (f"the prompt for item {p.id!r} is {n} tokens, longer than the model's context of "
                    f"{model.max_context} (shorten the template, or cap the answers with safety.max_new_tokens)")
    return None


def read_in_chunks(get_model: Callable[[], LanguageModel], judge: Judge, items: Sequence[JudgeItem],
                   template: str | None, *, log: AppendLog, system_prompt: str | None = None,
                   chunk_size: int = READ_CHUNK, progress: Progress | None = None) -> list[Judgement]:
    """:func:`read_items` over fixed ``chunk_size`` slices of ``items``, each slice appended to
    ``log`` and skipped on a rerun (:mod:`collapselab.store.chunks`): a killed stage resumes and
    batches exactly as an uninterrupted one. ``get_model()`` is called only when a chunk is left."""
    model: LanguageModel | None = None

    def work(chunk: list[JudgeItem]) -> list[dict[str, Any]]:
        nonlocal model
        model = model or get_model()
        return [asdict(j) for j in read_items(model, judge, chunk, template, system_prompt=system_prompt,
                                              progress=progress)]

    run = run_in_chunks(items, work, log=log, item_id=lambda it: it.id, chunk_size=chunk_size,
                        progress=progress, progress_per_chunk=False)
    return [Judgement(**r) for r in run.records]
