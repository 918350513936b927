"""vLLM engines as Ray actors (``run.vllm.placement: ray``): the ``data_parallel`` engines of a
model spread over the nodes of a Ray cluster, so one stage's prompts are sampled on several nodes.

Each engine is an actor (:class:`EngineHost`) that asks Ray for the model's ``gpus`` GPUs (Ray
sets the actor's ``CUDA_VISIBLE_DEVICES``) and one CPU, placed with Ray's ``SPREAD`` strategy;
inside it runs the very engine child process of the local placement
(:class:`~collapselab.models.vllm_engine.EngineProcess`, the same JSON-lines protocol), and each
request's messages — progress, then the result or the error — stream back to the driver through a
Ray streaming generator. So what an engine computes, how a call's prompts are cut into contiguous
shares and the stage's chunked resume are those of the local placement; only where the engine
runs differs. The engine's log is written on the actor's node at the run's log path (a run
folder on a shared file system, as the Ray executor requires), and the interpreter
(``run.vllm.python``, else the actor's own) must exist at the same path on every node.

Ray is imported only here, when an engine is placed.
"""

from __future__ import annotations

import os
import queue
import threading
from pathlib import Path
from typing import Any

from collapselab.errors import ModelError
from collapselab.models.vllm_engine import CLOSE_TIMEOUT, POLL_SECONDS, TAIL_LINES, EngineProcess

#: seconds to wait for an engine actor to be placed and its process started before giving up (a
#: cluster without the GPUs asked for would otherwise wait for ever)
PLACEMENT_TIMEOUT = 600.0


class EngineHost:
    """The actor: one engine child process on the actor's node (its GPUs are Ray's)."""

    def __init__(self, index: int, argv: list[str], env: dict[str, str], log: str, model: str) -> None:
        full = dict(os.environ)  # the actor's own, with the GPUs Ray gave it
        full.update(env)
        self.events: queue.Queue[tuple[int, dict[str, Any] | None]] = queue.Queue()
        self.proc = EngineProcess(index, argv, full, Path(log), self.events, model)

    def info(self) -> dict[str, Any]:
        import ray

        return {"pid": self.proc.pid, "node": ray.util.get_node_ip_address(),
                "cuda": os.environ.get("CUDA_VISIBLE_DEVICES")}

    def request(self, message: dict[str, Any]) -> Any:
        """Send one request; yield its messages up to its result or error (None: the process ended)."""
        self.proc.busy = True
        self.proc.send(message)
        while True:
            try:
                _, msg = self.events.get(timeout=POLL_SECONDS)
            except queue.Empty:
                if not self.proc.alive():
                    yield None
                    return
                continue
            yield msg
            if msg is None or (msg.get("id") == message.get("id") and msg.get("type") in ("result", "error")):
                self.proc.busy = False
                return

    def alive(self) -> bool:
        return self.proc.alive()

    def tail(self, lines: int) -> str:
        return self.proc.tail(lines)

    def exit_status(self) -> str:
        return self.proc.exit_status()

    def stop(self) -> None:
        self.proc.stop()


class RayEngineProcess:
    """The driver's handle of an :class:`EngineHost`, with the interface of
    :class:`~collapselab.models.vllm_engine.EngineProcess`: messages go to the group's queue as
    ``(index, message)``, ``(index, None)`` when the engine or its actor is gone."""

    def __init__(self, index: int, argv: list[str], env: dict[str, str], log: Path,
                 events: queue.Queue[tuple[int, dict[str, Any] | None]], model: str = "", *, gpus: int = 1) -> None:
        import ray

        self.index, self.log, self.events, self.busy = index, log, events, False
        self._gone = False
        # threaded (max_concurrency): alive, tail and stop answer while a request is running
        host = ray.remote(EngineHost).options(num_gpus=gpus, num_cpus=1, scheduling_strategy="SPREAD",
                                              max_restarts=0, max_concurrency=4)
        self.actor = host.remote(index, argv, env, str(log), model)
        try:
            info = ray.get(self.actor.info.remote(), timeout=PLACEMENT_TIMEOUT)
        except ray.exceptions.GetTimeoutError:
            ray.kill(self.actor)
            raise ModelError(f"vLLM engine {index} of {model!r}: Ray placed no actor with {gpus} GPU(s) within "
                             f"{PLACEMENT_TIMEOUT:.0f} s (run.vllm.placement ray; does the cluster have "
                             "data_parallel x the model's gpus GPUs free?)") from None
        except ray.exceptions.RayError as exc:
            raise ModelError(f"vLLM engine {index} of {model!r}: its Ray actor failed to start: {exc}") from exc
        self.pid, self.node = int(info["pid"]), str(info["node"])
        self.env = {**env, "CUDA_VISIBLE_DEVICES": info["cuda"] or ""}

    def send(self, message: dict[str, Any]) -> None:
        stream = self.actor.request.options(num_returns="streaming").remote(message)
        threading.Thread(target=self._relay, args=(stream,), daemon=True, name=f"vllm-ray-engine-{self.index}").start()

    def _relay(self, stream: Any) -> None:
        import ray

        try:
            for ref in stream:
                msg = ray.get(ref)
                self.events.put((self.index, msg))
                if msg is None:
                    self._gone = True
        except ray.exceptions.RayError:  # the actor died (its node, or killed)
            self._gone = True
            self.events.put((self.index, None))

    def alive(self) -> bool:
        import ray

        if self._gone:
            return False
        try:
            return bool(ray.get(self.actor.alive.remote(), timeout=30))
        except ray.exceptions.RayError:
            self._gone = True
            return False

    def wait_exit(self, seconds: float) -> None:
        """Nothing to wait for here: the actor answers for its process."""

    def tail(self, lines: int = TAIL_LINES) -> str:
        import ray

        try:
            return str(ray.get(self.actor.tail.remote(lines), timeout=30))
        except ray.exceptions.RayError:
            return f"(the engine's Ray actor is gone; its log is on node {self.node}: {self.log})"

    def exit_status(self) -> str:
        import ray

        try:
            return str(ray.get(self.actor.exit_status.remote(), timeout=30)) + f" on node {self.node}"
        except ray.exceptions.RayError:
            return f"its Ray actor on node {self.node} died"

    def stop(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Close the engine (a busy one is ended at once, as locally), then the actor."""
        import ray

        try:
            ray.get(self.actor.stop.remote(), timeout=timeout + 30)
        except ray.exceptions.RayError:
            pass
        ray.kill(self.actor)
        self._gone = True
