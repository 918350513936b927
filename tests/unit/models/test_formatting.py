"""The end-of-turn token cache of models/formatting.py (fake tokenizers: no torch, no files)."""

from __future__ import annotations

import gc

from collapselab.models import formatting
from collapselab.models.base import ChatPrompt
from collapselab.models.formatting import encode_example

PROMPT = ChatPrompt("p", "Hi", None)


class FakeTokenizer:
    """A chat tokenizer whose template ends an assistant turn with ``end`` then a newline; each
    character is one token, ``vocab`` says which id (default: its code point)."""

    def __init__(self, end: str = "$", eos_token_id: int = 36, vocab: dict[str, int] | None = None) -> None:
        self.end = end
        self.eos_token_id = eos_token_id
        self.vocab = vocab or {}
        self.chat_template = f"<turn>...{end}\n"

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=False):
        text = "".join(f"<{m['role']}>{m['content']}{self.end}\n" for m in messages)
        text += "<assistant>" if add_generation_prompt else ""
        return self.encode(text) if tokenize else text

    def encode(self, text: str) -> list[int]:
        return [self.vocab.get(ch, ord(ch)) for ch in text]

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        return {"input_ids": self.encode(text)}


class UnhashableTokenizer(FakeTokenizer):
    __hash__ = None  # type: ignore[assignment]


def test_end_ids_stop_at_eos():
    # "$\n": "$" (36) is the EOS, the newline after it is dropped
    assert formatting._chat_end_ids(FakeTokenizer(), PROMPT) == [36]


def test_cache_entry_goes_with_its_tokenizer():
    tok = FakeTokenizer()
    formatting._chat_end_ids(tok, PROMPT)
    assert tok in formatting._END_CACHE
    before = len(formatting._END_CACHE)
    del tok
    gc.collect()
    assert len(formatting._END_CACHE) == before - 1


def test_a_tokenizer_reusing_a_freed_ones_id_gets_its_own_end_ids():
    """Same template and EOS, other vocabulary: the old ``id(tokenizer)`` key handed the second
    tokenizer the first one's ids whenever CPython reused the address."""
    first = FakeTokenizer(vocab={"$": 36})
    assert formatting._chat_end_ids(first, PROMPT) == [36]
    old_id = id(first)
    del first  # freed at once by reference counting (a gc.collect() here would take the slot)
    vocab, tried = {"$": 99}, []
    for _ in range(1000):  # CPython reuses the freed slot at once; keep the misses alive
        second = FakeTokenizer(vocab=vocab)  # same template and EOS id (36) as the first
        if id(second) == old_id:
            break
        tried.append(second)
    # "$" is token 99 here, so the EOS never shows: the whole tail "$\n" is the end
    assert formatting._chat_end_ids(second, PROMPT) == [99, 10]
    assert encode_example(second, PROMPT, "ok", chat=True).answer_ids[-2:] == [99, 10]


def test_a_changed_template_is_rendered_again():
    tok = FakeTokenizer()
    assert formatting._chat_end_ids(tok, PROMPT) == [36]
    tok.end, tok.chat_template, tok.eos_token_id = "#", "<turn>...#\n", 35
    assert formatting._chat_end_ids(tok, PROMPT) == [35]


def test_a_tokenizer_that_cannot_be_cached_still_works():
    tok = UnhashableTokenizer()
    assert formatting._chat_end_ids(tok, PROMPT) == [36]
    assert formatting._chat_end_ids(tok, PROMPT) == [36]


def test_the_cached_list_is_not_shared_with_callers():
    tok = FakeTokenizer()
    formatting._chat_end_ids(tok, PROMPT).append(0)
    assert formatting._chat_end_ids(tok, PROMPT) == [36]
