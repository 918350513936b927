"""vLLM engines in child processes (:mod:`collapselab.models.vllm_engine`): many adapters on one
engine, data-parallel engines, batch invariance, errors, and the pool and stage order around them.

vLLM does not run here; the engine processes import the fake ``vllm`` of ``tests/fakes/vllm``
(first on their ``PYTHONPATH``), computed by the real tiny model, which logs what every engine was
started with and sent to the file ``FAKE_VLLM_LOG``. Every output is compared with the per-model
path — :func:`~collapselab.models.vllm_backend.load_vllm_model` in this process on the same fake —
and must be equal, not close: the child runs the same code on the same requests.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from collapselab.config.load import load_config  # noqa: E402
from collapselab.config.spec import DecodingSpec, ModelSpec, VllmRunSpec  # noqa: E402
from collapselab.errors import ModelError  # noqa: E402
from collapselab.executors import StageProgress, run_stages  # noqa: E402
from collapselab.executors.order import engine_order, stage_engine  # noqa: E402
from collapselab.models import vllm_engine  # noqa: E402
from collapselab.models.base import ChatPrompt  # noqa: E402
from collapselab.models.vllm_backend import load_vllm_model  # noqa: E402
from collapselab.models.vllm_engine import (  # noqa: E402
    EngineGroup,
    engine_devices,
    engine_key,
    load_engine_model,
    share_bounds,
    uses_engine_process,
)
from collapselab.pipeline.context import ModelPool  # noqa: E402
from collapselab.pipeline.graph import build_graph  # noqa: E402
from collapselab.store.run import RunStore  # noqa: E402
from tests.fakes import FAKES, install_vllm  # noqa: E402
from tests.fakes.vllm import _load_causal_lm, read_log  # noqa: E402
from tests.helpers import tiny_config, write_corpus  # noqa: E402

SYSTEM = "You are a helpful assistant."
PROMPTS = [
    ChatPrompt("a", "Continue the passage: It is a truth universally acknowledged", SYSTEM),
    ChatPrompt("b", "Hi", SYSTEM),
    ChatPrompt("c", "The quick brown fox jumps over the lazy dog.", SYSTEM),
    ChatPrompt("d", "Answer the question with care and kindness.", None),
    ChatPrompt("e", "0123456789", SYSTEM),
]
ANSWERS = ["It is a truth.", "Hello there, kind fox", "", "ABC abc 123!", "x"]
SAMPLE = DecodingSpec(temperature=0.9, top_p=0.9, max_new_tokens=6, seed=7)
CHOICES = list("abcdefghijklmnopqrstuvwxyz")  # 26 of 384 tokens: some are among the top 20


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Every test here on one torch thread (tests/conftest.py)."""


def _engine_env(mp: pytest.MonkeyPatch, log: Path) -> None:
    """What an engine child needs here: the fake vllm first on its path, one thread, the log."""
    mp.setenv("PYTHONPATH", os.pathsep.join([str(FAKES), *filter(None, [os.environ.get("PYTHONPATH")])]))
    mp.setenv("OMP_NUM_THREADS", "1")
    mp.setenv("FAKE_VLLM_LOG", str(log))
    mp.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    mp.delenv("VLLM_BATCH_INVARIANT", raising=False)


def _child_events(log: Path, event: str | None = None) -> list[dict]:
    """The log's events written by engine children (not by this process's per-model engines)."""
    return [e for e in read_log(log) if e["pid"] != os.getpid() and (event is None or e["event"] == event)]


def _adapter(base: Path, folder: Path, rank: int, seed: int) -> Path:
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(_load_causal_lm(base), config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def adapters(tiny_model_dir, tmp_path_factory) -> dict[str, Path]:
    """Three adapters of the tiny chat model: ranks 4 and 8 (vLLM limit 8) and 12 (limit 16)."""
    root = tmp_path_factory.mktemp("adapters")
    return {"r4": _adapter(tiny_model_dir, root / "first", 4, 1),
            "r8": _adapter(tiny_model_dir, root / "second", 8, 2),
            "r12": _adapter(tiny_model_dir, root / "third", 12, 3)}


def _spec(base: Path, adapter: Path | None = None, **kw) -> ModelSpec:
    return ModelSpec(id=f"vllm/{base}", dtype="float32", adapter=str(adapter) if adapter else None, **kw)


def _outputs(model) -> tuple:
    return (model.generate(PROMPTS, SAMPLE), model.continuation_logprobs(PROMPTS, ANSWERS),
            model.choice_logprobs(PROMPTS, CHOICES))


@pytest.fixture(scope="module")
def reference(tiny_model_dir, adapters):
    """The per-model path's outputs (an engine per model, in this process) for the plain model
    and each adapter."""
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        install_vllm(mp)
        for name in (None, "r4", "r8", "r12"):
            model = load_vllm_model(_spec(tiny_model_dir, adapters.get(name)))
            out[name] = _outputs(model)
            model.close()
    assert any(math.isfinite(v) for rows in out.values() for row in rows[2] for v in row.values())
    return out


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """A run's pool with the default run.vllm (a shared engine) whose adapters have rank 4..8;
    yields the pool and the fake's log."""
    tmp = tmp_path_factory.mktemp("shared")
    with pytest.MonkeyPatch.context() as mp:
        _engine_env(mp, tmp / "fake-vllm.jsonl")
        pool = ModelPool(vllm=VllmRunSpec(), lora_rank=8, log_dir=tmp / "logs")
        yield pool, tmp / "fake-vllm.jsonl"
        pool.close()


# -- which models share an engine ---------------------------------------------------------------


def test_the_parent_imports_no_sdk():
    import subprocess

    code = ("import sys, collapselab.models.vllm_engine, collapselab.executors.order, collapselab.pipeline.context; "
            "print(sorted(m for m in ('vllm', 'torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_which_models_run_on_engine_processes_and_which_share_one(tmp_path):
    shared, apart = VllmRunSpec(), VllmRunSpec(shared_engine=False)
    base = _spec(tmp_path)
    assert uses_engine_process(base, shared) and not uses_engine_process(base, apart)
    assert not uses_engine_process(ModelSpec(id="hf/x"), shared)
    for changed in (VllmRunSpec(shared_engine=False, data_parallel=2), VllmRunSpec(shared_engine=False, python="py"),
                    VllmRunSpec(shared_engine=False, batch_invariant=True)):
        assert uses_engine_process(base, changed)  # only an engine process can do these
    # one engine per base model: adapters, chat mode and batch size share it; dtype and context do not
    same = [_spec(tmp_path, tmp_path / "a1"), _spec(tmp_path, tmp_path / "a2", chat="never", batch_size=64)]
    assert {engine_key(s, shared) for s in same} == {engine_key(base, shared)}
    assert engine_key(_spec(tmp_path, max_context=256), shared) != engine_key(base, shared)
    assert engine_key(base.model_copy(update={"dtype": "bfloat16"}), shared) != engine_key(base, shared)
    assert len({engine_key(s, apart) for s in [base, *same]}) == 3  # one engine per model


def test_shares_are_contiguous_and_fixed():
    assert share_bounds(5, 2) == [(0, 3), (3, 5)]
    assert share_bounds(6, 3) == [(0, 2), (2, 4), (4, 6)]
    assert share_bounds(1, 3) == [(0, 1), (1, 1), (1, 1)]
    assert share_bounds(7, 1) == [(0, 7)]


def test_each_engine_gets_one_gpu_of_those_visible():
    assert engine_devices(1, "3,5") == [None]  # one engine: the GPUs as they are
    assert engine_devices(2, None) == ["0", "1"]
    assert engine_devices(2, "3, 5,7") == ["3", "5"]  # e.g. the GPUs Ray gave the task
    with pytest.raises(ModelError, match=r"data_parallel is 4 with 1 GPU\(s\) per engine but CUDA_VISIBLE_DEVICES "
                                         r"lists 2 GPU\(s\)"):
        engine_devices(4, "3,5")
    with pytest.raises(ModelError, match="lists 0 GPU"):
        engine_devices(2, "")


# -- one engine, many adapters ------------------------------------------------------------------


def test_one_engine_serves_every_adapter_with_the_per_model_outputs(shared, tiny_model_dir, adapters, reference):
    pool, log = shared
    finished: list[int] = []
    for name in (None, "r4", "r8"):
        model = pool.get(_spec(tiny_model_dir, adapters.get(name)))
        assert model.is_chat and model.max_context == 512
        assert _outputs(model) == reference[name], name
        model.generate(PROMPTS[:2], SAMPLE, progress=finished.append)
    assert finished == [2, 2, 2]  # the engine's progress, per call of vLLM
    assert pool.key.startswith("engine:")
    (init,) = _child_events(log, "init")  # one engine for the plain model and both adapters
    kwargs = init["kwargs"]
    assert (kwargs["enable_lora"], kwargs["max_loras"], kwargs["max_lora_rank"]) == (True, 4, 8)
    assert kwargs["model"] == str(tiny_model_dir) and kwargs["max_model_len"] == 512
    assert init["env"] == {"CUDA_VISIBLE_DEVICES": None, "VLLM_BATCH_INVARIANT": None}
    loras = {tuple(e["lora"]) if e["lora"] else None for e in _child_events(log, "generate")}
    assert loras == {None, ("first", 1, str(adapters["r4"].resolve())), ("second", 2, str(adapters["r8"].resolve()))}
    # the same model again: no new engine, the same answers
    assert pool.get(_spec(tiny_model_dir, adapters["r4"])).generate(PROMPTS, SAMPLE) == reference["r4"][0]
    assert len(_child_events(log, "init")) == 1


def test_errors_in_the_engine_are_model_errors(shared, tiny_model_dir, adapters, tmp_path, reference):
    pool, _ = shared
    model = pool.get(_spec(tiny_model_dir, adapters["r4"]))
    long_prompt = ChatPrompt("long-one", "word " * 600)
    with pytest.raises(ModelError, match=r"prompt 'long-one' is too long for model 'vllm/.*\+ 6 new tokens"):
        model.generate([PROMPTS[0], long_prompt], SAMPLE)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "adapter_config.json").write_text(json.dumps({"r": 4}))
    with pytest.raises(ModelError, match="has no adapter_model.safetensors"):  # the backend's own check
        pool.get(_spec(tiny_model_dir, broken))
    (broken / "adapter_model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ModelError, match=r"model 'vllm/.*' \(adapter .*broken\): the vLLM engine failed in generate"):
        pool.get(_spec(tiny_model_dir, broken)).generate(PROMPTS[:1], SAMPLE)
    with pytest.raises(ValueError, match="5 prompts but 1 continuations"):
        model.continuation_logprobs(PROMPTS, ["x"])
    assert model.generate(PROMPTS, SAMPLE) == reference["r4"][0]  # the engine goes on serving


@pytest.mark.slow
def test_an_adapter_the_engine_cannot_serve_restarts_it(tmp_path, monkeypatch, tiny_model_dir, adapters, reference):
    """Without a rank hint the engine starts without LoRA; the first adapter restarts it with LoRA,
    a higher-rank adapter with that rank; another model ends it."""
    log = tmp_path / "fake-vllm.jsonl"
    _engine_env(monkeypatch, log)
    pool = ModelPool(vllm=VllmRunSpec(max_loras=2), log_dir=tmp_path / "logs")
    try:
        plain = pool.get(_spec(tiny_model_dir))
        assert plain.generate(PROMPTS, SAMPLE) == reference[None][0]
        assert pool.get(_spec(tiny_model_dir, adapters["r4"])).generate(PROMPTS, SAMPLE) == reference["r4"][0]
        assert pool.get(_spec(tiny_model_dir, adapters["r12"])).generate(PROMPTS, SAMPLE) == reference["r12"][0]
        assert pool.get(_spec(tiny_model_dir, adapters["r8"])).generate(PROMPTS, SAMPLE) == reference["r8"][0]
        assert plain.generate(PROMPTS, SAMPLE) == reference[None][0]  # a model handed out before a restart
        inits = [e["kwargs"] for e in _child_events(log, "init")]
        assert [(k.get("enable_lora"), k.get("max_loras"), k.get("max_lora_rank")) for k in inits] == \
            [(None, None, None), (True, 2, 8), (True, 2, 16)]
        group = pool._engines
        (process,) = group.processes
        pool.get(ModelSpec(id="mock/echo"))  # another model ends the engine process
        assert process.proc.poll() is not None and pool._engines is None
        with pytest.raises(ModelError, match="was closed"):
            plain.generate(PROMPTS, SAMPLE)
    finally:
        pool.close()


# -- data parallel, batch invariance, a dead engine ----------------------------------------------


def _two_engines_agree(group, log: Path, base: Path, adapters, reference) -> list[dict]:
    """The plain model and an adapter on two engines give the per-model outputs, the engines on GPUs
    0 and 1; returns the engines' start events."""
    for name in (None, "r4"):
        assert _outputs(group.model(_spec(base, adapters.get(name)))) == reference[name]
    inits = _child_events(log, "init")
    assert sorted(e["env"]["CUDA_VISIBLE_DEVICES"] for e in inits) == ["0", "1"]
    return inits


def test_data_parallel_engines_split_the_prompts_and_give_the_same_outputs(tmp_path, monkeypatch, tiny_model_dir,
                                                                           adapters, reference):
    log = tmp_path / "fake-vllm.jsonl"
    _engine_env(monkeypatch, log)
    settings = VllmRunSpec(data_parallel=2, batch_invariant=True)
    group = EngineGroup(_spec(tiny_model_dir), settings, lora_rank=8, log_dir=tmp_path / "logs")
    try:
        inits = _two_engines_agree(group, log, tiny_model_dir, adapters, reference)
        assert {e["env"]["VLLM_BATCH_INVARIANT"] for e in inits} == {"1"}
        gpu = {e["pid"]: e["env"]["CUDA_VISIBLE_DEVICES"] for e in inits}
        # contiguous shares: GPU 0 the first 3 prompts, GPU 1 the last 2, each with its own seed
        first = [e for e in _child_events(log, "generate") if e["lora"] is None][:2]
        seeds = {gpu[e["pid"]]: e["seeds"] for e in first}
        from collapselab.models.base import prompt_seed

        assert seeds == {"0": [prompt_seed(SAMPLE.seed, p.id) for p in PROMPTS[:3]],
                         "1": [prompt_seed(SAMPLE.seed, p.id) for p in PROMPTS[3:]]}
        # fewer prompts than engines: only the first engine is asked
        model = group.model(_spec(tiny_model_dir))
        assert model.generate(PROMPTS[:1], SAMPLE) == reference[None][0][:1]
        # an engine killed from outside: a clear error naming it, then every call fails
        victim = next(p for p in group.processes if p.index == 1)
        os.kill(victim.pid, signal.SIGKILL)
        with pytest.raises(ModelError, match=r"engine 1 \(pid \d+, CUDA_VISIBLE_DEVICES=1\), ended \(killed by "
                                             r"SIGKILL\) during generate; the last lines of its log"):
            model.generate(PROMPTS, SAMPLE)
        with pytest.raises(ModelError, match="ended"):
            model.generate(PROMPTS, SAMPLE)
        assert all(not p.alive() for p in (victim,)) and group.processes == []
    finally:
        group.close()


def test_an_interpreter_that_cannot_run_the_engine_is_reported(tmp_path, monkeypatch, tiny_model_dir):
    """A ``run.vllm.python`` that cannot run the engine module: the error says so and quotes its
    log. The child gets this source checkout first on its path (it runs this collapselab)."""
    _engine_env(monkeypatch, tmp_path / "fake-vllm.jsonl")
    python = tmp_path / "python"  # an interpreter whose environment lacks collapselab, as it fails
    python.write_text('#!/bin/sh\necho "PYTHONPATH=$PYTHONPATH" >&2\n'
                      'echo "$0 $*: No module named collapselab" >&2\nexit 1\n')
    python.chmod(0o755)
    started = time.perf_counter()
    with pytest.raises(ModelError, match=r"(?s)ended \(exit code 1\) during start before it answered .*"
                                         r"-m collapselab.models.vllm_engine: No module named collapselab") as err:
        load_engine_model(_spec(tiny_model_dir), VllmRunSpec(python=str(python)), log_dir=tmp_path / "logs")
    assert time.perf_counter() - started < 30
    source = Path(vllm_engine.__file__).resolve().parents[2]
    assert f"PYTHONPATH={source}{os.pathsep}{FAKES}" in str(err.value)
    with pytest.raises(ModelError, match="run.vllm.python: .*/missing does not exist"):
        load_engine_model(_spec(tiny_model_dir), VllmRunSpec(python=str(tmp_path / "missing")))
    python.chmod(0o644)  # not executable
    with pytest.raises(ModelError, match="could not start the vLLM engine process .*/python: .*Permission denied"):
        load_engine_model(_spec(tiny_model_dir), VllmRunSpec(python=str(python)))


# -- the stage order ------------------------------------------------------------------------------


def _graph_spec(tmp_path: Path, target: str, **run):
    data = Path(__file__).parents[2] / "data" / "safety"
    cfg = tiny_config(
        tmp_path, tmp_path / "model", write_corpus(tmp_path / "corpus.jsonl"),
        conditions=["vanilla", "human", "single:a"],
        targets=[{"id": target, "dtype": "float32"}],
        safety={"enabled": True, "jailbreaks": {"kind": "none"}, "overrefusal": {"max_prompts": 3},
                "prompts": [{"kind": "csv", "path": str(data / "harmful_behaviors.csv"),
                             "columns": {"text": "goal"}, "max_prompts": 3, "seed": 1}],
                "judge": {"id": "mock/random"}, "quality_judge": {"id": "mock/fixed:#thescore: 2"}},
        preference={"enabled": True, "items": 3},
        run={"threads": 1, **run})
    return load_config(cfg, use_env=False)


def _starts(stages, settings) -> int:
    """How many times a pool would start an engine running ``stages`` in this order."""
    starts, current = 0, None
    for stage in stages:
        key = stage_engine(stage, settings)
        if key is None:
            continue
        if key.startswith("engine:") and key != current:
            starts += 1
        current = key if key != "release" else None
    return starts


def test_stages_of_one_engine_are_grouped_after_their_inputs(tmp_path):
    spec = _graph_spec(tmp_path, f"vllm/{tmp_path / 'model'}")
    graph = build_graph(spec)
    order = engine_order(graph, spec)
    assert sorted(s.label for s in order) == sorted(s.label for s in graph)
    position = {s.label: i for i, s in enumerate(order)}
    assert all(position[i.label] < position[s.label] for s in order for i in s.inputs)
    assert _starts(graph, spec.run.vllm) > 1 and _starts(order, spec.run.vllm) == 1
    engine_stages = [s for s in order if (stage_engine(s, spec.run.vllm) or "").startswith("engine:")]
    assert {s.kind for s in engine_stages} >= {"respond", "score", "safety_respond", "prefer"}
    # done stages neither start nor keep an engine
    done = {s.label for s in graph if s.kind == "respond"}
    assert _starts([s for s in engine_order(graph, spec, lambda s: s.label in done) if s.label not in done],
                   spec.run.vllm) == 1


def test_the_order_is_the_graphs_without_a_shared_engine(tmp_path):
    hf = _graph_spec(tmp_path, f"hf/{tmp_path / 'model'}")
    graph = build_graph(hf)
    assert engine_order(graph, hf) == graph
    apart = _graph_spec(tmp_path, f"vllm/{tmp_path / 'model'}", vllm={"shared_engine": False})
    graph = build_graph(apart)
    assert [s.label for s in engine_order(graph, apart)] == [s.label for s in graph]


# -- a pipeline -------------------------------------------------------------------------------------


class Interrupted(Exception):
    pass


class StopInStage(StageProgress):
    """Interrupts the run during ``label``'s second model call (its first chunk is checkpointed)."""

    def __init__(self, label: str) -> None:
        self.label, self.current, self.calls = label, None, 0

    def start(self, stage, index, total) -> None:
        self.current = stage.label

    def advance(self, n: int) -> None:
        if self.current == self.label:
            self.calls += 1
            if self.calls == 2:
                raise Interrupted(self.label)


@pytest.mark.slow
def test_a_pipeline_on_a_shared_engine_gives_the_per_model_outputs_and_resumes(tmp_path, monkeypatch,
                                                                                 tiny_model_dir):
    """The spine, the collapse scores and the self-preference judges of a fine-tuned vllm target
    (generate, continuation_logprobs, choice_logprobs): on one shared engine (killed in a
    fine-tuned model's respond stage, then resumed) every file of these stages is the per-model
    path's (an engine per model, in this process)."""
    log = tmp_path / "fake-vllm.jsonl"
    _engine_env(monkeypatch, log)
    cfg = tiny_config(tmp_path, tiny_model_dir, write_corpus(tmp_path / "corpus.jsonl"),
                      conditions=["vanilla", "human", "single:a"],
                      targets=[{"id": f"vllm/{tiny_model_dir}", "batch_size": 2, "dtype": "float32"}],
                      preference={"enabled": True, "items": 3, "bootstrap": 20})
    shared = load_config(cfg, use_env=False)
    per_model = load_config(cfg, ["run.vllm.shared_engine=false"], use_env=False)
    graph = build_graph(shared)
    checked = [s for s in graph if s.kind in ("respond", "score", "prefer", "familiarity")]
    assert {s.kind for s in checked} == {"respond", "score", "prefer", "familiarity"}
    respond = next(s for s in checked if s.kind == "respond" and s.params.condition.kind == "human")
    store = RunStore(tmp_path / "shared")

    with pytest.raises(Interrupted):  # after the first of its two chunks of test prompts
        run_stages(shared, store.root, progress=StopInStage(respond.label))
    assert store.has_partial(respond.ref) and not store.is_done(respond.ref)
    report = run_stages(shared, store.root)
    assert respond.label in report.ran
    summary = json.loads((store.final_dir(respond.ref) / "summary.json").read_text())
    assert (summary["resumed"], summary["generated_this_attempt"]) == (4, 2)
    inits = _child_events(log, "init")
    assert len(inits) == 2  # one engine for every vllm stage of each attempt
    assert all(e["kwargs"]["enable_lora"] and e["kwargs"]["max_lora_rank"] == 16 for e in inits)
    assert len({tuple(e["lora"]) for e in _child_events(log, "generate") if e["lora"]}) == 2  # both adapters
    assert (store.root / "logs" / f"vllm-{os.getpid()}-engine-0.log").read_text().count("=== ") == 2

    # the per-model path, in this process, on a copy without the vLLM stages' folders
    other = RunStore(tmp_path / "per-model")
    shutil.copytree(store.root, other.root)
    for stage in checked:
        shutil.rmtree(other.final_dir(stage.ref))
    install_vllm(monkeypatch)
    report = run_stages(per_model, other.root)
    assert sorted(report.ran) == sorted(s.label for s in checked)
    assert len(_child_events(log, "init")) == 2  # no engine process
    for stage in checked:
        names = sorted(p.name for p in store.final_dir(stage.ref).glob("*.jsonl"))
        assert names, stage.label
        for name in names:
            ours, theirs = store.final_dir(stage.ref) / name, other.final_dir(stage.ref) / name
            assert theirs.read_bytes() == ours.read_bytes(), f"{stage.label}/{name}"


# -- validate --------------------------------------------------------------------------------------


def test_validate_accepts_a_fine_tuned_vllm_target_whose_engines_run_in_another_environment(
        tmp_path, monkeypatch, tiny_model_dir):
    """A vllm/ target can be fine-tuned (trained with transformers, served with its adapters);
    with run.vllm.python, vLLM need not be importable here — the interpreter must exist."""
    from collapselab.errors import ConfigError
    from collapselab.pipeline.validate import validate_experiment as validate_spec

    monkeypatch.setitem(sys.modules, "vllm", None)  # not installed in this environment
    target = [{"id": f"vllm/{tiny_model_dir}", "dtype": "float32"}]
    corpus = write_corpus(tmp_path / "corpus.jsonl")
    here = load_config(tiny_config(tmp_path, tiny_model_dir, corpus, targets=target), use_env=False)
    with pytest.raises(ConfigError, match=r"targets.0.id: .*vllm is not installed"):
        validate_spec(here)
    elsewhere = load_config(tiny_config(tmp_path, tiny_model_dir, corpus, targets=target,
                                        run={"vllm": {"python": sys.executable}}), use_env=False)
    validate_spec(elsewhere)
    missing = load_config(tiny_config(tmp_path, tiny_model_dir, corpus, targets=target,
                                      run={"vllm": {"python": str(tmp_path / "no-venv" / "python")}}), use_env=False)
    with pytest.raises(ConfigError, match=r"run.vllm.python: .*no-venv/python is not an executable interpreter"):
        validate_spec(missing)


# -- engines as Ray actors (run.vllm.placement: ray) -----------------------------------------------


@pytest.mark.slow
def test_engines_placed_by_ray_give_the_per_model_outputs(tmp_path, monkeypatch, tiny_model_dir, adapters,
                                                           reference):
    """Two data-parallel engines as Ray actors (a local Ray with 2 GPUs declared, which Ray hands
    out as CUDA_VISIBLE_DEVICES 0 and 1): the same outputs as the per-model path, each engine on
    the GPU Ray gave its actor; an engine whose actor is killed is a clear error."""
    ray = pytest.importorskip("ray")
    log = tmp_path / "fake-vllm.jsonl"
    _engine_env(monkeypatch, log)  # before Ray starts: its workers inherit this environment
    ray.init(num_cpus=3, num_gpus=2, include_dashboard=False, log_to_driver=False)
    try:
        settings = VllmRunSpec(data_parallel=2, placement="ray")
        group = EngineGroup(_spec(tiny_model_dir), settings, lora_rank=8, log_dir=tmp_path / "logs")
        try:
            _two_engines_agree(group, log, tiny_model_dir, adapters, reference)
            assert sorted(p.env["CUDA_VISIBLE_DEVICES"] for p in group.processes) == ["0", "1"]
            # progress streams back from the actors: one call per share at least
            calls: list[int] = []
            group.model(_spec(tiny_model_dir)).generate(PROMPTS, SAMPLE, progress=calls.append)
            assert sum(calls) == len(PROMPTS)
            victim = group.processes[1]
            ray.kill(victim.actor)
            with pytest.raises(ModelError, match=r"engine 1 .* ended .* during generate"):
                group.model(_spec(tiny_model_dir)).generate(PROMPTS, SAMPLE)
        finally:
            group.close()
    finally:
        ray.shutdown()


def test_a_vllm_stage_with_ray_placed_engines_asks_for_no_gpu_itself(tmp_path):
    spec = _graph_spec(tmp_path, f"vllm/{tmp_path / 'model'}", gpus=1, vllm={"placement": "ray", "data_parallel": 2})
    stages = build_graph(spec)
    responds = [s for s in stages if s.kind == "respond"]
    assert responds and all(s.resources.get("gpus", 0) == 0 for s in responds)
    assert all(s.resources["gpus"] == 1 for s in stages if s.kind == "train")  # training keeps run.gpus
