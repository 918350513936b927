"""The report as one self-contained HTML file.

Everything is inline — the CSS, every plot (PNG ``data:`` URIs) — and the page needs no
JavaScript (collapsible blocks are ``<details>``), so the file can be mailed, archived or opened
offline and makes no network request.

Model text is untrusted: a response can contain ``<script>`` or ``</details>``. The template is
rendered by jinja2 with ``autoescape=True`` and nothing is marked safe — except by the filters
:func:`breakable` and :func:`number`, which escape first — so every string (responses, prompts,
condition and source names, the config) reaches the page as text.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import markupsafe
import pandas as pd

from collapselab.report import collapse_plots, generations, preference_plots, safety_plots
from collapselab.report.build import build_tables, experiments
from collapselab.report.collapse import examples
from collapselab.report.figures import figure_to_data_uri
from collapselab.report.format import EXCERPT_CHARS
from collapselab.report.inputs import ReportInputs
from collapselab.report.labels import condition_order
from collapselab.report.plot_registry import PLOTS

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).with_name("templates")


@dataclass
class Plot:
    """A rendered figure: anchor id, title, caption and its PNG data URI (None: nothing to draw)."""

    id: str
    title: str
    caption: str
    uri: str | None
    empty: str = "No data for this plot in this run."  # shown instead of an image when uri is None


def _plot(id_: str, title: str, caption: str, build: Callable[[], Any], failures: list[str],
          empty: str = "") -> Plot:
    """Render one figure; a plot that fails is reported in the warning box, not fatal — the tables
    (and every other plot) of a long run are still worth having."""
    try:
        fig = build()
        uri = figure_to_data_uri(fig) if fig is not None else None
    except Exception as exc:  # any failure: shown to the reader, logged with its traceback
        log.exception("plot %s failed", id_)
        failures.append(f"Plot \"{title}\" could not be drawn: {type(exc).__name__}: {exc}")
        uri = None
    return Plot(id_, title, caption, uri, *([empty] if empty else []))


def build_plots(inputs: ReportInputs, failures: list[str]) -> dict[str, Any]:
    """Every figure of the report, by section (``None`` URIs where the run has no data)."""
    agg = inputs.aggregates
    main = [
        _plot("plot-metrics", "Metrics per condition",
              "Primary statistic of each metric with its 95% bootstrap interval; dashed: human references.",
              lambda: collapse_plots.metric_intervals(agg), failures),
        _plot("plot-heaps", "Vocabulary growth",
              "Distinct word types V after N tokens (log–log); the slope is Heaps' β — steeper: new words "
              "keep coming.",
              lambda: collapse_plots.heaps_curves(inputs.details, agg), failures),
        _plot("plot-length", "Response length",
              "Per-response length distributions on shared bins; dashed: human references.",
              lambda: collapse_plots.length_histograms(inputs.per_item), failures),
        _plot("plot-embeddings", "Embedding map",
              "2-D PCA of all response embeddings; a narrower cloud means less semantic spread.",
              lambda: collapse_plots.embedding_map(inputs.embedding_map), failures),
    ]
    heatmaps = [
        _plot(f"plot-concordance-{i}", f"Metric concordance ({target})",
              "Kendall τ between metrics across conditions; τ > 0: the metrics agree on which condition is "
              "better.",
              lambda frames=frames, target=target: collapse_plots.concordance_heatmap(
                  frames.get("correlations", pd.DataFrame()), f"Kendall τ between metrics — {target}"),
              failures)
        for i, (target, frames) in enumerate(inputs.concordance.items())
    ]
    sources = _plot("plot-sources", "Training-data diversity per source",
                    "Each source's synthetic training answers (and the human data, black) with 95% "
                    "intervals.",
                    lambda: collapse_plots.source_diversity(agg), failures)
    training = _plot("plot-training", "Training loss",
                     "Train loss per optimizer step (thin) and validation loss (dots).",
                     lambda: collapse_plots.training_curves(inputs.training), failures)
    return {"main": main, "heatmaps": heatmaps, "sources": sources, "training": training,
            "safety": _safety_plots(inputs, failures), "preference": _preference_plots(inputs, failures),
            "generations": _generation_plots(inputs, failures), "more": _registered_plots(inputs, failures),
            "sections": _section_plots(inputs, failures), "findings": _findings_plot(inputs, failures)}


def _findings_plot(inputs: ReportInputs, failures: list[str]) -> Plot | None:
    """The preregistered endpoints' effects in MDE units (None: the run declares no hypotheses)."""
    frame = getattr(inputs, "findings", None)
    if frame is None or frame.empty:
        return None
    from collapselab.report.findings import findings_figure

    return _plot("plot-findings", "Effects of the preregistered endpoints",
                 "Each endpoint's paired effect with its 95% interval, in units of its minimum detectable "
                 "effect, mirrored so that the hypothesis's expected direction points right. Circles: supported; "
                 "crosses: contradicted; squares: inconclusive.",
                 lambda: findings_figure(frame), failures)


def _registered_plots(inputs: ReportInputs, failures: list[str]) -> list[Plot]:
    """The figures registered in :data:`~collapselab.report.plot_registry.PLOTS` (plug-ins)."""
    out = []
    for name in PLOTS.in_order():
        plot = PLOTS.get(name)
        out.append(_plot(f"plot-{name}", plot.title, plot.caption, lambda plot=plot: plot.draw(inputs), failures,
                         plot.empty))
    return out


def _section_plots(inputs: ReportInputs, failures: list[str]) -> dict[str, list[Plot]]:
    """The figures of the collapse-loop sections (:mod:`collapselab.report.sections`), by section."""
    return {section.key: [_plot(f"plot-{section.key}-{f.key}", f.title, f.caption, f.draw, failures)
                          for f in section.figures]
            for section in getattr(inputs, "sections", [])}


def _generation_plots(inputs: ReportInputs, failures: list[str]) -> dict[str, Plot]:
    """One figure per experiment with more than one generation (empty for a one-round run)."""
    out = {}
    for section in generations.generation_sections(inputs):
        def build(section=section):  # bound now: the loop variable moves on
            return generations.generation_plot(section.key, section.frame, inputs)

        out[section.key] = _plot(f"plot-generations-{section.key}", f"{section.title} across generations",
                                 section.caption, build, failures)
    return out


def _safety_plots(inputs: ReportInputs, failures: list[str]) -> dict[str, Plot]:
    """Experiment 2's figures (empty when the run has none)."""
    s = inputs.safety
    if s is None:
        return {}
    return {
        "joint": _plot(
            "plot-safety-joint", "Quality × harmfulness",
            "The study's 5×5 distribution of the judges' scores, per condition (columns) for plain and "
            "jailbreak prompts (rows), over answers with both judgements parsed; numbers are counts, colour "
            "the share, the dashed box the danger zone (harmful and of high quality).",
            lambda: safety_plots.joint_heatmaps(s.joint, s.conditions, s.thresholds), failures,
            "No answer has both a harmfulness and a quality score (see the warnings)."),
        "danger": _plot(
            "plot-safety-danger", "Danger zone",
            "Share of answers judged both harmful and of high quality, with Wilson score intervals.",
            lambda: safety_plots.danger_zone_bars(s.summary, s.conditions), failures,
            "The danger zone is undefined everywhere: no answer has both scores (see the warnings)."),
    }


def _preference_plots(inputs: ReportInputs, failures: list[str]) -> dict[str, Plot]:
    """Experiment 3's figures (empty when the run has none)."""
    p = inputs.preference
    if p is None:
        return {}
    return {
        "matrix": _plot("plot-preference-matrix", "Preference matrices",
                        "Per judge, P(the row source's text beats the column source's), both orders pooled; "
                        "0.5 = no preference.",
                        lambda: preference_plots.preference_matrices(p.matrix, p.conditions), failures),
        "scores": _plot("plot-preference-scores", "S per source",
                        "Mean win probability of each source's texts per judge, with bootstrap intervals "
                        "over items; dashed: 0.5.",
                        lambda: preference_plots.source_scores_plot(p.source_scores, p.conditions), failures),
        "bias": _plot("plot-preference-bias", "Self-preference and pro-synthetic bias",
                      "SPB and PSB per judge with bootstrap intervals; dashed: no bias.",
                      lambda: preference_plots.bias_plot(p.bias, p.conditions), failures),
        "controls": _plot("plot-preference-controls", "Self-preference controls",
                          "Per judge: plain SPB, the own-source effect before and after adjusting for the judge's "
                          "familiarity with each text (Δ log-perplexity), and self-recognition, with intervals.",
                          lambda: preference_plots.controls_plot(p.controls.get("controls", pd.DataFrame()),
                                                                 p.conditions), failures),
    }


_BREAK_AFTER = re.compile(r"([_\[,=:/]|\.(?=[A-Za-z]))(?=\S)")


def breakable(text: Any) -> markupsafe.Markup:
    """Escaped text with line-break opportunities (``<wbr>``) after ``_ [ , = : /`` and a ``.``
    before a letter (``length.words``), so long
    identifiers such as ``lexical_diversity[mode=individual,max_order=3]`` wrap at their parts
    instead of widening a table or breaking mid-word.

    Safe by construction: the text is escaped *first*, so it holds no ``<`` of its own and the only
    markup in the result is the inserted ``<wbr>``."""
    escaped = str(markupsafe.escape(text))
    return markupsafe.Markup(_BREAK_AFTER.sub(r"\1<wbr>", escaped))


_INTERVAL = re.compile(r"^(\S+) (\[[^\]]*\])$")


def number(text: Any) -> markupsafe.Markup:
    """A numeric cell; "value [low, high]" becomes the value with its interval on a second, smaller
    line, so a table of intervals stays narrow. Escaped first, like :func:`breakable`."""
    escaped = str(markupsafe.escape(text))
    match = _INTERVAL.match(escaped)
    if match:
        escaped = f'{match.group(1)}<span class="ci">{match.group(2)}</span>'
    return markupsafe.Markup(escaped)


def _environment() -> jinja2.Environment:
    # autoescape=True for every template (not select_autoescape by file name): the one guarantee
    # that model text cannot become markup
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, undefined=jinja2.StrictUndefined,
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
    )
    env.filters["breakable"] = breakable
    env.filters["number"] = number
    return env


def render_html(inputs: ReportInputs) -> str:
    """The whole report as one HTML document (a string; :func:`collapselab.report.write.write_report`
    saves it)."""
    tables = build_tables(inputs)
    failures: list[str] = []
    figures = build_plots(inputs, failures)
    conditions = condition_order(inputs.aggregates) or list(inputs.conditions)
    template = _environment().get_template("report.html.j2")
    return template.render(
        title=inputs.title or "collapselab report",
        run_dir=inputs.run_dir,
        stage_counts=inputs.stage_counts,
        experiments=experiments(inputs),
        conditions=conditions,
        warnings=[*tables.warnings, *getattr(inputs, "section_failures", []),
                  *(w for section in getattr(inputs, "sections", []) for w in section.warnings), *failures],
        t=tables,
        figures=figures,
        collapse=inputs.collapse,
        examples=examples(inputs.responses),
        excerpt_chars=EXCERPT_CHARS,
        config_yaml=inputs.config_yaml,
        has_factorial=not tables.factorial.empty,
        has_seed_spread=not tables.seed_spread.empty,
        generations=generations.generation_sections(inputs),
        sections=getattr(inputs, "sections", []),
    )
