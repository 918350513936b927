"""Experiment 3's judge prompts and the counterbalanced comparison plan.

Two editable templates (``preference.pair_template`` / ``preference.rating_template``; the packaged
``templates/pairwise.txt`` and ``templates/rating.txt`` when unset) are ``str.format`` strings:

* ``pairwise`` — fields ``{instruction}``, ``{text_a}``, ``{text_b}``; ends by asking for a single
  letter, A or B, because the judge's verdict is read from its *next-token* distribution
  (p_A = P("A") / (P("A") + P("B"))).
* ``rating`` — fields ``{instruction}``, ``{text}``; asks for a single digit from 1 to 5 (the
  expected rating is read from the five digit tokens).

A literal brace in a template is written doubled (``{{`` / ``}}``), as in any ``str.format`` string.
Only the template is parsed as a format string: the texts filled in may contain any braces.

Counterbalancing (PAPER.md, Experiment 3): every unordered pair of distinct sources is shown in
both orders once per item, so with k sources an item gets k(k − 1) comparisons and every source
sits in the first slot exactly as often as in the second — a judge's position bias then cancels in
S(source) instead of favouring whichever source happened to be listed first.
"""

from __future__ import annotations

import importlib.resources
import itertools
import re
import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from collapselab.errors import ConfigError, DataError

TemplateKind = Literal["pairwise", "rating"]

#: the fields each template must use (and the only ones it may use)
FIELDS: dict[str, frozenset[str]] = {
    "pairwise": frozenset({"instruction", "text_a", "text_b"}),
    "rating": frozenset({"instruction", "text"}),
}
#: the config field that names each template file (quoted in error messages)
SPEC_FIELD = {"pairwise": "preference.pair_template", "rating": "preference.rating_template"}
# characters that build comparison ids: a source name holding one would make ids ambiguous
_ID_SEPARATORS = ("|", ">")


@dataclass(frozen=True)
class Comparison:
    """One judge prompt: on item ``item_id``, the text of ``first`` is shown as "Text A" and the
    text of ``second`` as "Text B". ``id`` is ``"{item_id}|{first}>{second}"``."""

    id: str
    item_id: str
    first: str
    second: str


def _packaged(kind: str) -> tuple[str, str]:
    """(text, display name) of a packaged template."""
    resource = importlib.resources.files("collapselab.preference").joinpath("templates", f"{kind}.txt")
    return resource.read_text(encoding="utf-8"), f"packaged template {kind}.txt"


def _line_of(text: str, field: str) -> int:
    """1-based line of the first ``{field`` in ``text`` (0 when not found, e.g. ``{}``)."""
    match = re.search(r"(?<!\{)\{" + re.escape(field), text)
    return text.count("\n", 0, match.start()) + 1 if match else 0


def template_fields(text: str, where: str) -> list[str]:
    """The replacement-field names of a ``str.format`` template, in order (``{}`` gives "").

    Raises :class:`ConfigError` naming ``where`` when the template is not a valid format string
    (e.g. a single ``}``)."""
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise ConfigError(f"{where}: not a valid template ({exc}); "
                          "write a literal brace as {{ or }}") from exc
    return [name for _, name, _, _ in parsed if name is not None]


def validate_template(text: str, kind: TemplateKind, where: str) -> None:
    """Check that ``text`` uses every field ``kind`` needs and no other; :class:`ConfigError`
    naming ``where`` (the file) and the line of an unknown field otherwise."""
    needed = FIELDS[kind]
    used = template_fields(text, where)
    for name in used:
        if name not in needed:
            line = _line_of(text, name)
            at = f", line {line}" if line else ""
            raise ConfigError(
                f"{where}{at}: unknown field {{{name}}} in the {kind} template; allowed fields: "
                f"{', '.join('{' + f + '}' for f in sorted(needed))} (write a literal brace as {{{{ or }}}})")
    missing = sorted(needed - set(used))
    if missing:
        raise ConfigError(f"{where}: the {kind} template lacks the field(s) "
                          f"{', '.join('{' + f + '}' for f in missing)}")


def load_template(path: str | None, kind: TemplateKind) -> str:
    """The text of the ``kind`` template: the file at ``path``, or the packaged one when None.

    The template is validated (:func:`validate_template`) so a typo in an edited template fails
    when the experiment is built, not after hours of judging."""
    if kind not in FIELDS:
        raise ConfigError(f"unknown template kind {kind!r}; use 'pairwise' or 'rating'")
    if path is None:
        text, where = _packaged(kind)
    else:
        file = Path(path).expanduser()
        where = f"{SPEC_FIELD[kind]} = {path}"
        try:
            text = file.read_text(encoding="utf-8")
        except FileNotFoundError as exc:
            raise ConfigError(f"{where}: file not found") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{where}: cannot read the template ({exc})") from exc
    validate_template(text, kind, where)
    return text


def render(template: str, **fields: str) -> str:
    """Fill ``template`` with ``fields`` (extra fields are ignored). A field the template uses but
    that is not given raises :class:`ConfigError`."""
    try:
        return template.format(**fields)
    except KeyError as exc:
        raise ConfigError(f"template field {{{exc.args[0]}}} was not given; given: {sorted(fields)}") from exc
    except (IndexError, ValueError) as exc:
        raise ConfigError(f"template cannot be filled: {exc}") from exc


def comparison_plan(item_ids: Sequence[str], sources: Sequence[str]) -> list[Comparison]:
    """Every unordered pair of distinct ``sources`` in both orders, once per item.

    Order (stable): items as given; within an item, pairs (i, j), i < j, in the order of
    ``sources``, each as (s_i, s_j) followed by (s_j, s_i). Length: len(item_ids) · k(k − 1)."""
    if len(set(sources)) != len(sources):
        dup = sorted(s for s, n in Counter(sources).items() if n > 1)
        raise ConfigError(f"preference.sources: duplicate source(s) {dup}")
    if len(sources) < 2:
        raise ConfigError("preference.sources: pairwise judging needs at least 2 sources, "
                          f"got {list(sources)}")
    bad = [s for s in sources if any(c in s for c in _ID_SEPARATORS)]
    if bad:
        raise ConfigError(f"preference.sources: source name(s) {bad} contain '|' or '>', "
                          "which comparison ids use as separators")
    if len(set(item_ids)) != len(item_ids):
        dup = sorted(i for i, n in Counter(item_ids).items() if n > 1)[:5]
        raise DataError(f"preference items: duplicate item id(s) {dup}")
    plan = []
    for item in item_ids:
        for a, b in itertools.combinations(sources, 2):
            for first, second in ((a, b), (b, a)):
                plan.append(Comparison(f"{item}|{first}>{second}", item, first, second))
    return plan
