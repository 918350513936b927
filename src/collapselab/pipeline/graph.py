"""The stage graph: prepare → generate (source × shard) → mix (condition) → train (target ×
condition × seed) → respond (target × condition × seed, vanilla included).

A :class:`Stage` carries the settings that decide its content (hashed into its key together with
its inputs' keys and a code version) and, separately, runtime parameters that do not (batch
sizes, model objects' specs with non-semantic fields).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from collapselab.config.spec import Condition, ExperimentSpec, ModelSpec
from collapselab.store.keys import stage_key
from collapselab.store.run import StageRef

#: Bump a kind's version when its code changes what it writes: its folders (and everything
#: downstream) are then recomputed instead of silently reused.
CODE_VERSIONS = {"prepare": 1, "generate": 1, "mix": 1, "train": 1, "respond": 1,
                 "embed": 1, "score": 1, "evaluate": 1, "stats": 1,
                 # Experiment 2 — safety
                 "prompts": 1, "safety_respond": 1, "calibrate": 1, "judge": 1, "safety": 1,
                 # Experiment 3 — self-preference
                 "items": 1, "candidates": 1, "prefer": 1, "preference": 1}

STAGE_ORDER = tuple(CODE_VERSIONS)

#: Stage kinds that load a language model (and so want a GPU on a GPU cluster; see run.gpus).
MODEL_KINDS = frozenset({"generate", "train", "respond", "score", "safety_respond", "calibrate", "judge",
                         "candidates", "prefer"})


@dataclass(frozen=True, eq=False)
class Stage:
    """One node of the graph."""

    kind: str
    name: str
    settings: dict[str, Any]
    inputs: tuple[Stage, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)  # not part of the key
    resources: dict[str, float] = field(default_factory=lambda: {"cpus": 1})

    @cached_property
    def key(self) -> str:
        return stage_key(self.kind, CODE_VERSIONS[self.kind], self.settings, [i.key for i in self.inputs])

    @property
    def ref(self) -> StageRef:
        return StageRef(self.kind, self.name, self.key)

    @property
    def label(self) -> str:
        return f"{self.kind}/{self.name}"

    def input(self, kind: str, **match: Any) -> Stage:
        """The single input of a kind (optionally matching params), e.g. ``stage.input("prepare")``."""
        found = [s for s in self.inputs if s.kind == kind and all(s.params.get(k) == v for k, v in match.items())]
        if len(found) != 1:
            raise LookupError(f"{self.label}: expected one {kind} input matching {match}, found {len(found)}")
        return found[0]


def model_key_settings(spec: ModelSpec) -> dict[str, Any]:
    """The fields of a model spec that change what it writes (batch size does not, by design:
    sampling is seeded per prompt; nor does the name of the variable holding an API key)."""
    settings = spec.model_dump(mode="json", exclude={"batch_size", "api_key_env"})
    if settings.get("base_url") is None:  # only HTTP backends have one: local models keep their keys
        settings.pop("base_url", None)
    return settings


def target_names(targets: tuple[ModelSpec, ...]) -> list[str]:
    """Short, unique, file-safe names for the targets (``hf/org/Model-1B`` → ``model-1b``)."""
    names = []
    for spec in targets:
        base = Path(spec.name.rstrip("/")).name.removesuffix(".gguf").lower()
        base = re.sub(r"[^a-z0-9_.-]+", "-", base).strip("-") or "target"
        names.append(base)
    out = []
    for i, n in enumerate(names):
        out.append(n if names.count(n) == 1 else f"{n}-{i}")
    return out


def path_fingerprint(path_text: str | None) -> str:
    """A fingerprint of a local file or folder's content (empty when there is none), so that a
    stage reading it re-runs when the data is edited."""
    if not path_text:
        return ""
    path = Path(path_text).expanduser()
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for p in files:
        if not p.exists():
            continue
        digest.update(str(p.relative_to(path) if path.is_dir() else p.name).encode())
        with open(p, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def corpus_fingerprint(spec: ExperimentSpec) -> str:
    """A cheap fingerprint of local corpus data so that editing the file re-runs the pipeline."""
    return path_fingerprint(spec.corpus.path)


def shard_plan(spec: ExperimentSpec) -> dict[str, list[tuple[str, list[int]]]]:
    """For each trained synthetic condition: [(source, shard indices it answers)], in source order.

    A single-source condition takes every shard from its source; a multi-source condition gives
    each source a consecutive block of shards in proportion to its weight (equal by default).
    """
    from collapselab.corpora.split import assign_shards

    n = spec.n_shards
    plan: dict[str, list[tuple[str, list[int]]]] = {}
    for cond in spec.conditions:
        if cond.kind == "single":
            plan[cond.label] = [(cond.sources[0], list(range(n)))]
        elif cond.kind == "multi":
            blocks = assign_shards(n, cond.normalized_weights)
            plan[cond.label] = list(zip(cond.sources, blocks, strict=True))
    return plan


def build_graph(spec: ExperimentSpec) -> list[Stage]:
    """All stages of an experiment in an order where every stage follows its inputs."""
    prepare = Stage(
        "prepare",
        "corpus",
        settings={
            "corpus": spec.corpus.model_dump(mode="json"),
            "fingerprint": corpus_fingerprint(spec),
            "split": spec.split.model_dump(mode="json"),
            "n_shards": spec.n_shards,
        },
    )
    stages: list[Stage] = [prepare]

    plan = shard_plan(spec)
    # with seed_scope "data" every seed samples its own synthetic data; else one draw serves all seeds
    data_seeds: list[int | None] = list(spec.seeds) if spec.seed_scope == "data" else [None]
    generate: dict[tuple[str, int, int | None], Stage] = {}
    for assignments in plan.values():
        for source, shards in assignments:
            for shard in shards:
                for data_seed in data_seeds:
                    if (source, shard, data_seed) in generate:
                        continue
                    src = spec.source(source)
                    decoding = spec.source_decoding(source)
                    settings: dict[str, Any] = {"source": source, "model": model_key_settings(src.model),
                                                "decoding": decoding.model_dump(mode="json"), "shard": shard}
                    name = f"{source}-shard{shard}"
                    if data_seed is not None:
                        decoding = decoding.model_copy(update={"seed": data_seed})
                        settings["decoding"] = decoding.model_dump(mode="json")
                        name += f"-seed{data_seed}"
                    generate[(source, shard, data_seed)] = Stage(
                        "generate", name, settings=settings, inputs=(prepare,),
                        params={"source": source, "shard": shard, "model": src.model, "decoding": decoding,
                                "data_seed": data_seed},
                    )
    stages += sorted(generate.values(), key=lambda s: (s.params["source"], s.params["shard"],
                                                       s.params["data_seed"] or 0))

    mixes: dict[tuple[str, int | None], Stage] = {}
    for cond in spec.trained_conditions:
        for data_seed in ([None] if cond.kind == "human" else data_seeds):
            if cond.kind == "human":
                inputs: tuple[Stage, ...] = (prepare,)
                settings = {"condition": cond.label}
            else:
                used = [(src, shard) for src, shards in plan[cond.label] for shard in shards]
                inputs = (prepare, *(generate[(u[0], u[1], data_seed)] for u in used))
                settings = {"condition": cond.label, "assignment": [[s, sh] for s, sh in used]}
            settings["system_prompt"] = spec.decoding.system_prompt
            name = cond.slug + (f"-seed{data_seed}" if data_seed is not None else "")
            mixes[(cond.label, data_seed)] = Stage("mix", name, settings=settings, inputs=inputs,
                                                   params={"condition": cond, "data_seed": data_seed})
    stages += list(mixes.values())

    trains: dict[tuple[int, str, int, int], Stage] = {}
    names = target_names(spec.targets)
    for t, (target, tname) in enumerate(zip(spec.targets, names, strict=True)):
        for cond in spec.trained_conditions:
            for seed in spec.seeds:
                trains[(t, cond.label, seed, 0)] = _train_stage(spec, target, tname, cond, seed, 0,
                                                               mix_of(mixes, cond, seed))
    stages += list(trains.values())
    for generation in range(1, spec.generations.count):
        stages += _generation_stages(spec, generation, prepare, plan, trains, mixes)
        stages += [s for k, s in trains.items() if k[3] == generation]

    for t, (target, tname) in enumerate(zip(spec.targets, names, strict=True)):
        for cond in spec.conditions:
            for generation in range(spec.generations.count if cond.kind in ("single", "multi") else 1):
                for seed in spec.seeds:
                    train = trains.get((t, cond.label, seed, generation))
                    inputs = (prepare,) if train is None else (prepare, train)
                    settings = {"target": model_key_settings(target), "condition": cond.label,
                                "decoding": spec.decoding.model_dump(mode="json"), "seed": seed}
                    if generation:
                        settings["generation"] = generation
                    stages.append(Stage(
                        "respond", f"{tname}-{cond.slug}-seed{seed}{_gen_suffix(generation)}",
                        settings=settings, inputs=inputs,
                        params={"target": target, "target_name": tname, "condition": cond, "seed": seed,
                                "generation": generation},
                    ))
    from collapselab.pipeline.collapse import add_collapse_stages
    from collapselab.pipeline.preference import add_preference_stages
    from collapselab.pipeline.safety import add_safety_stages

    stages = add_collapse_stages(spec, stages)
    stages = add_safety_stages(spec, stages)
    stages = add_preference_stages(spec, stages)
    if spec.run.gpus:  # a scheduling request only (not part of any key)
        for stage in stages:
            if stage.kind in MODEL_KINDS:
                stage.resources["gpus"] = spec.run.gpus
    return stages


def mix_of(mixes: dict[tuple[str, int | None], Stage], cond: Condition, seed: int) -> Stage:
    """The generation-0 training set a (condition, seed) cell trains on: the seed's own draw of the
    synthetic data with seed_scope "data", else the one shared draw."""
    return mixes.get((cond.label, seed)) or mixes[(cond.label, None)]


def _gen_suffix(generation: int) -> str:
    """Generation 0 keeps the study's names (and keys), later generations get ``-genG``."""
    return f"-gen{generation}" if generation else ""


def _train_stage(spec: ExperimentSpec, target: ModelSpec, tname: str, cond: Condition, seed: int,
                 generation: int, mix: Stage) -> Stage:
    settings: dict[str, Any] = {"target": model_key_settings(target), "lora": spec.lora.model_dump(mode="json"),
                                "seed": seed}
    if generation:
        settings["generation"] = generation
    return Stage(
        "train", f"{tname}-{cond.slug}-seed{seed}{_gen_suffix(generation)}", settings=settings, inputs=(mix,),
        params={"target": target, "target_name": tname, "condition": cond, "seed": seed, "generation": generation},
        resources={"cpus": 2},
    )


def _generation_stages(spec: ExperimentSpec, generation: int, prepare: Stage,
                       plan: dict[str, list[tuple[str, list[int]]]],
                       trains: dict[tuple[int, str, int, int], Stage],
                       mixes: dict[tuple[str, int | None], Stage]) -> list[Stage]:
    """Generation ``generation`` ≥ 1 of every synthetic chain: the previous generation's models
    answer the train prompts (generate), their answers form the new training sets (mix, replace or
    accumulate, with optional fresh human data), and fresh LoRA adapters are trained on them (train,
    added to ``trains``). Returns the generate and mix stages."""
    g = spec.generations
    names = target_names(spec.targets)
    # a fresh draw of sampling noise per generation: the same prompts are answered again
    decoding = spec.decoding.model_copy(update={"seed": spec.decoding.seed + generation})
    out: list[Stage] = []
    generate: dict[tuple[int, str, int, int], Stage] = {}
    for t, (target, tname) in enumerate(zip(spec.targets, names, strict=True)):
        for seed in spec.seeds:
            for cond in (c for c in spec.trained_conditions if c.kind in ("single", "multi")):
                used = []
                for source, shards in plan[cond.label]:
                    chain = f"single:{source}"  # each source's lineage is its single-source chain
                    model_train = trains[(t, chain, seed, generation - 1)]
                    for shard in shards:
                        key = (t, chain, seed, shard)
                        if key not in generate:
                            generate[key] = Stage(
                                "generate", f"{tname}-single-{source}-seed{seed}{_gen_suffix(generation)}-shard{shard}",
                                settings={"source": source, "model": model_key_settings(target), "chain": chain,
                                          "decoding": decoding.model_dump(mode="json"), "shard": shard,
                                          "generation": generation, "seed": seed},
                                inputs=(prepare, model_train),
                                params={"source": source, "shard": shard, "model": target, "decoding": decoding,
                                        "generation": generation, "chain_train": model_train},
                            )
                        used.append((source, shard, generate[key]))
                previous = (mix_of(mixes, cond, seed) if generation == 1
                            else trains[(t, cond.label, seed, generation - 1)].inputs[0])
                inputs = (prepare, *(s for _, _, s in used)) + ((previous,) if g.mode == "accumulate" else ())
                mix = Stage(
                    "mix", f"{tname}-{cond.slug}-seed{seed}{_gen_suffix(generation)}",
                    settings={"condition": cond.label, "assignment": [[src, sh] for src, sh, _ in used],
                              "system_prompt": spec.decoding.system_prompt, "generation": generation,
                              "mode": g.mode, "human_fraction": g.human_fraction, "mix_seed": g.seed},
                    inputs=inputs, params={"condition": cond, "generation": generation},
                )
                out.append(mix)
                trains[(t, cond.label, seed, generation)] = _train_stage(spec, target, tname, cond, seed,
                                                                         generation, mix)
    gens = sorted(generate.values(), key=lambda s: s.name)
    return gens + out


def conditions_by_label(spec: ExperimentSpec) -> dict[str, Condition]:
    return {c.label: c for c in spec.conditions}
