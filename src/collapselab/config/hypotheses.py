"""Preregistered hypotheses (issue 14): what a run sets out to show, declared in its config before
it is run, and read back by the report's findings section (:mod:`collapselab.report.findings`).

A hypothesis compares two arms of the run on the same items (test prompts, harmful prompts or
preference items), so every test is paired::

    hypotheses:
      alpha: 0.05
      correction: holm            # across every endpoint of every hypothesis
      tests:
        - id: H1
          claim: Fine-tuning on single-source synthetic data lowers output diversity.
          experiment: collapse
          a: single:smollm2        # effect = a − b, per item
          b: human
          endpoints:
            - {metric: lexical_diversity, direction: less}

An arm is a condition label with an optional generation, ``single:smollm2@g2`` (default
generation 0). ``a_base`` and ``b_base`` make the effect a difference of changes,
``(a − a_base) − (b − b_base)`` (e.g. "the multi-source loop loses less than the single-source
loop"). Nothing here enters a stage's key: hypotheses are read by the report only.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, model_validator

from collapselab.config.base import Spec

#: the quantities a safety or preference hypothesis can name
SAFETY_ENDPOINTS = ("harm", "quality", "refused")
PREFERENCE_ENDPOINTS = ("SPB", "PSB")
_ARM = re.compile(r"^(?P<label>.+?)(?:@g(?P<generation>\d+))?$")


def parse_arm(text: str) -> tuple[str, int]:
    """``single:a@g2`` → (``single:a``, 2); ``human`` → (``human``, 0)."""
    m = _ARM.match(text.strip())
    if m is None or not m.group("label"):
        raise ValueError(f"arm {text!r}: expected a condition label, optionally followed by @gN")
    return m.group("label").strip(), int(m.group("generation") or 0)


class EndpointSpec(Spec):
    """One preregistered endpoint: a metric (collapse: a metric's base or exact name with per-item
    values; safety: ``harm``, ``quality`` or ``refused``; preference: ``SPB`` or ``PSB``) and the
    expected sign of ``a − b``."""

    metric: str
    direction: Literal["greater", "less"]


class HypothesisSpec(Spec):
    """One hypothesis: a claim in plain words, the experiment it is tested in, the two arms and its
    endpoints. ``prompt_kind`` restricts a safety hypothesis to ``plain`` or ``jailbreak`` prompts."""

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    claim: str
    experiment: Literal["collapse", "safety", "preference"]
    a: str
    b: str
    a_base: str | None = None
    b_base: str | None = None
    endpoints: tuple[EndpointSpec, ...] = Field(min_length=1)
    prompt_kind: Literal["plain", "jailbreak"] | None = None
    #: what the study found, in words, for the findings table (optional)
    study: str | None = None

    @model_validator(mode="after")
    def _check(self) -> HypothesisSpec:
        for arm in (self.a, self.b, self.a_base, self.b_base):
            if arm is not None:
                parse_arm(arm)
        if (self.a_base is None) != (self.b_base is None):
            raise ValueError(f"hypothesis {self.id}: give both a_base and b_base (a difference of changes) "
                             f"or neither")
        allowed = {"safety": SAFETY_ENDPOINTS, "preference": PREFERENCE_ENDPOINTS}.get(self.experiment)
        for e in self.endpoints:
            if allowed is not None and e.metric not in allowed:
                raise ValueError(f"hypothesis {self.id}: a {self.experiment} endpoint is one of "
                                 f"{', '.join(allowed)}, not {e.metric!r}")
        if self.prompt_kind is not None and self.experiment != "safety":
            raise ValueError(f"hypothesis {self.id}: prompt_kind applies to safety hypotheses only")
        return self

    def arms(self) -> list[tuple[str, int]]:
        """Every (condition label, generation) the hypothesis reads."""
        return [parse_arm(x) for x in (self.a, self.b, self.a_base, self.b_base) if x is not None]


class HypothesesSpec(Spec):
    """The preregistered hypotheses and how they are decided: two-sided paired tests at ``alpha``
    after ``correction`` across all endpoints; a verdict is *supported* (significant, expected
    sign), *contradicted* (significant, opposite sign) or *inconclusive*, the latter with the
    minimum detectable effect at ``power``."""

    alpha: float = Field(0.05, gt=0.0, lt=1.0)
    power: float = Field(0.8, gt=0.0, lt=1.0)
    correction: Literal["holm", "bonferroni"] = "holm"
    bootstrap: int = Field(2000, ge=100)
    confidence: float = Field(0.95, gt=0.5, lt=1.0)
    seed: int = 0
    tests: tuple[HypothesisSpec, ...] = ()

    @model_validator(mode="after")
    def _unique(self) -> HypothesesSpec:
        ids = [h.id for h in self.tests]
        if len(set(ids)) != len(ids):
            raise ValueError(f"hypotheses.tests: an id is used twice: {ids}")
        return self

    @property
    def n_endpoints(self) -> int:
        return sum(len(h.endpoints) for h in self.tests)
