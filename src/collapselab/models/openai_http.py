"""The HTTP backend: ``openai/NAME`` is model NAME behind any OpenAI-compatible endpoint (a vLLM or
llama.cpp server, a hosted API), reached with the official ``openai`` SDK.

* ``base_url`` (default :data:`DEFAULT_BASE_URL`) names the server, e.g. ``http://localhost:8000/v1``;
* the API key is read from the environment variable ``api_key_env`` (default ``OPENAI_API_KEY``)
  when the model is built. It is sent only in the ``Authorization`` header: it is never part of
  a cache key, a cached file, an error message or anything else this backend writes;
* every request is retried with exponential back-off and jitter on connection errors, 429 and 5xx
  (see :data:`MAX_ATTEMPTS`); any other 4xx is a :class:`~collapselab.errors.ModelError` with the
  server's message;
* every successful response is cached on disk under ``<cache>/requests/`` keyed by the SHA-256 of
  the request (endpoint and body), so a restarted run re-sends nothing already answered.
  ``COLLAPSELAB_REQUEST_CACHE=off`` disables the cache. Sampling requests carry a per-prompt seed
  (:func:`~collapselab.models.base.prompt_seed`), so a cached answer is the answer a seeded
  server gives again; on servers that ignore seeds the cache is what makes a rerun reproducible.

The SDK is imported only when a model is built, so ``collapselab --help`` stays fast.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import math
import os
import random
import re
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from collapselab.config.spec import DecodingSpec, ModelSpec
from collapselab.errors import ModelError
from collapselab.models.base import ChatPrompt, Generation, Progress, prompt_seed
from collapselab.models.formatting import chat_messages
from collapselab.paths import cache_root
from collapselab.store.atomic import write_json

#: Used when a spec has no ``base_url``.
DEFAULT_BASE_URL = "https://api.openai.com/v1"
#: The environment variable holding the key when a spec has no ``api_key_env``.
DEFAULT_KEY_ENV = "OPENAI_API_KEY"
#: ``COLLAPSELAB_REQUEST_CACHE=off`` (or 0/false/no) turns the request cache off.
ENV_REQUEST_CACHE = "COLLAPSELAB_REQUEST_CACHE"
_CACHE_OFF = {"off", "0", "false", "no"}
#: Attempts per request (the first try included) before a retryable failure becomes an error.
MAX_ATTEMPTS = 6
#: Back-off before attempt n+1 is drawn from [cap/2, cap] with cap = min(BACKOFF_MAX_S,
#: BACKOFF_BASE_S * 2**(n-1)): exponential, with jitter so that the worker threads (and other
#: clients) that failed together do not all come back at the same instant.
BACKOFF_BASE_S = 1.0
BACKOFF_MAX_S = 60.0
#: Seconds one request may take; long generations on a busy server need minutes.
REQUEST_TIMEOUT_S = 600.0
#: Top tokens asked for when reading a choice (OpenAI's chat API allows at most 20).
TOP_LOGPROBS = 20
#: ``max_context`` reported when the spec gives none (the client cannot see the server's limit;
#: a prompt that is too long is rejected by the server with a clear 400).
DEFAULT_MAX_CONTEXT = 8192
# Placeholder key for local servers started without one (the SDK refuses an empty key; vLLM and
# llama.cpp ignore the header unless started with --api-key).
_NO_KEY = "EMPTY"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# Patched by the tests to make back-off instant. Jitter comes from a private generator: drawing
# from the global ``random`` would perturb other code's seeded streams.
_sleep = time.sleep
_jitter = random.Random()

T = TypeVar("T")
R = TypeVar("R")


# --------------------------------------------------------------------------------------------
# Checking a spec
# --------------------------------------------------------------------------------------------


def _base_url(spec: ModelSpec) -> str:
    return (spec.base_url or DEFAULT_BASE_URL).rstrip("/")


def _key_env(spec: ModelSpec) -> str:
    return spec.api_key_env or DEFAULT_KEY_ENV


def is_local_url(url: str) -> bool:
    """Whether ``url`` points at this machine (localhost or a loopback address), where servers
    usually run without a key."""
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost") or host == "0.0.0.0":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _valid_port(url: str) -> bool:
    try:
        urlsplit(url).port  # noqa: B018 - the property raises ValueError on a malformed port
    except ValueError:
        return False
    return True


def check_openai_spec(spec: ModelSpec) -> None:
    """Validate an ``openai/...`` spec without any network call (raises :class:`ModelError`).

    Checks: a model name after ``openai/``; an ``http(s)://host[:port][/path]`` base URL without
    credentials, query or fragment; ``api_key_env`` names a variable (not a key pasted in its
    place); that variable is set unless the server is local; no LoRA adapter (serve it with the
    server instead); the ``openai`` package is installed.
    """
    import importlib.util

    if not spec.name.strip():
        raise ModelError(f"model id {spec.id!r}: give the served model's name after 'openai/'")
    url = _base_url(spec)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or not _valid_port(url) \
            or parts.query or parts.fragment:
        raise ModelError(f"model {spec.id!r}: base_url {spec.base_url!r} is not an http(s) URL like "
                         "'http://localhost:8000/v1'")
    if parts.username or parts.password:
        raise ModelError(f"model {spec.id!r}: base_url must not contain credentials; put the key in an "
                         f"environment variable and name it in api_key_env (default {DEFAULT_KEY_ENV})")
    env = _key_env(spec)
    if not _ENV_NAME.fullmatch(env):
        # never echo the value: it may be a key pasted into the config by mistake
        raise ModelError(f"model {spec.id!r}: api_key_env must be the NAME of an environment variable "
                         f"(e.g. {DEFAULT_KEY_ENV}) that holds the key, not the key itself")
    if not is_local_url(url) and not os.environ.get(env):
        raise ModelError(f"model {spec.id!r}: the environment variable {env} holding the API key for {url} "
                         f"is not set (export {env}=..., or set api_key_env to the variable that holds it)")
    if spec.adapter is not None:
        raise ModelError(f"model {spec.id!r}: adapters cannot be applied over HTTP; serve the adapter "
                         "with the server (e.g. vLLM --lora-modules NAME=PATH) and use openai/NAME")
    if importlib.util.find_spec("openai") is None:
        raise ModelError(f"model {spec.id!r} needs the openai package: pip install 'collapselab[api]'")


def load_openai_model(spec: ModelSpec) -> OpenAIModel:
    """Build an ``openai/...`` model (no network call until the first request)."""
    return OpenAIModel(spec)


# --------------------------------------------------------------------------------------------
# The request cache
# --------------------------------------------------------------------------------------------


def request_cache_dir() -> Path | None:
    """``<user cache>/requests``, or None when ``COLLAPSELAB_REQUEST_CACHE=off``."""
    if os.environ.get(ENV_REQUEST_CACHE, "").strip().lower() in _CACHE_OFF:
        return None
    return cache_root() / "requests"


class RequestCache:
    """Responses on disk, one JSON file per request: ``<root>/<hash[:2]>/<hash>.json`` holding
    ``{"request": ..., "response": ...}``, where hash = SHA-256 of the canonical JSON (sorted keys,
    no spaces) of the request. A request is ``{"base_url", "endpoint", "body"}``: what decides the
    answer, never headers or the key. ``root=None`` caches nothing."""

    def __init__(self, root: Path | None) -> None:
        self.root = root

    @staticmethod
    def key(request: dict[str, Any]) -> str:
        canonical = json.dumps(request, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def path(self, request: dict[str, Any]) -> Path | None:
        if self.root is None:
            return None
        digest = self.key(request)
        return self.root / digest[:2] / f"{digest}.json"

    def get(self, request: dict[str, Any]) -> dict[str, Any] | None:
        path = self.path(request)
        if path is None or not path.is_file():
            return None
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None  # unreadable: ask again and overwrite (writes are atomic, so this is rare)
        # a hash collision is not a concern; a file copied in by hand for another request is
        if not isinstance(stored, dict) or stored.get("request") != request:
            return None
        return stored.get("response")

    def put(self, request: dict[str, Any], response: dict[str, Any]) -> None:
        path = self.path(request)
        if path is not None:
            write_json(path, {"request": request, "response": response})


# --------------------------------------------------------------------------------------------
# Reading responses
# --------------------------------------------------------------------------------------------


def _first_choice(data: dict[str, Any]) -> dict[str, Any]:
    choices = data.get("choices") if isinstance(data, dict) else None
    if not choices or not isinstance(choices[0], dict):
        raise ModelError(f"the server's response has no choices: {json.dumps(data)[:300]}")
    return choices[0]


def _generation(data: dict[str, Any], chat: bool) -> Generation:
    """A Generation from a chat or text completion; servers that omit ``usage`` give 0 tokens."""
    choice = _first_choice(data)
    if chat:
        text = (choice.get("message") or {}).get("content") or ""
    else:
        text = choice.get("text") or ""
    usage = data.get("usage") or {}
    return Generation(
        text=text.strip(),  # as the hf backend: surrounding whitespace is layout, not content
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        new_tokens=int(usage.get("completion_tokens") or 0),
        # "length" is the only truncation; "stop", "eos", "content_filter", ... all ended the answer
        finish_reason="length" if choice.get("finish_reason") == "length" else "stop",
    )


def _top_tokens(data: dict[str, Any], chat: bool) -> list[tuple[str, float]]:
    """The (token, log-prob) alternatives at the first generated position."""
    logprobs = _first_choice(data).get("logprobs") or {}
    try:
        if chat:
            first = logprobs["content"][0]["top_logprobs"]
            return [(str(t["token"]), float(t["logprob"])) for t in first]
        first = logprobs["top_logprobs"][0]
        return [(str(t), float(lp)) for t, lp in first.items()]
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise ModelError("the server returned no top log-probabilities for the first token (it must "
                         "support logprobs/top_logprobs, as vLLM and OpenAI do)") from exc


def choice_logprobs_from_top(top: Sequence[tuple[str, float]], choices: Sequence[str]) -> dict[str, float]:
    """log P(answer starts with c) for each choice c: log of the summed probabilities of the top
    tokens that equal c once stripped of whitespace ("A", " A", "A\\n" all count for "A"); -inf
    for a choice none of the top tokens spells.

    Only the top tokens are visible over HTTP, so this is a lower bound of the true probability
    (the same sum the hf backend computes over the whole vocabulary): a spelling outside the top
    :data:`TOP_LOGPROBS` is missed, and a choice entirely outside them gets -inf.
    """
    mass = dict.fromkeys(choices, 0.0)
    for token, logprob in top:
        stripped = token.strip()
        if stripped in mass:
            mass[stripped] += math.exp(logprob)
    return {c: math.log(m) if m > 0 else -math.inf for c, m in mass.items()}


def scoring_text(prompt: ChatPrompt, continuation: str) -> tuple[str, int]:
    """The text scored for a continuation and the index where the continuation starts.

    The layout is the hf backend's for base models (:func:`~collapselab.models.formatting.encode_example`):
    the raw user text, a space if neither side has whitespace at the join, then the answer; the
    system prompt is dropped. Over HTTP a chat model's template is not available to the client,
    so chat models are scored in this layout too.
    """
    user = prompt.user
    join = " " if user and continuation and not user[-1].isspace() and not continuation[0].isspace() else ""
    return user + join + continuation, len(user)


def continuation_from_echo(data: dict[str, Any], text: str, start: int) -> list[float]:
    """The continuation's token log-probs from an echoed ``/completions`` response.

    ``text_offset[i]`` is where token i starts in ``text``. The continuation's tokens are those
    that start at or after ``start`` plus a token that straddles ``start`` (it carries the first
    continuation characters, and tokenizing the joined text may merge them with the prompt's
    last ones); tokens at or past ``len(text)`` (generated, if a server ignores ``max_tokens=0``)
    are not part of the text and are dropped.

    A tokenizer that adds a BOS token makes vLLM count that token's text (``<bos>``,
    ``<|begin_of_text|>``) in the offsets, although it is not in ``text``: when the first echoed
    token's text is not where ``text`` begins and the second token starts right after it, every
    offset is moved back by its length (the BOS token, which has no log-prob, then ends at 0).
    """
    logprobs = _first_choice(data).get("logprobs") or {}
    offsets, values = logprobs.get("text_offset"), logprobs.get("token_logprobs")
    if not offsets or values is None or len(offsets) != len(values):
        raise ModelError("the server did not echo the prompt's token log-probabilities, so this endpoint "
                         "cannot score text (it needs /completions with echo=true and logprobs, "
                         "as vLLM serves)")
    tokens = logprobs.get("tokens") or []
    if (len(offsets) > 1 and len(tokens) == len(offsets) and offsets[0] == 0 and tokens[0]
            and not text.startswith(tokens[0]) and offsets[1] == len(tokens[0])):
        shift = offsets[1]
        offsets = [0] + [offset - shift for offset in offsets[1:]]
    out: list[float] = []
    for i, (offset, value) in enumerate(zip(offsets, values, strict=True)):
        end = offsets[i + 1] if i + 1 < len(offsets) else len(text)
        if offset >= len(text) or end <= start:
            continue
        if value is None:
            raise ModelError(f"the server gave no log-probability for token {i} of the scored text "
                             "(the first token of a text has none: is the prompt empty?)")
        out.append(float(value))
    return out


def _server_message(exc: Any) -> str:
    """The server's own error message from an SDK status error (OpenAI: error.message; vLLM:
    message; FastAPI: detail), else the raw body."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        for field in ("message", "detail", "error"):
            if body.get(field):
                return str(body[field])
    if body:
        return str(body)
    return str(getattr(exc, "message", exc))


def _retry_after(exc: Any) -> float | None:
    """The Retry-After header (seconds) of a 429/503 answer, if it has a numeric one."""
    response = getattr(exc, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date: fall back to the computed back-off


def backoff_delay(attempt: int, retry_after: float | None = None) -> float:
    """Seconds to wait after failed attempt ``attempt`` (1-based): uniform in [cap/2, cap] with
    cap = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2**(attempt-1)), at least the server's Retry-After
    (itself capped at BACKOFF_MAX_S)."""
    cap = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** (attempt - 1))
    delay = cap / 2 + _jitter.uniform(0, cap / 2)
    if retry_after is not None:
        delay = max(delay, min(retry_after, BACKOFF_MAX_S))
    return delay


def _retryable(status: int) -> bool:
    return status == 429 or status >= 500


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------


class OpenAIModel:
    """A model behind an OpenAI-compatible HTTP endpoint, as a
    :class:`~collapselab.models.base.LanguageModel`.

    ``cache_dir`` overrides the request cache folder (default :func:`request_cache_dir`).
    """

    def __init__(self, spec: ModelSpec, *, cache_dir: Path | None = None) -> None:
        check_openai_spec(spec)
        import openai

        self.spec = spec
        self.base_url = _base_url(spec)
        # kept privately only to scrub it from error messages; never written anywhere
        self._key = os.environ.get(_key_env(spec)) or ""
        # max_retries=0: retries are ours (bounded, with jitter, testable), not the SDK's
        self.client = openai.OpenAI(api_key=self._key or _NO_KEY, base_url=self.base_url,
                                    max_retries=0, timeout=REQUEST_TIMEOUT_S)
        self.cache = RequestCache(cache_dir if cache_dir is not None else request_cache_dir())
        self.requests_sent = 0  # network requests that got an answer (cache hits excluded)
        self._count_lock = threading.Lock()  # requests run on worker threads

    def __repr__(self) -> str:  # the default repr would be fine too; this one is sure to hold no key
        return f"OpenAIModel({self.spec.id!r}, base_url={self.base_url!r})"

    # -- protocol -----------------------------------------------------------------------------

    @property
    def is_chat(self) -> bool:
        return self.spec.chat != "never"

    @property
    def max_context(self) -> int:
        return self.spec.max_context or DEFAULT_MAX_CONTEXT

    def generate(
        self,
        prompts: Sequence[ChatPrompt],
        decoding: DecodingSpec,
        *,
        progress: Progress | None = None,
    ) -> list[Generation]:
        """One request per prompt, ``spec.batch_size`` at a time, results in prompt order.

        Chat models get ``/chat/completions`` with ``prompt.system`` as the system message; with
        ``chat: never`` the raw user text goes to ``/completions``. Temperature, top-p and
        ``max_tokens = max_new_tokens`` come from ``decoding``, and ``seed =
        prompt_seed(decoding.seed, prompt.id)`` makes seeded servers reproducible. Token counts
        come from the response's ``usage``.
        """
        from collapselab.models.beams import refuse_beams

        refuse_beams(self.spec, decoding)
        chat = self.is_chat

        def one(prompt: ChatPrompt) -> Generation:
            body = self._sampling_body(prompt, decoding, chat)
            return self._request("chat/completions" if chat else "completions", body,
                                 lambda data: _generation(data, chat), about=f"prompt {prompt.id!r}")

        return self._map(one, list(prompts), progress)

    def continuation_logprobs(
        self,
        prompts: Sequence[ChatPrompt],
        continuations: Sequence[str],
        *,
        progress: Progress | None = None,
    ) -> list[list[float]]:
        """Per pair, the log-probability of each token of the continuation given the prompt.

        Sends the text of :func:`scoring_text` to ``/completions`` with ``echo=true, logprobs=1,
        max_tokens=0`` (vLLM serves this; OpenAI's hosted chat models do not) and keeps the
        tokens after the prompt's characters (:func:`continuation_from_echo`). The tokenization
        is the server's, of the joined text; chat models are scored without their chat template
        (see :func:`scoring_text`), so their values are comparable among texts scored by the
        same endpoint, not with the hf backend's. An empty continuation gives [] and no request.
        """
        if len(prompts) != len(continuations):
            raise ValueError(f"{len(prompts)} prompts but {len(continuations)} continuations")

        def one(pair: tuple[ChatPrompt, str]) -> list[float]:
            prompt, continuation = pair
            if not continuation:
                return []
            text, start = scoring_text(prompt, continuation)
            body = {"model": self.spec.name, "prompt": text, "echo": True, "logprobs": 1, "max_tokens": 0}
            return self._request(
                "completions", body, lambda data: continuation_from_echo(data, text, start),
                about=f"prompt {prompt.id!r}",
                hint="this endpoint cannot score text: continuation log-probs need /completions with "
                     "echo=true, logprobs and max_tokens=0 (as vLLM serves them)",
            )

        return self._map(one, list(zip(prompts, continuations, strict=True)), progress)

    def choice_logprobs(
        self,
        prompts: Sequence[ChatPrompt],
        choices: Sequence[str],
        *,
        progress: Progress | None = None,
    ) -> list[dict[str, float]]:
        """Per prompt, log P(the answer starts with choice c), read from the top
        :data:`TOP_LOGPROBS` alternatives of the first answer token (one request with
        ``max_tokens=1``, temperature 0, ``logprobs``/``top_logprobs``).

        A lower bound of the true probability when a spelling of a choice is outside the top
        tokens (-inf when every spelling is): see :func:`choice_logprobs_from_top`. The values
        are over the whole vocabulary, not renormalised over the choices (as the hf backend).
        """
        if not choices or len(set(choices)) != len(choices) or any(not c or c != c.strip() for c in choices):
            raise ModelError("choices must be distinct, non-empty and without surrounding spaces: "
                             f"{list(choices)}")
        chat = self.is_chat
        conversation = next((p for p in prompts if p.assistant is not None), None)
        if conversation is not None and not chat:  # /completions has no place for an assistant turn
            raise ModelError(f"model {self.spec.id!r}: prompt {conversation.id!r} has an assistant turn to "
                             "classify, which needs /chat/completions (chat: never is set)")
        prefixed = next((p for p in prompts if p.answer_prefix), None)
        if prefixed is not None and chat:  # the chat API cannot start the assistant's answer for it
            raise ModelError(f"model {self.spec.id!r}: prompt {prefixed.id!r} needs its answer to start with "
                             f"{prefixed.answer_prefix!r}, which /chat/completions cannot express (serve the judge "
                             "with a local backend: hf, vllm or llamacpp)")

        def one(prompt: ChatPrompt) -> dict[str, float]:
            body: dict[str, Any] = {"model": self.spec.name, "max_tokens": 1, "temperature": 0.0}
            if chat:
                body.update(messages=chat_messages(prompt), logprobs=True, top_logprobs=TOP_LOGPROBS)
            else:  # the legacy endpoint's logprobs=N is the number of top alternatives
                body.update(prompt=prompt.user + prompt.answer_prefix, logprobs=TOP_LOGPROBS)
            return self._request("chat/completions" if chat else "completions", body,
                                 lambda data: choice_logprobs_from_top(_top_tokens(data, chat), choices),
                                 about=f"prompt {prompt.id!r}")

        return self._map(one, list(prompts), progress)

    def close(self) -> None:
        """Close the HTTP connections."""
        self.client.close()

    # -- helpers ------------------------------------------------------------------------------

    def _sampling_body(self, prompt: ChatPrompt, decoding: DecodingSpec, chat: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.spec.name,
            "temperature": decoding.temperature,
            "top_p": decoding.top_p,
            "max_tokens": decoding.max_new_tokens,
            "seed": prompt_seed(decoding.seed, prompt.id),
        }
        if chat:
            body["messages"] = chat_messages(prompt)
        else:  # a base model has no place for a system prompt (as in the hf backend)
            body["prompt"] = prompt.user
        return body

    def _map(self, fn: Callable[[T], R], items: list[T], progress: Progress | None) -> list[R]:
        """``[fn(x) for x in items]`` on ``spec.batch_size`` threads, in order; the first error
        cancels what has not started and is raised (finished requests are already cached)."""
        if not items:
            return []
        results: list[Any] = [None] * len(items)
        pool = ThreadPoolExecutor(max_workers=min(self.spec.batch_size, len(items)),
                                  thread_name_prefix="collapselab-openai")
        try:
            futures = {pool.submit(fn, item): i for i, item in enumerate(items)}
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                if progress is not None:
                    progress(1)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return results

    def _request(self, endpoint: str, body: dict[str, Any], parse: Callable[[dict[str, Any]], R], *,
                 about: str, hint: str = "") -> R:
        """``parse(response JSON)`` for one request: from the cache if it was answered before,
        else sent (with retries) and cached once it parses."""
        request = {"base_url": self.base_url, "endpoint": endpoint, "body": body}
        cached = self.cache.get(request)
        if cached is not None:
            return parse(cached)
        data = self._send(endpoint, body, about=about, hint=hint)
        try:
            result = parse(data)
        except ModelError as exc:
            raise self._error(f"model {self.spec.id!r} at {self.base_url}, {about}: {exc}") from None
        self.cache.put(request, data)  # only a response that parsed: a bad one is asked again
        return result

    def _send(self, endpoint: str, body: dict[str, Any], *, about: str, hint: str) -> dict[str, Any]:
        """POST one request through the SDK, retrying connection errors, 429 and 5xx."""
        import openai

        resource = self.client.chat.completions if endpoint == "chat/completions" else self.client.completions
        where = f"model {self.spec.id!r} at {self.base_url}, {about}"
        for attempt in range(1, MAX_ATTEMPTS + 1):
            retry_after = None
            try:
                raw = resource.with_raw_response.create(**body)
                data = json.loads(raw.text)
                with self._count_lock:
                    self.requests_sent += 1
                return data
            except openai.APIStatusError as exc:
                if not _retryable(exc.status_code) or attempt == MAX_ATTEMPTS:
                    raise self._error(self._status_message(exc, where, endpoint, hint, attempt)) from None
                retry_after = _retry_after(exc)
            except openai.APIConnectionError as exc:  # refused, reset, timed out
                if attempt == MAX_ATTEMPTS:
                    raise self._error(f"{where}: could not reach the server after {attempt} attempts "
                                      f"({type(exc).__name__}: {exc}); is it running?") from None
            except ValueError as exc:  # a 2xx answer that is not JSON
                raise self._error(f"{where}: the server's answer to /{endpoint} is not JSON "
                                  f"({exc})") from None
            _sleep(backoff_delay(attempt, retry_after))
        raise AssertionError("unreachable")  # the loop returns or raises

    def _status_message(self, exc: Any, where: str, endpoint: str, hint: str, attempt: int) -> str:
        status = exc.status_code
        text = f"{where}: /{endpoint} answered HTTP {status}: {_server_message(exc)}"
        if _retryable(status):
            text += f" (after {attempt} attempts)"
        elif status in (401, 403):
            text += f" (check the API key in ${_key_env(self.spec)})"
        else:
            if status == 404:
                text += (" (is base_url right? It usually ends with /v1. Does the server serve "
                         f"model {self.spec.name!r}?)")
            if hint:
                text += f"; {hint}"
        return text

    def _error(self, text: str) -> ModelError:
        """A ModelError with the key blanked out of its message (a server may echo what it was sent)."""
        return ModelError(text.replace(self._key, "***") if len(self._key) >= 4 else text)

