"""The judge registry: every judge by name with its template, its read-out and its score range.

A :class:`Judge` says how a verdict is obtained:

* ``parse``  — the judge model *generates* text from its template, and a parser turns the text into
  a 1–5 score (:func:`~collapselab.judges.parse.parse_harm`, ...); unparsed outputs are re-asked
  (:func:`~collapselab.judges.run.run_judge`). ``read(text) -> ParsedScore``.
* ``choice`` — no sampling: the next-token probabilities of a few ``choices`` ("A", "B") are read
  at the first answer position and renormalised over them. ``read(logprobs) -> float``.
* ``rating`` — the same read-out over the rating tokens "1".."5", as an expected value.
  ``read(logprobs) -> float``.
* ``rule``   — no model at all (the refusal detector). ``read(text) -> bool``.

Each judge lives in its own small module that builds its :class:`Judge` and adds it to
:data:`JUDGES`; :mod:`collapselab.judges` imports those modules, so adding a judge is one module
(plus its import there) and one test. The modules import nothing heavy, so ``collapselab ls
judges`` never imports torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from collapselab.judges.templates import TemplateSpec, read_template, render
from collapselab.registry import Registry

ReadOut = Literal["parse", "choice", "rating", "rule"]
READ_OUTS: tuple[str, ...] = ("parse", "choice", "rating", "rule")


@dataclass(frozen=True)
class Judge:
    """One registered judge.

    ``template_spec`` is the prompt template it fills (None for a ``rule`` judge, which reads no
    prompt); ``read`` turns one judge output into a verdict (see the module docstring for its
    signature per ``readout``); ``choices`` are the tokens a ``choice`` / ``rating`` read-out looks
    at; ``scale`` the (low, high) range of its scores; ``reminder`` the line appended when a
    ``parse`` judge is re-asked.
    """

    name: str
    description: str
    readout: ReadOut
    read: Callable[..., Any]
    scale: tuple[float, float]
    template_spec: TemplateSpec | None = None
    choices: tuple[str, ...] = ()
    reminder: str | None = None

    def __post_init__(self) -> None:
        if self.readout not in READ_OUTS:
            raise ValueError(f"judge {self.name!r}: read-out must be one of {READ_OUTS}, "
                             f"got {self.readout!r}")
        if (self.template_spec is None) != (self.readout == "rule"):
            raise ValueError(f"judge {self.name!r}: a {self.readout} judge "
                             f"{'takes no' if self.readout == 'rule' else 'needs a'} template")
        if self.readout in ("choice", "rating") and not self.choices:
            raise ValueError(f"judge {self.name!r}: a {self.readout} read-out needs its choice tokens")

    @property
    def fields(self) -> tuple[str, ...]:
        """The fields its template fills (empty for a ``rule`` judge)."""
        return self.template_spec.fields if self.template_spec else ()

    def template(self, path: str | None = None) -> str:
        """Its validated template: the user's file at ``path``, or the packaged one when None."""
        if self.template_spec is None:
            raise ValueError(f"judge {self.name!r} reads no prompt, so it has no template")
        return read_template(self.template_spec, path)

    def render(self, template: str, **fields: str) -> str:
        """One prompt: ``template`` (from :meth:`template`) filled with the texts, verbatim."""
        return render(template, **fields)


#: Judges: ``name -> Judge``; ``collapselab ls judges`` lists them.
JUDGES: Registry[Judge] = Registry("judge")


def register_judge(judge: Judge) -> Judge:
    """Add ``judge`` to :data:`JUDGES` under its name (the listing shows its description, read-out
    and template fields); returns it, so a module can write ``HARM = register_judge(Judge(...))``."""
    low, high = judge.scale
    JUDGES.add(judge.name, judge, description=judge.description, readout=judge.readout,
               fields=", ".join("{" + f + "}" for f in judge.fields), scale=f"{low:g}–{high:g}")
    return judge

