"""A fake ``vllm``: the subset of vLLM's offline API that :mod:`collapselab.models.vllm_backend`
calls (``LLM``, ``SamplingParams``, ``TokensPrompt``, ``lora.request.LoRARequest``,
``distributed.parallel_state``), computed on the CPU by the real tiny transformers model.

One copy serves both ways the tests use it: imported as ``tests.fakes.vllm`` and put into
``sys.modules`` under the name ``vllm`` (``fake_vllm`` fixtures), or found as ``vllm`` by a child
process whose ``PYTHONPATH`` starts with ``tests/fakes`` (the engine processes of
:mod:`collapselab.models.vllm_engine`). Hence relative imports only.

A child process cannot be inspected from the test, so every engine logs what it was started with
and every request batch it got to the JSON-lines file named by ``FAKE_VLLM_LOG`` (when set).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import torch

from .lora.request import LoRARequest

#: the environment variable naming the file every fake engine logs its events to
LOG_ENV = "FAKE_VLLM_LOG"
#: the environment a fake engine records when it starts
RECORDED_ENV = ("CUDA_VISIBLE_DEVICES", "VLLM_BATCH_INVARIANT")


def log_event(event: str, **fields) -> None:
    """Append one event (with this process's id) to the ``FAKE_VLLM_LOG`` file, if set."""
    path = os.environ.get(LOG_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"event": event, "pid": os.getpid(), **fields}) + "\n")


def read_log(path: str | Path) -> list[dict]:
    """The events of a ``FAKE_VLLM_LOG`` file, in order (none when it does not exist)."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _load_causal_lm(folder: str | Path) -> object:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


def _forward_logp(model: object, ids: list[int]) -> torch.Tensor:
    """log-softmax over the vocabulary at every position of one unpadded sequence [T, V]."""
    with torch.inference_mode():
        return torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), dim=-1)


def _sample(logp: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator) -> int:
    if temperature == 0:
        return int(logp.argmax())
    probs = torch.softmax(logp / temperature, dim=-1)
    values, order = torch.sort(probs, descending=True)
    keep = (values.cumsum(-1) - values) < top_p
    values = values * keep
    return int(order[torch.multinomial(values / values.sum(), 1, generator=generator)])


class FakeSamplingParams:
    def __init__(self, n=1, temperature=1.0, top_p=1.0, max_tokens=16, seed=None, stop_token_ids=None,
                 logprobs=None, prompt_logprobs=None):
        self.n, self.temperature, self.top_p, self.max_tokens = n, temperature, top_p, max_tokens
        self.seed, self.stop_token_ids = seed, stop_token_ids
        self.logprobs, self.prompt_logprobs = logprobs, prompt_logprobs


def fake_tokens_prompt(prompt_token_ids):  # vLLM's TokensPrompt is a TypedDict
    return {"prompt_token_ids": prompt_token_ids}


FakeLoRARequest = LoRARequest


class FakeLLM:
    """vLLM's offline engine on the CPU: every request computed alone, unpadded, in float32.

    Logprob dicts hold the top-k tokens plus the actual one (as vLLM's do); generation stops at a
    stop token (kept in ``token_ids``) or after ``max_tokens`` ("length"); sampling uses a torch
    generator seeded with the request's seed. A LoRA request applies the adapter unmerged (peft);
    as in vLLM, LoRA must be enabled and the adapter's rank must not exceed ``max_lora_rank``.
    """

    created: list[FakeLLM] = []

    def __init__(self, model: str, **kwargs):
        self.kwargs = {"model": model, **kwargs}
        self.calls: list[dict] = []
        self.base = _load_causal_lm(model)
        self.adapted: dict[int, object] = {}
        FakeLLM.created.append(self)
        log_event("init", kwargs=self.kwargs, env={k: os.environ.get(k) for k in RECORDED_ENV})

    def _model_for(self, lora):
        if lora is None:
            return self.base
        if not self.kwargs.get("enable_lora"):
            raise ValueError("LoRA is not enabled: start the engine with enable_lora=True")
        if lora.lora_int_id not in self.adapted:
            from peft import PeftModel

            rank = json.loads((Path(lora.lora_path) / "adapter_config.json").read_text())["r"]
            if rank > self.kwargs.get("max_lora_rank", 16):
                raise ValueError(f"LoRA rank {rank} is greater than max_lora_rank {self.kwargs.get('max_lora_rank')}")
            base = _load_causal_lm(self.kwargs["model"])
            self.adapted[lora.lora_int_id] = PeftModel.from_pretrained(base, lora.lora_path).eval()
        return self.adapted[lora.lora_int_id]

    @staticmethod
    def _entry(logp: torch.Tensor, actual: int, k: int) -> dict:
        values, ids = torch.topk(logp, k)
        entry = {int(i): SimpleNamespace(logprob=float(v), rank=r + 1)
                 for r, (v, i) in enumerate(zip(values, ids, strict=True))}
        entry.setdefault(int(actual), SimpleNamespace(logprob=float(logp[actual]), rank=None))
        return entry

    def generate(self, prompts, sampling_params, *, use_tqdm=True, lora_request=None):
        self.calls.append({"prompts": list(prompts), "params": list(sampling_params),
                           "use_tqdm": use_tqdm, "lora": lora_request})
        log_event("generate", n=len(prompts), seeds=[sp.seed for sp in sampling_params],
                  lora=None if lora_request is None else
                  [lora_request.lora_name, lora_request.lora_int_id, lora_request.lora_path])
        model = self._model_for(lora_request)
        return [self._request(model, p["prompt_token_ids"], sp)
                for p, sp in zip(prompts, sampling_params, strict=True)]

    def _request(self, model, ids: list[int], sp: FakeSamplingParams):
        assert len(ids) + 1 <= self.kwargs["max_model_len"]
        prompt_logprobs = None
        if sp.prompt_logprobs is not None:
            logp = _forward_logp(model, ids)
            prompt_logprobs = [None] + [self._entry(logp[j - 1], ids[j], sp.prompt_logprobs)
                                        for j in range(1, len(ids))]
        generator = torch.Generator().manual_seed(sp.seed if sp.seed is not None else 0)
        tokens, steps, finish = [], [], "length"
        for _ in range(sp.max_tokens):
            logp = _forward_logp(model, ids + tokens)[-1]
            token = _sample(logp, sp.temperature, sp.top_p, generator)
            if sp.logprobs is not None:
                steps.append(self._entry(logp, token, sp.logprobs))
            tokens.append(token)
            if token in (sp.stop_token_ids or []):
                finish = "stop"
                break
        completion = SimpleNamespace(text="(detokenized by vLLM)", token_ids=tokens, finish_reason=finish,
                                     logprobs=steps if sp.logprobs is not None else None)
        return SimpleNamespace(prompt_token_ids=ids, prompt_logprobs=prompt_logprobs, outputs=[completion])


# the names vLLM exports
LLM = FakeLLM
SamplingParams = FakeSamplingParams
TokensPrompt = fake_tokens_prompt
