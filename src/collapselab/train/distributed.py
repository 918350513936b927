"""The sharded recipe (``lora.strategy: fsdp``): :func:`~collapselab.train.lora.train_lora` in
several processes, the model sharded across them with PyTorch's FSDP2 (``fully_shard``).

How it is laid out:

* **Launch.** :func:`launch_fsdp` writes the job (model folder, examples, LoRA settings, seed,
  output folder) to ``job.json`` and starts ``python -m torch.distributed.run --nproc_per_node N
  -m collapselab.train.distributed job.json`` (torchrun, the launcher under ``accelerate launch``);
  every process runs :func:`main`, which joins the process group (NCCL on GPUs, one per process by
  ``LOCAL_RANK``; gloo on CPUs) and calls ``train_lora`` with its :class:`Ranks`. Rank 0 writes the
  adapter and the summaries and prints one progress line per optimizer step, which the launching
  stage reads. The same ``job.json`` can be started on several nodes by any torchrun-compatible
  launcher (``torchrun --nnodes``, ``accelerate launch``, ``srun``): see docs/scale.md.
* **Sharding.** Every decoder layer (the model's ``_no_split_modules`` classes, the unit
  accelerate's ``transformer_based_wrap`` policy picks) is one ``fully_shard`` unit, the root
  another: weights, gradients and AdamW states are split across the processes and a layer's
  weights are gathered only while it runs. This is what accelerate's FSDP2 mode does on GPUs;
  accelerate itself falls back to plain data parallelism on CPUs, so the recipe calls
  ``fully_shard`` directly and the CPU test runs the very code a GPU run does.
* **Same optimisation as one process.** Each optimizer step takes the same micro-batches as the
  single-process recipe (same seeded order); process r computes micro-batches r, r + N, …, and a
  process with one fewer runs a zero-weighted pass (every process must join each layer's gather).
  FSDP averages gradients over the N processes, so each one scales its summed loss by N / (the
  step's label tokens): the gradient is that of the token-weighted mean over the whole step, as in
  one process. Validation sums are added over the processes. So the losses equal the
  single-process recipe's up to floating-point summation order (tested on CPU, gloo, 2 processes)
  when ``lora.dropout`` is 0; with dropout the masks are drawn per process (rank 0 keeps the
  single-process stream), so the runs agree in distribution, not number for number.
* **Precision.** With ``lora.dtype: bfloat16`` the frozen base weights are kept (and gathered) in
  bf16 — what makes a 70B target fit — while the LoRA weights and their optimizer states stay
  float32 and the forward runs under autocast, as in one process.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collapselab.config.spec import LoraSpec
from collapselab.errors import TrainingError
from collapselab.models.base import ChatPrompt

#: The prefix of rank 0's progress lines on stdout (one JSON object follows).
PROGRESS_PREFIX = "collapselab-train-progress "


@dataclass(frozen=True)
class Ranks:
    """This process's place among the training processes (``world`` 1: the single recipe)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        """Whether this process writes files and reports progress."""
        return self.rank == 0

    def share(self, items: Sequence[Any]) -> list[Any]:
        """This process's items of ``items``: every ``world``-th, from its rank."""
        return list(items[self.rank :: self.world])

    def calls(self, n: int) -> int:
        """Passes every process runs for ``n`` items (the largest share)."""
        return math.ceil(n / self.world)

    def sum(self, *values: float) -> list[float]:
        """Each value summed over the processes (float64; the values themselves with one)."""
        if self.world == 1:
            return [float(v) for v in values]
        import torch
        import torch.distributed as dist

        device = "cuda" if dist.get_backend() == "nccl" else "cpu"
        tensor = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()


def shard_model(model: Any) -> Any:
    """Apply FSDP2's ``fully_shard`` to every decoder layer of ``model`` (a peft model), then to
    the whole: the layer classes are the base model's ``_no_split_modules`` (the blocks
    transformers keeps whole when it places a model on devices)."""
    from torch.distributed.fsdp import fully_shard

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    names = set(getattr(base, "_no_split_modules", None) or ())
    layers = [m for m in model.modules() if type(m).__name__ in names]
    if not layers:
        raise TrainingError(f"lora.strategy fsdp: {type(base).__name__} names no decoder layer class "
                            "(_no_split_modules) to shard by")
    for layer in layers:
        fully_shard(layer)
    fully_shard(model)
    return model


def full_state(params: Sequence[tuple[str, Any]]) -> dict[str, Any]:
    """Whole (unsharded) copies of ``(name, parameter)`` pairs, on the CPU: a sharded parameter
    (a DTensor) is gathered from every process, so every process must call this."""
    out = {}
    for name, p in params:
        value = p.detach()
        if hasattr(value, "full_tensor"):
            value = value.full_tensor()
        out[name] = value.cpu().contiguous()
    return out


# -- launching ------------------------------------------------------------------------------------
def training_processes(run: Any) -> int:
    """Processes per node of a sharded train stage: one per GPU of a node (``run.gpus_per_node``).

    Raises :class:`TrainingError` when that is unset, or 1 on one node (nothing to shard over)."""
    if not run.gpus_per_node or run.gpus_per_node * run.nodes < 2:
        raise TrainingError("lora.strategy fsdp shards the model over run.gpus_per_node processes (one per GPU) "
                            f"on each of run.nodes nodes; run.gpus_per_node is {run.gpus_per_node} and run.nodes "
                            f"{run.nodes}: set run.gpus_per_node to 2 or more")
    return int(run.gpus_per_node)


def job_dict(model_dir: Path, examples: Sequence[Any], lora: LoraSpec, *, seed: int, out_dir: Path,
             chat_mode: str) -> dict[str, Any]:
    """The job's JSON: everything ``train_lora`` takes, in plain data."""
    return {
        "model_dir": str(model_dir), "seed": seed, "out_dir": str(out_dir), "chat_mode": chat_mode,
        "lora": lora.model_dump(mode="json"),
        "examples": [{"id": e.id, "group": e.group, "response": e.response,
                      "prompt": {"id": e.prompt.id, "user": e.prompt.user, "system": e.prompt.system}}
                     for e in examples],
    }


def examples_from_job(job: dict[str, Any]) -> list[Any]:
    from collapselab.train.lora import TrainExample

    return [TrainExample(ChatPrompt(e["prompt"]["id"], e["prompt"]["user"], e["prompt"]["system"]),
                         e["response"], e["id"], group=e["group"]) for e in job["examples"]]


def launch_command(job_path: Path, processes: int, *, python: str | None = None,
                   node: tuple[int, int, str, int] | None = None) -> list[str]:
    """torchrun's command line: one node of ``processes`` processes (a free local port), or with
    ``node = (node rank, nodes, master address, master port)`` that node of a multi-node job
    (static rendezvous: node 0's first process hosts it)."""
    if node is None:
        where = ["--standalone"]
    else:
        rank, nodes, address, port = node
        where = [f"--nnodes={nodes}", f"--node_rank={rank}", f"--master_addr={address}", f"--master_port={port}"]
    return [python or sys.executable, "-m", "torch.distributed.run", *where,
            f"--nproc_per_node={processes}", "-m", "collapselab.train.distributed", str(job_path)]


def launch_fsdp(model_dir: Path, examples: Sequence[Any], lora: LoraSpec, *, seed: int, out_dir: Path,
                processes: int, chat_mode: str = "auto", progress: Any = None,
                threads: int | None = None, nodes: int = 1, ray_address: str | None = None) -> dict[str, Any]:
    """Run the sharded recipe in ``processes`` processes on this node (``nodes`` > 1: on each of
    that many nodes of a Ray cluster, :func:`collapselab.train.multinode.launch_nodes`) and wait.

    ``progress(step, total, loss)`` is called for rank 0's progress lines; torch threads per
    process are ``threads`` (default: the cores divided among the processes). Returns
    ``train_summary.json``. A failed process raises :class:`TrainingError` with the end of the
    processes' error output; nothing is left in ``out_dir`` but what rank 0 had finished writing.
    """
    if processes * nodes < 2:
        raise TrainingError(f"lora.strategy fsdp needs at least 2 processes, got {processes * nodes} "
                            "(set run.gpus_per_node; one device is lora.strategy single)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(process_threads(threads, processes))
    with tempfile.TemporaryDirectory(prefix=".fsdp-job-", dir=out_dir) as scratch:
        job_path = Path(scratch) / "job.json"
        job_path.write_text(json.dumps(job_dict(model_dir, examples, lora, seed=seed, out_dir=out_dir,
                                                chat_mode=chat_mode)))
        if nodes > 1:  # the job folder is in the stage's folder: every node reads it (shared file system)
            from collapselab.train.multinode import launch_nodes

            launch_nodes(job_path, processes, nodes, progress=progress, threads=threads, address=ray_address)
            return json.loads((out_dir / "train_summary.json").read_text())
        errors = Path(scratch) / "stderr.log"
        with errors.open("w") as err:
            proc = subprocess.Popen(launch_command(job_path, processes), stdout=subprocess.PIPE,
                                    stderr=err, text=True, env=env)
            assert proc.stdout is not None
            try:
                for line in proc.stdout:
                    if line.startswith(PROGRESS_PREFIX) and progress is not None:
                        record = json.loads(line[len(PROGRESS_PREFIX):])
                        progress(record["step"], record["total"], record["loss"])
                code = proc.wait()
            except BaseException:
                proc.kill()
                proc.wait()
                raise
        if code != 0:
            raise failure(f"the {processes} training processes failed (exit {code})",
                          errors.read_text(errors="replace"))
    return json.loads((out_dir / "train_summary.json").read_text())


def process_threads(threads: int | None, processes: int) -> int:
    """Torch threads of each of a node's ``processes`` training processes: ``threads`` when set,
    else the node's cores divided among them."""
    return threads or max(1, (os.cpu_count() or 1) // processes)


def failure(what: str, stderr: str) -> TrainingError:
    """The error of a failed training job: ``what``, the recipe's own reason when a process raised
    a TrainingError, and the last lines of the processes' error output."""
    tail = stderr.strip().splitlines()
    reason = next((line for line in reversed(tail) if "TrainingError" in line), None)
    return TrainingError(f"lora.strategy fsdp: {what}"
                         + (f": {reason.split('TrainingError:', 1)[-1].strip()}" if reason else "")
                         + "\n" + "\n".join(tail[-15:]))


def main(argv: Sequence[str] | None = None) -> int:
    """One training process (started by torchrun): join the group, train, leave."""
    import torch
    import torch.distributed as dist

    from collapselab.train.lora import train_lora

    args = list(sys.argv[1:] if argv is None else argv)
    job = json.loads(Path(args[0]).read_text())
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo")
    ranks = Ranks(dist.get_rank(), dist.get_world_size())
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

    def report(step: int, total: int, loss: float) -> None:
        print(PROGRESS_PREFIX + json.dumps({"step": step, "total": total, "loss": loss}), flush=True)

    try:
        train_lora(Path(job["model_dir"]), examples_from_job(job), LoraSpec(**job["lora"]), seed=job["seed"],
                   out_dir=Path(job["out_dir"]), chat_mode=job["chat_mode"],
                   progress=report if ranks.main else None, ranks=ranks)
    finally:
        with contextlib.suppress(Exception):
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
