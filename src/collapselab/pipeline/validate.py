"""``validate``: build every spec, resolve every registered name and the stage graph, run nothing."""

from __future__ import annotations

import os
from pathlib import Path

from collapselab.config.spec import ExperimentSpec
from collapselab.errors import ConfigError
from collapselab.pipeline.graph import build_graph
from collapselab.pipeline.stage import Stage


def validate_experiment(spec: ExperimentSpec) -> list[Stage]:
    """Check names, paths and the graph; return the stages. Raises a CollapselabError naming the field."""
    from collapselab.corpora.base import CORPORA
    from collapselab.models.base import BACKENDS, check_model
    from collapselab.registry import UnknownNameError

    try:
        CORPORA.get(spec.corpus.kind)
    except UnknownNameError as exc:
        raise ConfigError(f"corpus.kind: {exc}") from None
    if spec.corpus.kind in ("jsonl", "csv", "parquet", "txt"):
        if not spec.corpus.path:
            raise ConfigError(f"corpus.path: required for corpus kind {spec.corpus.kind!r}")
        if not Path(spec.corpus.path).expanduser().exists():
            raise ConfigError(f"corpus.path: {spec.corpus.path} does not exist")
    if spec.corpus.kind == "hf" and not (spec.corpus.name or spec.corpus.path):
        raise ConfigError("corpus.name: required for corpus kind 'hf' (e.g. databricks/databricks-dolly-15k)")

    models = [(f"sources.{i}.model", s.model) for i, s in enumerate(spec.sources)]
    models += [(f"targets.{i}", t) for i, t in enumerate(spec.targets)]
    if spec.safety.enabled:
        _check_safety(spec)
        models += [(f"safety.{f}", m) for f in ("judge", "quality_judge")
                   if (m := getattr(spec.safety, f)) is not None]
    if spec.preference.enabled:
        _check_preference(spec)
    if spec.capability.enabled:
        from collapselab.pipeline.experiments.capability import check_capability

        check_capability(spec)
    engines = spec.run.vllm.python
    if engines and any(m.backend == "vllm" for _, m in models):
        path = Path(engines).expanduser()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise ConfigError(f"run.vllm.python: {engines} is not an executable interpreter (make the vLLM "
                              "environment with bash scripts/setup-vllm.sh, then name its bin/python)")
    for field, model in models:
        if model.backend not in BACKENDS:
            raise ConfigError(f"{field}.id: {BACKENDS.unknown_message(model.backend)}")
        try:
            if model.backend == "vllm" and spec.run.vllm.python:  # vLLM lives in that environment
                from collapselab.models.vllm_backend import check_vllm_spec

                check_vllm_spec(model, here=False)
            else:
                check_model(model)
        except Exception as exc:  # ModelError, or a backend SDK error
            raise ConfigError(f"{field}.id: {exc}") from None
    if spec.collapse.enabled:
        from collapselab.metrics import METRICS, build_metric
        from collapselab.pipeline.experiments.collapse import metric_specs

        for i, m in enumerate(metric_specs(spec)):
            if m.name not in METRICS:
                raise ConfigError(f"collapse.metrics.{i}.name: {METRICS.unknown_message(m.name)}")
            try:  # builds the metric with its settings; imports its family module
                build_metric(m.name, **m.settings)
            except TypeError as exc:
                raise ConfigError(f"collapse.metrics.{i}.settings: {exc}") from None
            except ValueError as exc:
                raise ConfigError(f"collapse.metrics.{i}.settings: {exc}") from None
        samples = spec.collapse.samples
        for i, m in enumerate(samples.metrics or () if samples is not None else ()):
            if m.name not in METRICS:
                raise ConfigError(f"collapse.samples.metrics.{i}.name: {METRICS.unknown_message(m.name)}")
    if spec.trained_conditions:
        for i, t in enumerate(spec.targets):
            if t.backend not in ("hf", "vllm", "toy"):
                raise ConfigError(f"targets.{i}.id: {t.id!r} cannot be fine-tuned (only 'hf' targets can, 'vllm' "
                                  "ones (trained with transformers, served with the adapter as a LoRA request) "
                                  "and 'toy' ones, refitted by counting)")
    _check_loop(spec)
    for label, shares in mix_shares(spec).items():
        if shares is None:
            continue
        off = {s: abs(v["share"] - v["requested"]) for s, v in shares.items()}
        worst = max(off, key=off.get)
        if off[worst] > spec.split.weight_tolerance:
            raise ConfigError(
                f"conditions: {label}: source {worst} would make up {shares[worst]['share']:.1%} of the training "
                f"examples, {shares[worst]['requested']:.1%} were requested (split.weight_tolerance "
                f"{spec.split.weight_tolerance:g}); realised: "
                + ", ".join(f"{s} {v['count']} ({v['share']:.1%})" for s, v in shares.items())
                + "; use more training prompts (split.train_size), another split.shards (a boundary on a shard "
                "edge keeps whole shards) or raise split.weight_tolerance")
    _check_strategies(spec)
    stages = build_graph(spec)
    _check_gpu_memory(spec, stages)
    return stages


def _check_strategies(spec: ExperimentSpec) -> None:
    """``lora.strategy: fsdp`` needs GPUs to shard over: ``run.gpus_per_node`` processes on a node
    (:func:`collapselab.train.distributed.training_processes`), on ``run.nodes`` nodes through Ray."""
    if not spec.trained_conditions:
        return
    for name in spec.target_names:
        if spec.lora_for(name).strategy != "fsdp":
            continue
        where = f"lora_overrides.{name}.strategy" if "strategy" in spec.lora_overrides.get(name, {}) \
            else "lora.strategy"
        if not spec.run.gpus_per_node or spec.run.gpus_per_node * spec.run.nodes < 2:
            raise ConfigError(f"run.gpus_per_node: {where} is fsdp for target {name!r}, which shards the model over "
                              f"run.gpus_per_node processes (one per GPU of a node) on each of run.nodes nodes, and "
                              f"run.gpus_per_node is {spec.run.gpus_per_node or 'not set'}: set it to the node's GPUs "
                              "(2 or more on one node), or use lora.strategy single or qlora")
        if spec.run.nodes > 1 and spec.run.executor != "ray" and not spec.run.ray_address:
            raise ConfigError(f"run.nodes: {where} is fsdp for target {name!r} over run.nodes {spec.run.nodes} "
                              "nodes, which Ray starts (one torchrun per node): set run.executor: ray (or "
                              "run.ray_address to the cluster); docs/scale.md, 'Several nodes'")


def _check_gpu_memory(spec: ExperimentSpec, stages: list[Stage]) -> None:
    """With ``run.gpu_memory_gb``: every model stage's estimated peak must fit the GPU memory it
    gets (:mod:`collapselab.pipeline.memory`); stages whose shape is unknown are not checked."""
    from collapselab.pipeline.memory import check_memory, refusal_message

    if spec.run.gpu_memory_gb is None:
        return
    check = check_memory(spec, stages)
    if check.refused:
        raise ConfigError(refusal_message(check, spec))


def mix_shares(spec: ExperimentSpec) -> dict[str, dict[str, dict[str, float]] | None]:
    """For each multi-source condition, each source's realised share of the training examples as
    ``prepare`` and ``mix`` will make them (``{source: {"count", "share", "requested"}}``), before
    any answer is generated; None when the number of training prompts is not known without
    downloading the corpus (the mix stage checks it then).

    The counts depend only on the shard sizes (:func:`collapselab.corpora.shares.source_counts`),
    which :func:`~collapselab.pipeline.sizing.corpus_facts` derives by splitting a local corpus as
    ``prepare`` does, or from a known corpus size. Empty answers, dropped by the mix, can still
    move the shares at run time (the mix stage checks them again).
    """
    from collapselab.corpora.shares import source_counts
    from collapselab.pipeline.sizing import corpus_facts

    multi = [c for c in spec.conditions if c.kind == "multi"]
    if not multi:
        return {}
    facts = corpus_facts(spec)
    out: dict[str, dict[str, dict[str, float]] | None] = {}
    for cond in multi:
        if not facts.shards:
            out[cond.label] = None
            continue
        counts = source_counts(facts.shards, cond.normalized_weights)
        n = max(1, sum(counts))
        out[cond.label] = {s: {"count": c, "share": c / n, "requested": w}
                           for s, c, w in zip(cond.sources, counts, cond.normalized_weights, strict=True)}
    return out


def _check_loop(spec: ExperimentSpec) -> None:
    """The collapse-loop settings that need more than one field to judge (issue 13)."""
    for name, override in spec.decodings.items():
        if override.get("num_beams", 1) > 1:
            users = [c for c in spec.conditions if c.decoding == name]
            models = [spec.source(s).model for c in users for s in c.sources]
            if spec.generations.count > 1:
                models += list(spec.targets)
            other = sorted({m.id for m in models if m.backend != "hf"})
            if other:
                raise ConfigError(f"decodings.{name}.num_beams: beam search is offered by the hf backend only; "
                                  f"{', '.join(other)} would sample with it")
    for i, step in enumerate(spec.curation):
        if not any(c.curation == step.name for c in spec.conditions):
            raise ConfigError(f"curation.{i}: {step.name!r} is used by no condition (add e.g. "
                              f"'single:SRC|curate={step.name}' to conditions, or remove it)")
    g = spec.generations
    if g.subsample is not None and spec.split.train_size is not None and g.subsample > 2 * spec.split.train_size:
        raise ConfigError(f"generations.subsample: {g.subsample} examples, but generation 1's pool of all data "
                          f"holds at most {2 * spec.split.train_size} (twice split.train_size)")


def _exists(field: str, path: str | None, required: bool = False) -> None:
    if path is None:
        if required:
            raise ConfigError(f"{field}: a path is required here")
        return
    if not Path(path).expanduser().exists():
        raise ConfigError(f"{field}: {path} does not exist")


def _check_safety(spec: ExperimentSpec) -> None:
    """Experiment 2: local files exist, templates and calibration set load."""
    from collapselab.judges import JUDGES
    from collapselab.judges.calibration import load_calibration

    s = spec.safety
    for i, p in enumerate(s.prompts):
        _exists(f"safety.prompts.{i}.path", p.path, required=p.kind in ("jsonl", "csv", "parquet"))
        if p.kind == "hf" and not (p.name or p.path):
            raise ConfigError(f"safety.prompts.{i}.name: required for kind 'hf'")
    j = s.jailbreaks
    _exists("safety.jailbreaks.path", j.path, required=j.kind in ("jsonl", "csv"))
    if j.kind == "hf" and not (j.name or j.path):
        raise ConfigError("safety.jailbreaks.name: required for kind 'hf'")
    for role, path in (("harm", s.harm_template), ("quality", s.quality_template)):
        _exists(f"safety.{role}_template", path)
        JUDGES.get(role).template(path)  # raises ConfigError naming the file, the line and the config field
    if s.calibrate:
        _exists("safety.calibration", s.calibration)
        load_calibration(s.calibration)


def _check_preference(spec: ExperimentSpec) -> None:
    """Experiment 3: templates load, a configured corpus is usable, there is a source to compare."""
    from collapselab.judges import JUDGES
    from collapselab.pipeline.experiments.preference import preference_sources

    p = spec.preference
    for target in spec.target_names:  # each target's judges (preference.sources_by_target)
        if not preference_sources(spec, target):
            raise ConfigError(f"preference.sources: at least one source model is needed for the judges of "
                              f"{target!r} (texts are compared with the human one)")
    _exists("preference.pair_template", p.pair_template)
    JUDGES.get("pairwise").template(p.pair_template)
    if p.ratings:
        _exists("preference.rating_template", p.rating_template)
        JUDGES.get("rating").template(p.rating_template)
    if p.corpus is not None:
        from collapselab.corpora.base import CORPORA
        from collapselab.registry import UnknownNameError

        try:
            CORPORA.get(p.corpus.kind)
        except UnknownNameError as exc:
            raise ConfigError(f"preference.corpus.kind: {exc}") from None
        _exists("preference.corpus.path", p.corpus.path, required=p.corpus.kind in ("jsonl", "csv", "parquet", "txt"))
