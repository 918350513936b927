"""One linear LoRA fine-tuning recipe: setup → train → save (in the style of torchtune's recipes).

:func:`train_lora` reads top to bottom: seed; split and tokenize the examples; load the model and
wrap it with LoRA; a plain loop of optimizer steps with periodic validation and early stopping;
save the best adapter.
There is no trainer class to subclass; a different recipe is a different function.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import os
import random
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collapselab.config.spec import LoraSpec
from collapselab.errors import TrainingError
from collapselab.models.base import ChatPrompt
from collapselab.models.formatting import EncodedExample, encode_example, uses_chat_template
from collapselab.store.atomic import write_jsonl, write_text
from collapselab.train.distributed import Ranks, full_state, shard_model

#: Gradient-norm clipping. The study's settings are those of the Hugging Face ``Trainer``, whose
#: default ``max_grad_norm`` is 1.0; it is kept so that the early, large-gradient steps of a
#: fresh adapter behave as they did there.
MAX_GRAD_NORM = 1.0

#: Label value ignored by the loss (prompt tokens and padding), as in Hugging Face models.
IGNORE_INDEX = -100

TrainProgress = Callable[[int, int, float], None]  # (optimizer step, total steps, train loss)


@dataclass(frozen=True)
class TrainExample:
    """One training pair: a prompt, the answer the model should learn to give, and a unique id."""

    prompt: ChatPrompt
    response: str
    id: str
    # the prompt this answers: examples of one group land on the same side of the validation split
    # (with accumulated generations a prompt has one example per generation); None: its own group
    group: str | None = None


@dataclass(frozen=True)
class TrainResult:
    """What a run did; the same fields as ``train_summary.json``.

    ``n_train``/``n_val`` count the examples used after dropping; ``train_tokens`` counts the
    non-padding tokens (prompt and answer) fed through training forward passes (whatever tokens the
    loss is on); ``best_step`` and
    ``best_val_loss`` are ``None`` without a validation split (the last adapter is then saved).
    """

    n_train: int
    n_val: int
    n_truncated: int
    n_dropped: int
    total_steps: int
    steps_run: int
    stopped_early: bool
    best_step: int | None
    best_val_loss: float | None
    final_train_loss: float
    train_tokens: int
    seconds: float
    seed: int
    val_ids: list[str]
    target_modules: list[str]
    chat: bool
    loss: str = "completion"  # the objective (``lora.loss``): "completion" or "full"

    def to_dict(self) -> dict[str, Any]:
        """The summary as JSON-ready data."""
        return dataclasses.asdict(self)


def train_lora(
    model_dir: Path,
    examples: Sequence[TrainExample],
    lora: LoraSpec,
    *,
    seed: int,
    out_dir: Path,
    chat_mode: str = "auto",
    progress: TrainProgress | None = None,
    full_logits: bool = False,
    ranks: Ranks | None = None,
) -> TrainResult:
    """Fine-tune a LoRA adapter on ``examples`` and write it to ``out_dir``.

    The defaults of :class:`~collapselab.config.spec.LoraSpec` are the study's (Schaffelder &
    Gatt, "Synthetic Eggs in Many Baskets", ACL Findings 2026, arXiv 2511.01490): LoRA r 16,
    α 32, dropout 0.1 on q/k/v/o/gate/up/down projections; AdamW, lr 5e-5, cosine schedule with
    3% warmup, weight decay 0.01; at most 3 epochs with early stopping on a 5% validation split
    (evaluated every 20 optimizer steps, patience 5); bf16; max length 1,024; seed 42. Two
    defaults differ from it (``docs/deviations.md``): the loss is on the answers
    (``loss: completion``; the study's is ``full``), and the effective batch is 8 (the study's 64
    for the 8B target is ``batch_size`` × ``grad_accum``: ``configs/paper.yaml`` sets 2 × 32, which
    fits an 80 GB GPU).

    How the recipe works:

    * **Layout.** Each example is tokenized by :func:`~collapselab.models.formatting.encode_example`,
      the same function generation and scoring use, so the model is trained on exactly the layout
      it is later sampled with (chat template or raw text, per ``chat_mode``).
    * **Objective** (``lora.loss``). ``completion`` (the default): labels are the answer tokens
      plus the end-of-turn tokens; the system and user turns, the template's headers and padding
      are masked (label :data:`IGNORE_INDEX`). The prompts are the same in every condition, so a
      loss on them would train the model to reproduce the shared system prompt and the user
      prompts and dilute the signal from the answers (TRL's ``completion_only_loss`` default does
      the same for prompt–completion data). ``full``: labels are every token of the formatted
      chat text, padding alone masked — what the study did (TRL ``SFTTrainer`` on a ``text``
      field: its collator copies ``input_ids`` to ``labels`` and pads labels with -100, so every
      end-of-turn token, including the answer's last, is learned). In both modes the logits at
      position t predict the label at t + 1 (the first token is never a target), as in Hugging
      Face's causal-LM loss.
    * **Length.** Sequences longer than ``lora.max_length`` are cut to it (``n_truncated``): with
      ``completion``, the end of the answer goes (and with it the end-of-turn token), and an
      example whose prompt alone fills ``max_length`` has nothing to learn from and is dropped
      (``n_dropped``); with ``full``, the text is cut wherever ``max_length`` falls, as SFTTrainer's
      truncation does, and only a text of fewer than two tokens is dropped.
    * **Validation split.** ``ceil(val_fraction · n)`` examples (at least one, at most ``n - 1``;
      none when ``val_fraction`` is 0) chosen by a seeded hash of their ids, so the split does not
      depend on the order of ``examples``.
    * **Precision.** LoRA weights (the only trainable ones) and the frozen base weights are
      float32; with ``dtype: bfloat16`` the forward pass runs under CPU/GPU autocast, so matrix
      products are bf16 while the residual stream, norms and the loss stay float32. (Checkpoints
      are usually bf16, so the upcast loses nothing; it costs 4 bytes per base parameter.)
    * **Optimisation.** AdamW with ``weight_decay`` on every trainable tensor (LoRA adds no biases or
      norms, so there is nothing to exempt); gradients clipped to norm :data:`MAX_GRAD_NORM`;
      ``transformers.get_scheduler`` with ``ceil(warmup_ratio · total_steps)`` warmup steps
      (``constant`` means constant after warmup). ``steps_per_epoch = ceil(ceil(n_train /
      batch_size) / grad_accum)`` and ``total_steps = ceil(epochs · steps_per_epoch)``, so
      fractional epochs stop part-way through the last one. The training order is reshuffled each
      epoch from a seeded generator.
    * **Loss.** Mean negative log-likelihood over all label tokens of an optimizer step (all its
      gradient-accumulation micro-batches together), so every label token weighs the same (the
      token-weighted mean Hugging Face's ``Trainer`` computes across accumulation steps).
    * **Validation and early stopping.** The token-weighted mean validation loss, on the same
      tokens as the training loss (``lora.loss``), is computed every
      ``eval_every`` optimizer steps and after the last step; after ``patience`` evaluations in a
      row without a new best, training stops (``patience`` 0: never). The adapter with the best
      validation loss is the one saved.
    * **Logits.** The LM head (and the log-softmax) runs only at the positions whose next token is
      a label: the model is called with transformers' ``logits_to_keep`` set to that ``(B, T)``
      boolean mask, so the model's own head and any logit post-processing it does (Gemma 2's
      soft-capping, say) run on those rows alone. With the completion loss the prompts (about
      half the tokens of a continuation example) and the padding need no logits; on SmolLM2-135M
      the head is about a fifth of the forward pass (a 49,152-token vocabulary on a 576-wide model).
      The loss is the same sum over the same tokens; only the floating-point rounding of the head's
      matrix product may differ, as it does between batch sizes. A model whose forward does not
      take such a mask (checked once, on three tokens, against its full logits) gets
      logits at every position, from which the label positions are then selected;
      ``full_logits=True`` forces that path (``bench/train.py`` and the tests compare the two).
    * **Failure.** A non-finite loss raises :class:`~collapselab.errors.TrainingError` naming the
      step, before anything is written to ``out_dir``.
    * **Device.** A CUDA GPU when available, else the CPU (the caller sets torch's thread count).
    * **Determinism.** On a CPU, the same inputs, seed, thread count and hardware give
      bit-identical adapter weights (Python, NumPy and torch global RNGs are seeded: they drive
      LoRA init and dropout).

    Writes to ``out_dir`` (each file atomically): ``adapter/`` in PEFT format
    (``adapter_config.json`` + ``adapter_model.safetensors``), ``loss_curve.jsonl`` (one object per
    optimizer step: ``step``, ``epoch``, ``train_loss``, ``lr`` and, on evaluation steps,
    ``val_loss``) and ``train_summary.json`` (the fields of :class:`TrainResult`).

    ``progress(step, total_steps, train_loss)`` is called after every optimizer step.
    ``full_logits=True`` computes logits at every position, as the recipe did before it ran the
    head on the label positions alone (see **Logits**): same loss, slower; for comparisons.

    ``lora.strategy`` lays the same recipe out on devices: ``single`` as above; ``fsdp`` runs in
    several processes started by :func:`~collapselab.train.distributed.launch_fsdp`, each calling
    this function with its ``ranks`` (the model sharded with FSDP2; see
    :mod:`collapselab.train.distributed` for how the optimisation stays the single process's);
    ``qlora`` loads the base weights quantized to 4-bit NF4 with double quantization
    (bitsandbytes, a CUDA GPU; :func:`qlora_config`), the LoRA weights and optimizer in float32.
    ``lora.activation_checkpointing`` recomputes each decoder layer's activations during the
    backward pass (transformers' gradient checkpointing, non-reentrant) instead of keeping them:
    the same losses and weights (the recompute replays the saved RNG state, so dropout masks are the
    same), about a third more compute, and activation memory of one layer plus each layer's input.
    """
    import numpy as np
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, get_scheduler

    started = time.perf_counter()
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    ranks = ranks or Ranks()
    if (lora.strategy == "fsdp") != (ranks.world > 1):
        raise TrainingError(
            "lora.strategy fsdp runs in several processes (collapselab.train.distributed.launch_fsdp); "
            f"got strategy {lora.strategy!r} in {ranks.world} process(es)")
    if lora.strategy == "qlora":
        check_qlora()

    # --- setup -----------------------------------------------------------------------------------
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)

    # data first: a problem with the examples surfaces before the (slow) model load
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    chat = uses_chat_template(tokenizer, chat_mode)
    train_examples, val_examples = split_validation(examples, lora.val_fraction, seed)
    train_set, train_truncated, train_dropped = encode_examples(
        tokenizer, train_examples, chat, lora.max_length, lora.loss
    )
    val_set, val_truncated, val_dropped = encode_examples(
        tokenizer, val_examples, chat, lora.max_length, lora.loss
    )
    if not train_set:
        nothing = "no answer token fits" if lora.loss == "completion" else "fewer than two tokens fit"
        raise TrainingError(
            f"no training examples left: {len(train_examples)} in the training split, "
            f"{train_dropped} dropped because {nothing} in max_length={lora.max_length}"
        )
    val_ids = [example.id for example, _ in val_set]

    # a GPU when there is one (paper-sized targets); bit-identical reruns are promised on CPU only
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    load: dict[str, Any] = {"dtype": torch.float32}
    if lora.strategy == "fsdp" and lora.dtype == "bfloat16":
        load["dtype"] = torch.bfloat16  # frozen weights sharded and gathered in bf16 (LoRA's stay float32)
    elif lora.strategy == "qlora":
        load = {"dtype": torch.float32, "quantization_config": qlora_config(lora), "device_map": {"": device}}
    model = AutoModelForCausalLM.from_pretrained(model_dir, use_safetensors=True, **load)
    checkpointing = {"use_reentrant": False}  # non-reentrant: no input needs requires_grad, works under FSDP
    if lora.strategy == "qlora":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=lora.activation_checkpointing,
                                                gradient_checkpointing_kwargs=checkpointing)
    elif lora.activation_checkpointing:  # the method's name since transformers 5.2x, the old one before
        enable = getattr(model, "activation_checkpointing_enable", None)
        if enable is None:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=checkpointing)
        else:
            enable(activation_checkpointing_kwargs=checkpointing)
    targets = matching_targets(model, lora.target_modules)
    model = get_peft_model(
        model,
        LoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=targets,
            task_type="CAUSAL_LM",
        ),
    )
    if lora.strategy != "qlora":  # a quantized model was placed by from_pretrained
        model.to(device)
    if lora.strategy == "fsdp":
        shard_model(model)
        if not ranks.main:  # dropout masks of its own (rank 0 keeps the single-process stream)
            torch.manual_seed(seed + 1_000_003 * ranks.rank)
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]

    micro_per_epoch = math.ceil(len(train_set) / lora.batch_size)
    steps_per_epoch = math.ceil(micro_per_epoch / lora.grad_accum)
    total_steps = math.ceil(lora.epochs * steps_per_epoch)
    optimizer = torch.optim.AdamW(
        [p for _, p in trainable], lr=lora.learning_rate, weight_decay=lora.weight_decay
    )
    # HF's plain "constant" ignores warmup; "constant_with_warmup" honours warmup_ratio like the others
    scheduler_name = "constant_with_warmup" if lora.scheduler == "constant" else lora.scheduler
    scheduler = get_scheduler(
        scheduler_name,
        optimizer,
        num_warmup_steps=math.ceil(lora.warmup_ratio * total_steps),
        num_training_steps=total_steps,
    )

    pad_id = _pad_id(tokenizer)
    use_bf16 = lora.dtype == "bfloat16"
    kept_logits = not full_logits and takes_logit_mask(model)

    def nll(batch: list[EncodedExample]) -> tuple[Any, int]:
        """Summed label-token NLL (float32) and the number of label tokens of one micro-batch."""
        input_ids, attention_mask, labels = collate(batch, pad_id, lora.loss)
        input_ids, attention_mask, labels = (t.to(device) for t in (input_ids, attention_mask, labels))
        next_tokens = labels[:, 1:]
        keep = next_tokens != IGNORE_INDEX  # the logits at t predict the label at t + 1
        # only the forward runs under autocast; backward then follows the dtypes autocast chose
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            if kept_logits:  # (n label tokens, vocab): the head runs on those rows only, in row-major order
                at = torch.cat([keep, keep.new_zeros((keep.shape[0], 1))], dim=1)  # the last position predicts nothing
                logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False,
                               logits_to_keep=at).logits
            else:
                logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
                # select the label positions first: a float32 copy of the full logits would be huge
                logits = logits[:, :-1][keep]
        loss = torch.nn.functional.cross_entropy(logits.float(), next_tokens[keep], reduction="sum")
        return loss, int(keep.sum())

    def validation_loss() -> float:
        model.eval()
        total, count = 0.0, 0
        batches = [[encoded for _, encoded in val_set[first : first + lora.batch_size]]
                   for first in range(0, len(val_set), lora.batch_size)]
        mine = ranks.share(batches)
        with torch.no_grad():
            for i in range(ranks.calls(len(batches))):
                if i < len(mine):
                    loss, n = nll(mine[i])
                    total, count = total + float(loss), count + n
                else:  # nothing left here: join the other processes' weight gathers
                    nll(batches[0])
        model.train()
        total, count = ranks.sum(total, count)
        return total / count

    # --- train -----------------------------------------------------------------------------------
    curve: list[dict[str, Any]] = []
    best_val_loss: float | None = None
    best_step: int | None = None
    best_weights: dict[str, Any] | None = None
    evals_without_improvement = 0
    stopped_early = False
    train_tokens = 0
    train_loss = float("nan")
    step = 0

    model.train()
    shuffle = torch.Generator().manual_seed(seed)
    schedule = _optimizer_steps(len(train_set), lora.batch_size, lora.grad_accum, shuffle)
    for step, (epoch, micro_batches) in enumerate(itertools.islice(schedule, total_steps), start=1):
        batches = [[train_set[i][1] for i in indices] for indices in micro_batches]
        step_tokens = sum(loss_token_count(e, lora.loss) for batch in batches for e in batch)
        step_loss = 0.0
        mine = ranks.share(batches)  # all of them in one process
        for i in range(ranks.calls(len(batches))):
            # a process with one micro-batch fewer runs a zero-weighted one: all must join each gather
            batch, weight = (mine[i], ranks.world) if i < len(mine) else (batches[0], 0)
            loss_sum, _ = nll(batch)
            if weight and not torch.isfinite(loss_sum):
                raise TrainingError(
                    f"training loss became {loss_sum.item()} at optimizer step {step} of {total_steps} "
                    f"(learning rate {scheduler.get_last_lr()[0]:.3g}); nothing was saved"
                )
            # dividing by the step's token count makes the accumulated gradient that of the mean
            # over all label tokens of the step, however they fall into micro-batches (and
            # processes: FSDP averages gradients over them, which the weight world undoes)
            (loss_sum * weight / step_tokens).backward()
            if weight:
                step_loss += loss_sum.item()
                train_tokens += sum(len(e.input_ids) for e in batch)
        (step_loss,) = ranks.sum(step_loss)
        torch.nn.utils.clip_grad_norm_([p for _, p in trainable], MAX_GRAD_NORM)
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)

        train_loss = step_loss / step_tokens
        record: dict[str, Any] = {"step": step, "epoch": round(epoch, 6), "train_loss": train_loss, "lr": lr}
        if val_set and (step % lora.eval_every == 0 or step == total_steps):
            val_loss = validation_loss()
            if not math.isfinite(val_loss):
                raise TrainingError(
                    f"validation loss became {val_loss} at optimizer step {step} of {total_steps}; "
                    "nothing was saved"
                )
            record["val_loss"] = val_loss
            if best_val_loss is None or val_loss < best_val_loss:
                best_val_loss, best_step, evals_without_improvement = val_loss, step, 0
                best_weights = {name: p.detach().clone() for name, p in trainable}
            else:
                evals_without_improvement += 1
                stopped_early = lora.patience > 0 and evals_without_improvement >= lora.patience
        curve.append(record)
        if progress is not None:
            progress(step, total_steps, train_loss)
        if stopped_early:
            break

    # --- save ------------------------------------------------------------------------------------
    if best_weights is not None:
        with torch.no_grad():
            for name, p in trainable:
                p.copy_(best_weights[name])

    # sharded weights are gathered whole by every process; rank 0 writes
    whole = full_state(trainable) if ranks.world > 1 else None
    (train_tokens,) = (int(t) for t in ranks.sum(train_tokens))
    result = TrainResult(
        n_train=len(train_set),
        n_val=len(val_set),
        n_truncated=train_truncated + val_truncated,
        n_dropped=train_dropped + val_dropped,
        total_steps=total_steps,
        steps_run=step,
        stopped_early=stopped_early,
        best_step=best_step,
        best_val_loss=best_val_loss,
        final_train_loss=train_loss,
        train_tokens=train_tokens,
        seconds=round(time.perf_counter() - started, 3),
        seed=seed,
        val_ids=val_ids,
        target_modules=list(targets),
        chat=chat,
        loss=lora.loss,
    )
    if ranks.main:
        out_dir.mkdir(parents=True, exist_ok=True)
        staging = out_dir / f".adapter.tmp-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)  # left over from a crashed run of this process id
        model.save_pretrained(staging, safe_serialization=True, **({"state_dict": whole} if whole else {}))
        _sort_target_modules(staging / "adapter_config.json")
        if (out_dir / "adapter").exists():
            shutil.rmtree(out_dir / "adapter")
        os.replace(staging, out_dir / "adapter")
        write_jsonl(out_dir / "loss_curve.jsonl", curve)
        result = dataclasses.replace(result, seconds=round(time.perf_counter() - started, 3))  # the save included
        write_text(out_dir / "train_summary.json", json.dumps(result.to_dict(), indent=2) + "\n")
    ranks.barrier()
    return result


def check_qlora() -> None:
    """Refuse ``lora.strategy: qlora`` where it cannot run (raises :class:`TrainingError`):
    bitsandbytes must be installed and a CUDA GPU present (its 4-bit layers are CUDA kernels;
    collapselab does not use the experimental CPU builds)."""
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is None:
        raise TrainingError("lora.strategy qlora quantizes the base model to 4 bits with bitsandbytes, which is "
                            "not installed: pip install 'collapselab[qlora]' on a CUDA machine")
    import torch

    if not torch.cuda.is_available():
        raise TrainingError("lora.strategy qlora needs a CUDA GPU (bitsandbytes' 4-bit layers) and this machine "
                            "has none; use lora.strategy single (or fsdp) here")


def qlora_config(lora: LoraSpec) -> Any:
    """transformers' ``BitsAndBytesConfig`` of the QLoRA recipe (Dettmers et al. 2023, "QLoRA"):
    4-bit NormalFloat weights with double quantization, matrix products in ``lora.dtype``."""
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16 if lora.dtype == "bfloat16" else torch.float32,
    )


def split_validation(
    examples: Sequence[TrainExample], val_fraction: float, seed: int
) -> tuple[list[TrainExample], list[TrainExample]]:
    """Split into (train, validation), both in input order.

    The validation share is ``ceil(val_fraction · n)`` (the rounding of ``datasets``'
    ``train_test_split``), at least one and at most ``n - 1`` examples; none when
    ``val_fraction`` is 0 or there is a single example. Examples of one ``group`` (one prompt's
    answers from several generations) stay together: groups are ranked by ``sha256(seed, id)`` of
    their smallest id and taken whole, lowest first, until the share is reached (never all of
    them), so no prompt is in both training and validation. When every example is its own group
    this is the plain split by ``sha256(seed, id)``; it depends on the ids and the seed only.
    """
    ids = [example.id for example in examples]
    if len(set(ids)) != len(ids):
        duplicates = sorted(i for i, count in Counter(ids).items() if count > 1)[:5]
        raise TrainingError(f"training example ids must be unique; repeated: {duplicates}")
    n = len(examples)
    n_val = min(n - 1, math.ceil(val_fraction * n)) if val_fraction > 0 and n >= 2 else 0
    groups: dict[str, list[str]] = {}
    for example in examples:
        group = getattr(example, "group", None)
        groups.setdefault(group if group is not None else example.id, []).append(example.id)
    ranked = sorted(groups.values(), key=lambda members: hashlib.sha256(f"{seed}\x00{min(members)}".encode()).digest())
    val_ids: set[str] = set()
    for members in ranked:
        if len(val_ids) >= n_val:
            break
        if len(val_ids) + len(members) < n:  # something must be left to train on
            val_ids.update(members)
    return (
        [e for e in examples if e.id not in val_ids],
        [e for e in examples if e.id in val_ids],
    )


#: The objectives ``lora.loss`` can name (see :func:`train_lora`).
LOSSES = ("completion", "full")


def _check_loss(loss: str) -> None:
    if loss not in LOSSES:
        raise TrainingError(f"unknown loss {loss!r}: use one of {list(LOSSES)}")


def encode_examples(
    tokenizer: Any, examples: Sequence[TrainExample], chat: bool, max_length: int, loss: str = "completion"
) -> tuple[list[tuple[TrainExample, EncodedExample]], int, int]:
    """Tokenize examples, cutting each to ``max_length`` tokens.

    Returns the kept ``(example, encoding)`` pairs, the number that were cut, and the number
    dropped because nothing would be left to learn from. With ``loss="completion"`` a cut removes
    the end of the answer, and an example is dropped when its prompt alone is ``max_length``
    tokens or longer or its answer is empty and the model has no end token. With ``loss="full"``
    the text is cut at ``max_length`` wherever that falls (inside the prompt if need be: SFTTrainer
    truncates the tokenized text the same way), and only a text of fewer than two tokens (nothing
    to predict) is dropped.
    """
    _check_loss(loss)
    kept: list[tuple[TrainExample, EncodedExample]] = []
    truncated = dropped = 0
    for example in examples:
        encoded = encode_example(tokenizer, example.prompt, example.response, chat)
        if loss == "full":
            useless = min(len(encoded.input_ids), max_length) < 2
        else:
            useless = len(encoded.prompt_ids) >= max_length or not encoded.answer_ids
        if useless:
            dropped += 1
            continue
        if len(encoded.input_ids) > max_length:
            truncated += 1
            prompt_ids = encoded.prompt_ids[:max_length]
            room = max_length - len(prompt_ids)
            encoded = EncodedExample(prompt_ids, encoded.answer_ids[:room], min(encoded.n_content, room))
        kept.append((example, encoded))
    return kept, truncated, dropped


def loss_token_count(example: EncodedExample, loss: str = "completion") -> int:
    """How many tokens of ``example`` the loss is on: the positions t ≥ 1 whose label is not
    :data:`IGNORE_INDEX` in :func:`collate` (position 0 has no preceding logits). ``completion``:
    the answer's tokens; ``full``: every token but the first."""
    _check_loss(loss)
    if loss == "full":
        return max(len(example.input_ids) - 1, 0)
    return len(example.answer_ids) - (0 if example.prompt_ids or not example.answer_ids else 1)


def collate(batch: Sequence[EncodedExample], pad_id: int, loss: str = "completion") -> tuple[Any, Any, Any]:
    """Right-pad a micro-batch: ``(input_ids, attention_mask, labels)`` as ``(B, T)`` long tensors.

    ``labels`` equal ``input_ids`` where the loss is taken and are ``-100`` elsewhere: on padding
    always, and with ``loss="completion"`` also on the prompt (system and user turns, template
    headers). Padding is masked by position, never by token id, so an end-of-turn token that
    doubles as the pad token is still learned. The loss shifts them: logits at t predict labels at t + 1.
    """
    import torch

    _check_loss(loss)
    width = max(len(e.input_ids) for e in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    for row, e in enumerate(batch):
        n_prompt, n_all = len(e.prompt_ids), len(e.input_ids)
        input_ids[row, :n_all] = torch.tensor(e.input_ids)
        attention_mask[row, :n_all] = 1
        first = 0 if loss == "full" else n_prompt
        labels[row, first:n_all] = input_ids[row, first:n_all]
    return input_ids, attention_mask, labels


def takes_logit_mask(model: Any) -> bool:
    """Whether ``model(..., logits_to_keep=mask)`` with a ``(B, T)`` boolean ``mask`` returns the
    logits of the masked positions alone, as ``(mask.sum(), vocab)`` equal to those rows of its full
    logits (transformers' ``slice_logits_to_keep``, used by most causal LMs' forward since v5).

    Checked on the tokens 0, 1, 2 in evaluation mode without gradients (no dropout, so no random
    number is drawn and seeding is untouched); any error, another shape or other values: False.
    A model without a separate output layer (``get_output_embeddings()`` is None) or whose forward
    has no ``logits_to_keep`` argument is not tried.
    """
    import inspect

    import torch

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if base.get_output_embeddings() is None or "logits_to_keep" not in inspect.signature(base.forward).parameters:
        return False
    device = next(model.parameters()).device
    ids = torch.arange(3, device=device)[None]  # three different tokens: each position's logits differ
    mask = torch.tensor([[True, False, True]], device=device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            full = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).logits
            kept = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False,
                         logits_to_keep=mask).logits
    except (TypeError, ValueError, IndexError, RuntimeError):
        return False
    finally:
        model.train(was_training)
    return (tuple(kept.shape) == (2, full.shape[-1])
            and bool(torch.allclose(kept.float(), full[mask].float(), rtol=1e-4, atol=1e-5)))


def matching_targets(model: Any, wanted: Sequence[str]) -> list[str]:
    """The entries of ``wanted`` that name linear layers of ``model`` (by last name component;
    GPT-2-style ``Conv1D`` layers count as linear, as they do for PEFT).

    Raises :class:`TrainingError` when none match, listing the model's linear layer names, so a
    spec written for one architecture does not silently train nothing on another.
    """
    import torch
    from transformers.pytorch_utils import Conv1D

    linear = {
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear | Conv1D)
    }
    found = [t for t in wanted if t in linear]
    if not found:
        raise TrainingError(
            f"none of the LoRA target modules {list(wanted)} is a linear layer of this model; "
            f"its linear layers are: {sorted(linear)}"
        )
    return found


def _optimizer_steps(
    n: int, batch_size: int, grad_accum: int, generator: Any
) -> Iterator[tuple[float, list[list[int]]]]:
    """Endless ``(epoch reached, micro-batches of example indices)`` per optimizer step.

    Each epoch is a fresh permutation drawn from ``generator``; its micro-batches are grouped
    ``grad_accum`` at a time, the last group of an epoch possibly smaller (no step spans two epochs).
    """
    import torch

    for epoch in itertools.count():
        order = torch.randperm(n, generator=generator).tolist()
        micro = [order[i : i + batch_size] for i in range(0, n, batch_size)]
        for first in range(0, len(micro), grad_accum):
            group = micro[first : first + grad_accum]
            yield epoch + (first + len(group)) / len(micro), group


def _pad_id(tokenizer: Any) -> int:
    # the pad id only fills masked positions, so any valid id works when a tokenizer has none
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0


def _sort_target_modules(config_path: Path) -> None:
    """peft keeps ``target_modules`` as a set and writes it in hash order, which changes with
    PYTHONHASHSEED: sort it so the same training writes byte-identical adapter folders."""
    config = json.loads(config_path.read_text())
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
        write_text(config_path, json.dumps(config, indent=2, sort_keys=True) + "\n")
