"""The base of every config model: frozen, no unknown keys (shared by :mod:`collapselab.config.spec`
and :mod:`collapselab.config.hypotheses`, which the spec imports)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Spec(BaseModel):
    """Base: frozen, no unknown keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)
