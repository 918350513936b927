"""Everything the report shows, read from a run folder's stage outputs (nothing is recomputed).

:func:`collect` gathers the tables; the renderers (:mod:`collapselab.report.html`,
:mod:`collapselab.report.markdown`) turn a :class:`ReportInputs` into files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd


@dataclass
class ReportInputs:
    """The report's data.

    * ``aggregates`` / ``per_item`` — the long tables of :mod:`collapselab.metrics.tables`, all sets
      (conditions, sources' training data, human references);
    * ``tests`` — Kruskal–Wallis and pairwise Mann–Whitney rows (:func:`collapselab.stats.compare_conditions`);
    * ``concordance`` — per target: ``ranks``, ``value_ranks``, ``correlations``, ``pairwise`` frames;
      ``kendalls_w`` — one dict per target (W, chi2, df, p, n, m);
    * ``factorial`` (ART ANOVA rows per metric), ``seed_spread``, ``stats_notes``;
    * ``details`` — per set name, the evaluate stage's details (per metric: plot data such as the
      Heaps curve, a length histogram, ``seconds``, ``failed_resamples``; ``skipped`` metrics and why);
    * ``embedding_map`` — a 2-D PCA projection of the response embeddings: set_name, set_kind,
      condition, item_id, x, y;
    * ``responses`` — set_name, condition, target, seed, prompt_id, prompt, response, human_response
      (model text: always escaped when shown);
    * ``training`` — per train stage: target, condition, seed, best_val_loss, stopped_early, and its
      loss curve (list of dicts);
    * ``judge_notes`` / ``sections`` — room for later experiments' sections.
    """

    title: str
    config_yaml: str
    aggregates: pd.DataFrame
    per_item: pd.DataFrame
    tests: pd.DataFrame
    concordance: dict[str, dict[str, pd.DataFrame]]
    kendalls_w: list[dict[str, Any]]
    factorial: pd.DataFrame
    seed_spread: pd.DataFrame
    stats_notes: list[str]
    details: dict[str, dict[str, Any]]
    embedding_map: pd.DataFrame
    responses: pd.DataFrame
    training: list[dict[str, Any]]
    run_dir: str = ""
    stage_counts: dict[str, int] = field(default_factory=dict)


def _read_parquet(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path) if path.exists() else pd.DataFrame()


def collect(spec, run_dir: str | Path) -> ReportInputs:
    """Read every finished stage the report needs; raises if the collapse stages are not done."""
    import numpy as np

    from collapselab.errors import CollapselabError
    from collapselab.pipeline.graph import build_graph
    from collapselab.store.atomic import read_jsonl
    from collapselab.store.run import RunStore

    run_dir = Path(run_dir)
    store = RunStore(run_dir)
    stages = build_graph(spec)
    missing = [s.label for s in stages if s.kind in ("evaluate", "stats") and not store.is_done(s.ref)]
    if missing:
        raise CollapselabError(f"{run_dir}: the report needs finished stages; missing: {', '.join(missing[:5])}"
                               + (" …" if len(missing) > 5 else "") + " (run `collapselab run` first)")
    evaluates = [s for s in stages if s.kind == "evaluate"]
    stats_dir = store.final_dir(next(s for s in stages if s.kind == "stats").ref)
    aggregates = pd.concat([pd.read_parquet(store.final_dir(s.ref) / "aggregates.parquet") for s in evaluates],
                           ignore_index=True)
    per_item = pd.concat([pd.read_parquet(store.final_dir(s.ref) / "per_item.parquet") for s in evaluates],
                         ignore_index=True)
    details = {s.params["set"].name: json.loads((store.final_dir(s.ref) / "details.json").read_text())
               for s in evaluates}
    stats = json.loads((stats_dir / "stats.json").read_text())
    concordance: dict[str, dict[str, pd.DataFrame]] = {}
    for path in sorted((stats_dir / "concordance").glob("*/*.parquet")):
        concordance.setdefault(path.parent.name, {})[path.stem] = pd.read_parquet(path)

    # 2-D map: one PCA over all response embeddings, so every set shares the axes
    frames, vectors = [], []
    for s in (x for x in stages if x.kind == "embed"):
        info = s.params["set"]
        folder = store.final_dir(s.ref)
        emb = np.load(folder / "embeddings.npy", allow_pickle=False)
        ids = json.loads((folder / "ids.json").read_text())
        frames.append(pd.DataFrame({"set_name": info.name, "set_kind": info.kind,
                                    "condition": info.labels.get("condition") or info.labels.get("source"),
                                    "item_id": ids}))
        vectors.append(emb)
    embedding_map = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if vectors and sum(len(v) for v in vectors) >= 2:
        x = np.concatenate(vectors).astype(np.float64)
        x -= x.mean(axis=0)
        _, _, vt = np.linalg.svd(x, full_matrices=False)
        xy = x @ vt[:2].T
        embedding_map["x"], embedding_map["y"] = xy[:, 0], xy[:, 1] if xy.shape[1] > 1 else 0.0

    responses = []
    for s in (x for x in stages if x.kind == "respond"):
        p = s.params
        for r in read_jsonl(store.final_dir(s.ref) / "responses.jsonl"):
            responses.append({"set_name": f"{p['target_name']}/{p['condition'].label}/seed{p['seed']}",
                              "condition": p["condition"].label, "target": p["target_name"], "seed": p["seed"],
                              "prompt_id": r["prompt_id"], "prompt": r["prompt"], "response": r["response"],
                              "human_response": r["human_response"]})
    training = []
    for s in (x for x in stages if x.kind == "train"):
        folder = store.final_dir(s.ref)
        summary = json.loads((folder / "train_summary.json").read_text())
        curve = [json.loads(line) for line in (folder / "loss_curve.jsonl").read_text().splitlines() if line]
        training.append({"target": s.params["target_name"], "condition": s.params["condition"].label,
                         "seed": s.params["seed"], "best_val_loss": summary.get("best_val_loss"),
                         "stopped_early": summary.get("stopped_early"), "curve": curve})
    from collapselab.config.load import spec_to_yaml

    counts: dict[str, int] = {}
    for s in stages:
        counts[s.kind] = counts.get(s.kind, 0) + 1
    return ReportInputs(
        title=spec.name, config_yaml=spec_to_yaml(spec), aggregates=aggregates, per_item=per_item,
        tests=_read_parquet(stats_dir / "tests.parquet"), concordance=concordance,
        kendalls_w=stats.get("kendalls_w", []), factorial=_read_parquet(stats_dir / "factorial.parquet"),
        seed_spread=_read_parquet(stats_dir / "seed_spread.parquet"), stats_notes=stats.get("notes", []),
        details=details, embedding_map=embedding_map, responses=pd.DataFrame(responses), training=training,
        run_dir=str(run_dir), stage_counts=counts,
    )
