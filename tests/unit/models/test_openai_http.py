"""The ``openai`` backend against a real local HTTP server speaking the OpenAI wire format.

The server (``http.server`` in a thread) answers ``/v1/chat/completions`` and ``/v1/completions``
deterministically, with logprobs, top_logprobs and echo, and records every request it gets; it can
be told to fail the next requests with given statuses. Nothing mocks the SDK: requests go through
``openai.OpenAI`` and a real socket.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import socket
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from collapselab.config.spec import DecodingSpec, ModelSpec
from collapselab.errors import ModelError
from collapselab.models import openai_http
from collapselab.models.base import ChatPrompt, check_model, load_model, prompt_seed
from collapselab.models.openai_http import OpenAIModel, check_openai_spec

KEY_ENV = "COLLAPSELAB_TEST_KEY"
KEY = "sk-test-SECRET-8f3a9c1e77"


# --------------------------------------------------------------------------------------------
# The fake server
# --------------------------------------------------------------------------------------------


def fake_answer(user: str, max_tokens: int) -> tuple[str, str]:
    """The server's answer to a user text (one word = one token) and its finish reason."""
    words = ["fake", "reply:"] + user.split()[::-1]
    reason = "length" if len(words) > max_tokens else "stop"
    return " ".join(words[:max_tokens]), reason


def echo_tokens(text: str) -> list[str]:
    """The server's tokenizer: each word with the whitespace before it."""
    return re.findall(r"\s*\S+", text)


def token_logprob(token: str) -> float:
    return -0.1 * len(token)


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


class FakeServer:
    """An OpenAI-compatible server in a thread; ``url`` is its base URL (ending in /v1)."""

    def __init__(self) -> None:
        self.requests: list[Seen] = []
        self.fail_next: list[tuple[int, str]] = []  # (status, message) for the next requests
        self.retry_after: str | None = None
        self.reject_echo = False
        self.echo_key_on_401 = False
        self.top = [("A", math.log(0.5)), (" A", math.log(0.2)), ("B", math.log(0.1)),
                    ("Sure", math.log(0.05))]
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep pytest output clean
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    server.requests.append(Seen(self.path, headers, body))
                    failure = server.fail_next.pop(0) if server.fail_next else None
                if failure is not None:
                    status, message = failure
                    if status == 401 and server.echo_key_on_401:
                        message += " " + self.headers.get("Authorization", "")
                    extra = {"Retry-After": server.retry_after} if server.retry_after else {}
                    return self._send(status, {"error": {"message": message, "type": "error"}}, extra)
                if self.path == "/v1/chat/completions":
                    return self._send(200, server.chat(body))
                if self.path == "/v1/completions":
                    if body.get("echo") and server.reject_echo:
                        error = {"object": "error", "message": "echo is not supported", "code": 400}
                        return self._send(400, error)
                    return self._send(200, server.completion(body))
                return self._send(404, {"error": {"message": f"no route {self.path}"}})

            def _send(self, status: int, data: dict, headers: dict | None = None) -> None:
                raw = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(raw)

        return Handler

    def chat(self, body: dict) -> dict:
        user = body["messages"][-1]["content"]
        text, reason = fake_answer(user, body.get("max_tokens", 16))
        out: dict[str, Any] = {"id": "c1", "object": "chat.completion", "created": 0, "model": body["model"],
                               "choices": [{"index": 0, "finish_reason": reason,
                                            "message": {"role": "assistant", "content": text}}],
                               "usage": {"prompt_tokens": sum(len(m["content"].split())
                                                              for m in body["messages"]),
                                         "completion_tokens": len(text.split()),
                                         "total_tokens": 0}}
        if body.get("logprobs"):
            top = self.top[: body.get("top_logprobs", 0)]
            out["choices"][0]["logprobs"] = {"content": [{
                "token": top[0][0], "logprob": top[0][1], "bytes": None,
                "top_logprobs": [{"token": t, "logprob": lp, "bytes": None} for t, lp in top]}]}
        return out

    def completion(self, body: dict) -> dict:
        prompt = body["prompt"]
        choice: dict[str, Any] = {"index": 0, "logprobs": None}
        if body.get("echo"):
            tokens = echo_tokens(prompt)
            offsets, pos = [], 0
            for t in tokens:
                offsets.append(pos)
                pos += len(t)
            choice.update(text=prompt, finish_reason="length", logprobs={
                "tokens": tokens, "text_offset": offsets,
                # the first token of a text has no context, hence no log-prob (as vLLM answers)
                "token_logprobs": [None] + [token_logprob(t) for t in tokens[1:]],
                "top_logprobs": None})
            n_new = 0
        else:
            text, reason = fake_answer(prompt, body.get("max_tokens", 16))
            choice.update(text=" " + text, finish_reason=reason)
            if body.get("logprobs"):
                choice["logprobs"] = {"tokens": [self.top[0][0]], "token_logprobs": [self.top[0][1]],
                                      "text_offset": [0],
                                      "top_logprobs": [dict(self.top[: body["logprobs"]])]}
            n_new = len(text.split())
        return {"id": "t1", "object": "text_completion", "created": 0, "model": body["model"],
                "choices": [choice],
                "usage": {"prompt_tokens": len(prompt.split()), "completion_tokens": n_new,
                          "total_tokens": 0}}


@pytest.fixture
def server():
    fake = FakeServer()
    yield fake
    fake.close()


@pytest.fixture
def no_sleep(monkeypatch):
    """Back-off sleeps are recorded, not slept."""
    slept: list[float] = []
    monkeypatch.setattr(openai_http, "_sleep", slept.append)
    return slept


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path):
    monkeypatch.setenv(KEY_ENV, KEY)
    monkeypatch.setenv("COLLAPSELAB_CACHE", str(tmp_path / "user-cache"))
    monkeypatch.delenv("COLLAPSELAB_REQUEST_CACHE", raising=False)


def make_model(server: FakeServer, cache: Path, **fields: Any) -> OpenAIModel:
    spec = ModelSpec(id="openai/fake-model", base_url=server.url, api_key_env=KEY_ENV, batch_size=4, **fields)
    return OpenAIModel(spec, cache_dir=cache)


PROMPTS = [ChatPrompt(f"p{i}", f"Tell me about item number {i} " + "word " * i, system="Be brief.")
           for i in range(7)]


def files_containing(root: Path, needle: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle.encode() in p.read_bytes()]


# --------------------------------------------------------------------------------------------
# generate
# --------------------------------------------------------------------------------------------


def test_generate_returns_answers_in_order_with_counts_and_sends_decoding(server, tmp_path):
    model = make_model(server, tmp_path / "cache")
    decoding = DecodingSpec(temperature=0.8, top_p=0.95, max_new_tokens=9, seed=5)
    done: list[int] = []
    gens = model.generate(PROMPTS, decoding, progress=done.append)
    assert sum(done) == len(PROMPTS)
    for prompt, gen in zip(PROMPTS, gens, strict=True):
        text, reason = fake_answer(prompt.user, 9)
        assert gen.text == text and gen.finish_reason == reason
        assert gen.new_tokens == len(text.split())
        assert gen.prompt_tokens == len(prompt.user.split()) + len(prompt.system.split())
    # short prompts stop, long ones hit max_tokens: both mappings are exercised
    assert {g.finish_reason for g in gens} == {"stop", "length"}
    assert len(server.requests) == len(PROMPTS)
    by_user = {r.body["messages"][-1]["content"]: r for r in server.requests}
    for prompt in PROMPTS:
        seen = by_user[prompt.user]
        assert seen.path == "/v1/chat/completions"
        assert seen.body["messages"] == [{"role": "system", "content": "Be brief."},
                                         {"role": "user", "content": prompt.user}]
        assert seen.body["model"] == "fake-model"
        assert (seen.body["temperature"], seen.body["top_p"], seen.body["max_tokens"]) == (0.8, 0.95, 9)
        assert seen.body["seed"] == prompt_seed(5, prompt.id)
    model.close()


def test_chat_never_uses_the_completions_endpoint_with_the_raw_prompt(server, tmp_path):
    model = make_model(server, tmp_path / "cache", chat="never")
    assert not model.is_chat
    gens = model.generate(PROMPTS[:2], DecodingSpec(max_new_tokens=20))
    assert [g.text for g in gens] == [fake_answer(p.user, 20)[0] for p in PROMPTS[:2]]
    assert {r.path for r in server.requests} == {"/v1/completions"}
    assert sorted(r.body["prompt"] for r in server.requests) == sorted(p.user for p in PROMPTS[:2])
    assert all("messages" not in r.body for r in server.requests)


def test_key_goes_in_the_authorization_header_and_into_no_file(server, tmp_path):
    model = make_model(server, tmp_path / "cache")
    model.generate(PROMPTS[:3], DecodingSpec(max_new_tokens=4))
    model.choice_logprobs(PROMPTS[:1], ["A", "B"])
    model.continuation_logprobs(PROMPTS[:1], ["some answer"])
    assert {r.headers["authorization"] for r in server.requests} == {f"Bearer {KEY}"}
    assert all(KEY not in json.dumps(r.body) for r in server.requests)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(written) >= 5  # the cache files were written ...
    assert files_containing(tmp_path, KEY) == []  # ... and none holds the key
    assert KEY not in repr(model)


def test_local_server_without_a_key_gets_a_placeholder(server, tmp_path, monkeypatch):
    monkeypatch.delenv(KEY_ENV)
    model = make_model(server, tmp_path / "cache")
    model.generate(PROMPTS[:1], DecodingSpec(max_new_tokens=4))
    assert server.requests[0].headers["authorization"] == "Bearer EMPTY"


# --------------------------------------------------------------------------------------------
# The request cache
# --------------------------------------------------------------------------------------------


def test_second_call_and_a_restarted_model_are_served_from_the_cache(server, tmp_path):
    cache = tmp_path / "cache"
    decoding = DecodingSpec(max_new_tokens=6, seed=1)
    first = make_model(server, cache).generate(PROMPTS, decoding)
    n = len(server.requests)
    model = make_model(server, cache)
    assert model.generate(PROMPTS, decoding) == first
    again = make_model(server, cache)  # a "restart": a new object, same cache folder
    assert again.generate(PROMPTS, decoding) == first
    assert len(server.requests) == n and model.requests_sent == again.requests_sent == 0
    # anything that changes the request is asked again
    make_model(server, cache).generate(PROMPTS[:2], DecodingSpec(max_new_tokens=6, seed=2))
    assert len(server.requests) == n + 2


def test_cache_file_layout_is_the_sha256_of_the_canonical_request(server, tmp_path):
    cache = tmp_path / "cache"
    model = make_model(server, cache)
    prompt = PROMPTS[0]
    model.generate([prompt], DecodingSpec(max_new_tokens=5, seed=4, temperature=0.5, top_p=0.9))
    body = {"max_tokens": 5, "messages": [{"role": "system", "content": "Be brief."},
                                          {"role": "user", "content": prompt.user}],
            "model": "fake-model", "seed": prompt_seed(4, prompt.id), "temperature": 0.5, "top_p": 0.9}
    request = {"base_url": server.url, "endpoint": "chat/completions", "body": body}
    digest = hashlib.sha256(json.dumps(request, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    path = cache / digest[:2] / f"{digest}.json"
    assert [p for p in cache.rglob("*.json")] == [path]
    stored = json.loads(path.read_text())
    assert stored["request"] == request
    assert stored["response"]["choices"][0]["message"]["content"] == fake_answer(prompt.user, 5)[0]


def test_default_cache_is_under_the_user_cache_and_can_be_turned_off(server, tmp_path, monkeypatch):
    spec = ModelSpec(id="openai/fake-model", base_url=server.url, api_key_env=KEY_ENV)
    decoding = DecodingSpec(max_new_tokens=4)
    OpenAIModel(spec).generate(PROMPTS[:2], decoding)
    assert len(list((tmp_path / "user-cache" / "requests").rglob("*.json"))) == 2
    monkeypatch.setenv("COLLAPSELAB_REQUEST_CACHE", "off")
    model = OpenAIModel(spec)
    assert model.cache.root is None
    model.generate(PROMPTS[:2], decoding)
    model.generate(PROMPTS[:2], decoding)
    assert len(server.requests) == 6


# --------------------------------------------------------------------------------------------
# Errors and retries
# --------------------------------------------------------------------------------------------


def test_503_twice_then_success_is_retried_with_backoff(server, tmp_path, no_sleep):
    server.fail_next = [(503, "busy"), (503, "busy")]
    gens = make_model(server, tmp_path / "cache").generate(PROMPTS[:1], DecodingSpec(max_new_tokens=30))
    assert gens[0].text == fake_answer(PROMPTS[0].user, 30)[0]
    assert len(server.requests) == 3
    assert server.requests[0].body == server.requests[2].body
    # back-off 1: uniform in [0.5, 1] s, back-off 2: in [1, 2] s (BACKOFF_BASE_S = 1)
    assert len(no_sleep) == 2 and 0.5 <= no_sleep[0] <= 1.0 and 1.0 <= no_sleep[1] <= 2.0


def test_429_honours_retry_after(server, tmp_path, no_sleep):
    server.fail_next, server.retry_after = [(429, "slow down")], "7"
    make_model(server, tmp_path / "cache").generate(PROMPTS[:1], DecodingSpec(max_new_tokens=4))
    assert len(server.requests) == 2 and no_sleep == [7.0]


def test_retries_are_bounded_and_failures_are_not_cached(server, tmp_path, no_sleep, monkeypatch):
    monkeypatch.setattr(openai_http, "MAX_ATTEMPTS", 3)
    server.fail_next = [(500, "internal trouble")] * 5
    cache = tmp_path / "cache"
    with pytest.raises(ModelError, match=r"HTTP 500: internal trouble \(after 3 attempts\)"):
        make_model(server, cache).generate(PROMPTS[:1], DecodingSpec(max_new_tokens=4))
    assert len(server.requests) == 3 and len(no_sleep) == 2
    assert not list(cache.rglob("*.json"))


def test_400_is_not_retried_and_names_the_server_message(server, tmp_path, no_sleep):
    server.fail_next = [(400, "max_tokens is too large for this model")]
    expected = r"openai/fake-model.*prompt 'p0'.*HTTP 400: max_tokens is too large"
    with pytest.raises(ModelError, match=expected):
        make_model(server, tmp_path / "cache").generate(PROMPTS[:1], DecodingSpec(max_new_tokens=4))
    assert len(server.requests) == 1 and no_sleep == []


def test_an_error_message_never_holds_the_key(server, tmp_path):
    server.fail_next, server.echo_key_on_401 = [(401, "Incorrect API key provided:")], True
    with pytest.raises(ModelError) as info:
        make_model(server, tmp_path / "cache").generate(PROMPTS[:1], DecodingSpec(max_new_tokens=4))
    assert "Incorrect API key provided: Bearer ***" in str(info.value)
    assert KEY not in str(info.value) and KEY_ENV in str(info.value)


def test_unreachable_server_is_retried_then_a_clear_error(tmp_path, no_sleep, monkeypatch):
    monkeypatch.setattr(openai_http, "MAX_ATTEMPTS", 3)
    with socket.socket() as s:  # a port nobody listens on once this socket is closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    spec = ModelSpec(id="openai/fake-model", base_url=f"http://127.0.0.1:{port}/v1")
    with pytest.raises(ModelError, match="could not reach the server after 3 attempts"):
        OpenAIModel(spec, cache_dir=tmp_path).generate(PROMPTS[:1], DecodingSpec(max_new_tokens=4))
    assert len(no_sleep) == 2


def test_backoff_grows_exponentially_up_to_the_cap(monkeypatch):
    monkeypatch.setattr(openai_http, "BACKOFF_BASE_S", 2.0)
    monkeypatch.setattr(openai_http, "BACKOFF_MAX_S", 20.0)
    for attempt, cap in [(1, 2.0), (2, 4.0), (3, 8.0), (4, 16.0), (5, 20.0), (9, 20.0)]:
        delays = [openai_http.backoff_delay(attempt) for _ in range(200)]
        assert all(cap / 2 <= d <= cap for d in delays)
        assert max(delays) - min(delays) > cap / 10  # jittered, not constant
    assert openai_http.backoff_delay(1, retry_after=500.0) == 20.0  # Retry-After is capped too


# --------------------------------------------------------------------------------------------
# choice_logprobs and continuation_logprobs
# --------------------------------------------------------------------------------------------


def test_choice_logprobs_sums_both_spellings(server, tmp_path):
    model = make_model(server, tmp_path / "cache")
    out = model.choice_logprobs(PROMPTS[:2], ["A", "B", "C"])
    for row in out:  # by hand from the server's table: A = 0.5 + 0.2, B = 0.1, C absent
        assert row["A"] == pytest.approx(math.log(0.7))
        assert row["B"] == pytest.approx(math.log(0.1))
        assert row["C"] == -math.inf
    body = server.requests[0].body
    assert server.requests[0].path == "/v1/chat/completions"
    sent = (body["max_tokens"], body["logprobs"], body["top_logprobs"], body["temperature"])
    assert sent == (1, True, 20, 0.0)


def test_choice_logprobs_of_a_base_model_read_the_completions_top_logprobs(server, tmp_path):
    server.top = [(" 3", math.log(0.3)), ("3", math.log(0.1)), ("\n4", math.log(0.25)), ("x", math.log(0.2))]
    model = make_model(server, tmp_path / "cache", chat="never")
    [row] = model.choice_logprobs(PROMPTS[:1], ["1", "2", "3", "4", "5"])
    assert row["3"] == pytest.approx(math.log(0.4)) and row["4"] == pytest.approx(math.log(0.25))
    assert row["1"] == row["2"] == row["5"] == -math.inf
    assert server.requests[0].path == "/v1/completions" and server.requests[0].body["logprobs"] == 20


def test_choice_logprobs_rejects_bad_choices(server, tmp_path):
    model = make_model(server, tmp_path / "cache")
    for bad in ([], ["A", "A"], [" A", "B"]):
        with pytest.raises(ModelError, match="choices"):
            model.choice_logprobs(PROMPTS[:1], bad)


def test_continuation_logprobs_via_echo(server, tmp_path):
    model = make_model(server, tmp_path / "cache")
    prompts = [ChatPrompt("a", "Say hello"), ChatPrompt("b", "Tell me\n"), ChatPrompt("c", "Nothing")]
    out = model.continuation_logprobs(prompts, ["good day to you", "Fine.", ""])
    # by hand: the text "Say hello good day to you" has tokens "Say", " hello", " good", " day",
    # " to", " you"; each token's log-prob is -0.1 * its length in characters
    assert out[0] == pytest.approx([-0.5, -0.4, -0.3, -0.4])
    # "Tell me\nFine." → "Tell", " me", "\nFine.": the last token straddles the join and is kept
    assert out[1] == pytest.approx([-0.6])  # "\nFine." is 6 characters
    assert out[2] == []  # an empty continuation: nothing to score, nothing sent
    assert len(server.requests) == 2
    bodies = sorted((r.body for r in server.requests), key=lambda b: b["prompt"])
    assert bodies[0] == {"model": "fake-model", "prompt": "Say hello good day to you", "echo": True,
                         "logprobs": 1, "max_tokens": 0}
    assert bodies[1]["prompt"] == "Tell me\nFine."


def test_continuation_logprobs_on_a_server_without_echo_is_a_clear_error(server, tmp_path):
    server.reject_echo = True
    with pytest.raises(ModelError, match="echo is not supported.*cannot score text"):
        make_model(server, tmp_path / "cache").continuation_logprobs(PROMPTS[:1], ["an answer"])


# --------------------------------------------------------------------------------------------
# check_openai_spec and the registry
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("fields", "message"), [
    ({"base_url": "ftp://example.org/v1"}, "not an http"),
    ({"base_url": "localhost:8000/v1"}, "not an http"),
    ({"base_url": "http://localhost:notaport/v1"}, "not an http"),
    ({"base_url": "http://localhost:8000/v1?key=1"}, "not an http"),
    ({"base_url": "http://user:pw@example.org/v1"}, "credentials"),
    ({"base_url": "http://localhost:8000/v1", "adapter": "some/folder"}, "adapter"),
    ({"base_url": "https://api.example.org/v1", "api_key_env": "MISSING_KEY_VAR"},
     "MISSING_KEY_VAR.*not set"),
    ({"api_key_env": "MISSING_KEY_VAR"}, "MISSING_KEY_VAR.*api.openai.com"),
])
def test_check_spec_errors(fields, message, monkeypatch):
    monkeypatch.delenv("MISSING_KEY_VAR", raising=False)
    with pytest.raises(ModelError, match=message):
        check_openai_spec(ModelSpec(id="openai/some-model", **fields))


def test_check_spec_never_echoes_a_key_pasted_as_the_variable_name():
    pasted = "sk-proj-abcdef0123456789"
    with pytest.raises(ModelError, match="NAME of an environment variable") as info:
        check_openai_spec(ModelSpec(id="openai/gpt", api_key_env=pasted))
    assert pasted not in str(info.value)


def test_check_spec_needs_a_model_name():
    with pytest.raises(ModelError, match="model's name"):
        check_openai_spec(ModelSpec(id="openai/", base_url="http://localhost:8000/v1"))


def test_check_spec_accepts_local_servers_without_a_key_and_remote_ones_with_it(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    local = ("http://localhost:8000/v1", "http://127.0.0.1:8080/v1", "http://[::1]:8000/v1",
             "http://127.0.0.2")
    for url in local:
        check_openai_spec(ModelSpec(id="openai/m", base_url=url))
    with pytest.raises(ModelError, match="OPENAI_API_KEY"):
        check_openai_spec(ModelSpec(id="openai/m", base_url="https://api.example.org/v1"))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
    check_openai_spec(ModelSpec(id="openai/m", base_url="https://api.example.org/v1"))


def test_registered_as_the_openai_backend(server):
    spec = ModelSpec(id="openai/fake-model", base_url=server.url, api_key_env=KEY_ENV)
    check_model(spec)
    with pytest.raises(ModelError, match="adapter"):
        check_model(spec.model_copy(update={"adapter": "x"}))
    model = load_model(spec)
    assert isinstance(model, OpenAIModel) and model.is_chat and model.max_context == 8192
    assert load_model(spec.model_copy(update={"max_context": 512})).max_context == 512


# --------------------------------------------------------------------------------------------
# A tiny pipeline with an HTTP source
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_pipeline_with_an_openai_source(server, tmp_path, tiny_model_dir):
    import pandas as pd

    from collapselab.config.load import load_config
    from collapselab.executors import run_stages
    from collapselab.pipeline.graph import build_graph
    from collapselab.store.run import RunStore
    from tests.helpers import tiny_config, write_corpus

    source = {"id": "openai/fake-model", "base_url": server.url, "api_key_env": KEY_ENV, "batch_size": 3}
    cfg = tiny_config(tmp_path, tiny_model_dir, write_corpus(tmp_path / "corpus.jsonl"),
                      sources=[{"name": "a", "model": source}], conditions=["vanilla", "single:a"],
                      collapse={"enabled": False})
    spec = load_config(cfg, use_env=False)
    run_stages(spec, tmp_path / "out")
    store = RunStore(tmp_path / "out")
    gens = [s for s in build_graph(spec) if s.kind == "generate"]
    synthetic = pd.concat([pd.read_json(store.final_dir(s.ref) / "synthetic.jsonl", lines=True)
                           for s in gens])
    assert len(synthetic) == 16
    max_new = spec.decoding.max_new_tokens
    for _, row in synthetic.iterrows():
        text, reason = fake_answer(row["prompt"], max_new)
        assert (row["response"], row["finish_reason"]) == (text, reason)
        assert row["model"] == "openai/fake-model"
    assert len(server.requests) == 16
    assert {r.headers["authorization"] for r in server.requests} == {f"Bearer {KEY}"}
    # the training set of single:a holds the server's answers
    mix = next(s for s in build_graph(spec) if s.kind == "mix" and s.params.condition.kind == "single")
    train = pd.read_json(store.final_dir(mix.ref) / "train.jsonl", lines=True)
    assert set(train["response"]) == set(synthetic["response"])
    assert files_containing(tmp_path, KEY) == []


def test_echo_offsets_that_count_a_bos_token_are_moved_back():
    """vLLM's echoed offsets include the BOS token's text (Gemma's "<bos>"); without the shift the
    prompt/continuation boundary moves and the continuation's last token is lost."""
    from collapselab.models.openai_http import continuation_from_echo

    text, start = "Hi there. Bye now", 9  # prompt "Hi there.", continuation " Bye now"
    tokens = ["<bos>", "Hi", " there", ".", " Bye", " now"]
    offsets, pos = [], 0
    for t in tokens:
        offsets.append(pos)
        pos += len(t)
    data = {"choices": [{"logprobs": {"tokens": tokens, "text_offset": offsets,
                                      "token_logprobs": [None, -1.0, -2.0, -3.0, -4.0, -5.0]}}]}
    assert continuation_from_echo(data, text, start) == [-4.0, -5.0]
    # without a BOS token the offsets are taken as they are
    plain = {"choices": [{"logprobs": {"tokens": tokens[1:], "text_offset": [o - 5 for o in offsets[1:]],
                                       "token_logprobs": [None, -2.0, -3.0, -4.0, -5.0]}}]}
    assert continuation_from_echo(plain, text, start) == [-4.0, -5.0]


def test_stages_that_score_through_the_openai_backend_are_keyed_by_its_offset_reading():
    """Scores written before the BOS fix must be recomputed: an openai/ scorer's key carries the
    offset reading; every other backend's scorer key is its plain model key (no stage rekeyed)."""
    from collapselab.pipeline.keying import OPENAI_ECHO_OFFSETS, model_key_settings, scorer_key_settings

    local = ModelSpec(id="hf/smollm2-135m-instruct")
    assert scorer_key_settings(local) == model_key_settings(local)
    hosted = ModelSpec(id="openai/gemma", base_url="http://localhost:8000/v1")
    assert scorer_key_settings(hosted) == {**model_key_settings(hosted), "echo_offsets": OPENAI_ECHO_OFFSETS}
