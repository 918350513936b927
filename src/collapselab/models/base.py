"""The one small protocol every model backend implements.

A backend turns a :class:`~collapselab.config.spec.ModelSpec` into a :class:`LanguageModel`:
``generate`` samples answers (chat models get their chat template with the system prompt, base
models the raw prompt), ``continuation_logprobs`` teacher-forces a given answer and returns the
log-probability of each of its tokens (prompt tokens excluded); ``choice_logprobs`` reads the
next-token distribution at the first answer position (no sampling) and returns the log-probability
that the answer starts with each of a few short choices ("A"/"B", "1".."5") — the read-out of the
pairwise and rating judges.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from collapselab.config.spec import DecodingSpec, ModelSpec
from collapselab.registry import Registry


@dataclass(frozen=True)
class ChatPrompt:
    """One prompt: a stable ``id`` (seeds the sampling), the user turn and an optional system turn.

    ``assistant`` is an answer already given, shown as an assistant turn after the user turn: a
    classifier judge that reads a whole conversation in its own chat format (Llama Guard) is asked
    about it with the generation prompt after that turn. None (the usual case): the answer is what
    the model is asked to write."""

    id: str
    user: str
    system: str | None = None
    assistant: str | None = None
    #: text the answer is known to start with, appended after the rendered prompt (the assistant
    #: header, or the raw text): the next token read is the one after it. Llama Guard 3 writes
    #: "\n\n" before its verdict, so its judge reads the verdict after that prefix.
    answer_prefix: str = ""


@dataclass(frozen=True)
class Generation:
    """A sampled answer and its token counts."""

    text: str
    prompt_tokens: int
    new_tokens: int
    finish_reason: str  # "stop" (end-of-sequence) or "length" (hit max_new_tokens)


Progress = Callable[[int], None]  # called with the number of prompts just finished


@runtime_checkable
class LanguageModel(Protocol):
    spec: ModelSpec

    @property
    def is_chat(self) -> bool: ...

    @property
    def max_context(self) -> int: ...

    def generate(
        self,
        prompts: Sequence[ChatPrompt],
        decoding: DecodingSpec,
        *,
        progress: Progress | None = None,
    ) -> list[Generation]: ...

    def continuation_logprobs(
        self,
        prompts: Sequence[ChatPrompt],
        continuations: Sequence[str],
        *,
        progress: Progress | None = None,
    ) -> list[list[float]]: ...

    def choice_logprobs(
        self,
        prompts: Sequence[ChatPrompt],
        choices: Sequence[str],
        *,
        progress: Progress | None = None,
    ) -> list[dict[str, float]]: ...

    def close(self) -> None: ...


def prompt_seed(base_seed: int, prompt_id: str) -> int:
    """A 63-bit seed for one prompt, independent of batching and order, so a resumed or
    re-batched generation samples exactly the same text for the same prompt."""
    digest = hashlib.sha256(f"{base_seed}\x00{prompt_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


#: Backends: ``name -> factory(spec: ModelSpec) -> LanguageModel``; each also exposes
#: ``check(spec)`` through :data:`BACKEND_CHECKS`, which validates a spec without loading weights.
BACKENDS: Registry = Registry("model backend")
BACKENDS.add("hf", "collapselab.models.hf:load_hf_model",
             description="transformers: packaged names, hub ids, local folders, GGUF files; optional LoRA adapter")
BACKENDS.add("mock", "collapselab.models.mock:MockModel", description="scripted backend for fast tests")
BACKENDS.add("openai", "collapselab.models.openai_http:load_openai_model",
             description="any OpenAI-compatible HTTP endpoint (vLLM, llama.cpp, hosted APIs)")
BACKENDS.add("vllm", "collapselab.models.vllm_backend:load_vllm_model",
             description="vLLM on a CUDA GPU: the hf backend's names, tokens and scores; optional LoRA adapter")
BACKENDS.add("llamacpp", "collapselab.models.llamacpp_backend:load_llamacpp_model",
             description="llama.cpp on the CPU: packaged models' GGUF files or any .gguf file, kept quantized")
BACKENDS.add("toy", "collapselab.models.toy:ToyModel",
             description="categorical unigram model refitted by counting: the collapse loop's ground truth")

BACKEND_CHECKS: Registry = Registry("model backend")
BACKEND_CHECKS.add("hf", "collapselab.models.hf:check_hf_spec")
BACKEND_CHECKS.add("mock", "collapselab.models.mock:check_mock_spec")
BACKEND_CHECKS.add("openai", "collapselab.models.openai_http:check_openai_spec")
BACKEND_CHECKS.add("vllm", "collapselab.models.vllm_backend:check_vllm_spec")
BACKEND_CHECKS.add("llamacpp", "collapselab.models.llamacpp_backend:check_llamacpp_spec")
BACKEND_CHECKS.add("toy", "collapselab.models.toy:check_toy_spec")


def load_model(spec: ModelSpec) -> LanguageModel:
    """Build the model a spec names (imports the backend's SDK only now)."""
    return BACKENDS.get(spec.backend)(spec)


def check_model(spec: ModelSpec) -> None:
    """Raise :class:`~collapselab.errors.ModelError` if a spec cannot name a usable model."""
    BACKEND_CHECKS.get(spec.backend)(spec)
