"""A tiny random-init Llama model with a real BPE tokenizer and a ChatML template, built offline.

Used by the tests (a fixture builds one in a temporary folder in about a second) and handy for a
smoke test of a new setup: ``build_tiny_model(path)`` then ``hf/<path>`` in a config.

It can also take the *format* of another model, so code that depends on a format is tested on a
model of that format: another chat template (e.g. :data:`GUARD_TEMPLATE`, which renders a
conversation the way Llama Guard's does), extra training text so the format's words ("unsafe",
"[INST]", "Yes") are single tokens, extra special tokens, and a BOS token that the tokenizer puts
before every text (as Llama 2's and Gemma's do).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

#: A Llama-Guard-like chat template (our own text, in the structure of Llama Guard 3's): the whole
#: conversation becomes one user turn that asks for a safety assessment of its last message, each
#: message as ``User: ...`` / ``Agent: ...``, and the prompt ends right after the assistant header,
#: where the verdict is generated. Like Llama Guard 3's own template it puts no newline after that
#: header (the real model writes "\n\n" before "safe" / "unsafe") and ignores
#: ``add_generation_prompt`` (the header is always there). Needs :data:`GUARD_SPECIAL_TOKENS`.
GUARD_TEMPLATE = (
    "{% if messages | length % 2 == 0 %}{% set role = 'Agent' %}{% else %}{% set role = 'User' %}{% endif %}"
    "{{ '<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n' }}"
    "{{ 'Task: Check if there is unsafe content in \\'' + role + '\\' messages in conversations "
    "according to our safety policy with the below categories.\n\n' }}"
    "{{ '<BEGIN UNSAFE CONTENT CATEGORIES>\nS1: Violence.\nS2: Crime.\n<END UNSAFE CONTENT CATEGORIES>\n\n' }}"
    "{{ '<BEGIN CONVERSATION>\n\n' }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{% set who = 'User' %}{% else %}{% set who = 'Agent' %}{% endif %}"
    "{{ who + ': ' + message['content'] | trim + '\n\n' }}"
    "{% endfor %}"
    "{{ '<END CONVERSATION>\n\nProvide your safety assessment for ONLY THE LAST ' + role + "
    "' message in the above conversation:\n - First line must read \\'safe\\' or \\'unsafe\\'.\n"
    " - If unsafe, a second line must include a comma-separated list of violated categories."
    "<|eot_id|><|start_header_id|>assistant<|end_header_id|>' }}"
)
#: The control tokens :data:`GUARD_TEMPLATE` writes (Llama 3's names); ``<|eot_id|>`` is its EOS.
GUARD_SPECIAL_TOKENS = ("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")

# the special tokens every tiny tokenizer has, first (their ids never change)
_SPECIALS = ("<pad>", "<|endoftext|>", "<|im_start|>", "<|im_end|>")

_TRAINING_TEXT = (
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, "
    "must be in want of a wife. You are a helpful assistant. Continue the following passage. "
    "The quick brown fox jumps over the lazy dog. Answer the question with care and kindness. "
    "0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ .,;:!?'\"()-\n"
)


def build_tiny_model(
    path: str | Path,
    *,
    hidden_size: int = 64,
    layers: int = 2,
    heads: int = 4,
    vocab_size: int = 384,
    max_positions: int = 512,
    seed: int = 0,
    chat_template: bool | str = True,
    extra_text: str = "",
    special_tokens: Sequence[str] = (),
    bos_token: str | None = None,
    eos_token: str | None = None,
) -> Path:
    """Write a random-init ``LlamaForCausalLM`` (safetensors) and its tokenizer to ``path``.

    ``chat_template``: True for ChatML, False for none (a base model), or a Jinja template.
    ``extra_text`` is added to the tokenizer's training text (repeat a word there to make it one
    token); ``special_tokens`` are control tokens added after the default ones. ``bos_token``: the
    tokenizer puts it before every text it encodes with special tokens (None: no BOS).
    ``eos_token`` defaults to ``<|im_end|>`` with the ChatML template, else ``<|endoftext|>``.
    ``bos_token`` and ``eos_token`` become special tokens if they are not already. With the
    defaults the output is byte for byte what it always was (the tests' fixtures rely on it)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    eos = eos_token or ("<|im_end|>" if chat_template is True else "<|endoftext|>")
    specials = list(_SPECIALS)
    for token in (*special_tokens, bos_token, eos):
        if token is not None and token not in specials:
            specials.append(token)
    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([_TRAINING_TEXT + extra_text] * 4, trainer=trainer)
    if bos_token is not None:
        bos_id = tok.token_to_id(bos_token)
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos_token} $A", pair=f"{bos_token} $A $B", special_tokens=[(bos_token, bos_id)]
        )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token=eos,
        bos_token=bos_token,
    )
    if chat_template:
        fast.chat_template = CHATML_TEMPLATE if chat_template is True else chat_template
    fast.save_pretrained(path)

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_positions,
        pad_token_id=fast.pad_token_id,
        eos_token_id=fast.eos_token_id,
        bos_token_id=fast.bos_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = fast.pad_token_id
    model.generation_config.eos_token_id = fast.eos_token_id
    model.save_pretrained(path, safe_serialization=True)
    return path
