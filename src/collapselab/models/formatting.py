"""How a prompt and an answer become tokens — shared by generation, scoring and training, so a
model is trained on exactly the text layout it is later sampled and scored with.

Chat models (a tokenizer with a chat template, unless the spec says ``chat: never``) get
system + user turns and the assistant turn; base models get the raw user text and the answer
appended after it (the system prompt is dropped: a base model has no place for it).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from collapselab.errors import ModelError
from collapselab.models.base import ChatPrompt


def uses_chat_template(tokenizer: Any, mode: str = "auto") -> bool:
    """Whether prompts are rendered with the tokenizer's chat template (``mode``: auto/always/never)."""
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if mode == "always" and not has_template:
        raise ModelError("chat: always was set but the tokenizer has no chat template")
    return has_template if mode == "auto" else mode == "always"


def chat_messages(prompt: ChatPrompt) -> list[dict[str, str]]:
    """The system turn (when the prompt has one), the user turn and, for a conversation to be
    classified, the assistant turn (:attr:`ChatPrompt.assistant`), as chat messages."""
    messages = []
    if prompt.system:
        messages.append({"role": "system", "content": prompt.system})
    messages.append({"role": "user", "content": prompt.user})
    if prompt.assistant is not None:
        messages.append({"role": "assistant", "content": prompt.assistant})
    return messages


def _as_ids(encoded: Any) -> list[int]:
    # apply_chat_template(tokenize=True) returns a list in some versions and a BatchEncoding in others
    if hasattr(encoded, "keys") and "input_ids" in encoded:
        encoded = encoded["input_ids"]
    return list(encoded)


def render_prompt_ids(tokenizer: Any, prompt: ChatPrompt, chat: bool) -> list[int]:
    """Token ids of everything before the answer (ending with the assistant header for chat
    models), then the tokens of :attr:`ChatPrompt.answer_prefix` when it has one."""
    if chat:
        messages = _conversation_messages(tokenizer, prompt) if prompt.assistant is not None else None
        try:
            ids = tokenizer.apply_chat_template(messages or chat_messages(prompt), tokenize=True,
                                                add_generation_prompt=True)
        except Exception as exc:  # some templates reject a system turn
            if prompt.system is None:
                raise ModelError(f"chat template failed: {exc}") from exc
            no_system = ChatPrompt(prompt.id, prompt.user, None, prompt.assistant)
            ids = tokenizer.apply_chat_template(chat_messages(no_system), tokenize=True, add_generation_prompt=True)
        ids = _as_ids(ids)
    else:
        if prompt.assistant is not None:  # dropping it would classify the request alone
            raise ModelError(f"prompt {prompt.id!r} has an assistant turn to classify, which only a chat "
                             "template can lay out (this model has none, or chat: never)")
        ids = list(tokenizer(prompt.user, add_special_tokens=True)["input_ids"])
    return ids + text_token_ids(tokenizer, prompt.answer_prefix) if prompt.answer_prefix else ids


def _conversation_messages(tokenizer: Any, prompt: ChatPrompt) -> list[dict[str, Any]]:
    """The messages of a conversation to classify, in the form the template reads: plain strings,
    or — for templates that read only a list of content parts, such as Llama Guard 3 1B's, which
    silently drop a string — ``[{"type": "text", "text": ...}]``. A ModelError when the rendered
    prompt shows the conversation's texts in neither form."""
    plain = chat_messages(prompt)
    texts = [m["content"] for m in plain if m["content"].strip()]

    def shows_all(messages: list[dict[str, Any]]) -> bool:
        try:
            rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception:  # noqa: BLE001 - a template that rejects this form: try the other
            return False
        return all(t in rendered for t in texts)

    if shows_all(plain):
        return plain
    parts = [{**m, "content": [{"type": "text", "text": m["content"]}]} for m in plain]
    if shows_all(parts):
        return parts
    raise ModelError(f"prompt {prompt.id!r}: the chat template leaves the conversation's texts out of the prompt "
                     "(neither as strings nor as content parts); the judge would not see the answer")


@dataclass(frozen=True)
class EncodedExample:
    """A prompt with its answer: ``answer_ids`` = the answer's content tokens then ``end_ids``
    (the end-of-turn / end-of-sequence tokens a model must learn to emit)."""

    prompt_ids: list[int]
    answer_ids: list[int]
    n_content: int  # answer_ids[:n_content] are the answer's own tokens

    @property
    def input_ids(self) -> list[int]:
        return self.prompt_ids + self.answer_ids


def encode_example(tokenizer: Any, prompt: ChatPrompt, answer: str, chat: bool) -> EncodedExample:
    """Tokenize a prompt and its answer in the layout used for generation.

    The answer is tokenized on its own (not jointly with the prompt) so its tokens are exactly the
    ones a model emits after the prompt; the end tokens come from the chat template (e.g.
    ``<|im_end|>\\n``) or are the tokenizer's EOS for base models.
    """
    prompt_ids = render_prompt_ids(tokenizer, prompt, chat)
    content_ids = list(tokenizer(answer, add_special_tokens=False)["input_ids"])
    if chat:
        end_ids = _chat_end_ids(tokenizer, prompt)
    else:
        if prompt.user and answer and not prompt.user[-1].isspace() and not answer[0].isspace():
            content_ids = list(tokenizer(" " + answer, add_special_tokens=False)["input_ids"])
        end_ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    return EncodedExample(prompt_ids, content_ids + end_ids, len(content_ids))


#: Tokenizer → ((chat template, EOS id), end ids). Keyed by the tokenizer object itself and held
#: weakly: an entry goes when its tokenizer is freed, so a later tokenizer that happens to get the
#: same ``id()`` never sees it; the stamp catches a template or EOS changed on a live tokenizer.
_END_CACHE: weakref.WeakKeyDictionary[Any, tuple[tuple[Any, Any], list[int]]] = weakref.WeakKeyDictionary()
_END_CACHE_LOCK = threading.Lock()


def _chat_end_ids(tokenizer: Any, prompt: ChatPrompt) -> list[int]:
    """The tokens a chat template puts after an assistant message (found by rendering a marker).

    Cached per tokenizer object; one that cannot be weakly referenced or hashed is not cached.
    """
    stamp = (getattr(tokenizer, "chat_template", None), tokenizer.eos_token_id)
    try:
        with _END_CACHE_LOCK:
            cached = _END_CACHE.get(tokenizer)
    except TypeError:  # not weak-referenceable, or unhashable
        cached = None
    if cached is not None and cached[0] == stamp:
        return list(cached[1])
    marker = "\u2063MARKER\u2063"
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "x"}, {"role": "assistant", "content": marker}], tokenize=False
    )
    tail = text.split(marker, 1)[1] if marker in text else ""
    # a template that appends a newline after the end token: keep only up to the end token,
    # since generation stops at it
    ids = list(tokenizer(tail, add_special_tokens=False)["input_ids"])
    eos = tokenizer.eos_token_id
    if eos is not None and eos in ids:
        ids = ids[: ids.index(eos) + 1]
    if not ids and eos is not None:
        ids = [eos]
    try:
        with _END_CACHE_LOCK:
            _END_CACHE[tokenizer] = (stamp, ids)
    except TypeError:
        pass
    return list(ids)


def choice_token_ids(
    encode: Callable[[str], Sequence[int]], choices: Sequence[str], model_id: str
) -> dict[str, list[int]]:
    """The vocabulary ids that spell each choice as one token, with and without a leading space.

    ``encode`` tokenizes a text without special tokens (for a transformers tokenizer:
    :func:`text_token_ids`), so every backend finds the same ids for the same vocabulary. A
    :class:`ModelError` naming ``model_id`` if a choice has no single-token spelling or two choices
    share a token ("A" and " A" are different tokens in most vocabularies and a model may put its
    mass on either, so both count for "A").
    """
    out: dict[str, list[int]] = {}
    seen: dict[int, str] = {}
    for choice in choices:
        ids: list[int] = []
        for variant in (choice, " " + choice):
            encoded = list(encode(variant))
            if len(encoded) == 1 and int(encoded[0]) not in ids:
                ids.append(int(encoded[0]))
        if not ids:
            raise ModelError(f"model {model_id!r}: the choice {choice!r} is not a single token "
                             "in its vocabulary (use short choices such as A/B or 1-5)")
        for i in ids:
            if i in seen:
                raise ModelError(f"model {model_id!r}: choices {seen[i]!r} and {choice!r} share token {i}")
            seen[i] = choice
        out[choice] = ids
    return out


def text_token_ids(tokenizer: Any, text: str) -> list[int]:
    """A transformers tokenizer's ids for ``text`` alone, without BOS/EOS or other special tokens."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def stop_token_ids(tokenizer: Any, chat: bool, generation_eos: int | Sequence[int] | None) -> list[int]:
    """The tokens that end an answer (shared by the hf and vllm backends): the tokenizer's EOS, the
    generation config's EOS ids and, for chat models, the template's end-of-turn token when it is a
    control token (Gemma's ``<end_of_turn>`` is not its EOS; an empty answer encodes to just the
    template's end tokens)."""
    candidates: list[Any] = [tokenizer.eos_token_id, generation_eos]
    if chat:
        end = encode_example(tokenizer, ChatPrompt("", "x"), "", chat=True).answer_ids
        if end and end[0] in getattr(tokenizer, "added_tokens_decoder", {}):
            candidates.append(end[0])
    ids: list[int] = []
    for c in candidates:
        for i in c if isinstance(c, (list, tuple)) else [c]:
            if i is not None and int(i) not in ids:
                ids.append(int(i))
    if not ids:
        raise ModelError("the tokenizer has no end-of-sequence token")
    return ids
