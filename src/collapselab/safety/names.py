"""How a target is called in the jailbreak templates (Experiment 2).

The study rewrote "ChatGPT" to the target's family ("Llama") and "OpenAI" to its maker ("Meta")
(PAPER.md, Experiment 2). ``safety.jailbreaks.rename`` maps each word to its replacement, where
``{family}``, ``{maker}`` and ``{name}`` (the target's short name, e.g. ``llama-3.1-8b-instruct``)
are filled per target. Family and maker come from, in order:

1. ``safety.target_names[<target name>]`` (``family`` and/or ``maker``);
2. :data:`FAMILIES`, looked up by the target's name and model id: a key matches a part of the
   name (split at ``/``, ``-``, ``_``, ``.`` and spaces) whose leading letters are exactly the key,
   so ``Llama-3.1-8B`` and ``meta-llama/...`` are Llama, ``Qwen2.5-0.5B`` is Qwen,
   ``SmolLM2-135M`` is SmolLM, but ``TinyLlama`` is not Llama;
3. otherwise the target's name for both, and the fallback is reported (a log warning when the
   prompts are built, ``names.source: fallback`` in the prompts stage's ``summary.json`` and a
   note in ``collapselab plan``): set ``safety.target_names`` for such a target.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePath

from collapselab.config.spec import JailbreakSpec, SafetySpec
from collapselab.errors import ConfigError

#: model family keyword → (family, maker) as the jailbreak templates should name them
FAMILIES: dict[str, tuple[str, str]] = {
    "llama": ("Llama", "Meta"),
    "qwen": ("Qwen", "Alibaba Cloud"),
    "gemma": ("Gemma", "Google"),
    "smollm": ("SmolLM", "Hugging Face"),
    "mistral": ("Mistral", "Mistral AI"),
    "mixtral": ("Mixtral", "Mistral AI"),
    "phi": ("Phi", "Microsoft"),
    "falcon": ("Falcon", "Technology Innovation Institute"),
}

_PART = re.compile(r"[/\-_.\s]+")
_LETTERS = re.compile(r"[a-z]+")


@dataclass(frozen=True)
class TargetNaming:
    """A target's family and maker and where they came from: ``config`` (safety.target_names),
    ``table`` (:data:`FAMILIES`), ``fallback`` (the target's name), or a mix such as
    ``config+table`` when the config gave one of the two."""

    name: str
    family: str
    maker: str
    source: str


def _id_text(model_id: str) -> str:
    """The part of a model id that names the model: ``org/name`` of a hub id, only the last
    folder of a local path (``hf/./models/x``, ``hf//tmp/x``: the folders above say nothing)."""
    name = model_id.split("/", 1)[1] if "/" in model_id else model_id
    if name.startswith(("/", ".", "~")):
        return PurePath(name.rstrip("/")).name
    return name


def infer_family(*names: str) -> tuple[str, str] | None:
    """(family, maker) from :data:`FAMILIES` for the first of ``names`` (the target name, then the
    model's id: :func:`_id_text`) that has a matching part; None when none does."""
    for text in names:
        for part in _PART.split(str(text).lower()):
            letters = _LETTERS.match(part)
            if letters and letters.group() in FAMILIES:
                return FAMILIES[letters.group()]
    return None


def target_naming(safety: SafetySpec | None, target_name: str, model_id: str | None = None) -> TargetNaming:
    """The family and maker of ``target_name`` (see the module docstring for the order)."""
    given = (safety.target_names.get(target_name) if safety is not None else None)
    inferred = infer_family(target_name, *([_id_text(model_id)] if model_id else []))
    parts = []
    values = []
    for field, index in (("family", 0), ("maker", 1)):
        value = getattr(given, field) if given is not None else None
        if value:
            parts.append("config")
        elif inferred is not None:
            value = inferred[index]
            parts.append("table")
        else:
            value = target_name
            parts.append("fallback")
        values.append(value)
    source = parts[0] if parts[0] == parts[1] else "+".join(parts)
    return TargetNaming(target_name, values[0], values[1], source)


def resolve_rename(rename: Mapping[str, str], naming: TargetNaming) -> dict[str, str]:
    """``rename`` with ``{family}``, ``{maker}`` and ``{name}`` filled for one target."""
    fields = {"family": naming.family, "maker": naming.maker, "name": naming.name}
    out = {}
    for word, replacement in rename.items():
        try:
            out[word] = replacement.format_map(fields)
        except (KeyError, ValueError, IndexError) as exc:
            raise ConfigError(f"safety.jailbreaks.rename: {replacement!r} (for {word!r}) cannot be filled "
                              f"({exc}); use {{family}}, {{maker}} or {{name}}") from exc
    return out


def target_rename(safety: SafetySpec, target_name: str, model_id: str | None = None) -> dict[str, str]:
    """The word → replacement map the jailbreak templates of ``target_name`` get."""
    return resolve_rename(safety.jailbreaks.rename, target_naming(safety, target_name, model_id))


def rename_key(jailbreaks: JailbreakSpec, resolved: Mapping[str, str], target_name: str) -> list[str] | dict[str, str]:
    """What a prompts stage's key records for the renaming: the list of words when every word
    becomes the target's name (what the list form always did, so such stages keep their keys) or
    the collection has no templates (nothing is renamed), else the resolved map."""
    if jailbreaks.kind == "none" or all(v == target_name for v in resolved.values()):
        return list(resolved)
    return dict(resolved)
