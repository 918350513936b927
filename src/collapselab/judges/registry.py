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

Safety judges also say which ``role`` they can fill (``harm`` / ``quality``; None for the
Experiment 3 judges), how their prompt is laid out (``layout``: a ``template`` filled with the
texts, or a ``conversation`` — the request as the user turn and the answer as the assistant turn,
rendered by the judge model's *own* chat template, as Llama Guard expects), whether a template is
given to the model as ``raw`` text even when it has a chat template (classifiers fine-tuned on a
fixed prompt string, e.g. HarmBench's), and for a ``choice`` read-out the ``positive`` choice whose
renormalised probability is the score (``unsafe``, ``Yes``). ``threshold`` is the default score at
or above which a verdict counts as harmful (a 1–5 judge uses ``safety.harmful_threshold``; a
calibrated threshold replaces it when the config asks for one).

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
Layout = Literal["template", "conversation"]
#: read-outs that read next-token probabilities (no sampling: a verdict for every item)
PROBABILITY_READ_OUTS = ("choice", "rating")


@dataclass(frozen=True)
class Judge:
    """One registered judge.

    ``template_spec`` is the prompt template it fills (None for a ``rule`` judge, which reads no
    prompt); ``read`` turns one judge output into a verdict (see the module docstring for its
    signature per ``readout``); ``choices`` are the tokens a ``choice`` / ``rating`` read-out looks
    at; ``scale`` the (low, high) range of its scores; ``reminder`` the line appended when a
    ``parse`` judge is re-asked; ``role``, ``layout``, ``raw``, ``positive`` and ``threshold`` as
    in the module docstring; ``hub_id`` the model it was made for (shown by ``ls judges``; None
    for the generic judges, which any instruction-tuned model can fill).
    """

    name: str
    description: str
    readout: ReadOut
    read: Callable[..., Any]
    scale: tuple[float, float]
    template_spec: TemplateSpec | None = None
    choices: tuple[str, ...] = ()
    reminder: str | None = None
    role: str | None = None
    layout: Layout = "template"
    raw: bool = False
    positive: str | None = None
    threshold: float | None = None
    hub_id: str | None = None
    answer_prefix: str = ""  # what the judge model writes before its verdict (Llama Guard 3: "\n\n")

    def __post_init__(self) -> None:
        if self.readout not in READ_OUTS:
            raise ValueError(f"judge {self.name!r}: read-out must be one of {READ_OUTS}, "
                             f"got {self.readout!r}")
        takes_template = self.readout != "rule" and self.layout == "template"
        if (self.template_spec is not None) != takes_template:
            raise ValueError(f"judge {self.name!r}: a {self.readout} judge with a {self.layout} layout "
                             f"{'needs a' if takes_template else 'takes no'} template")
        if self.readout in PROBABILITY_READ_OUTS and not self.choices:
            raise ValueError(f"judge {self.name!r}: a {self.readout} read-out needs its choice tokens")
        if self.positive is not None and self.positive not in self.choices:
            raise ValueError(f"judge {self.name!r}: positive choice {self.positive!r} is not one of {self.choices}")

    @property
    def reads_probabilities(self) -> bool:
        """Whether the verdict is read from next-token probabilities (never fails to parse)."""
        return self.readout in PROBABILITY_READ_OUTS

    @property
    def fields(self) -> tuple[str, ...]:
        """The fields its template fills (empty for a ``rule`` judge)."""
        return self.template_spec.fields if self.template_spec else ()

    def template(self, path: str | None = None) -> str:
        """Its validated template: the user's file at ``path``, or the packaged one when None."""
        if self.template_spec is None:
            what = ("reads the conversation in its model's own chat format" if self.layout == "conversation"
                    else "reads no prompt")
            raise ValueError(f"judge {self.name!r} {what}, so it has no template")
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
               fields=", ".join("{" + f + "}" for f in judge.fields)
               or ("conversation" if judge.layout == "conversation" else ""),
               scale=f"{low:g}–{high:g}", role=judge.role or "", model=judge.hub_id or "any")
    return judge

