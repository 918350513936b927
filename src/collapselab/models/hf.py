"""The transformers backend: ``hf/<name>`` where name is a packaged model, a local folder, a GGUF
file or a hub id, optionally with a LoRA adapter on top.

Sampling is deterministic per prompt: the noise behind a prompt's tokens comes from its own
random stream, seeded by :func:`~collapselab.models.base.prompt_seed` ``(decoding.seed, prompt.id)``,
the same amount per generated token, so it never depends on which other prompts share the batch
or in which order prompts come. On CPU the model's logits are batch-invariant too (see
``_PAD_MULTIPLE``), so a prompt's text does not depend on its batch at all; elsewhere see
:meth:`HFModel.generate`.

torch, transformers and peft are imported only when a model is loaded.
"""

from __future__ import annotations

import difflib
import gc
import inspect
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from collapselab.config.spec import DecodingSpec, ModelSpec
from collapselab.errors import ModelError
from collapselab.models.base import ChatPrompt, Generation, Progress, prompt_seed
from collapselab.models.formatting import (
    choice_token_ids,
    encode_example,
    render_prompt_ids,
    stop_token_ids,
    text_token_ids,
    uses_chat_template,
)
from collapselab.models.packaged import (
    PACKAGED,
    is_prepared,
    packaged_dir,
    packaged_source,
    resolve_gguf,
    resolve_packaged,
)

if TYPE_CHECKING:
    import torch

# "org/name" as the hub spells repo ids; a name that does not exist locally and looks like this
# is taken for a hub id (users with the internet download it).
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
# Files worth downloading from a hub repo: weights as safetensors only (never pickles), configs,
# tokenizer files, chat templates.
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "*.model", "*.txt", "*.tiktoken"]
# Nucleus sampling first looks among this many most likely tokens and sorts the whole vocabulary
# only for the rare rows whose top-p mass lies beyond them: a full sort of a 49k vocabulary for a
# batch of 32 costs as much as the model's forward pass on a CPU.
_NUCLEUS_CANDIDATES = 256
# Batch invariance on CPU. A row's logits are bitwise the same in every batch if (a) each row's
# tokens sit at the same offset modulo the kernels' block width, which holds when the padded
# batch width is a multiple of _PAD_MULTIPLE (attention reduces over keys in vector blocks: 16
# suffices on AVX-512 and 8 does not; 64 leaves margin for other CPUs), and (b) every matrix
# product has at least _MIN_ROWS rows (MKL's float32 GEMM takes other code paths for 1-3 rows,
# and so does bf16 decoding for a single row). Measured with torch 2.13 on x86 AVX-512 CPUs;
# GPU kernels give no such guarantee. The cost: up to 63 padding columns per batch.
_PAD_MULTIPLE = 64
_MIN_ROWS = 4
# (c) On CPU, attention runs as plain matrix products and a softmax ("eager"): torch's fused SDPA
# kernel with 2 threads gave a row a different last bit depending on the batch size during
# decoding (one prompt in eight diverged within 64 tokens), eager never did; it costs about the
# same CPU time for these small models. Its one drawback is memory: the prefill materializes a
# batch x heads x length x length score matrix (~1 GB for 16 x 9 x 1300^2 in float32).
_CPU_ATTENTION = "eager"


# --------------------------------------------------------------------------------------------
# Naming a model
# --------------------------------------------------------------------------------------------


def _locate(name: str) -> tuple[str, str | Path]:
    """Classify a model name as ("packaged", name), ("folder", path), ("gguf", path) or ("hub", id)."""
    if name in PACKAGED:
        return "packaged", name
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"model folder {path} has no config.json (expected a transformers model folder)")
        return "folder", path
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise ModelError(f"GGUF file {path} does not exist")
        return "gguf", path
    if path.exists():
        raise ModelError(f"{path} is neither a model folder (with config.json) nor a .gguf file")
    if _HUB_ID.fullmatch(name) and not name.startswith("."):
        return "hub", name
    close = difflib.get_close_matches(name, PACKAGED.names(), n=1, cutoff=0.5)
    hint = f"; did you mean 'hf/{close[0]}'?" if close else ""
    raise ModelError(
        f"unknown model 'hf/{name}'{hint} It is not a packaged model ({', '.join(PACKAGED.names())}), "
        "an existing folder or .gguf file, or a hub id like 'org/name'"
    )


def _check_adapter(adapter: str) -> Path:
    path = Path(adapter).expanduser()
    if not path.is_dir():
        raise ModelError(f"adapter folder {path} does not exist")
    if not (path / "adapter_config.json").is_file():
        raise ModelError(f"adapter folder {path} has no adapter_config.json (expected a PEFT adapter)")
    if not (path / "adapter_model.safetensors").is_file():
        # peft would fall back to adapter_model.bin, a pickle: refuse rather than unpickle
        raise ModelError(
            f"adapter folder {path} has no adapter_model.safetensors (pickled adapters are not loaded)"
        )
    return path


def check_hf_spec(spec: ModelSpec) -> None:
    """Validate an ``hf/...`` spec without loading weights (raises :class:`ModelError`)."""
    kind, value = _locate(spec.name)
    if kind == "packaged" and not is_prepared(packaged_dir(str(value))):
        packaged_source(str(value)).require()  # names the pip command if a package is missing
    if spec.adapter is not None:
        _check_adapter(spec.adapter)


def resolve_weights(spec: ModelSpec) -> Path:
    """A local folder with the spec's weights (safetensors), config and tokenizer.

    Packaged models and GGUF files are dequantized into the cache on first use; hub ids are
    downloaded (or found in the hub cache when offline).
    """
    kind, value = _locate(spec.name)
    if kind == "packaged":
        return resolve_packaged(str(value))
    if kind == "gguf":
        return resolve_gguf(Path(value))
    if kind == "hub":
        from huggingface_hub import snapshot_download

        try:
            return Path(snapshot_download(str(value), allow_patterns=_HUB_PATTERNS))
        except Exception as exc:  # offline, unknown repo, gated repo: all user-fixable
            raise ModelError(
                f"could not get hub model {value!r} ({type(exc).__name__}: {exc}). "
                "Offline machines can use a "
                f"packaged model ({', '.join(PACKAGED.names())}) or a local folder"
            ) from exc
    return Path(value)


# --------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------


def _nucleus(logits: torch.Tensor, top_p: float, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The top-p nucleus of each row among its ``k`` most likely tokens.

    Returns candidate ids [B, k], a mask of the kept candidates [B, k] (the smallest prefix whose
    probability reaches ``top_p``, as transformers' TopPLogitsWarper keeps) and a mask [B] of the
    rows whose nucleus does not fit in ``k`` candidates (to be redone with ``k = V``).
    """
    import torch

    vocab = logits.shape[-1]
    values, ids = torch.topk(logits, k, dim=-1) if k < vocab else torch.sort(logits, dim=-1, descending=True)
    probs = torch.exp(values - torch.logsumexp(logits, dim=-1, keepdim=True))
    cum = torch.cumsum(probs, dim=-1)
    keep = (cum - probs) < top_p  # a token stays if the mass before it is still below top_p
    keep[:, 0] = True
    overflow = (cum[:, -1] < top_p) if k < vocab else torch.zeros_like(keep[:, 0])
    return ids, keep, overflow


def sample_rows(
    logits: torch.Tensor, uniforms: torch.Tensor, temperature: float, top_p: float
) -> torch.Tensor:
    """Sample one token per row with temperature and top-p by the Gumbel-max trick.

    ``logits`` [B, V]; ``uniforms`` [B, V] in [0, 1), one per vocabulary entry, from the row's
    own random stream. The winner is ``argmax(logit / T + Gumbel(u[id]))`` over the nucleus, an
    exact sample of the softmax restricted to the nucleus. Why Gumbel-max rather than inverse-CDF:
    each token's noise is tied to its id, so a slight change of the logits (another batch
    composition in bf16) changes the pick only if it reorders the top two noisy scores; an
    inverse-CDF pick shifts whenever the cumulative sums before the chosen token move. Every
    operation is row-wise: a row's pick never depends on the other rows.
    """
    import torch

    scores = logits.float() / temperature
    if top_p >= 1.0:
        return torch.argmax(scores - torch.log(-torch.log(uniforms)), dim=-1)
    k = min(_NUCLEUS_CANDIDATES, scores.shape[-1])
    ids, keep, overflow = _nucleus(scores, top_p, k)
    chosen = _gumbel_winner(scores, uniforms, ids, keep)
    if overflow.any():  # a flat distribution: those rows' nuclei need the whole vocabulary sorted
        rows = overflow.nonzero().squeeze(-1)
        full_ids, full_keep, _ = _nucleus(scores[rows], top_p, scores.shape[-1])
        chosen[rows] = _gumbel_winner(scores[rows], uniforms[rows], full_ids, full_keep)
    return chosen


def _gumbel_winner(
    scores: torch.Tensor, uniforms: torch.Tensor, ids: torch.Tensor, keep: torch.Tensor
) -> torch.Tensor:
    """Per row, the kept candidate (``ids[keep]``) with the largest ``score + Gumbel(u[id])``."""
    import torch

    noisy = scores.gather(-1, ids) - torch.log(-torch.log(uniforms.gather(-1, ids)))
    noisy = noisy.masked_fill(~keep, float("-inf"))
    return ids.gather(-1, noisy.argmax(dim=-1, keepdim=True)).squeeze(-1)


def _row_sampler(seeds: Sequence[int], temperature: float, top_p: float) -> Any:
    """A transformers LogitsProcessor that samples each row from its own seeded generator and
    returns logits that are -inf except at the chosen token, so greedy decoding emits it.

    Each row draws exactly one uniform number per vocabulary entry per step, so step ``t`` of a
    prompt always sees the same noise, whatever the batch. Keeping ``model.generate`` (in greedy
    mode) keeps its KV cache, padding and stopping logic.
    """
    import torch
    from transformers import LogitsProcessor

    class RowSampler(LogitsProcessor):
        def __init__(self) -> None:
            self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]

        def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
            uniforms = torch.empty(scores.shape, dtype=torch.float32)
            for row, generator in zip(uniforms, self.generators, strict=True):
                row.uniform_(generator=generator)
            chosen = sample_rows(scores, uniforms.to(scores.device), temperature, top_p)
            out = torch.full_like(scores, float("-inf"))
            out.scatter_(1, chosen.unsqueeze(-1), 0.0)
            return out

    return RowSampler()


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------


def _batches(order: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(order), size):
        yield order[start:start + size]


def _left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """input_ids and attention_mask, left-padded so every row's last token is at the end, to a
    width that is a multiple of ``_PAD_MULTIPLE`` (see there: it makes results batch-invariant)."""
    import torch

    width = -(-max(len(r) for r in rows) // _PAD_MULTIPLE) * _PAD_MULTIPLE
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            ids[i, width - len(row):] = torch.tensor(row, dtype=torch.long)
            mask[i, width - len(row):] = 1
    return ids, mask


class HFModel:
    """A transformers causal LM behind the :class:`~collapselab.models.base.LanguageModel` protocol."""

    def __init__(self, spec: ModelSpec, model: Any, tokenizer: Any) -> None:
        self.spec = spec
        self.model = model
        self.tokenizer = tokenizer
        self._is_chat = uses_chat_template(tokenizer, spec.chat)
        config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        limit = spec.max_context or getattr(config, "max_position_embeddings", None)
        if not limit:
            tok_limit = getattr(tokenizer, "model_max_length", None)
            limit = tok_limit if tok_limit and tok_limit < 1_000_000 else 2048
        self._max_context = int(limit)
        self.stop_ids = self._stop_token_ids()
        self.pad_id = next(i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0) if i is not None)
        self._boundary_id = next(
            i for i in (tokenizer.bos_token_id, tokenizer.eos_token_id, self.pad_id) if i is not None
        )
        # the model's own generation_config (e.g. Qwen's repetition_penalty, top_k) must not leak
        # into the study's decoding: replace it with one that only knows the special tokens
        from transformers import GenerationConfig

        model.generation_config = GenerationConfig(eos_token_id=self.stop_ids, pad_token_id=self.pad_id)
        forward = inspect.signature(type(model).forward).parameters
        self._can_keep_logits = "logits_to_keep" in forward

    # -- protocol -----------------------------------------------------------------------------

    @property
    def is_chat(self) -> bool:
        return self._is_chat

    @property
    def max_context(self) -> int:
        return self._max_context

    def generate(
        self,
        prompts: Sequence[ChatPrompt],
        decoding: DecodingSpec,
        *,
        progress: Progress | None = None,
    ) -> list[Generation]:
        """Sample one answer per prompt, batched (``spec.batch_size``), longest prompts first.

        Prompts are rendered exactly as given (``prompt.system`` is the system turn; callers put
        ``decoding.system_prompt`` there, as for scoring and training). Temperature 0 is greedy.

        Determinism: the noise behind a prompt's tokens depends only on ``(decoding.seed,
        prompt.id)``. On CPU a row's logits are also bitwise independent of the batch (see
        ``_PAD_MULTIPLE``), so a prompt gets the same text alone or in any batch, in any order, in
        bf16 and float32 (verified with torch 2.13 on x86 AVX-512). Where kernels are not
        batch-invariant (GPUs), the same list of prompts with the same batch size still gives the
        same text, and another batch composition changes a text only from a step where last-bit
        differences reorder the two best noisy scores (rare in float32, occasional in bf16).
        """
        if not prompts:
            return []
        prompt_ids = [render_prompt_ids(self.tokenizer, p, self._is_chat) for p in prompts]
        new = decoding.max_new_tokens
        self._check_lengths(prompts, [len(ids) + new for ids in prompt_ids],
                            lambda i: f"{len(prompt_ids[i])} prompt tokens + {new} new tokens")
        results: list[Generation | None] = [None] * len(prompts)
        # longest first: rows of similar length share a batch (less padding) and memory peaks early
        order = sorted(range(len(prompts)), key=lambda i: (-len(prompt_ids[i]), i))
        for batch in _batches(order, self.spec.batch_size):
            seeds = [prompt_seed(decoding.seed, prompts[i].id) for i in batch]
            gens = self._generate_batch([prompt_ids[i] for i in batch], seeds, decoding)
            for i, gen in zip(batch, gens, strict=True):
                results[i] = gen
            if progress is not None:
                progress(len(batch))
        return [r for r in results if r is not None]

    def continuation_logprobs(
        self,
        prompts: Sequence[ChatPrompt],
        continuations: Sequence[str],
        *,
        progress: Progress | None = None,
    ) -> list[list[float]]:
        """Per pair, the log-probability of each content token of the continuation given the
        prompt and the tokens before it (teacher forcing; end-of-turn tokens excluded), computed in
        float32 with the layout of :func:`~collapselab.models.formatting.encode_example`.

        A prompt that renders to
        no tokens (a base model without BOS and an empty prompt) is conditioned on the BOS token
        (EOS if there is none) as a document boundary: the first token needs a position to be
        predicted from.
        """
        import torch

        if len(prompts) != len(continuations):
            raise ValueError(f"{len(prompts)} prompts but {len(continuations)} continuations")
        rows: list[list[int]] = []
        n_scored: list[int] = []
        for prompt, answer in zip(prompts, continuations, strict=True):
            ex = encode_example(self.tokenizer, prompt, answer, self._is_chat)
            context = ex.prompt_ids or [self._boundary_id]
            # only the content tokens are scored, so the end tokens need not be fed at all
            rows.append(context + ex.answer_ids[: ex.n_content])
            n_scored.append(ex.n_content)
        self._check_lengths(prompts, [len(r) for r in rows],
                            lambda i: f"{len(rows[i])} prompt + answer tokens")

        results: list[list[float]] = [[] for _ in prompts]
        order = sorted((i for i in range(len(rows)) if n_scored[i] > 0), key=lambda i: (-len(rows[i]), i))
        with torch.inference_mode():
            for batch in _batches(order, self.spec.batch_size):
                ids, mask = (t.to(self.device) for t in _left_pad([rows[i] for i in batch], self.pad_id))
                # left padding puts every row's answer at the end, so only the last positions'
                # logits are needed: a large saving in memory for big vocabularies (Gemma: 262k)
                # (at least _MIN_ROWS positions, so the LM head's product never has fewer rows)
                keep = max(max(n_scored[i] for i in batch) + 1, _MIN_ROWS)
                kwargs: dict[str, Any] = {"logits_to_keep": keep} if self._can_keep_logits else {}
                # plain forward (unlike generate) does not derive positions from the mask
                positions = (mask.cumsum(-1) - 1).clamp_(min=0)
                logits = self.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                                    use_cache=False, **kwargs).logits
                width = logits.shape[1]
                for row, i in enumerate(batch):
                    n = n_scored[i]
                    # logits at position t predict token t + 1: the last n tokens come from the
                    # n positions before the final one
                    scores = torch.log_softmax(logits[row, width - n - 1: width - 1].float(), dim=-1)
                    targets = ids[row, -n:].unsqueeze(-1)
                    results[i] = scores.gather(-1, targets).squeeze(-1).tolist()
                if progress is not None:
                    progress(len(batch))
        if progress is not None and len(order) < len(rows):
            progress(len(rows) - len(order))  # empty continuations, nothing to compute
        return results

    def choice_logprobs(
        self,
        prompts: Sequence[ChatPrompt],
        choices: Sequence[str],
        *,
        progress: Progress | None = None,
    ) -> list[dict[str, float]]:
        """Per prompt, log P(the answer starts with choice c) for each choice, from the next-token
        distribution at the first answer position (after the assistant header), in float32.

        A choice's probability sums over its single-token spellings ("A" and " A" are different
        tokens in most vocabularies, and a model may put its mass on either): see
        :meth:`choice_token_ids`. The log-probabilities are over the whole vocabulary, not
        renormalised over the choices — the caller renormalises (and can see how much mass the
        choices got at all).
        """
        import torch

        token_ids = self.choice_token_ids(choices)
        rows = [render_prompt_ids(self.tokenizer, p, self._is_chat) or [self._boundary_id] for p in prompts]
        self._check_lengths(prompts, [len(r) + 1 for r in rows], lambda i: f"{len(rows[i])} prompt tokens + 1")
        results: list[dict[str, float]] = [{} for _ in prompts]
        order = sorted(range(len(rows)), key=lambda i: (-len(rows[i]), i))
        with torch.inference_mode():
            for batch in _batches(order, self.spec.batch_size):
                ids, mask = (t.to(self.device) for t in _left_pad([rows[i] for i in batch], self.pad_id))
                kwargs: dict[str, Any] = {"logits_to_keep": _MIN_ROWS} if self._can_keep_logits else {}
                positions = (mask.cumsum(-1) - 1).clamp_(min=0)
                logits = self.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                                    use_cache=False, **kwargs).logits
                logp = torch.log_softmax(logits[:, -1].float(), dim=-1)
                for row, i in enumerate(batch):
                    results[i] = {c: float(torch.logsumexp(logp[row, ids_], dim=0))
                                  for c, ids_ in token_ids.items()}
                if progress is not None:
                    progress(len(batch))
        return results

    def choice_token_ids(self, choices: Sequence[str]) -> dict[str, list[int]]:
        """The vocabulary ids that spell each choice as one token, with and without a leading
        space (a ModelError if a choice has no single-token spelling or two choices share one);
        see :func:`~collapselab.models.formatting.choice_token_ids`, shared with the vllm backend."""
        return choice_token_ids(lambda text: text_token_ids(self.tokenizer, text), choices, self.spec.id)

    @property
    def device(self) -> Any:
        """The torch device the weights are on."""
        return self.model.device

    def close(self) -> None:
        """Drop the weights so their memory can be reused."""
        import torch

        self.model = None
        self.tokenizer = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # -- helpers ------------------------------------------------------------------------------

    def _stop_token_ids(self) -> list[int]:
        """See :func:`~collapselab.models.formatting.stop_token_ids`."""
        try:
            return stop_token_ids(self.tokenizer, self._is_chat, self.model.generation_config.eos_token_id)
        except ModelError as exc:
            raise ModelError(f"model {self.spec.id!r}: {exc}") from None

    def _check_lengths(self, prompts: Sequence[ChatPrompt], needed: Sequence[int], describe: Any) -> None:
        """Fail before any work if one prompt does not fit the context window."""
        for i, n in enumerate(needed):
            if n > self._max_context:
                raise ModelError(
                    f"prompt {prompts[i].id!r} is too long for model {self.spec.id!r}: {describe(i)} = {n} "
                    f"> max_context {self._max_context} "
                    "(shorten it, lower max_new_tokens or raise max_context)"
                )

    def _generate_batch(
        self, prompt_ids: list[list[int]], seeds: list[int], decoding: DecodingSpec
    ) -> list[Generation]:
        """One left-padded ``model.generate`` call; Generations in the order of ``prompt_ids``."""
        import torch
        from transformers import GenerationConfig, LogitsProcessorList

        # a small batch is filled up with copies of its first row (results discarded) so its
        # matrix products take the same code paths as a full batch's: see _MIN_ROWS
        n_real = len(prompt_ids)
        filler = max(0, _MIN_ROWS - n_real)
        ids, mask = (t.to(self.device) for t in _left_pad(prompt_ids + prompt_ids[:1] * filler, self.pad_id))
        seeds = seeds + seeds[:1] * filler
        # beam search (decoding.num_beams > 1) is deterministic: temperature and top-p do not apply
        config = GenerationConfig(max_new_tokens=decoding.max_new_tokens, do_sample=False,
                                  num_beams=decoding.num_beams, eos_token_id=self.stop_ids, pad_token_id=self.pad_id)
        processors = LogitsProcessorList()
        if decoding.temperature > 0 and decoding.num_beams == 1:
            processors.append(_row_sampler(seeds, decoding.temperature, decoding.top_p))
        with torch.inference_mode():
            out = self.model.generate(input_ids=ids, attention_mask=mask, generation_config=config,
                                      logits_processor=processors)
        new = out[:n_real, ids.shape[1]:].tolist()
        stops = set(self.stop_ids)
        results = []
        for prompt, tokens in zip(prompt_ids, new, strict=True):
            end = next((j for j, t in enumerate(tokens) if t in stops), None)
            content = tokens if end is None else tokens[:end]
            text = self.tokenizer.decode(content, skip_special_tokens=True).strip()
            results.append(Generation(
                text=text,
                prompt_tokens=len(prompt),
                # the end token counts as generated (the model computed it), padding does not
                new_tokens=len(tokens) if end is None else end + 1,
                finish_reason="length" if end is None else "stop",
            ))
        return results


def load_hf_model(spec: ModelSpec) -> HFModel:
    """Load an ``hf/...`` model in ``spec.dtype`` from safetensors, with its LoRA adapter merged in
    if ``spec.adapter`` is set (merging makes the adapted model run at the base model's speed), on
    the first CUDA GPU if there is one, else on the CPU."""
    check_hf_spec(spec)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = resolve_weights(spec)
    on_gpu = torch.cuda.is_available()
    placement = spread_over_gpus(spec) if on_gpu else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        # use_safetensors=True: a folder with only pickled weights fails instead of being unpickled
        model = AutoModelForCausalLM.from_pretrained(
            folder, dtype=getattr(torch, spec.dtype), use_safetensors=True,
            attn_implementation=None if on_gpu else _CPU_ATTENTION, **placement,
        )
    except (OSError, ValueError) as exc:
        raise ModelError(f"could not load model {spec.id!r} from {folder}: {exc}") from exc
    if spec.adapter is not None:
        from peft import PeftModel

        adapter = _check_adapter(spec.adapter)
        try:
            model = PeftModel.from_pretrained(model, str(adapter), is_trainable=False).merge_and_unload()
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise ModelError(f"could not apply adapter {adapter} to {spec.id!r}: {exc}") from exc
    if on_gpu and not placement:
        model = model.to("cuda")
    model.eval()
    return HFModel(spec, model, tokenizer)


#: Share of each GPU's memory a model spread over several GPUs may fill with weights (accelerate's
#: placement), leaving the rest for the KV cache and activations of generation.
SPREAD_WEIGHT_SHARE = 0.8


def spread_over_gpus(spec: ModelSpec, device_count: int | None = None,
                     memory: Callable[[int], int] | None = None) -> dict[str, Any]:
    """``from_pretrained`` arguments that place a model over ``spec.gpus`` GPUs ({} for one):
    accelerate's ``device_map="auto"`` (whole decoder layers in turn, GPU 0 first, run one after
    another) limited by ``max_memory`` to the first ``spec.gpus`` visible GPUs, each at
    :data:`SPREAD_WEIGHT_SHARE` of its memory — no CPU or disk offload (a model that does not fit
    fails to load instead of crawling). Raises :class:`ModelError` when fewer GPUs are visible."""
    if spec.gpus == 1:
        return {}
    import torch

    count = torch.cuda.device_count() if device_count is None else device_count
    if count < spec.gpus:
        raise ModelError(f"model {spec.id!r} asks for gpus: {spec.gpus} but {count} GPU(s) are visible "
                         "(under Ray the stage gets max(run.gpus, the model's gpus))")
    total = memory or (lambda i: torch.cuda.get_device_properties(i).total_memory)
    return {"device_map": "auto", "max_memory": {i: int(SPREAD_WEIGHT_SHARE * total(i)) for i in range(spec.gpus)}}
