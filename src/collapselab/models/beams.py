"""Beam search is a decoding factor (issue 13) that only the hf backend implements here."""

from __future__ import annotations

from collapselab.config.spec import DecodingSpec, ModelSpec
from collapselab.errors import ModelError


def refuse_beams(spec: ModelSpec, decoding: DecodingSpec) -> None:
    """Raise a clear error when a backend without beam search is asked for it."""
    if decoding.num_beams > 1:
        raise ModelError(f"model {spec.id!r}: decoding.num_beams {decoding.num_beams} asks for beam search, which "
                         f"the {spec.backend!r} backend does not offer here; use an 'hf/' model or num_beams 1")
