"""``mock/<script>``: a scripted backend with no weights, for fast tests of everything around models.

Scripts:

* ``mock/echo`` — answers with the prompt's last sentence, words reversed;
* ``mock/random`` — answers with words drawn (seeded per prompt, like real sampling) from the prompt;
* ``mock/empty`` — answers nothing (exercises empty-answer handling);
* ``mock/fixed:TEXT`` — always answers TEXT.

``continuation_logprobs`` gives each continuation token (whitespace word) log(1/(1+len(word))), a
deterministic value that tests can recompute by hand.

``choice_logprobs``: ``mock/fixed:TEXT`` puts all the mass on the choices TEXT starts with (log 1
shared equally; the others get −inf) or, when it starts with none, on the last choice it contains
as a word ("#thescore: 4" answers "4"); otherwise, and for the other scripts, give each choice a
weight drawn from a hash
of (prompt text, choice) and return log(weight / sum) — deterministic, prompt-dependent, and order
sensitive (the prompt text holds the order), like a real judge.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from collections.abc import Sequence

from collapselab.config.spec import DecodingSpec, ModelSpec
from collapselab.errors import ModelError
from collapselab.models.base import ChatPrompt, Generation, Progress, prompt_seed

SCRIPTS = ("echo", "random", "empty", "fixed")


def check_mock_spec(spec: ModelSpec) -> None:
    script = spec.name.split(":", 1)[0]
    if script not in SCRIPTS:
        raise ModelError(f"unknown mock script {spec.name!r} (known: {', '.join(SCRIPTS)})")


class MockModel:
    """A scripted :class:`~collapselab.models.base.LanguageModel`."""

    def __init__(self, spec: ModelSpec) -> None:
        check_mock_spec(spec)
        self.spec = spec
        self.script, _, self.arg = spec.name.partition(":")
        self.calls = 0

    @property
    def is_chat(self) -> bool:
        return self.spec.chat != "never"

    @property
    def max_context(self) -> int:
        return self.spec.max_context or 4096

    def _answer(self, prompt: ChatPrompt, decoding: DecodingSpec) -> str:
        words = prompt.user.split()
        if self.script == "echo":
            last = prompt.user.replace("\n", " ").split(".")[-2 if prompt.user.rstrip().endswith(".") else -1]
            return " ".join(reversed(last.split()))
        if self.script == "random":
            rng = random.Random(prompt_seed(decoding.seed, prompt.id))
            n = min(decoding.max_new_tokens, rng.randint(3, 12))
            return " ".join(rng.choice(words or ["word"]) for _ in range(n))
        if self.script == "fixed":
            return self.arg
        return ""

    def generate(self, prompts: Sequence[ChatPrompt], decoding: DecodingSpec, *,
                 progress: Progress | None = None) -> list[Generation]:
        from collapselab.models.beams import refuse_beams

        refuse_beams(self.spec, decoding)
        self.calls += 1
        out = []
        for p in prompts:
            n_prompt = len(p.user.split())
            if n_prompt + decoding.max_new_tokens > self.max_context:
                raise ModelError(f"prompt {p.id}: {n_prompt} tokens + {decoding.max_new_tokens} new exceed "
                                 f"the context of {self.max_context}")
            words = self._answer(p, decoding).split()[: decoding.max_new_tokens]
            reason = "length" if len(words) >= decoding.max_new_tokens else "stop"
            out.append(Generation(" ".join(words), n_prompt, len(words), reason))
        if progress:
            progress(len(prompts))
        return out

    def continuation_logprobs(self, prompts: Sequence[ChatPrompt], continuations: Sequence[str], *,
                              progress: Progress | None = None) -> list[list[float]]:
        out = [[math.log(1.0 / (1 + len(w))) for w in c.split()] for c in continuations]
        if progress:
            progress(len(prompts))
        return out

    def choice_logprobs(self, prompts: Sequence[ChatPrompt], choices: Sequence[str], *,
                        progress: Progress | None = None) -> list[dict[str, float]]:
        if not choices or len(set(choices)) != len(choices):
            raise ModelError(f"choices must be distinct and non-empty: {list(choices)}")
        out = []
        for p in prompts:
            hits = self._fixed_hits(choices) if self.script == "fixed" else []
            if hits:
                out.append({c: (-math.log(len(hits)) if c in hits else -math.inf) for c in choices})
                continue
            weights = {c: 0.05 + int.from_bytes(hashlib.sha256(f"{p.user}\x00{c}".encode()).digest()[:4], "little")
                       / 2**32 for c in choices}
            total = sum(weights.values())
            out.append({c: math.log(w / total) for c, w in weights.items()})
        if progress:
            progress(len(prompts))
        return out

    def _fixed_hits(self, choices: Sequence[str]) -> list[str]:
        """The choices ``fixed:TEXT`` answers: those TEXT starts with, else the last choice TEXT
        contains as a word ("#thescore: 4" reads as "4"), else none (hash weights then)."""
        text = self.arg.strip()
        hits = [c for c in choices if text.startswith(c)]
        if hits:
            return hits
        words = re.findall(r"[A-Za-z0-9]+", text)
        return next(([w] for w in reversed(words) if w in choices), [])

    def close(self) -> None:
        pass
