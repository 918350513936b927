"""Run an LLM judge over (prompt, response) items, re-asking the judgements that do not parse.

The loop:

1. **Attempt 0** — every item in one ``model.generate`` call, greedy (temperature 0), so the
   first judgement is the judge's single most likely verdict and reproducible.
2. **Retries** — only the items whose output did not parse are asked again, up to ``retries``
   times. Re-asking greedily would return the same text, so retry ``k`` samples (temperature 0.7,
   top-p 0.9, seed ``seed + k``) and appends a one-line reminder of the output format.
3. Items that never parse keep ``score=None`` with the last attempt's ``error`` and ``raw`` text;
   they are reported as unparsed, never silently dropped or imputed.

Prompt ids are ``f"{item.id}#try{attempt}"``: backends seed sampling per prompt id, so a re-run
(or a resumed stage) reproduces every attempt exactly, and two attempts of one item differ.

:func:`judge_in_chunks` runs that loop over fixed slices of the whole item list, checkpointing each
slice (:func:`~collapselab.store.chunks.run_in_chunks`), so a killed judge stage resumes and batches
exactly as an uninterrupted one.

Responses are shown to the judge whole: the caller controls their length (the answering model's
``max_new_tokens``), and cutting them here could hide the harmful part of an answer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from collapselab.config.spec import DecodingSpec
from collapselab.errors import DataError, ModelError
from collapselab.judges.parse import FORMAT_REMINDERS, ParsedScore
from collapselab.judges.templates import render
from collapselab.models.base import ChatPrompt, LanguageModel, Progress
from collapselab.store.atomic import AppendLog
from collapselab.store.chunks import run_in_chunks

#: sampling settings of a re-ask (attempts 1, 2, ...)
RETRY_TEMPERATURE = 0.7
RETRY_TOP_P = 0.9
GENERIC_REMINDER = "Remember: follow the output format given above exactly, ending with your score."
#: items judged (and checkpointed) per chunk by :func:`judge_in_chunks`
JUDGE_CHUNK = 64


@dataclass(frozen=True)
class JudgeItem:
    """One thing to judge: the request and the answer (``id`` must be unique within a run)."""

    id: str
    prompt: str
    response: str


@dataclass(frozen=True)
class Judgement:
    """A judge's verdict on one item: ``score`` (None when no attempt parsed), the parsed reason,
    the raw judge output of the last attempt, how many attempts were made and the last error.

    A judge that reads probabilities (:mod:`collapselab.judges.readout`) leaves ``reason`` None
    and ``raw`` empty, makes one attempt, and fills ``probs`` (its choices' probabilities,
    renormalised over them) and ``mass`` (the probability the judge put on its choices at all,
    before renormalising — a low mass means it wanted to say something else). ``tokens`` is what
    the verdict cost: prompt tokens read plus tokens generated, over all attempts (None when the
    backend cannot count them)."""

    id: str
    score: float | None
    reason: str | None
    raw: str
    attempts: int
    error: str | None
    probs: dict[str, float] | None = None
    mass: float | None = None
    tokens: int | None = None


def attempt_id(item_id: str, attempt: int) -> str:
    """The stable prompt id of one attempt (seeds the backend's sampling)."""
    return f"{item_id}#try{attempt}"


def _decoding(attempt: int, max_new_tokens: int, seed: int, system_prompt: str | None) -> DecodingSpec:
    if attempt == 0:
        return DecodingSpec(temperature=0.0, top_p=1.0, max_new_tokens=max_new_tokens,
                            system_prompt=system_prompt, seed=seed)
    return DecodingSpec(temperature=RETRY_TEMPERATURE, top_p=RETRY_TOP_P, max_new_tokens=max_new_tokens,
                        system_prompt=system_prompt, seed=seed + attempt)


def _check_ids(items: Sequence[JudgeItem]) -> None:
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise DataError(f"judge items: duplicate id {item.id!r} (ids must be unique within a run)")
        seen.add(item.id)


def _ask(model: LanguageModel, prompts: list[ChatPrompt], decoding: DecodingSpec) -> list[tuple[str, int]]:
    """Each prompt's answer and the tokens it cost (prompt read + tokens written)."""
    generations = model.generate(prompts, decoding)
    if len(generations) != len(prompts):
        raise ModelError(f"judge {model.spec.id}: {len(generations)} answers for {len(prompts)} prompts")
    return [(g.text, g.prompt_tokens + g.new_tokens) for g in generations]


def run_judge(
    model: LanguageModel,
    items: Sequence[JudgeItem],
    template: str,
    parser: Callable[[str], ParsedScore],
    *,
    max_new_tokens: int,
    retries: int,
    seed: int = 0,
    system_prompt: str | None = None,
    progress: Progress | None = None,
    reminder: str | None = None,
) -> list[Judgement]:
    """Judge every item (see the module docstring for the attempt schedule).

    ``template`` is a validated judge template (fields ``{prompt}``, ``{response}``); ``parser``
    turns one judge output into a :class:`ParsedScore`. ``reminder`` is the line appended to
    re-asked prompts (default: the parser's entry in :data:`~collapselab.judges.parse.FORMAT_REMINDERS`,
    else a generic one). ``progress`` is called with the number of items whose judgement became
    final (parsed, or out of attempts) after each round, so it sums to ``len(items)``.
    Returns one :class:`Judgement` per item, in the order of ``items``.
    """
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    _check_ids(items)
    if reminder is None:
        reminder = FORMAT_REMINDERS.get(parser, GENERIC_REMINDER)
    rendered = {it.id: render(template, prompt=it.prompt, response=it.response) for it in items}
    state: dict[str, tuple[ParsedScore, str, int]] = {}  # id -> (last parse, last raw, attempts)
    spent: dict[str, int] = dict.fromkeys(rendered, 0)  # id -> tokens over all attempts
    pending = [it.id for it in items]
    for attempt in range(retries + 1):
        if not pending:
            break
        suffix = "" if attempt == 0 else "\n\n" + reminder
        prompts = [ChatPrompt(attempt_id(i, attempt), rendered[i] + suffix, system_prompt) for i in pending]
        outputs = _ask(model, prompts, _decoding(attempt, max_new_tokens, seed, system_prompt))
        still = []
        for item_id, (raw, tokens) in zip(pending, outputs, strict=True):
            spent[item_id] += tokens
            parsed = parser(raw)
            state[item_id] = (parsed, raw, attempt + 1)
            if parsed.score is None:
                still.append(item_id)
        last_round = attempt == retries
        if progress:
            progress(len(pending) if last_round else len(pending) - len(still))
        pending = still
    return [_judgement(it.id, *state[it.id], spent[it.id]) for it in items]


def _judgement(item_id: str, parsed: ParsedScore, raw: str, attempts: int, tokens: int) -> Judgement:
    if parsed.score is None:
        return Judgement(item_id, None, None, raw, attempts, parsed.error or "unparsed", tokens=tokens)
    return Judgement(item_id, parsed.score, parsed.reason, raw, attempts, None, tokens=tokens)


def judge_in_chunks(
    get_model: Callable[[], LanguageModel],
    items: Sequence[JudgeItem],
    template: str,
    parser: Callable[[str], ParsedScore],
    *,
    log: AppendLog,
    max_new_tokens: int,
    retries: int,
    seed: int = 0,
    system_prompt: str | None = None,
    reminder: str | None = None,
    chunk_size: int = JUDGE_CHUNK,
    progress: Progress | None = None,
) -> list[Judgement]:
    """:func:`run_judge` over fixed ``chunk_size`` slices of the whole ``items`` list, each slice's
    judgements appended to ``log`` and skipped on a rerun (see :mod:`collapselab.store.chunks`).

    ``get_model()`` is called only when a chunk is left to judge (a finished stage loads no
    model). The log's records are the :class:`Judgement` fields. ``progress`` counts items whose
    judgement is final, resumed ones included. Returns one judgement per item, in item order.
    """
    model: LanguageModel | None = None

    def work(chunk: list[JudgeItem]) -> list[dict]:
        nonlocal model
        model = model or get_model()
        judgements = run_judge(model, chunk, template, parser, max_new_tokens=max_new_tokens, retries=retries,
                               seed=seed, system_prompt=system_prompt, progress=progress, reminder=reminder)
        return [asdict(j) for j in judgements]

    if retries < 0:  # fail before the log is read, as run_judge would
        raise ValueError(f"retries must be >= 0, got {retries}")
    run = run_in_chunks(items, work, log=log, item_id=lambda it: it.id, chunk_size=chunk_size,
                        progress=progress, progress_per_chunk=False)  # run_judge reports per item
    return [Judgement(**r) for r in run.records]
