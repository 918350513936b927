"""The sharded recipe over several nodes (``lora.strategy: fsdp`` with ``run.nodes`` > 1): Ray is
the launcher.

A placement group of ``nodes`` bundles (``run.gpus_per_node`` GPUs and one CPU each, strategy
``STRICT_SPREAD``: one bundle per node) reserves the GPUs; one actor per bundle
(:class:`NodeLauncher`) starts torchrun on its node with ``--nnodes``, its ``--node_rank`` and a
static rendezvous at node 0's address (a port free there), all on the same ``job.json`` (in the
stage's folder, which every node sees on the shared file system the Ray executor needs). Every
process then runs :func:`collapselab.train.distributed.main` as on one node; rank 0 (on node 0)
writes the adapter and summaries, and its progress lines stream back to the stage. A failed node
ends the others (torchrun's agents end their processes when the rendezvous breaks; the actors are
killed) and raises :class:`~collapselab.errors.TrainingError` with its error output.

Ray is imported only here.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
from pathlib import Path
from typing import Any

from collapselab.errors import TrainingError
from collapselab.train.distributed import PROGRESS_PREFIX, failure, launch_command, process_threads

#: one bundle per node; tests on one machine use "SPREAD" (several "nodes" on the same host)
PLACEMENT_STRATEGY = "STRICT_SPREAD"
#: seconds to wait for the cluster to reserve the nodes' GPUs before giving up
RESERVE_TIMEOUT = 600.0


class NodeLauncher:
    """The actor on one node: its address, a free port, and torchrun for this node."""

    def address(self) -> str:
        import ray

        return ray.util.get_node_ip_address()

    def free_port(self) -> int:
        with socket.socket() as sock:
            sock.bind(("", 0))
            return int(sock.getsockname()[1])

    def run(self, argv: list[str], threads: int | None) -> Any:
        """Run torchrun; yield rank 0's progress records, then ``{"exit": code, "stderr": text}``."""
        env = dict(os.environ)  # with the GPUs Ray gave this actor
        processes = int(next(a for a in argv if a.startswith("--nproc_per_node=")).split("=", 1)[1])
        env["OMP_NUM_THREADS"] = str(process_threads(threads, processes))
        errors: list[str] = []
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        reader = threading.Thread(target=lambda: errors.extend(proc.stderr), daemon=True)  # type: ignore[arg-type]
        reader.start()
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(PROGRESS_PREFIX):
                yield json.loads(line[len(PROGRESS_PREFIX):])
        code = proc.wait()
        reader.join(timeout=10)
        yield {"exit": code, "stderr": "".join(errors)}


def launch_nodes(job_path: Path, processes: int, nodes: int, *, progress: Any = None, threads: int | None = None,
                 address: str | None = None) -> None:
    """Run ``job_path`` on ``nodes`` nodes of ``processes`` processes each; return when all ended
    (raises :class:`TrainingError` when one failed)."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    from collapselab.cluster import ensure_ray

    ensure_ray(address)
    gpus = processes if ray.cluster_resources().get("GPU", 0) > 0 else 0
    group = placement_group([{"GPU": gpus, "CPU": 1} if gpus else {"CPU": 1}] * nodes,
                            strategy=PLACEMENT_STRATEGY)
    try:
        try:
            ray.get(group.ready(), timeout=RESERVE_TIMEOUT)
        except ray.exceptions.GetTimeoutError:
            raise TrainingError(f"lora.strategy fsdp over run.nodes {nodes}: the Ray cluster did not reserve "
                                f"{nodes} nodes of {gpus} GPU(s) within {RESERVE_TIMEOUT:.0f} s") from None
        launcher = ray.remote(NodeLauncher)
        actors = [launcher.options(num_cpus=1, num_gpus=gpus, scheduling_strategy=PlacementGroupSchedulingStrategy(
            placement_group=group, placement_group_bundle_index=i)).remote() for i in range(nodes)]
        master = ray.get(actors[0].address.remote())
        port = ray.get(actors[0].free_port.remote())
        streams = [actor.run.options(num_returns="streaming").remote(
            launch_command(job_path, processes, node=(i, nodes, master, port)), threads)
            for i, actor in enumerate(actors)]
        ends: dict[int, dict[str, Any]] = {}
        for ref in streams[0]:  # node 0 has rank 0: its progress is the job's
            record = ray.get(ref)
            if "exit" in record:
                ends[0] = record
            elif progress is not None:
                progress(record["step"], record["total"], record["loss"])
        for i, stream in enumerate(streams[1:], start=1):
            ends[i] = next(r for r in (ray.get(ref) for ref in stream) if "exit" in r)
        failed = [i for i, end in ends.items() if end["exit"] != 0]
        if failed:  # the node whose recipe raised, else the first (the others fail with the rendezvous)
            first = next((i for i in failed if "TrainingError" in ends[i]["stderr"]), failed[0])
            raise failure(f"node {first} of {nodes} failed (exit {ends[first]['exit']}; master {master}:{port})",
                          ends[first]["stderr"])
    finally:
        remove_placement_group(group)  # ends the actors with it
