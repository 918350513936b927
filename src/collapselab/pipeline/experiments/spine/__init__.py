"""The spine every experiment builds on: prepare → generate (source × shard) → mix (condition) →
train (target × condition × seed) → respond (target × condition × seed, vanilla included), with
recursive generations (replace / accumulate) and per-seed data draws.

:func:`build_spine` returns a :class:`Spine`: the stages and the index of train and respond
stages by cell (target, condition, seed, generation) that the experiments add their stages from.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from collapselab.config.spec import Condition, ExperimentSpec, ModelSpec
from collapselab.config.spec import target_names as spec_target_names
from collapselab.naming import slug
from collapselab.pipeline.experiments.spine import plan, run
from collapselab.pipeline.experiments.spine.params import CellParams, GenerateParams, MixParams
from collapselab.pipeline.keying import model_key_settings, path_fingerprint, scorer_key_settings
from collapselab.pipeline.kinds import StageKind, register_kind
from collapselab.pipeline.stage import Stage
from collapselab.synth import curation as _curation  # noqa: F401  # registers the "curate" stage kind

EXPERIMENT = "spine"

PREPARE = register_kind(StageKind(
    "prepare", 1, run.run_prepare, plan.plan_prepare, unit="records", experiment=EXPERIMENT,
    outputs=("train.jsonl", "test.jsonl", "summary.json"),
    description="load the human corpus, split it (stratified, seeded), cut the train prompts into shards"))
GENERATE = register_kind(StageKind(
    "generate", 1, run.run_generate, plan.plan_generate, unit="prompts", params=GenerateParams,
    loads_model=True, experiment=EXPERIMENT, outputs=("synthetic.jsonl", "summary.json"),
    description="a source (or a previous generation's model) answers one shard of the train prompts"))
MIX = register_kind(StageKind(
    "mix", 1, run.run_mix, plan.plan_mix, unit="examples", params=MixParams, experiment=EXPERIMENT,
    outputs=("train.jsonl", "summary.json"),
    description="one condition's training set, with provenance on every example"))
TRAIN = register_kind(StageKind(
    "train", 1, run.run_train, plan.plan_train, unit="examples", params=CellParams, loads_model=True,
    resources={"cpus": 2}, experiment=EXPERIMENT,
    outputs=("adapter/", "loss_curve.jsonl", "train_summary.json"),
    description="LoRA fine-tuning of one target on one condition's training set with one seed"))
RESPOND = register_kind(StageKind(
    "respond", 1, run.run_respond, plan.plan_respond, unit="prompts", params=CellParams, loads_model=True,
    experiment=EXPERIMENT, outputs=("responses.jsonl", "summary.json"),
    description="the vanilla or fine-tuned target answers the test prompts"))


@dataclass
class Spine:
    """The spine's stages and their index, shared by every experiment's ``add_stages``."""

    spec: ExperimentSpec
    prepare: Stage
    stages: list[Stage]
    target_names: list[str]
    #: (target name, condition label, seed, generation) → its train stage
    trains: dict[tuple[str, str, int, int], Stage] = field(default_factory=dict)
    responds: list[Stage] = field(default_factory=list)

    def train(self, target_name: str, condition: str, seed: int, generation: int = 0) -> Stage | None:
        """The train stage of a cell (None for vanilla: nothing is trained)."""
        return self.trains.get((target_name, condition, seed, generation))

    def generations(self, cond: Condition) -> range:
        """The generations a condition has: all for synthetic chains, only 0 for vanilla and human."""
        return generations_of(self.spec, cond)

    def cells(self, *, vanilla_seeds: str = "all",
              generations: str = "all") -> Iterator[tuple[CellParams, Stage | None]]:
        """Every cell (target × condition × generation × seed, in that nesting) with its train
        stage; ``vanilla_seeds="first"`` gives the untrained vanilla target one cell only,
        ``generations="first"`` keeps generation 0's cells only."""
        for target, tname in zip(self.spec.targets, self.target_names, strict=True):
            for cond in self.spec.conditions:
                for generation in self.generations(cond):
                    if generations == "first" and generation:
                        continue
                    seeds = self.spec.seeds[:1] if cond.kind == "vanilla" and vanilla_seeds == "first" \
                        else self.spec.seeds
                    for seed in seeds:
                        cell = CellParams(target, tname, cond, seed, generation)
                        yield cell, self.train(tname, cond.label, seed, generation)

    def of_kind(self, kind: str) -> list[Stage]:
        return [s for s in self.stages if s.kind == kind]


def generations_of(spec: ExperimentSpec, cond: Condition) -> range:
    """The generations a condition has: all for synthetic chains, only 0 for vanilla and human; a
    ``|loop=MODE`` chain starts at 1 (its generation 0 is its twin's without the decoration)."""
    if cond.kind not in ("single", "multi"):
        return range(1)
    return range(1 if cond.loop is not None else 0, spec.generations.count)


def gen_suffix(generation: int) -> str:
    """Generation 0 keeps the study's names (and keys), later generations get ``-genG``."""
    return f"-gen{generation}" if generation else ""


def target_names(targets: tuple[ModelSpec, ...]) -> list[str]:
    """Short, unique, file-safe names for the targets (``hf/org/Model-1B`` → ``model-1b``); the
    rule lives with the config (:func:`collapselab.config.spec.target_names`), whose per-target
    settings are keyed by these names."""
    return spec_target_names(targets)


def shard_plan(spec: ExperimentSpec) -> dict[str, list[tuple[str, list[int]]]]:
    """For each trained synthetic condition: [(source, shard indices it answers)], in source order.

    A single-source condition takes every shard from its source. A multi-source condition gives
    each source a consecutive span of the shard sequence in proportion to its weight (equal by
    default); a shard cut by a span boundary is answered partly by each of the two sources, so the
    shares hold by example, not by whole shard (:mod:`collapselab.corpora.shares`).
    """
    from collapselab.corpora.shares import shards_needed

    n = spec.n_shards
    out: dict[str, list[tuple[str, list[int]]]] = {}
    for cond in spec.conditions:
        if cond.kind == "single":
            out[cond.label] = [(cond.sources[0], list(range(n)))]
        elif cond.kind == "multi":
            blocks = shards_needed(n, cond.normalized_weights)
            out[cond.label] = list(zip(cond.sources, blocks, strict=True))
    return out


def partial_shards(spec: ExperimentSpec) -> set[tuple[str, int]]:
    """The (source, shard) pairs that no condition needs answered whole: only multi-source
    conditions use them, each only the part its weights assign to that source. Their generate
    stages answer just that part, one stage per such condition (a whole shard is answered once
    and shared, by content addressing, with every condition that uses it)."""
    from collapselab.corpora.shares import shards_needed, whole_shards

    n = spec.n_shards
    whole = {(c.sources[0], j) for c in spec.conditions if c.kind == "single" for j in range(n)}
    needed = set()
    for cond in (c for c in spec.conditions if c.kind == "multi"):
        weights = cond.normalized_weights
        for source, shards, full in zip(cond.sources, shards_needed(n, weights), whole_shards(n, weights),
                                        strict=True):
            needed |= {(source, j) for j in shards}
            whole |= {(source, j) for j in full}
    return needed - whole


def build_spine(spec: ExperimentSpec) -> Spine:
    """The spine's stages, in an order where every stage follows its inputs."""
    prepare = Stage(
        "prepare",
        "corpus",
        settings={
            "corpus": spec.corpus.model_dump(mode="json"),
            "fingerprint": path_fingerprint(spec.corpus.path),
            # the tolerance only checks the mixes: it changes nothing the prepare stage writes
            "split": spec.split.model_dump(mode="json", exclude={"weight_tolerance"}),
            "n_shards": spec.n_shards,
        },
    )
    spine = Spine(spec, prepare, [prepare], target_names(spec.targets))
    stages = spine.stages
    shards = shard_plan(spec)
    # with seed_scope "data" every seed samples its own synthetic data; else one draw serves all seeds
    data_seeds: list[int | None] = list(spec.seeds) if spec.seed_scope == "data" else [None]
    parts = partial_shards(spec)
    conditions = {c.label: c for c in spec.conditions}
    # (source, shard, data seed, the multi-source condition a partial stage answers for, or None)
    generate: dict[tuple[str, int, int | None, str | None], Stage] = {}

    def generate_stage(label: str, source: str, shard: int, data_seed: int | None) -> Stage:
        cond = conditions[label]
        # a curated condition answers with the same stages as its uncurated twin; a decoding
        # variant samples its own
        part = cond.undecorated(keep_decoding=True) if (source, shard) in parts and cond.kind == "multi" else None
        key = (source, shard, data_seed, None if part is None else part.label, cond.decoding)
        if key not in generate:
            src = spec.source(source)
            decoding = spec.data_decoding(cond, spec.source_decoding(source))
            settings: dict[str, Any] = {"source": source, "model": model_key_settings(src.model),
                                        "decoding": decoding.model_dump(mode="json"), "shard": shard}
            name = f"{source}-shard{shard}"
            if part is not None:  # only the prompts this condition assigns to the source
                settings["part"] = {"sources": list(part.sources), "weights": list(part.normalized_weights)}
                name += f"-for-{part.slug}"
            elif cond.decoding is not None:
                name += f"-decoding-{slug(cond.decoding)}"
            if data_seed is not None:
                decoding = decoding.model_copy(update={"seed": data_seed})
                settings["decoding"] = decoding.model_dump(mode="json")
                name += f"-seed{data_seed}"
            generate[key] = Stage("generate", name, settings=settings, inputs=(prepare,),
                                  params=GenerateParams(source, shard, src.model, decoding, data_seed, part=part))
        return generate[key]

    for label, assignments in shards.items():
        for source, source_shards in assignments:
            for shard in source_shards:
                for data_seed in data_seeds:
                    generate_stage(label, source, shard, data_seed)
    stages += sorted(generate.values(), key=lambda s: (s.params.source, s.params.shard, s.params.data_seed or 0,
                                                       s.name))

    mixes: dict[tuple[str, int | None], Stage] = {}
    curates: list[Stage] = []
    for cond in (c for c in spec.trained_conditions if c.loop is None):
        for data_seed in ([None] if cond.kind == "human" else data_seeds):
            if cond.kind == "human":
                inputs: tuple[Stage, ...] = (prepare,)
                settings = {"condition": cond.label}
            else:
                used = [(src, shard) for src, source_shards in shards[cond.label] for shard in source_shards]
                inputs = (prepare, *(generate_stage(cond.label, *u, data_seed) for u in used))
                settings = {"condition": cond.label, "assignment": [[s, sh] for s, sh in used],
                            **_apportioned(spec, cond)}
                suffix = f"-seed{data_seed}" if data_seed is not None else ""
                curate = curate_stage(spec, cond, inputs, cond.slug + suffix, data_seed=data_seed)
                if curate is not None:
                    curates.append(curate)
                    inputs = (*inputs, curate)
            settings["system_prompt"] = spec.decoding.system_prompt
            name = cond.slug + (f"-seed{data_seed}" if data_seed is not None else "")
            mixes[(cond.label, data_seed)] = Stage("mix", name, settings=settings, inputs=inputs,
                                                   params=MixParams(cond, data_seed))
    stages += curates + list(mixes.values())

    for target, tname in zip(spec.targets, spine.target_names, strict=True):
        for cond in (c for c in spec.trained_conditions if c.loop is None):
            for seed in spec.seeds:
                cell = CellParams(target, tname, cond, seed, 0)
                spine.trains[cell.cell] = _train_stage(spec, cell, mix_of(mixes, cond, seed))
                stages.append(spine.trains[cell.cell])
    # a chain with its own loop mode starts from its twin's generation 0 (same data, same model):
    # its index entries point at the twin's stages, which are not added again
    for cond in (c for c in spec.trained_conditions if c.loop is not None):
        twin = cond.generation0_twin().label
        for data_seed in data_seeds:
            mixes[(cond.label, data_seed)] = mixes[(twin, data_seed)]
        for tname in spine.target_names:
            for seed in spec.seeds:
                spine.trains[(tname, cond.label, seed, 0)] = spine.trains[(tname, twin, seed, 0)]
    for generation in range(1, spec.generations.count):
        stages += _generation_stages(spine, generation, shards, mixes)
        stages += [s for k, s in spine.trains.items() if k[3] == generation]

    for cell, train in spine.cells():
        inputs = (prepare,) if train is None else (prepare, train)
        settings = {"target": model_key_settings(cell.target), "condition": cell.condition.label,
                    "decoding": spec.decoding.model_dump(mode="json"), "seed": cell.seed}
        if cell.generation:
            settings["generation"] = cell.generation
        spine.responds.append(Stage(
            "respond", f"{cell.target_name}-{cell.condition.slug}-seed{cell.seed}{gen_suffix(cell.generation)}",
            settings=settings, inputs=inputs, params=cell,
        ))
    stages += spine.responds
    return spine


def _apportioned(spec: ExperimentSpec, cond: Condition) -> dict[str, str]:
    """The mix's key setting for a multi-source condition that cuts a shard: since audit a3 its
    sources' counts are the largest-remainder shares of the prompts (a cut shard split by a
    seeded, stratified order), not those of earlier versions. Absent where every source answers
    whole shards, which never changed, so those mixes keep their keys."""
    from collapselab.corpora.shares import cuts_a_shard

    if cond.kind == "multi" and cuts_a_shard(spec.n_shards, cond.normalized_weights):
        return {"apportion": "largest-remainder"}
    return {}


def mix_of(mixes: dict[tuple[str, int | None], Stage], cond: Condition, seed: int) -> Stage:
    """The generation-0 training set a (condition, seed) cell trains on: the seed's own draw of the
    synthetic data with seed_scope "data", else the one shared draw."""
    return mixes.get((cond.label, seed)) or mixes[(cond.label, None)]


def _train_stage(spec: ExperimentSpec, cell: CellParams, mix: Stage) -> Stage:
    # the target's own recipe (lora_overrides); ``loss`` enters the key only when not the default
    settings: dict[str, Any] = {"target": model_key_settings(cell.target),
                                "lora": spec.lora_for(cell.target_name).key_settings(), "seed": cell.seed}
    if cell.generation:
        settings["generation"] = cell.generation
        if spec.loop_mode(cell.condition) != "replace":  # a prompt has several examples: split by prompt
            settings["val_split"] = "prompt"
    if _repeats_examples(spec, cell.condition) and "val_split" not in settings:
        settings["val_split"] = "prompt"  # resampled copies of one example stay on one side
    return Stage(
        "train", f"{cell.target_name}-{cell.condition.slug}-seed{cell.seed}{gen_suffix(cell.generation)}",
        settings=settings, inputs=(mix,), params=cell,
    )


def _repeats_examples(spec: ExperimentSpec, cond: Condition) -> bool:
    """Whether a condition's mix can hold copies of one example (importance resampling)."""
    return cond.curation is not None and spec.curation_step(cond.curation).rule == "resample"


def curate_stage(spec: ExperimentSpec, cond: Condition, inputs: tuple[Stage, ...], name: str, *,
                 data_seed: int | None = None, generation: int = 0) -> Stage | None:
    """The curation stage of a curated condition's new synthetic data (None when uncurated): it
    scores the examples of the generate stages among ``inputs`` and says which the mix keeps."""
    if cond.curation is None:
        return None
    from collapselab.synth.curation import CurateParams

    step = spec.curation_step(cond.curation)
    scorer = step.model or spec.targets[0]
    settings: dict[str, Any] = {"condition": cond.label, "curation": step.model_dump(mode="json", exclude={"model"}),
                                "scorer": scorer_key_settings(scorer) if step.score != "length" else None,
                                "system_prompt": spec.decoding.system_prompt}
    if step.template:  # the judge's prompt file: an edit re-scores
        settings["template_fingerprint"] = path_fingerprint(step.template)
    if generation:
        settings["generation"] = generation
    return Stage("curate", name, settings=settings, inputs=inputs,
                 params=CurateParams(cond, step, generation=generation, data_seed=data_seed))


def _chain_name(tname: str, chain: str, source: str) -> str:
    """The generate stages of a chain: ``TARGET-single-SRC`` for a plain single-source chain (the
    names, and so the keys' labels, of earlier versions), else ``TARGET-<chain slug>``."""
    cond = Condition.parse(chain)
    return f"{tname}-single-{source}" if chain == f"single:{source}" else f"{tname}-{cond.slug}"


def _generation_stages(spine: Spine, generation: int, shards: dict[str, list[tuple[str, list[int]]]],
                       mixes: dict[tuple[str, int | None], Stage]) -> list[Stage]:
    """Generation ``generation`` ≥ 1 of every synthetic chain: the previous generation's models
    answer the train prompts (generate), their answers form the new training sets (mix: replace,
    accumulate or accumulate-subsample, with optional fresh human data, after an optional
    curation), and fresh LoRA adapters are trained on them (train, added to ``spine.trains``).

    Which model answers a condition's prompts is :meth:`ExperimentSpec.chain_of`: a single-source
    condition's own; for a multi-source condition each source's single-source chain
    (``generations.multi_loop`` 'chains') or its own model for every prompt ('closed').
    Returns the generate, curate and mix stages."""
    spec = spine.spec
    g = spec.generations
    out: list[Stage] = []
    generate: dict[tuple[str, str, int, int], Stage] = {}
    curates: list[Stage] = []
    for target, tname in zip(spec.targets, spine.target_names, strict=True):
        for seed in spec.seeds:
            for cond in (c for c in spec.trained_conditions if c.kind in ("single", "multi")):
                closed = cond.kind == "multi" and g.multi_loop == "closed"
                mode = spec.loop_mode(cond)
                # a fresh draw of sampling noise per generation: the same prompts are answered again
                base = spec.decoding.model_copy(update={"seed": spec.decoding.seed + generation})
                assignments = ([(cond.label, list(range(spec.n_shards)))] if closed else shards[cond.label])
                used = []
                for source, source_shards in assignments:
                    chain = cond.label if closed else spec.chain_of(cond, source)
                    model_train = spine.trains[(tname, chain, seed, generation - 1)]
                    decoding = spec.data_decoding(cond, base)
                    for shard in source_shards:
                        key = (tname, chain, seed, shard)
                        if key not in generate:
                            settings = {"source": source, "model": model_key_settings(target), "chain": chain,
                                        "decoding": decoding.model_dump(mode="json"), "shard": shard,
                                        "generation": generation, "seed": seed}
                            generate[key] = Stage(
                                "generate", f"{_chain_name(tname, chain, source)}-seed{seed}{gen_suffix(generation)}"
                                            f"-shard{shard}",
                                settings=settings, inputs=(spine.prepare, model_train),
                                params=GenerateParams(source, shard, target, decoding, generation=generation,
                                                      chain_train=model_train),
                            )
                        used.append((source, shard, generate[key]))
                previous = (mix_of(mixes, cond, seed) if generation == 1
                            else spine.trains[(tname, cond.label, seed, generation - 1)].inputs[0])
                inputs = (spine.prepare, *dict.fromkeys(s for _, _, s in used))
                suffix = f"-seed{seed}{gen_suffix(generation)}"
                curate = curate_stage(spec, cond, inputs, f"{tname}-{cond.slug}{suffix}", generation=generation)
                if curate is not None:
                    curates.append(curate)
                    inputs = (*inputs, curate)
                if mode != "replace":
                    inputs = (*inputs, previous)
                settings = {"condition": cond.label, "assignment": [[src, sh] for src, sh, _ in used],
                            "system_prompt": spec.decoding.system_prompt, "generation": generation,
                            "mode": mode, "human_fraction": g.human_fraction, "mix_seed": g.seed,
                            **_apportioned(spec, cond)}
                if mode == "accumulate-subsample":
                    settings["subsample"] = g.subsample
                if g.human_count is not None:
                    settings["human_count"] = g.human_count
                if closed:
                    settings["multi_loop"] = "closed"
                mix = Stage("mix", f"{tname}-{cond.slug}{suffix}", settings=settings, inputs=inputs,
                            params=MixParams(cond, generation=generation))
                out.append(mix)
                cell = CellParams(target, tname, cond, seed, generation)
                spine.trains[cell.cell] = _train_stage(spec, cell, mix)
    gens = sorted(generate.values(), key=lambda s: s.name)
    return gens + curates + out
