"""The training objective (``lora.loss``): ``completion`` puts the loss on the answer and its
end-of-turn tokens, ``full`` on every token of the formatted chat text, as the study's TRL
``SFTTrainer`` on a text field did. Checked against the tokenizer's own rendering of the chat and
against a loss computed by hand with plain torch cross-entropy."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from collapselab.config.spec import LoraSpec  # noqa: E402
from collapselab.errors import TrainingError  # noqa: E402
from collapselab.models.base import ChatPrompt  # noqa: E402
from collapselab.models.formatting import chat_messages, encode_example  # noqa: E402
from collapselab.train.lora import (  # noqa: E402
    IGNORE_INDEX,
    TrainExample,
    collate,
    encode_examples,
    loss_token_count,
    split_validation,
    train_lora,
)

SYSTEM = "You are a helpful assistant."
ANSWERS = ("The quick brown fox jumps over the lazy dog.", "It is a truth universally acknowledged.", "Yes.")


def make_examples(n: int) -> list[TrainExample]:
    # prompts of different lengths, so that a micro-batch is padded
    return [TrainExample(ChatPrompt(f"p{i}", "Continue the passage number " + "and so on " * (i % 3) + f"{i}.",
                                    SYSTEM), ANSWERS[i % 3], f"e{i}") for i in range(n)]


def tokenizer_of(model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


def encoded_pair(tokenizer):
    short = encode_example(tokenizer, ChatPrompt("a", "Hi.", SYSTEM), ANSWERS[0], chat=True)
    long = encode_example(tokenizer, ChatPrompt("b", "Continue the passage, with care and kindness.", SYSTEM),
                          ANSWERS[2], chat=True)
    return short, long


def test_full_labels_are_the_input_ids_except_padding(tiny_model_dir):
    tokenizer = tokenizer_of(tiny_model_dir)
    batch = encoded_pair(tokenizer)
    input_ids, attention_mask, labels = collate(batch, pad_id=tokenizer.eos_token_id, loss="full")
    for row, e in enumerate(batch):
        n_all = len(e.input_ids)
        assert labels[row, :n_all].tolist() == e.input_ids == input_ids[row, :n_all].tolist()
        assert (labels[row, n_all:] == IGNORE_INDEX).all() and (attention_mask[row, n_all:] == 0).all()
    # padding is masked by position: the pad id here is the end-of-turn id, which is still a label
    end = tokenizer.eos_token_id
    assert int((labels == end).sum()) == sum(e.input_ids.count(end) for e in batch)
    assert (labels != IGNORE_INDEX).sum() == attention_mask.sum()


def test_completion_labels_mask_exactly_the_prompt(tiny_model_dir):
    tokenizer = tokenizer_of(tiny_model_dir)
    batch = encoded_pair(tokenizer)
    input_ids, _, labels = collate(batch, pad_id=0, loss="completion")
    for row, e in enumerate(batch):
        n_prompt, n_all = len(e.prompt_ids), len(e.input_ids)
        assert (labels[row, :n_prompt] == IGNORE_INDEX).all() and (labels[row, n_all:] == IGNORE_INDEX).all()
        assert labels[row, n_prompt:n_all].tolist() == e.answer_ids == input_ids[row, n_prompt:n_all].tolist()
    assert collate(batch, pad_id=0)[2].equal(labels)  # completion is the default


def test_full_text_is_the_rendered_chat_up_to_its_end_of_turn_token(tiny_model_dir):
    """``full`` trains on the tokens of the chat text SFTTrainer would see: the template's rendering
    of system + user + assistant, up to and including the answer's end-of-turn token (the study's
    text ended with ``<|eot_id|>``; ChatML adds a newline after ``<|im_end|>`` that generation never
    produces)."""
    tokenizer = tokenizer_of(tiny_model_dir)
    prompt = ChatPrompt("a", "Continue the passage number 1.", SYSTEM)
    encoded = encode_example(tokenizer, prompt, ANSWERS[0], chat=True)
    text = tokenizer.apply_chat_template(chat_messages(prompt) + [{"role": "assistant", "content": ANSWERS[0]}],
                                         tokenize=False)
    text = text[: text.rindex(tokenizer.eos_token) + len(tokenizer.eos_token)]
    assert SYSTEM in text and prompt.user in text
    assert encoded.input_ids == tokenizer(text, add_special_tokens=False)["input_ids"]


def test_loss_token_counts(tiny_model_dir):
    short, long = encoded_pair(tokenizer_of(tiny_model_dir))
    for e in (short, long):
        assert loss_token_count(e, "completion") == len(e.answer_ids)
        assert loss_token_count(e, "full") == len(e.input_ids) - 1
        for loss in ("completion", "full"):  # the count the trainer divides by = the labels the loss sees
            labels = collate([e], 0, loss)[2]
            assert loss_token_count(e, loss) == int((labels[:, 1:] != IGNORE_INDEX).sum())
    with pytest.raises(TrainingError, match="unknown loss 'answer'"):
        collate([short], 0, "answer")


def test_full_keeps_a_prompt_longer_than_max_length_cut_like_sfttrainer(tiny_model_dir):
    tokenizer = tokenizer_of(tiny_model_dir)
    long_prompt = TrainExample(ChatPrompt("long", "Continue the passage. " * 20, SYSTEM), "Yes.", "long")
    examples = make_examples(3) + [long_prompt]
    n_prompt = len(encode_example(tokenizer, long_prompt.prompt, "", chat=True).prompt_ids)
    max_length = n_prompt - 5
    kept, truncated, dropped = encode_examples(tokenizer, examples, True, max_length, "completion")
    assert dropped == 1 and "long" not in {x.id for x, _ in kept}
    kept, truncated, dropped = encode_examples(tokenizer, examples, True, max_length, "full")
    assert dropped == 0
    cut = dict((x.id, e) for x, e in kept)["long"]
    full_ids = encode_example(tokenizer, long_prompt.prompt, long_prompt.response, chat=True).input_ids
    assert cut.input_ids == full_ids[:max_length] and cut.answer_ids == [] and cut.n_content == 0
    assert truncated == sum(len(encode_example(tokenizer, x.prompt, x.response, True).input_ids) > max_length
                            for x in examples)


def hand_loss(model, tokenizer, examples: list[TrainExample], loss: str) -> float:
    """Mean next-token NLL over the loss tokens of ``examples``, one unpadded example at a time,
    with plain ``torch.nn.functional.cross_entropy``: ``full`` every token after the first,
    ``completion`` the tokens after the prompt."""
    total, count = 0.0, 0
    with torch.no_grad():
        for example in examples:
            encoded = encode_example(tokenizer, example.prompt, example.response, chat=True)
            ids = torch.tensor([encoded.input_ids])
            logits = model(input_ids=ids).logits[0].double()
            first = 1 if loss == "full" else len(encoded.prompt_ids)
            targets = ids[0, first:]
            nll = torch.nn.functional.cross_entropy(logits[first - 1 : -1], targets, reduction="sum")
            total, count = total + float(nll), count + len(targets)
    return total / count


@pytest.mark.parametrize("loss", ["completion", "full"])
def test_first_step_train_and_validation_losses_equal_a_hand_computation(tiny_model_dir, tmp_path, loss):
    from transformers import AutoModelForCausalLM

    examples = make_examples(10)
    # 8 training examples in micro-batches of 3 (padded), all accumulated into the one optimizer step;
    # the learning rate is so small that the adapter after that step still computes the base model
    lora = LoraSpec(batch_size=3, grad_accum=3, epochs=1, val_fraction=0.2, eval_every=1, patience=0,
                    learning_rate=1e-12, scheduler="constant", warmup_ratio=0.0, dropout=0.0,
                    dtype="float32", loss=loss)
    result = train_lora(tiny_model_dir, examples, lora, seed=0, out_dir=tmp_path)
    curve = [json.loads(line) for line in (tmp_path / "loss_curve.jsonl").read_text().splitlines()]
    assert result.total_steps == 1 and len(curve) == 1 and result.loss == loss
    assert json.loads((tmp_path / "train_summary.json").read_text())["loss"] == loss

    train, val = split_validation(examples, lora.val_fraction, seed=0)
    assert sorted(result.val_ids) == sorted(e.id for e in val) and len(train) == 8
    tokenizer = tokenizer_of(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    assert curve[0]["train_loss"] == pytest.approx(hand_loss(model, tokenizer, train, loss), rel=1e-6)
    assert curve[0]["val_loss"] == pytest.approx(hand_loss(model, tokenizer, val, loss), rel=1e-6)
    # the two objectives are different numbers: the prompt's tokens are in one and not the other
    other = "completion" if loss == "full" else "full"
    assert not math.isclose(curve[0]["train_loss"], hand_loss(model, tokenizer, train, other), rel_tol=1e-4)


def test_full_objective_trains(tiny_model_dir, tmp_path):
    lora = LoraSpec(batch_size=4, epochs=4, val_fraction=0.25, eval_every=1, patience=0, learning_rate=5e-3,
                    scheduler="constant", warmup_ratio=0.0, loss="full")
    train_lora(tiny_model_dir, make_examples(12), lora, seed=0, out_dir=tmp_path)
    curve = [json.loads(line) for line in (tmp_path / "loss_curve.jsonl").read_text().splitlines()]
    assert sum(r["train_loss"] for r in curve[-3:]) / 3 < curve[0]["train_loss"] - 0.3
