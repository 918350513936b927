"""How the sources of a multi-source condition share the train prompts: every prompt is answered
by exactly one source, and each source answers its largest-remainder share of the prompts — by
example, not rounded to whole shards (audit a3: with 4 shards an equal three-source mix trained
on 50/25/25, 0.7/0.3 on 0.75/0.25).

**Layout.** :func:`collapselab.corpora.split.make_shards` cuts the ``n`` train prompts into
``n_shards`` stratified shards. A condition's sources lie along the shard sequence in their
order: source ``i`` spans ``[C_(i-1), C_i)`` shard units with ``C_i = n_shards · (w_0 + … + w_i) / Σw``
(:func:`source_spans`). The prompts are laid out shard after shard, within a shard in a seeded,
category-stratified order (:func:`prompt_order`), and source ``i`` answers the positions
``[b_(i-1), b_i)``, where ``b_i = N_0 + … + N_i`` is the running sum of the largest-remainder
counts ``N = apportion(w, n)`` (each ``N_i`` within one example of ``w_i · n / Σw``), clamped
into the shard ``C_i`` falls in (:func:`boundaries`):

* a boundary inside a shard (``C_i`` not whole) cuts that shard between two sources, and the
  counts are exactly ``N_i`` — unless ``b_i`` would leave that shard (only when ``C_i`` lies
  within an example of a shard edge), where it stops at the edge;
* a boundary on a shard edge (``C_i`` whole) stays there: the sources answer whole shards, as the
  study's four sources answered its four quarters. The counts are then sums of shard sizes, which
  can differ from the exact ``w_i · n / Σw`` by a few examples (shard sizes differ by one: the
  edge lies at most ``n_shards / 4`` prompts from ``k · n / n_shards``), in exchange for no shard
  answered by two sources.

Which shards a source needs depends only on ``n_shards`` and the weights (:func:`shards_needed`),
so the stage graph is built without reading the corpus; how many prompts of each shard depends
only on the shard sizes (:func:`shard_counts`), so ``plan`` and ``validate`` know the realised
shares before anything runs; which prompts depends on their ids, categories and the seed, never on
the input order (:func:`assign_examples`).
"""

from __future__ import annotations

import bisect
import hashlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from fractions import Fraction
from typing import Any

from collapselab.corpora.apportion import apportion, exact
from collapselab.errors import ConfigError, DataError


def _check_weights(weights: Sequence[float]) -> None:
    if not weights or any(w <= 0 for w in weights):
        raise ConfigError(f"mixing weights must be positive, one per source; got {list(weights)}")


def source_spans(n_shards: int, weights: Sequence[float]) -> list[tuple[Fraction, Fraction]]:
    """Each source's span of the shard sequence, in shard units: source ``i`` covers
    ``[C_(i-1), C_i)`` with ``C_i = n_shards · (w_0 + … + w_i) / Σw`` (exact fractions of the
    decimals written). A span need not end on a shard boundary: a shard it cuts is shared by two
    sources."""
    _check_weights(weights)
    ws = [exact(w) for w in weights]
    total, spans, start = sum(ws), [], Fraction(0)
    for w in ws:
        end = start + n_shards * w / total
        spans.append((start, end))
        start = end
    return spans


def shards_needed(n_shards: int, weights: Sequence[float]) -> list[list[int]]:
    """The shards whose prompts each source answers (some or all of them): every shard its span
    (:func:`source_spans`) overlaps."""
    return [[j for j in range(n_shards) if min(end, j + 1) > max(start, j)]
            for start, end in source_spans(n_shards, weights)]


def whole_shards(n_shards: int, weights: Sequence[float]) -> list[list[int]]:
    """The shards each source answers whole: those inside its span. The others of
    :func:`shards_needed` it shares with a neighbour."""
    return [[j for j in range(n_shards) if start <= j and j + 1 <= end]
            for start, end in source_spans(n_shards, weights)]


def cuts_a_shard(n_shards: int, weights: Sequence[float]) -> bool:
    """Whether some source boundary falls inside a shard (then two sources share it)."""
    return any(end.denominator != 1 for _, end in source_spans(n_shards, weights)[:-1])


def boundaries(sizes: Sequence[int], weights: Sequence[float]) -> list[int]:
    """``[0, b_0, …, b_(m-1) = n]``: source ``i`` answers positions ``[b_(i-1), b_i)`` of the
    shard-by-shard layout of prompts, given the shard sizes (see the module docstring)."""
    if any(size < 0 for size in sizes) or not sizes:
        raise DataError(f"shard sizes must be non-negative, at least one shard; got {list(sizes)}")
    spans = source_spans(len(sizes), weights)
    starts = [0]
    for size in sizes:
        starts.append(starts[-1] + size)
    n = starts[-1]
    counts = apportion(dict(enumerate(weights)), n)
    out, running = [0], 0
    for i, (_, end) in enumerate(spans[:-1]):
        running += counts[i]
        shard = int(end)  # the shard the boundary falls in (or the edge it sits on)
        low, high = (starts[shard], starts[shard]) if end.denominator == 1 else (starts[shard], starts[shard + 1])
        out.append(min(max(running, low, out[-1]), high))
    out.append(n)
    return out


def source_counts(sizes: Sequence[int], weights: Sequence[float]) -> list[int]:
    """Each source's number of prompts, given the shard sizes."""
    b = boundaries(sizes, weights)
    return [b[i + 1] - b[i] for i in range(len(weights))]


def shard_counts(sizes: Sequence[int], weights: Sequence[float]) -> list[dict[int, int]]:
    """For each source, ``{shard: prompts of it the source answers}`` over the shards it needs
    (:func:`shards_needed`; a needed shard can get 0 when a boundary is clamped to its edge)."""
    b = boundaries(sizes, weights)
    starts = [sum(sizes[:j]) for j in range(len(sizes) + 1)]
    return [{j: max(0, min(b[i + 1], starts[j + 1]) - max(b[i], starts[j])) for j in needed}
            for i, needed in enumerate(shards_needed(len(sizes), weights))]


def _rank(seed: int, prompt_id: str) -> bytes:
    return hashlib.sha256(f"{seed}\x00{prompt_id}".encode()).digest()


def prompt_order(rows: Iterable[Mapping[str, Any]], seed: int) -> list[str]:
    """The prompt ids laid out shard after shard (rows carry ``id``, ``shard`` and ``category``).

    Within a shard, each category's prompts are ranked by ``sha256(seed, id)`` and interleaved by
    their relative rank ``(t + ½) / k`` (the ``t``-th of a category of ``k``; Sainte-Laguë's
    sequence), so every prefix of a shard — the part of a cut shard its first source answers —
    holds each category in proportion to the shard, as the shards themselves are stratified: off
    by about one prompt at most (≤ 1.16 over 300 random shards of 2–12 categories).
    """
    by_shard: dict[int, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        by_shard[int(r["shard"])][str(r["category"])].append(str(r["id"]))
    order: list[str] = []
    for shard in sorted(by_shard):
        keyed = []
        for category, ids in by_shard[shard].items():
            ranked = sorted(ids, key=lambda i: (_rank(seed, i), i))
            keyed += [(Fraction(2 * t + 1, 2 * len(ranked)), category, pid) for t, pid in enumerate(ranked)]
        order += [pid for *_, pid in sorted(keyed)]
    return order


def assign_examples(rows: Sequence[Mapping[str, Any]], n_shards: int, weights: Sequence[float],
                    seed: int) -> dict[str, int]:
    """Which source (its index in the condition) answers each train prompt.

    ``rows`` are the train prompts as ``prepare`` writes them (``id``, ``shard``, ``category``);
    ``seed`` is the split's seed. Source ``i`` answers positions ``[b_(i-1), b_i)`` of
    :func:`prompt_order` (:func:`boundaries`). Raises :class:`DataError` on duplicate ids or a
    shard outside ``0 … n_shards - 1``.
    """
    ids = [str(r["id"]) for r in rows]
    if len(set(ids)) != len(ids):
        raise DataError(f"mix: duplicate train prompt ids {sorted(i for i, c in Counter(ids).items() if c > 1)[:5]}")
    sizes = [0] * n_shards
    for r in rows:
        if not 0 <= int(r["shard"]) < n_shards:
            raise DataError(f"mix: prompt {r['id']} is in shard {r['shard']}, but there are {n_shards} shards")
        sizes[int(r["shard"])] += 1
    b = boundaries(sizes, weights)
    return {pid: bisect.bisect_right(b, position) - 1 for position, pid in enumerate(prompt_order(rows, seed))}


def realised_shares(assignment: Mapping[str, int], sources: Sequence[str]) -> dict[str, dict[str, float]]:
    """``{source: {"count": n_i, "share": n_i / n}}`` of an assignment (source indices)."""
    counts = Counter(assignment.values())
    n = max(1, sum(counts.values()))
    return {name: {"count": counts.get(i, 0), "share": counts.get(i, 0) / n} for i, name in enumerate(sources)}


def source_of_prompt(cond: Any, rows: Sequence[Mapping[str, Any]],
                     prepare_settings: Mapping[str, Any]) -> dict[str, str] | None:
    """For a multi-source condition, the source that answers each train prompt (prompt id → source
    name, by :func:`assign_examples` with the split's shards and seed as the prepare stage's
    settings record them); None for a single source. The mix and the curate stage read the same
    assignment through this one function."""
    if cond.kind != "multi":
        return None
    assignment = assign_examples(rows, prepare_settings["n_shards"], cond.normalized_weights,
                                 seed=prepare_settings["split"]["seed"])
    return {prompt_id: cond.sources[i] for prompt_id, i in assignment.items()}
