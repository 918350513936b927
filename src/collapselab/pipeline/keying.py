"""What goes into stage keys besides settings: model specs without their non-semantic fields and
fingerprints of local files (so editing a data file re-runs the stages that read it)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from collapselab.config.spec import ModelSpec


def model_key_settings(spec: ModelSpec) -> dict[str, Any]:
    """The fields of a model spec that change what it writes (batch size does not, by design:
    sampling is seeded per prompt; nor does the name of the variable holding an API key, nor the
    number of GPUs the model is spread over)."""
    settings = spec.model_dump(mode="json", exclude={"batch_size", "api_key_env", "gpus"})
    if settings.get("base_url") is None:  # only HTTP backends have one: local models keep their keys
        settings.pop("base_url", None)
    return settings


#: How the openai backend reads a server's echoed token offsets when it scores text: 2 since it
#: recognises a BOS token's text counted in them (vLLM on Gemma, Llama 3), which had cost every
#: scored continuation its last token. In the key of every stage that scores through an openai/
#: model, so scores written before the fix are recomputed (other backends' keys are unchanged).
OPENAI_ECHO_OFFSETS = 2


def scorer_key_settings(spec: ModelSpec) -> dict[str, Any]:
    """:func:`model_key_settings` of a model that scores text (``continuation_logprobs``), with the
    openai backend's :data:`OPENAI_ECHO_OFFSETS`."""
    settings = model_key_settings(spec)
    if spec.backend == "openai":
        settings["echo_offsets"] = OPENAI_ECHO_OFFSETS
    return settings


def path_fingerprint(path_text: str | None) -> str:
    """A fingerprint of a local file or folder's content (empty when there is none), so that a
    stage reading it re-runs when the data is edited."""
    if not path_text:
        return ""
    path = Path(path_text).expanduser()
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for p in files:
        if not p.exists():
            continue
        digest.update(str(p.relative_to(path) if path.is_dir() else p.name).encode())
        with open(p, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]
