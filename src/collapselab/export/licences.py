"""Licences of what an export redistributes: the human corpus, each source model's outputs, the
base models of the adapters — as far as collapselab knows them, and "unknown" otherwise.

Only the packaged models (:data:`collapselab.models.packaged.PACKAGED`, whose registry records a
licence) and the built-in Austen corpus are known; a hub model, a local folder, a user's corpus
file or an API model is "unknown" and named as such, for the publisher to fill in.
"""

from __future__ import annotations

import re
from pathlib import Path

UNKNOWN = "unknown"

#: the Hub's licence identifiers for the licence texts collapselab knows
HUB_LICENCE_IDS = {"Apache-2.0": "apache-2.0", "MIT": "mit", "Gemma Terms of Use": "gemma"}

#: the Hub repositories of the packaged models (the originals of the GGUF files they are
#: dequantized from); kept here, next to the only reader, rather than in the packaged registry
PACKAGED_HUB_IDS = {
    "smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct",
    "gemma3-270m": "google/gemma-3-270m",
    "qwen2.5-coder-1.5b-instruct": "Qwen/Qwen2.5-Coder-1.5B-Instruct",
}

#: built-in corpora with a known licence
CORPUS_LICENCES = {"austen": "public domain (Jane Austen's novels; text from Debian's r-cran-janeaustenr)"}

_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")


def model_licence(model) -> str:
    """The licence of a model's weights (and so of what it writes, by its terms): the packaged
    registry's entry, "n/a (...)" for collapselab's mock and toy models, else "unknown"."""
    from collapselab.models.packaged import PACKAGED

    if model.backend in ("mock", "toy"):
        return f"n/a ({model.backend} model, part of collapselab)"
    if model.name in PACKAGED:
        return PACKAGED.info(model.name).get("license") or UNKNOWN
    return UNKNOWN


def corpus_licence(corpus) -> str:
    """The human corpus's licence: known for the built-in corpora, else "unknown" (a local file or
    a hub dataset: see its own terms)."""
    return CORPUS_LICENCES.get(corpus.kind, UNKNOWN)


def hub_licence_id(licence: str) -> str | None:
    """The Hub's identifier for a licence text ("other" for public domain, "unknown" for unknown;
    None for "n/a": nothing to license)."""
    if licence.startswith("n/a"):
        return None
    if licence.startswith("public domain"):
        return "other"
    return HUB_LICENCE_IDS.get(licence, UNKNOWN)


def hub_base_model(model) -> str | None:
    """The Hub repository of a model's weights when there is one: a packaged model's original, or
    a ``hf/ORG/NAME`` id that is not a local path; None otherwise (a local folder, a GGUF file,
    a mock or toy model, an API model)."""
    if model.backend not in ("hf", "vllm", "llamacpp"):
        return None
    if model.name in PACKAGED_HUB_IDS:
        return PACKAGED_HUB_IDS[model.name]
    name = model.name
    if _HUB_ID.fullmatch(name) and not Path(name).expanduser().exists():
        return name
    return None
