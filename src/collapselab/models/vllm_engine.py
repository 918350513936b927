"""vLLM engines in child processes: one engine serves every adapter of one base model, and
``run.vllm.data_parallel`` engines (one per GPU) share each call's prompts.

Why a child process. vLLM frees neither the GPU memory nor its distributed state of an engine
that is shut down inside a process (:meth:`VLLMModel.close` does what it can), so a run that goes
from one base model to another, or to LoRA training, needs one process per engine: ending the
process is the one clean way to give the GPU back. A child also runs in another interpreter
(``run.vllm.python``, the separate vLLM environment vLLM's pinned torch and transformers need)
and gets its own ``CUDA_VISIBLE_DEVICES`` and ``VLLM_BATCH_INVARIANT``.

What it computes. The child runs :mod:`collapselab.models.vllm_backend` unchanged: for every model
spec it is asked about it builds a :class:`~collapselab.models.vllm_backend.VLLMModel` on its one
``vllm.LLM``, the adapter (if any) a ``LoRARequest`` with an id of its own (one per adapter folder,
from 1). So a text, a log-probability or a choice read-out is computed exactly as by the per-model
path (:func:`~collapselab.models.vllm_backend.load_vllm_model`): the same token ids, requests,
seeds (``prompt_seed(decoding.seed, prompt.id)``, carried by every request) and chunks of
:data:`~collapselab.models.vllm_backend.REQUESTS_PER_CALL`. The engine differs in being started
with ``enable_lora``, ``max_loras = run.vllm.max_loras`` and one ``max_lora_rank`` for all
adapters (vLLM rounds an adapter up to it).

The protocol (``python -m collapselab.models.vllm_engine``): JSON lines, one request on stdin,
then progress messages and one result or error on stdout — JSON, not pickle, because the child
may be another Python with other packages. Requests: ``start`` (the base model, the LoRA limits),
``open`` (a model: is it a chat model, its context), ``generate``, ``continuation_logprobs``,
``choice_logprobs`` (a model spec with its adapter, the prompts and the decoding or the answers or
choices) and ``close``. Every message carries the request's ``id``. An error in the child comes
back as a message and is raised in the parent as a :class:`ModelError` (the backend's own, or one
naming the model, the request and the child's exception); a child that dies is reported with
its exit status and the last lines of its log. The child's own stdout is redirected to its
stderr (vLLM logs to stdout), which goes to a log file: ``RUN_DIR/logs/vllm-<pid>-engine-<i>.log``
in a run (``pid``: the process that started the engine; Ray tasks running at once write apart).

Data parallel (``run.vllm.data_parallel: N``). N child processes, engine ``i`` on the ``i``-th GPU
(of ``CUDA_VISIBLE_DEVICES`` when set — a Ray task's GPUs — else GPU ``i``). A call's prompts are
cut into N contiguous shares of sizes differing by at most one, each engine computes its share,
the results are put back in order. It sits below the stage runners: the stage's fixed chunks
(:mod:`collapselab.store.chunks`) and its resume are untouched, and each request keeps its own
seed, so a prompt's text does not depend on which engine samples it — up to GPU kernels that are
not batch-invariant (see ``run.vllm.batch_invariant`` and docs/vllm-engines.md).

Nothing here imports vLLM, torch or transformers in the parent process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from collapselab.config.spec import DecodingSpec, ModelSpec, VllmRunSpec
from collapselab.errors import ModelError
from collapselab.models.base import ChatPrompt, Generation, Progress

#: the version of the JSON-lines protocol; parent and child must speak the same one
PROTOCOL = 1
#: the module a child process runs (``python -m``)
MODULE = "collapselab.models.vllm_engine"
#: seconds a child gets to shut its engine down after ``close`` before it is terminated
CLOSE_TIMEOUT = 60.0
#: seconds between checks that the child processes are alive while waiting for an answer
POLL_SECONDS = 1.0
#: lines of a dead child's log quoted in the error
TAIL_LINES = 25


# --------------------------------------------------------------------------------------------
# Which models use engine processes, and which share one
# --------------------------------------------------------------------------------------------


def uses_engine_process(spec: ModelSpec, settings: VllmRunSpec) -> bool:
    """Whether a model runs in an engine process (else in this process, as
    :func:`~collapselab.models.vllm_backend.load_vllm_model` starts it): ``vllm/`` models with a
    shared engine, data parallelism, batch invariance, a separate vLLM interpreter or Ray placement."""
    return spec.backend == "vllm" and (settings.shared_engine or settings.data_parallel > 1
                                       or settings.batch_invariant or settings.python is not None
                                       or settings.placement == "ray")


def engine_spec(spec: ModelSpec) -> ModelSpec:
    """The base model an engine is started for: the fields that decide the ``vllm.LLM`` (id,
    dtype, context, the GPUs it is sharded over), without the adapter and the per-model settings
    (chat, batch size)."""
    return ModelSpec(id=spec.id, dtype=spec.dtype, max_context=spec.max_context, gpus=spec.gpus)


def engine_key(spec: ModelSpec, settings: VllmRunSpec) -> str:
    """The engine that serves ``spec``: its base model with ``shared_engine`` (every adapter of a
    base model on one engine), else the model itself (one engine per model)."""
    if settings.shared_engine:
        return "engine:" + engine_spec(spec).model_dump_json()
    return "model:" + spec.model_dump_json()


def share_bounds(n: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous ranges covering ``range(n)``, sizes differing by at most one (the
    first ``n % parts`` one larger); some are empty when ``n < parts``."""
    size, extra = divmod(n, parts)
    bounds, start = [], 0
    for i in range(parts):
        stop = start + size + (1 if i < extra else 0)
        bounds.append((start, stop))
        start = stop
    return bounds


def engine_devices(n: int, visible: str | None, per_engine: int = 1) -> list[str | None]:
    """The ``CUDA_VISIBLE_DEVICES`` of each of ``n`` engines of ``per_engine`` GPUs each (a model's
    ``gpus``, its tensor-parallel size): None (inherit) for one engine; else engine ``i`` gets GPUs
    ``i·per_engine … (i + 1)·per_engine − 1`` of ``visible`` (this process's
    ``CUDA_VISIBLE_DEVICES``, e.g. the GPUs Ray gave the task), or of 0, 1, … when it is not set."""
    if n == 1:
        return [None]
    needed = n * per_engine
    if visible is None:
        devices = [str(i) for i in range(needed)]
    else:
        devices = [d.strip() for d in visible.split(",") if d.strip()]
    if len(devices) < needed:
        raise ModelError(f"run.vllm.data_parallel is {n} with {per_engine} GPU(s) per engine but "
                         f"CUDA_VISIBLE_DEVICES lists {len(devices)} GPU(s) ({visible!r}); give the run {needed} "
                         f"GPUs (under Ray: run.gpus: {needed}) or lower data_parallel")
    return [",".join(devices[i * per_engine:(i + 1) * per_engine]) for i in range(n)]


def _source_root() -> Path | None:
    """The folder holding this collapselab package, when it is a source checkout (not an
    installed copy in a site-packages folder, whose neighbours are another environment's)."""
    root = Path(__file__).resolve().parents[2]
    return None if root.name in ("site-packages", "dist-packages") else root


# --------------------------------------------------------------------------------------------
# JSON forms
# --------------------------------------------------------------------------------------------


def _prompts_json(prompts: Sequence[ChatPrompt]) -> list[dict[str, Any]]:
    return [dataclasses.asdict(p) for p in prompts]


def _prompts_from(data: Sequence[dict[str, Any]]) -> list[ChatPrompt]:
    return [ChatPrompt(**p) for p in data]


# --------------------------------------------------------------------------------------------
# The child: one engine, every model of it
# --------------------------------------------------------------------------------------------


class EngineServer:
    """The child's side: starts one ``vllm.LLM`` and answers requests for any model on it."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.llm: Any = None
        self.spec: ModelSpec | None = None
        self.folder: Path | None = None
        self.tokenizer: Any = None
        self.eos: Any = None
        self.max_context = 0
        self.models: dict[str, Any] = {}
        self.lora_ids: dict[str, int] = {}

    def send(self, message: dict[str, Any]) -> None:
        self.out.write(json.dumps(message) + "\n")
        self.out.flush()

    def start(self, msg: dict[str, Any]) -> dict[str, Any]:
        from collapselab import __version__
        from collapselab.models import vllm_backend as vb
        from collapselab.models.hf import resolve_weights

        if self.llm is not None:
            raise ModelError("the engine was started already")
        spec = ModelSpec.model_validate(msg["spec"])
        vb.check_vllm_spec(spec)
        folder = resolve_weights(spec)
        self.tokenizer = vb.load_tokenizer(spec, folder)
        self.eos = vb.generation_eos(folder)
        self.max_context = vb.context_limit(spec, folder, self.tokenizer)
        args = vb.engine_args(spec, folder, self.max_context)
        if msg.get("max_lora_rank"):
            args.update(enable_lora=True, max_loras=int(msg["max_loras"]), max_lora_rank=int(msg["max_lora_rank"]))
        self.llm = vb.start_engine(spec, folder, args)
        self.spec, self.folder = spec, folder
        return {"protocol": PROTOCOL, "version": __version__, "pid": os.getpid()}

    def model(self, data: dict[str, Any]) -> Any:
        """The :class:`VLLMModel` of a spec on this engine (built on first use)."""
        from collapselab.models import vllm_backend as vb

        key = json.dumps(data, sort_keys=True)
        if key in self.models:
            return self.models[key]
        if self.llm is None or self.spec is None:
            raise ModelError("the engine was not started")
        spec = ModelSpec.model_validate(data)
        if engine_spec(spec) != self.spec:
            raise ModelError(f"model {spec.id!r} ({spec.dtype}, max_context {spec.max_context}) is not the engine's "
                             f"base model {self.spec.id!r} ({self.spec.dtype}, max_context {self.spec.max_context})")
        request = None
        if spec.adapter is not None:
            vb.check_vllm_spec(spec)  # the adapter's rank is readable and one vLLM serves
            path = str(Path(spec.adapter).expanduser().resolve())
            request = vb.lora_request(path, self.lora_ids.setdefault(path, len(self.lora_ids) + 1))
        model = vb.VLLMModel(spec, self.llm, self.tokenizer, stop_ids=vb.model_stop_ids(spec, self.tokenizer, self.eos),
                             max_context=self.max_context, lora_request=request)
        self.models[key] = model
        return model

    def handle(self, msg: dict[str, Any]) -> Any:
        """The result of one request (progress messages are sent while it runs)."""
        op, rid = msg.get("op"), msg.get("id")

        def progress(n: int) -> None:
            self.send({"type": "progress", "id": rid, "n": n})

        if op == "start":
            return self.start(msg)
        if op == "open":
            model = self.model(msg["model"])
            return {"is_chat": model.is_chat, "max_context": model.max_context}
        if op == "generate":
            decoding = DecodingSpec.model_validate(msg["decoding"])
            gens = self.model(msg["model"]).generate(_prompts_from(msg["prompts"]), decoding, progress=progress)
            return [dataclasses.asdict(g) for g in gens]
        if op == "continuation_logprobs":
            return self.model(msg["model"]).continuation_logprobs(
                _prompts_from(msg["prompts"]), msg["continuations"], progress=progress)
        if op == "choice_logprobs":
            return self.model(msg["model"]).choice_logprobs(_prompts_from(msg["prompts"]), msg["choices"],
                                                            progress=progress)
        if op == "close":
            self.close()
            return None
        raise ValueError(f"unknown request {op!r}")

    def close(self) -> None:
        from collapselab.models.vllm_backend import VLLMModel

        if self.llm is not None:
            base = next(iter(self.models.values()), None)
            if base is None:
                assert self.spec is not None
                base = VLLMModel(self.spec, self.llm, self.tokenizer, stop_ids=[], max_context=self.max_context)
            base.close()  # shuts the engine core down; the process ends right after
        self.llm = None

    def serve(self, lines: IO[str]) -> None:
        """Answer requests until ``close`` or the end of the input (the parent is gone)."""
        for line in lines:
            if not line.strip():
                continue
            msg = json.loads(line)
            rid = msg.get("id")
            try:
                result = self.handle(msg)
            except Exception as exc:  # every failure goes back to the parent, typed
                kind = "ModelError" if isinstance(exc, ModelError) else "other"
                self.send({"type": "error", "id": rid, "error": kind, "name": type(exc).__name__,
                           "message": str(exc), "traceback": traceback.format_exc(limit=8)})
            else:
                self.send({"type": "result", "id": rid, "result": result})
            if msg.get("op") == "close":
                return
        self.close()


def main() -> None:
    """The child process: the protocol on the original stdout; everything else anyone prints to
    stdout (vLLM's logger, C libraries, vLLM's own engine processes) goes to stderr."""
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    EngineServer(out).serve(sys.stdin)


# --------------------------------------------------------------------------------------------
# The parent: engine processes and the models on them
# --------------------------------------------------------------------------------------------


class EngineProcess:
    """One child process with one engine; its messages go to the group's queue as
    ``(index, message)``, and ``(index, None)`` when its output ends."""

    def __init__(self, index: int, argv: list[str], env: dict[str, str], log: Path,
                 events: queue.Queue[tuple[int, dict[str, Any] | None]], model: str = "") -> None:
        self.index, self.log, self.env = index, log, env
        self.busy = False  # a request was sent and its answer has not come yet
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a", encoding="utf-8") as f:
            f.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} engine {index} of {model}: {' '.join(argv)}"
                    f" (CUDA_VISIBLE_DEVICES={env.get('CUDA_VISIBLE_DEVICES')}, "
                    f"VLLM_BATCH_INVARIANT={env.get('VLLM_BATCH_INVARIANT')})\n")
        with open(log, "a", encoding="utf-8") as err:
            # a session of its own: a Ctrl-C in the terminal reaches the parent, which closes the
            # engine; the whole group (vLLM's own engine processes too) can be ended at once
            self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, env=env,
                                         text=True, encoding="utf-8", bufsize=1, start_new_session=True)
        self.reader = threading.Thread(target=self._read, args=(events,), daemon=True,
                                       name=f"vllm-engine-{index}")
        self.reader.start()

    def _read(self, events: queue.Queue[tuple[int, dict[str, Any] | None]]) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                events.put((self.index, json.loads(line)))
            except ValueError:  # not a protocol line: keep it for the log's reader
                with contextlib.suppress(OSError), open(self.log, "a", encoding="utf-8") as f:
                    f.write(line)
        events.put((self.index, None))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_exit(self, seconds: float) -> None:
        """Give a process whose output ended ``seconds`` to exit, so its status is known."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(seconds)

    def send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message) + "\n")
        self.proc.stdin.flush()

    def tail(self, lines: int = TAIL_LINES) -> str:
        """The last lines of the process's log."""
        try:
            with open(self.log, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 16384))
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def exit_status(self) -> str:
        code = self.proc.poll()
        if code is None:
            return "still running"
        if code < 0:
            with contextlib.suppress(ValueError):
                return f"killed by {signal.Signals(-code).name}"
        return f"exit code {code}"

    def stop(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Ask the engine to shut down, then end the process (and its own children). A busy
        engine (its caller gave up on a request: an error elsewhere, Ctrl-C) is terminated at once:
        its answer is not wanted and may be minutes away."""
        if self.alive():
            if not self.busy:
                with contextlib.suppress(OSError, ValueError):
                    self.send({"id": None, "op": "close"})
            try:
                self.proc.wait(0 if self.busy else timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGTERM)
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self._signal(signal.SIGKILL)
                    self.proc.wait()
        # vLLM's own engine processes are in this session too: they must not outlive it
        self._signal(signal.SIGKILL)
        for stream in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError, ValueError):
                if stream is not None:
                    stream.close()
        self.reader.join(timeout=5)

    def _signal(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)


class EngineGroup:
    """The engine(s) of one base model (with ``shared_engine``) or of one model: ``data_parallel``
    child processes, started on first use and restarted when an adapter needs LoRA settings the
    running engines lack (LoRA off, or a higher rank); :meth:`model` hands out one
    :class:`EngineModel` per model spec, all on these engines.

    ``lora_rank``: the LoRA rank the run's adapters will have (the pool passes the largest
    ``lora.r`` of the targets when the run fine-tunes), so the first engine already serves them;
    ``log_dir``: where the engines' logs go (None: a temporary folder, removed on a clean close).
    """

    def __init__(self, spec: ModelSpec, settings: VllmRunSpec, *, lora_rank: int | None = None,
                 log_dir: Path | None = None, ray_address: str | None = None) -> None:
        self.base = engine_spec(spec)
        self.ray_address = ray_address  # placement ray: the cluster (None: this process's Ray, else a local one)
        self.settings = settings
        self.shared = settings.shared_engine
        self.lora_rank = lora_rank if self.shared else None  # one model per engine: its own adapter decides
        self.processes: list[EngineProcess] = []
        self.events: queue.Queue[tuple[int, dict[str, Any] | None]] = queue.Queue()
        self.started_rank: int | None = None  # max_lora_rank of the running engines (None: LoRA off)
        self.broken: str | None = None
        self.models: dict[str, EngineModel] = {}
        self._ids = itertools.count(1)
        self._temp_logs = log_dir is None  # a temporary folder: removed on close unless an engine died
        self.log_dir = Path(tempfile.mkdtemp(prefix="collapselab-vllm-")) if log_dir is None else log_dir

    # -- models -------------------------------------------------------------------------------

    def model(self, spec: ModelSpec) -> EngineModel:
        """A model on these engines (started, or restarted with LoRA settings it needs)."""
        from collapselab.models.vllm_backend import adapter_rank, lora_rank_limit

        if engine_spec(spec) != self.base:
            raise ModelError(f"model {spec.id!r} is not served by the engine of {self.base.id!r}")
        needed = None
        if spec.adapter is not None:
            needed = lora_rank_limit(adapter_rank(Path(spec.adapter).expanduser()), spec.id)
        if self.processes and needed is not None and (self.started_rank is None or needed > self.started_rank):
            self.stop()  # restart with LoRA on, or with the higher rank: an engine's limits are fixed
        if not self.processes:
            ranks = [r for r in (needed, self.started_rank,
                                 lora_rank_limit(self.lora_rank) if self.lora_rank else None) if r]
            self.start(max(ranks) if ranks else None)
        key = spec.model_dump_json()
        if key not in self.models:
            # every engine of the group answers alike: the first one is asked
            (info,) = self.call("open", spec, [{}] + [None] * (len(self.processes) - 1), None)
            self.models[key] = EngineModel(self, spec, is_chat=bool(info["is_chat"]),
                                           max_context=int(info["max_context"]))
        return self.models[key]

    # -- processes ----------------------------------------------------------------------------

    def start(self, max_lora_rank: int | None) -> None:
        """Start the engine processes and their engines (all at once; their GPUs load in parallel)."""
        if self.broken:
            raise ModelError(self.broken)
        settings = self.settings
        python = settings.python or sys.executable
        if settings.python is not None and not Path(python).expanduser().exists():
            raise ModelError(f"run.vllm.python: {python} does not exist (the interpreter of the vLLM environment, "
                             "see scripts/setup-vllm.sh)")
        argv = [str(Path(python).expanduser()), "-m", MODULE]
        self.events = queue.Queue()
        start = {"spec": self.base.model_dump(mode="json"), "max_lora_rank": max_lora_rank,
                 "max_loras": settings.max_loras if self.shared else 1}
        try:
            for i, device in enumerate(self._devices()):
                log = self.log_dir / f"vllm-{os.getpid()}-engine-{i}.log"
                if settings.placement == "ray":  # an actor anywhere in the cluster, with Ray's GPUs
                    from collapselab.models.vllm_ray import RayEngineProcess

                    self.processes.append(RayEngineProcess(i, argv, self._remote_env(), log, self.events,
                                                           self.base.id, gpus=self.base.gpus))
                else:
                    self.processes.append(EngineProcess(i, argv, self._env(device), log, self.events, self.base.id))
            answers = self.call("start", None, [start] * len(self.processes), None)
        except OSError as exc:  # the interpreter cannot be run
            self.stop()
            raise ModelError(f"could not start the vLLM engine process {argv[0]}: {exc}") from exc
        except BaseException:
            self.stop()
            raise
        for answer in answers:
            if answer.get("protocol") != PROTOCOL:
                self.stop()
                raise ModelError(f"the vLLM environment ({python}) runs collapselab {answer.get('version')} with "
                                 f"engine protocol {answer.get('protocol')}, this one protocol {PROTOCOL}: install "
                                 "the same collapselab in both")
        self.started_rank = max_lora_rank

    def _devices(self) -> list[str | None]:
        """Each engine's ``CUDA_VISIBLE_DEVICES`` (placement ray: Ray's, so None each)."""
        if self.settings.placement == "ray":
            from collapselab.cluster import ensure_ray

            ensure_ray(self.ray_address)
            return [None] * self.settings.data_parallel
        return engine_devices(self.settings.data_parallel, os.environ.get("CUDA_VISIBLE_DEVICES"), self.base.gpus)

    def _remote_env(self) -> dict[str, str]:
        """What an engine actor adds to its own environment: what :meth:`_env` sets beyond this
        process's environment (batch invariance, the source path), never this process's GPUs."""
        full = self._env(None)
        return {k: v for k, v in full.items() if os.environ.get(k) != v and k != "CUDA_VISIBLE_DEVICES"}

    def _env(self, device: str | None) -> dict[str, str]:
        """The environment of an engine process: this one's, with its GPU, batch invariance and,
        for another interpreter, this collapselab's source folder first on ``PYTHONPATH``."""
        env = dict(os.environ)
        if device is not None:
            env["CUDA_VISIBLE_DEVICES"] = device
        if self.settings.batch_invariant:
            env["VLLM_BATCH_INVARIANT"] = "1"
        root = _source_root()
        if self.settings.python is not None and root is not None:  # the child runs this very collapselab
            env["PYTHONPATH"] = os.pathsep.join([str(root), *filter(None, [env.get("PYTHONPATH")])])
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def stop(self) -> None:
        """End the engine processes (their GPU memory is free when this returns)."""
        processes, self.processes = self.processes, []
        for proc in processes:
            proc.stop()

    def close(self) -> None:
        """End the engines; models handed out can no longer be used."""
        self.stop()
        self.models.clear()
        self.broken = self.broken or f"the vLLM engine of {self.base.id!r} was closed"
        if self._temp_logs:
            shutil.rmtree(self.log_dir, ignore_errors=True)
            self._temp_logs = False

    # -- requests -----------------------------------------------------------------------------

    def call(self, op: str, spec: ModelSpec | None, payloads: Sequence[dict[str, Any] | None],
             progress: Progress | None) -> list[Any]:
        """Send request ``op`` with ``payloads[i]`` to engine ``i`` (None: nothing for it), wait
        for every answer; the results in engine order (of those sent something)."""
        if self.broken:
            raise ModelError(self.broken)
        rid = next(self._ids)
        pending: list[int] = []
        model = spec.model_dump(mode="json") if spec is not None else None
        for proc, payload in zip(self.processes, payloads, strict=True):
            if payload is None:
                continue
            try:
                proc.send({"id": rid, "op": op, "model": model, **payload})
            except (OSError, ValueError):
                self._died(proc, op, spec)
            proc.busy = True
            pending.append(proc.index)
        results: dict[int, Any] = {}
        while len(results) < len(pending):
            try:
                index, msg = self.events.get(timeout=POLL_SECONDS)
            except queue.Empty:
                for i in pending:
                    if i not in results and not self.processes[i].alive():
                        self._died(self.processes[i], op, spec)
                continue
            if msg is None:
                if index in pending and index not in results:
                    self._died(self.processes[index], op, spec)
                continue
            if msg.get("id") != rid:
                continue  # an answer to an earlier request that failed on another engine
            if msg.get("type") == "progress":
                if progress is not None:
                    progress(int(msg["n"]))
            elif msg.get("type") == "result":
                results[index] = msg["result"]
                self.processes[index].busy = False
            elif msg.get("type") == "error":
                self.processes[index].busy = False
                raise self._error(msg, op, spec)
        return [results[i] for i in pending]

    def _error(self, msg: dict[str, Any], op: str, spec: ModelSpec | None) -> Exception:
        message = str(msg.get("message", ""))
        if msg.get("error") == "ModelError":  # its message names the model
            return ModelError(message)
        return ModelError(f"model {self._who(spec)}: the vLLM engine failed in {op}: {msg.get('name')}: {message}\n"
                          f"{msg.get('traceback', '')}".rstrip())

    def _who(self, spec: ModelSpec | None) -> str:
        spec = spec or self.base
        return repr(spec.id) + (f" (adapter {spec.adapter})" if spec.adapter else "")

    def _died(self, proc: EngineProcess, op: str, spec: ModelSpec | None) -> None:
        proc.wait_exit(5)  # the output ended: let the exit status arrive
        device = proc.env.get("CUDA_VISIBLE_DEVICES")
        where = f"engine {proc.index} (pid {proc.pid}" + (f", CUDA_VISIBLE_DEVICES={device})" if device else ")")
        hint = (" before it answered (is run.vllm.python an environment with vLLM and this collapselab?)"
                if op == "start" else "")
        self.broken = (f"the vLLM engine process of model {self._who(spec)}, {where}, ended "
                       f"({proc.exit_status()}) during {op}{hint}; the last lines of its log {proc.log}:\n"
                       f"{proc.tail()}")
        self._temp_logs = False  # keep the log for the user to read
        self.stop()
        raise ModelError(self.broken)


class EngineModel:
    """A model served by an :class:`EngineGroup`, behind the
    :class:`~collapselab.models.base.LanguageModel` protocol: each call goes to the engine(s)
    (split into ``data_parallel`` contiguous shares) and returns what the per-model
    :class:`~collapselab.models.vllm_backend.VLLMModel` returns. ``close`` ends the engines only
    when this model owns them (:func:`load_engine_model`); in a pool the pool ends them."""

    def __init__(self, group: EngineGroup, spec: ModelSpec, *, is_chat: bool, max_context: int,
                 owns_engine: bool = False) -> None:
        self.group, self.spec = group, spec
        self._is_chat, self._max_context = is_chat, max_context
        self.owns_engine = owns_engine

    @property
    def is_chat(self) -> bool:
        return self._is_chat

    @property
    def max_context(self) -> int:
        return self._max_context

    def _shares(self, n: int, payload: Callable[[int, int], dict[str, Any]]) -> list[dict[str, Any] | None]:
        if self.group.broken:  # closed, or an engine died
            raise ModelError(self.group.broken)
        return [payload(a, b) if b > a else None for a, b in share_bounds(n, len(self.group.processes))]

    def generate(self, prompts: Sequence[ChatPrompt], decoding: DecodingSpec, *,
                 progress: Progress | None = None) -> list[Generation]:
        if not prompts:
            return []
        decoding_json = decoding.model_dump(mode="json")
        shares = self._shares(len(prompts), lambda a, b: {"prompts": _prompts_json(prompts[a:b]),
                                                          "decoding": decoding_json})
        results = self.group.call("generate", self.spec, shares, progress)
        return [Generation(**g) for share in results for g in share]

    def continuation_logprobs(self, prompts: Sequence[ChatPrompt], continuations: Sequence[str], *,
                              progress: Progress | None = None) -> list[list[float]]:
        if len(prompts) != len(continuations):
            raise ValueError(f"{len(prompts)} prompts but {len(continuations)} continuations")
        if not prompts:
            return []
        shares = self._shares(len(prompts), lambda a, b: {"prompts": _prompts_json(prompts[a:b]),
                                                          "continuations": list(continuations[a:b])})
        results = self.group.call("continuation_logprobs", self.spec, shares, progress)
        return [[float(x) for x in row] for share in results for row in share]

    def choice_logprobs(self, prompts: Sequence[ChatPrompt], choices: Sequence[str], *,
                        progress: Progress | None = None) -> list[dict[str, float]]:
        if not prompts:
            return []
        shares = self._shares(len(prompts), lambda a, b: {"prompts": _prompts_json(prompts[a:b]),
                                                          "choices": list(choices)})
        results = self.group.call("choice_logprobs", self.spec, shares, progress)
        return [{k: float(v) for k, v in row.items()} for share in results for row in share]

    def close(self) -> None:
        if self.owns_engine:
            self.group.close()


def load_engine_model(spec: ModelSpec, settings: VllmRunSpec | None = None, *,
                      log_dir: Path | None = None) -> EngineModel:
    """One ``vllm/`` model on engine process(es) of its own (closing it ends them): what a pool
    does for one model, for use outside a run."""
    group = EngineGroup(spec, settings or VllmRunSpec(), log_dir=log_dir)
    try:
        model = group.model(spec)
    except BaseException:
        group.close()
        raise
    model.owns_engine = True
    return model


if __name__ == "__main__":
    main()
