"""The vLLM backend: ``vllm/<name>`` runs the model the hf backend would load (a packaged model, a
local folder, a GGUF file or a hub id; optionally a LoRA adapter) on a GPU with vLLM's offline
``LLM`` engine.

What it shares with the hf backend, so that the two are interchangeable in a study:

* the weights: :func:`~collapselab.models.hf.resolve_weights` gives the same safetensors folder
  (packaged models and GGUF files dequantized once into the cache);
* the tokens: prompts are rendered with the same transformers tokenizer by
  :func:`~collapselab.models.formatting.render_prompt_ids` / ``encode_example`` and handed to vLLM
  as token ids (``TokensPrompt``), so vLLM never applies a chat template or tokenizes text itself;
* the stop tokens (EOS ids and the chat template's end-of-turn token), the choice tokens
  (:func:`~collapselab.models.formatting.choice_token_ids`), the context check and the
  definitions of ``continuation_logprobs`` (content tokens only) and ``choice_logprobs``.

What differs: vLLM samples with its own kernels. Each request carries ``seed =
prompt_seed(decoding.seed, prompt.id)``, so the same prompt list gives the same texts again on the
same GPU and vLLM version, but not the texts the hf backend samples for the same seed, and GPU
kernels are not batch-invariant (another set of prompts in flight can change a text from some
step on). Scores are computed from the model's raw logits (vLLM's default ``raw_logprobs``) in the
spec's dtype; they match the hf backend's float32 scores to bf16 precision, not bitwise.

``vllm`` (and torch, transformers) are imported only when a model is loaded: on machines without
vLLM, ``check_vllm_spec`` says how to install it.
"""

from __future__ import annotations

import contextlib
import gc
import importlib.util
import json
import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

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

#: Share of the GPU's memory vLLM may take for weights, activations and KV cache. Below vLLM's 0.9
#: default: the hf backend or a judge model may share the GPU in the same process for a moment.
GPU_MEMORY_UTILIZATION = 0.85
#: Alternatives read at the first answer position by :meth:`VLLMModel.choice_logprobs`; also the
#: engine's ``max_logprobs`` (vLLM's default cap is 20).
TOP_LOGPROBS = 20
#: ``prompt_logprobs`` asked for when scoring: vLLM returns the log-prob of each actual prompt token
#: plus this many alternatives (1, not 0: some versions treat 0 as "none").
PROMPT_LOGPROBS = 1
#: Prompts per ``LLM.generate`` call. vLLM schedules a call's requests itself (continuous
#: batching); chunking only bounds how long the progress callback stays silent.
REQUESTS_PER_CALL = 512
#: vLLM allocates LoRA buffers for a fixed set of maximal ranks; an adapter's rank is rounded up.
LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)
_INSTALL = "pip install vllm on a CUDA machine"


# --------------------------------------------------------------------------------------------
# Checking a spec
# --------------------------------------------------------------------------------------------


def vllm_installed() -> bool:
    """Whether ``import vllm`` can work, found without importing it (importing starts CUDA)."""
    try:
        return importlib.util.find_spec("vllm") is not None
    except ValueError:  # a module object in sys.modules without __spec__ (a test double)
        return True


def check_vllm_spec(spec: ModelSpec, *, here: bool = True) -> None:
    """Validate a ``vllm/...`` spec without loading weights or importing vLLM (raises
    :class:`ModelError`): vLLM is installed (``here=False``: not checked, the engines run in
    another environment, ``run.vllm.python``), the name resolves as for ``hf/`` and the adapter
    folder is a PEFT adapter whose rank vLLM can serve."""
    from collapselab.models.hf import check_hf_spec

    if here and not vllm_installed():
        raise ModelError(f"model {spec.id!r}: vllm is not installed ({_INSTALL})")
    try:
        check_hf_spec(spec)
    except ModelError as exc:
        # the hf checks name the model 'hf/...': say 'vllm/...' so the hint can be copied as is
        raise ModelError(str(exc).replace("'hf/", "'vllm/")) from exc
    if spec.adapter is not None:
        lora_rank_limit(adapter_rank(Path(spec.adapter).expanduser()), spec.id)


def adapter_rank(adapter: Path) -> int:
    """The LoRA rank ``r`` in a PEFT adapter folder's adapter_config.json."""
    path = adapter / "adapter_config.json"
    try:
        config = json.loads(path.read_text())
        rank = int(config["r"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"{path}: cannot read the LoRA rank 'r' ({type(exc).__name__}: {exc})") from exc
    if rank < 1:
        raise ModelError(f"{path}: field 'r' must be a positive LoRA rank, got {rank}")
    return rank


def lora_rank_limit(rank: int, model_id: str = "") -> int:
    """The smallest of :data:`LORA_RANKS` that holds an adapter of rank ``rank`` (vLLM's
    ``max_lora_rank`` accepts only those values)."""
    for limit in LORA_RANKS:
        if rank <= limit:
            return limit
    raise ModelError(f"model {model_id!r}: LoRA rank {rank} is above vLLM's largest ({LORA_RANKS[-1]})")


# --------------------------------------------------------------------------------------------
# What the hf backend derives from the model folder
# --------------------------------------------------------------------------------------------


def generation_eos(folder: Path) -> int | list[int] | None:
    """The EOS id(s) transformers would put in a loaded model's ``generation_config``: from
    generation_config.json if the folder has one, else from the model config."""
    from transformers import AutoConfig, GenerationConfig

    try:
        return GenerationConfig.from_pretrained(folder).eos_token_id
    except OSError:  # no generation_config.json
        return GenerationConfig.from_model_config(AutoConfig.from_pretrained(folder)).eos_token_id


def context_limit(spec: ModelSpec, folder: Path, tokenizer: Any) -> int:
    """``max_context`` as the hf backend computes it: the spec's, else the model config's
    ``max_position_embeddings``, else the tokenizer's limit, else 2048."""
    if spec.max_context:
        return spec.max_context
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(folder)
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    limit = getattr(config, "max_position_embeddings", None)
    if not limit:
        tok_limit = getattr(tokenizer, "model_max_length", None)
        limit = tok_limit if tok_limit and tok_limit < 1_000_000 else 2048
    return int(limit)


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------


def _chunks(n: int, size: int) -> Iterator[range]:
    for start in range(0, n, size):
        yield range(start, min(n, start + size))


def _logprob(value: Any) -> float:
    """A vLLM ``Logprob`` (or a bare float) as a float."""
    return float(getattr(value, "logprob", value))


class VLLMModel:
    """A model served by an in-process vLLM engine behind the
    :class:`~collapselab.models.base.LanguageModel` protocol.

    ``llm`` is a ``vllm.LLM``; ``tokenizer`` the transformers tokenizer of the same folder (it
    renders every prompt); ``stop_ids`` and ``max_context`` as the hf backend derives them;
    ``lora_request`` a ``vllm.lora.request.LoRARequest`` sent with every request, or None.
    """

    def __init__(
        self,
        spec: ModelSpec,
        llm: Any,
        tokenizer: Any,
        *,
        stop_ids: Sequence[int],
        max_context: int,
        lora_request: Any = None,
    ) -> None:
        self.spec = spec
        self.llm = llm
        self.tokenizer = tokenizer
        self.stop_ids = list(stop_ids)
        self.lora_request = lora_request
        self._is_chat = uses_chat_template(tokenizer, spec.chat)
        self._max_context = int(max_context)
        self.pad_id = next(i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0) if i is not None)
        # the hf backend's document boundary for an empty prompt (see continuation_logprobs)
        self._boundary_id = next(
            i for i in (tokenizer.bos_token_id, tokenizer.eos_token_id, self.pad_id) if i is not None
        )

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
        """Sample one answer per prompt: one request per prompt with its own ``SamplingParams``
        (temperature, top-p, ``max_tokens = max_new_tokens``, ``seed = prompt_seed(decoding.seed,
        prompt.id)``, the hf backend's stop ids); temperature 0 is greedy.

        The text is the hf backend's: the tokens before the first stop token, decoded with the
        transformers tokenizer without special tokens, stripped. The stop token counts as a new
        token; ``finish_reason`` is "stop" when one was emitted, else vLLM's reason ("length" when
        ``max_tokens`` ran out; a stop vLLM found by itself, e.g. a model-config EOS, is "stop").
        """
        from collapselab.models.beams import refuse_beams

        refuse_beams(self.spec, decoding)
        from vllm import SamplingParams

        self._require_open()
        if not prompts:
            return []
        prompt_ids = [render_prompt_ids(self.tokenizer, p, self._is_chat) for p in prompts]
        new = decoding.max_new_tokens
        self._check_lengths(prompts, [len(ids) + new for ids in prompt_ids],
                            lambda i: f"{len(prompt_ids[i])} prompt tokens + {new} new tokens")
        params = [
            SamplingParams(
                n=1,
                temperature=decoding.temperature,
                top_p=decoding.top_p if decoding.temperature > 0 else 1.0,
                max_tokens=new,
                seed=prompt_seed(decoding.seed, p.id),
                stop_token_ids=list(self.stop_ids),
            )
            for p in prompts
        ]
        outputs = self._run(prompt_ids, params, progress)
        return [self._generation(ids, out) for ids, out in zip(prompt_ids, outputs, strict=True)]

    def continuation_logprobs(
        self,
        prompts: Sequence[ChatPrompt],
        continuations: Sequence[str],
        *,
        progress: Progress | None = None,
    ) -> list[list[float]]:
        """Per pair, the log-probability of each content token of the continuation given the
        prompt and the tokens before it, with the layout of
        :func:`~collapselab.models.formatting.encode_example` (end-of-turn tokens excluded).

        Each prompt + answer is sent as one request with ``prompt_logprobs`` and ``max_tokens=1``:
        vLLM returns, for every prompt position, the log-probability of the token actually there;
        the answer's are kept. An empty prompt is conditioned on the BOS token (EOS if none), as
        in the hf backend. Requests with prompt log-probs bypass vLLM's prefix cache, so every
        position is computed afresh.
        """
        from vllm import SamplingParams

        self._require_open()
        if len(prompts) != len(continuations):
            raise ValueError(f"{len(prompts)} prompts but {len(continuations)} continuations")
        rows: list[list[int]] = []
        starts: list[int] = []
        for prompt, answer in zip(prompts, continuations, strict=True):
            ex = encode_example(self.tokenizer, prompt, answer, self._is_chat)
            context = ex.prompt_ids or [self._boundary_id]
            rows.append(context + ex.answer_ids[: ex.n_content])
            starts.append(len(context))
        # vLLM must also generate one token, so a row needs one free position after it
        self._check_lengths(prompts, [len(r) + 1 for r in rows],
                            lambda i: f"{len(rows[i])} prompt + answer tokens + 1")
        results: list[list[float]] = [[] for _ in prompts]
        todo = [i for i in range(len(rows)) if starts[i] < len(rows[i])]
        params = SamplingParams(n=1, temperature=0.0, max_tokens=1, prompt_logprobs=PROMPT_LOGPROBS)
        outputs = self._run([rows[i] for i in todo], [params] * len(todo), progress)
        for i, out in zip(todo, outputs, strict=True):
            results[i] = self._prompt_token_logprobs(out, rows[i], starts[i], prompts[i])
        if progress is not None and len(todo) < len(rows):
            progress(len(rows) - len(todo))  # empty continuations, nothing to compute
        return results

    def choice_logprobs(
        self,
        prompts: Sequence[ChatPrompt],
        choices: Sequence[str],
        *,
        progress: Progress | None = None,
    ) -> list[dict[str, float]]:
        """Per prompt, log P(the answer starts with choice c): the log of the summed probabilities
        of c's single-token spellings ("A" and " A", see
        :func:`~collapselab.models.formatting.choice_token_ids`) at the first answer position.

        Read from one greedy step with ``logprobs = TOP_LOGPROBS``: vLLM returns only the
        :data:`TOP_LOGPROBS` most likely tokens (plus the chosen one), so this is a lower bound of
        the hf backend's sum over the whole vocabulary. It is exact whenever all of a choice's
        spellings are among them — the usual case for a judge that answers with a choice — and a
        choice none of whose spellings is there gets -inf. Not renormalised over the choices.
        """
        from vllm import SamplingParams

        self._require_open()
        token_ids = choice_token_ids(lambda text: text_token_ids(self.tokenizer, text), choices, self.spec.id)
        rows = [render_prompt_ids(self.tokenizer, p, self._is_chat) or [self._boundary_id] for p in prompts]
        self._check_lengths(prompts, [len(r) + 1 for r in rows],
                            lambda i: f"{len(rows[i])} prompt tokens + 1")
        params = SamplingParams(n=1, temperature=0.0, max_tokens=1, logprobs=TOP_LOGPROBS)
        outputs = self._run(rows, [params] * len(rows), progress)
        return [self._choice_row(out, token_ids, prompt)
                for out, prompt in zip(outputs, prompts, strict=True)]

    def close(self) -> None:
        """Shut the engine down and free its GPU memory, so another model can be loaded in the
        same process (vLLM keeps a distributed group and CUDA caches alive otherwise)."""
        llm, self.llm, self.tokenizer = self.llm, None, None
        if llm is not None:
            # the V1 engine runs in a child process; stopping it releases that process's memory.
            # Cleanup must never mask the error that led to close(), hence the suppress.
            core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
            with contextlib.suppress(Exception):
                if callable(getattr(core, "shutdown", None)):
                    core.shutdown()
            del llm
        with contextlib.suppress(ImportError):
            from vllm.distributed import parallel_state

            for name in ("destroy_model_parallel", "destroy_distributed_environment"):
                teardown = getattr(parallel_state, name, None)
                if callable(teardown):
                    with contextlib.suppress(Exception):
                        teardown()
        gc.collect()
        with contextlib.suppress(ImportError):
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    # -- helpers ------------------------------------------------------------------------------

    def _run(
        self, rows: Sequence[Sequence[int]], params: Sequence[Any], progress: Progress | None
    ) -> list[Any]:
        """``LLM.generate`` on token-id prompts in chunks of :data:`REQUESTS_PER_CALL`; the
        outputs in the order of ``rows``."""
        from vllm import TokensPrompt

        self._require_open()
        outputs: list[Any] = []
        for chunk in _chunks(len(rows), REQUESTS_PER_CALL):
            prompts = [TokensPrompt(prompt_token_ids=list(rows[i])) for i in chunk]
            got = self.llm.generate(prompts, [params[i] for i in chunk], use_tqdm=False,
                                    lora_request=self.lora_request)
            if len(got) != len(prompts):
                raise ModelError(f"vLLM returned {len(got)} outputs for {len(prompts)} requests")
            outputs.extend(got)
            if progress is not None:
                progress(len(chunk))
        return outputs

    def _require_open(self) -> None:
        if self.llm is None:
            raise ModelError(f"model {self.spec.id!r} was closed")

    def _generation(self, prompt_ids: Sequence[int], out: Any) -> Generation:
        completion = out.outputs[0]
        tokens = list(completion.token_ids)
        stops = set(self.stop_ids)
        end = next((j for j, t in enumerate(tokens) if t in stops), None)
        content = tokens if end is None else tokens[:end]
        if end is not None:
            finish, new_tokens = "stop", end + 1
        else:
            finish = "length" if completion.finish_reason == "length" else "stop"
            new_tokens = len(tokens)
        return Generation(
            text=self.tokenizer.decode(content, skip_special_tokens=True).strip(),
            prompt_tokens=len(prompt_ids),
            new_tokens=new_tokens,
            finish_reason=finish,
        )

    def _prompt_token_logprobs(
        self, out: Any, row: Sequence[int], start: int, prompt: ChatPrompt
    ) -> list[float]:
        """The log-probs of ``row[start:]`` from a request's ``prompt_logprobs`` (one dict per
        prompt position, None at position 0, each holding the actual token)."""
        table = out.prompt_logprobs
        if table is None or len(table) != len(row):
            raise ModelError(f"prompt {prompt.id!r}: vLLM returned no prompt log-probabilities "
                             f"for the {len(row)} tokens sent")
        scores = []
        for pos in range(start, len(row)):
            entry = table[pos] or {}
            if row[pos] not in entry:
                raise ModelError(f"prompt {prompt.id!r}: vLLM gave no log-probability for token "
                                 f"{row[pos]} at position {pos}")
            scores.append(_logprob(entry[row[pos]]))
        return scores

    def _choice_row(self, out: Any, token_ids: dict[str, list[int]], prompt: ChatPrompt) -> dict[str, float]:
        """Sum the probabilities of each choice's tokens among the first position's top tokens."""
        steps = out.outputs[0].logprobs
        if not steps:
            raise ModelError(f"prompt {prompt.id!r}: vLLM returned no log-probabilities for the first token")
        top = {int(t): _logprob(v) for t, v in steps[0].items()}
        row = {}
        for choice, ids in token_ids.items():
            mass = sum(math.exp(top[i]) for i in ids if i in top)
            row[choice] = math.log(mass) if mass > 0 else -math.inf
        return row

    def _check_lengths(self, prompts: Sequence[ChatPrompt], needed: Sequence[int],
                       describe: Callable[[int], str]) -> None:
        """Fail before any work if one prompt does not fit the context window."""
        for i, n in enumerate(needed):
            if n > self._max_context:
                raise ModelError(
                    f"prompt {prompts[i].id!r} is too long for model {self.spec.id!r}: {describe(i)} = {n} "
                    f"> max_context {self._max_context} "
                    "(shorten it, lower max_new_tokens or raise max_context)"
                )


def load_tokenizer(spec: ModelSpec, folder: Path) -> Any:
    """The transformers tokenizer of the weights folder (it renders every prompt)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError) as exc:
        raise ModelError(f"could not load the tokenizer of {spec.id!r} from {folder}: {exc}") from exc


def model_stop_ids(spec: ModelSpec, tokenizer: Any, eos: int | list[int] | None) -> list[int]:
    """The hf backend's stop ids for ``spec`` (its ``chat`` setting decides the end-of-turn token);
    ``eos``: :func:`generation_eos` of the folder."""
    try:
        return stop_token_ids(tokenizer, uses_chat_template(tokenizer, spec.chat), eos)
    except ModelError as exc:
        raise ModelError(f"model {spec.id!r}: {exc}") from exc


def engine_args(spec: ModelSpec, folder: Path, max_context: int) -> dict[str, Any]:
    """The ``vllm.LLM`` arguments for the base model of ``spec`` (no LoRA settings): see
    :func:`load_vllm_model`."""
    args = {
        "model": str(folder),
        "tokenizer": str(folder),
        "dtype": spec.dtype,
        "seed": 0,  # the engine's default stream; every sampling request brings its own seed
        "gpu_memory_utilization": GPU_MEMORY_UTILIZATION,
        "max_model_len": max_context,
        "max_logprobs": TOP_LOGPROBS,
        "generation_config": "vllm",
    }
    if spec.gpus > 1:  # a model too large for one GPU: vLLM shards every layer over spec.gpus GPUs
        args["tensor_parallel_size"] = spec.gpus
    return args


def lora_request(adapter: str | Path, lora_int_id: int) -> Any:
    """The ``LoRARequest`` that serves a PEFT adapter folder under the engine-wide id
    ``lora_int_id`` (vLLM caches adapters by that id: one id per adapter folder, from 1)."""
    from vllm.lora.request import LoRARequest

    path = Path(adapter).expanduser().resolve()
    return LoRARequest(lora_name=path.name or "adapter", lora_int_id=lora_int_id, lora_path=str(path))


def start_engine(spec: ModelSpec, folder: Path, args: dict[str, Any]) -> Any:
    """``vllm.LLM(**args)``; a failure is a :class:`ModelError` naming the model."""
    from vllm import LLM

    try:
        return LLM(**args)
    except (TypeError, ValueError, RuntimeError, OSError) as exc:
        raise ModelError(
            f"vLLM could not start model {spec.id!r} from {folder}: {type(exc).__name__}: {exc}"
        ) from exc


def load_vllm_model(spec: ModelSpec) -> VLLMModel:
    """Start a vLLM engine for a ``vllm/...`` spec on the GPU, in this process.

    The weights folder is the hf backend's (:func:`~collapselab.models.hf.resolve_weights`), in
    ``spec.dtype``, with ``max_model_len = max_context``, vLLM's own defaults from the model's
    generation_config.json switched off (``generation_config="vllm"``: the study's decoding alone
    decides) and :data:`GPU_MEMORY_UTILIZATION`. A LoRA adapter is served unmerged through
    ``LoRARequest`` (``enable_lora``, ``max_lora_rank`` from its adapter_config.json).

    A pipeline run gets its vLLM models from :class:`~collapselab.pipeline.context.ModelPool`
    instead, which (by default) serves every adapter of one base model from one engine in a
    child process (:mod:`collapselab.models.vllm_engine`); this function is that engine's
    per-model reference and the path of ``run.vllm.shared_engine: false``.
    """
    check_vllm_spec(spec)
    from collapselab.models.hf import resolve_weights

    folder = resolve_weights(spec)
    tokenizer = load_tokenizer(spec, folder)
    stop_ids = model_stop_ids(spec, tokenizer, generation_eos(folder))
    max_context = context_limit(spec, folder, tokenizer)
    args = engine_args(spec, folder, max_context)
    request = None
    if spec.adapter is not None:
        adapter = Path(spec.adapter).expanduser().resolve()
        args.update(enable_lora=True, max_loras=1, max_lora_rank=lora_rank_limit(adapter_rank(adapter), spec.id))
        request = lora_request(adapter, 1)
    llm = start_engine(spec, folder, args)
    return VLLMModel(spec, llm, tokenizer, stop_ids=stop_ids, max_context=max_context, lora_request=request)
