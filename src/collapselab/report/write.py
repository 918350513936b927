"""Write the report folder: ``report.html``, ``report.md`` and the full results as CSV and Parquet.

Files written (all atomically — temp file in the same folder, then ``os.replace`` — so a reader or
an interrupted run never sees half a file):

* ``report.html`` (self-contained) and ``report.md``;
* ``aggregates``, ``per_item``, ``tests`` — always, ``.csv`` and ``.parquet``;
* ``factorial``, ``seed_spread``, ``embedding_map``, ``kendalls_w`` and
  ``concordance_<target>_<ranks|value_ranks|correlations|pairwise>`` — when the run has them (an
  empty frame has no columns, which CSV cannot represent; ``<target>`` is the target name as
  :func:`collapselab.naming.slug` writes it);
* Experiment 2: ``safety_<judged|summary|joint|templates|tests|calibration>``; Experiment 3:
  ``preference_<source_scores|bias|position|matrix|rating_scores|tests|comparisons|ratings|per_item|judges>``
  — when the run has the experiment and the table is not empty;
* ``generations_<collapse|safety|preference>`` — each experiment's metrics by generation
  (:func:`collapselab.report.generations.generation_frames`), when it has more than one generation;
* ``results.json`` — always: every condition's metrics with standard errors in lm-evaluation-harness's
  output shape (``results``, ``configs``, ``versions``, ``n-samples``, ``config``, ``git_hash``,
  ``date`` and a ``collapselab`` section; :mod:`collapselab.report.results_json`).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from collapselab.naming import slug
from collapselab.report.generations import multi_generation_frames
from collapselab.report.html import render_html
from collapselab.report.inputs import ReportInputs
from collapselab.report.labels import showing_realised_shares
from collapselab.report.markdown import render_markdown
from collapselab.report.results_json import lm_eval_results
from collapselab.store.atomic import write_bytes, write_json, write_text
from collapselab.store.frames import write_parquet
from collapselab.store.jsonsafe import jsonable


def _write_frame(frame: pd.DataFrame, out_dir: Path, stem: str, paths: dict[str, Path]) -> None:
    paths[f"{stem}.csv"] = write_text(out_dir / f"{stem}.csv", frame.to_csv(index=False))
    paths[f"{stem}.parquet"] = write_parquet(frame, out_dir / f"{stem}.parquet")


def records_frame(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """A list of dicts as a table: nested values (lists of item ids, per-kind dicts) become one
    JSON text cell each (:func:`collapselab.store.jsonsafe.jsonable`: NaN → null), so CSV and
    Parquet can hold them."""
    def cell(value: Any) -> Any:
        if isinstance(value, dict | list | tuple):
            return json.dumps(jsonable(value), ensure_ascii=False)
        return value

    return pd.DataFrame([{k: cell(v) for k, v in r.items()} for r in records])


def experiment_frames(inputs: ReportInputs) -> dict[str, pd.DataFrame]:
    """Experiments 2 and 3's tables by file stem (``safety_…``, ``preference_…``), empty ones left out."""
    frames: dict[str, pd.DataFrame] = {}
    s = inputs.safety
    if s is not None:
        frames.update({"safety_judged": s.judged, "safety_summary": s.summary, "safety_joint": s.joint,
                       "safety_templates": s.templates, "safety_tests": s.tests,
                       "safety_calibration": records_frame(s.calibration),
                       "safety_judges": records_frame(s.cards), "safety_corrected_asr": s.corrected,
                       "safety_judge_agreement": s.agreement, "safety_overrefusal": s.overrefusal})
    p = inputs.preference
    if p is not None:
        frames.update({f"preference_{name}": getattr(p, name)
                       for name in ("source_scores", "bias", "position", "matrix", "rating_scores", "tests",
                                    "comparisons", "ratings", "per_item")})
        frames["preference_judges"] = records_frame(p.judges)
        frames.update({f"preference_controls_{name}": frame for name, frame in p.controls.items()})
    return {k: v for k, v in frames.items() if not v.empty}


def result_frames(inputs: ReportInputs) -> dict[str, pd.DataFrame]:
    """The result tables to save, by file stem (always: aggregates, per_item, tests when the run
    has Experiment 1; the others only when non-empty; ``generations_…`` only with several
    generations)."""
    frames = ({"aggregates": inputs.aggregates, "per_item": inputs.per_item, "tests": inputs.tests}
              if inputs.collapse else {})
    optional = {"factorial": inputs.factorial, "seed_spread": inputs.seed_spread,
                "embedding_map": inputs.embedding_map, "kendalls_w": pd.DataFrame(inputs.kendalls_w)}
    for target, parts in inputs.concordance.items():
        for name, frame in parts.items():
            optional[f"concordance_{slug(target, default='target')}_{name}"] = frame
    frames.update({k: v for k, v in optional.items() if not v.empty})
    if "kendalls_w" in frames:  # lists of dropped conditions / metrics, the family map: one text cell each
        frames["kendalls_w"] = frames["kendalls_w"].map(
            lambda v: ", ".join(map(str, v)) if isinstance(v, list | tuple)
            else json.dumps(v, sort_keys=True) if isinstance(v, dict) else v)
    frames.update(experiment_frames(inputs))
    for stem in ("findings", "hypotheses"):  # the preregistered hypotheses' findings
        frame = getattr(inputs, stem, None)
        if frame is not None and not frame.empty:
            frames[stem] = frame
    frames.update({f"generations_{key}": frame for key, frame in multi_generation_frames(inputs).items()})
    return frames


def write_report(inputs: ReportInputs, out_dir: Path) -> dict[str, Path]:
    """Render and write the whole report into ``out_dir`` (created if needed); returns every
    written file by its name."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    # tables first, the renderings last: report.html appearing means the folder is complete
    for stem, frame in result_frames(inputs).items():
        _write_frame(frame, out_dir, stem, paths)
    paths["results.json"] = write_json(out_dir / "results.json", lm_eval_results(inputs))
    # multi-source labels give their realised shares and how alike their sources answer
    with showing_realised_shares(inputs.training, getattr(inputs, "condition_notes", None)):
        paths["report.md"] = write_text(out_dir / "report.md", render_markdown(inputs))
        paths["report.html"] = write_text(out_dir / "report.html", render_html(inputs))
    return paths


#: a figure with an image (a figure without one has no <img> before its </figure>)
_FIGURE = re.compile(r'<figure id="(?P<id>[A-Za-z0-9_.-]+)">(?:(?!</figure>).)*?'
                     r'<img src="data:image/png;base64,(?P<data>[A-Za-z0-9+/=]+)"', re.S)


def export_figures(html: str, out_dir: Path) -> dict[str, Path]:
    """Write every figure of a rendered report (``report.html``) as ``<figure id>.png`` into
    ``out_dir``: the report's own images, for a paper or a document (figures the run had no data
    for are not written). Returns the written files by figure id."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for m in _FIGURE.finditer(html):
        path = out_dir / f"{m.group('id')}.png"
        write_bytes(path, base64.b64decode(m.group("data")))
        written[m.group("id")] = path
    return written
