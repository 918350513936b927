"""``validate``: build every spec, resolve every registered name and the stage graph, run nothing."""

from __future__ import annotations

from pathlib import Path

from collapselab.config.spec import ExperimentSpec
from collapselab.errors import ConfigError
from collapselab.pipeline.graph import Stage, build_graph


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
    for field, model in models:
        if model.backend not in BACKENDS:
            raise ConfigError(f"{field}.id: {BACKENDS.unknown_message(model.backend)}")
        try:
            check_model(model)
        except Exception as exc:  # ModelError, or a backend SDK error
            raise ConfigError(f"{field}.id: {exc}") from None
    if spec.collapse.enabled:
        from collapselab.metrics import METRICS, build_metric
        from collapselab.pipeline.collapse import metric_specs

        for i, m in enumerate(metric_specs(spec)):
            if m.name not in METRICS:
                raise ConfigError(f"collapse.metrics.{i}.name: {METRICS.unknown_message(m.name)}")
            try:  # builds the metric with its settings; imports its family module
                build_metric(m.name, **m.settings)
            except TypeError as exc:
                raise ConfigError(f"collapse.metrics.{i}.settings: {exc}") from None
            except ValueError as exc:
                raise ConfigError(f"collapse.metrics.{i}.settings: {exc}") from None
    if spec.trained_conditions:
        for i, t in enumerate(spec.targets):
            if t.backend != "hf":
                raise ConfigError(f"targets.{i}.id: {t.id!r} cannot be fine-tuned (only 'hf' targets can)")
    return build_graph(spec)
