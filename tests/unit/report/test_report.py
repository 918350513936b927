"""The report: shared tables, Markdown, self-contained HTML (escaping above all) and the written folder.

Everything runs on a small synthetic :class:`ReportInputs` (:func:`make_inputs`) whose tests and
concordance frames come from the real statistics functions, so the renderers see the real shapes.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

from collapselab.report.inputs import ReportInputs
from collapselab.stats.concordance import metric_concordance
from collapselab.stats.factorial import art_anova, seed_spread
from collapselab.stats.summary import compare_conditions

TARGET = "llama-8b"
SEED = 42
# the study's 8B figures where PAPER.md has them (vanilla / human / single / multi)
CONDITIONS = ["vanilla", "human", "single:llama-8b", "multi:llama-8b,gemma-9b"]
SOURCES = ["llama-8b", "gemma-9b"]
# metric: family, higher_is_better, primary statistic, values for the conditions, the sources, the human set
METRICS = {
    "output_perplexity": ("perplexity", False, "mean", [1.30, 2.68, 1.26, 1.38], None, [4.34]),
    "lexical_diversity[mode=individual,max_order=3]": ("lexical", True, "value", [75.12, 76.55, 73.08, 75.49],
                                                       [75.8, 86.5], [89.15]),
    "semantic_diversity[level=sentence]": ("semantic", True, "value", [0.9547, 0.9680, 0.9565, 0.9535],
                                           [0.951, 0.962], [0.971]),
    "distinct[n=2]": ("lexical", True, "value", [0.61, 0.70, 0.58, 0.63], [0.55, 0.66], [0.74]),
    "heaps[step=100]": ("vocabulary", True, "beta", [0.611, 0.671, 0.603, 0.598], [0.58, 0.62], [0.69]),
    "length": ("length", None, "mean", [210.0, 120.0, 190.0, 230.0], [180.0, 200.0], [110.0]),
}
N_ITEMS = 30
SCRIPT = '<script>alert("x")</script>'
TITLE_SCRIPT = "<script>document.title='PWNED'</script>"
BREAKOUT = "</details><img src=x onerror=alert(1)>"
LONG = "The river rose slowly. " * 60  # ~1,400 characters: must be cut to ~600 with an ellipsis
PLOTS = 7  # metrics, Heaps, length, embeddings, one concordance heatmap, sources, training


def _sets() -> list[dict]:
    sets = [{"set_name": f"{TARGET}/{c}/seed{SEED}", "set_kind": "condition", "condition": c,
             "target": TARGET, "seed": SEED, "source": None, "generation": None, "index": i}
            for i, c in enumerate(CONDITIONS)]
    sets += [{"set_name": f"source/{s}", "set_kind": "source", "condition": None, "target": None,
              "seed": None, "source": s, "generation": None, "index": i} for i, s in enumerate(SOURCES)]
    sets.append({"set_name": "human", "set_kind": "human", "condition": None, "target": None, "seed": None,
                 "source": None, "generation": None, "index": 0})
    return sets


def _value(metric: str, s: dict) -> float | None:
    _, _, _, conds, sources, human = METRICS[metric]
    values = {"condition": conds, "source": sources, "human": human}[s["set_kind"]]
    return None if values is None else values[s["index"]]


def _labels(s: dict) -> dict:
    return {k: s[k] for k in ("set_name", "set_kind", "condition", "target", "seed", "source", "generation")}


def _aggregates() -> pd.DataFrame:
    rows = []
    for s in _sets():
        for metric, (family, better, primary, *_rest) in METRICS.items():
            value = _value(metric, s)
            if value is None:
                continue
            half = abs(value) * 0.01
            undefined = 2 if (metric == "output_perplexity" and s["condition"] == "vanilla") else 0
            for statistic, v in ((primary, value), ("other", value * 1.1)):
                rows.append({**_labels(s), "metric": metric, "family": family, "higher_is_better": better,
                             "statistic": statistic, "primary": statistic == primary, "value": v,
                             "ci_low": v - half, "ci_high": v + half, "n": N_ITEMS, "n_undefined": undefined})
    return pd.DataFrame(rows)


def _per_item(rng: np.random.Generator) -> pd.DataFrame:
    frames = []
    for s in _sets():
        if s["set_kind"] == "source":
            continue
        columns = {
            "output_perplexity": rng.lognormal(np.log(_value("output_perplexity", s)), 0.08, N_ITEMS),
            "lexical_diversity[mode=individual,max_order=3]":
                rng.normal(_value("lexical_diversity[mode=individual,max_order=3]", s), 3.0, N_ITEMS),
            "length.words": rng.poisson(_value("length", s), N_ITEMS).astype(float),
            "length.sentences": rng.poisson(6, N_ITEMS).astype(float),
        }
        for metric, values in columns.items():
            frames.append(pd.DataFrame({**_labels(s), "metric": metric,
                                        "item_id": [f"q{i}" for i in range(N_ITEMS)], "value": values}))
    return pd.DataFrame(pd.concat(frames, ignore_index=True))


def _details() -> dict:
    details = {}
    for s in _sets():
        beta = _value("heaps[step=100]", s)
        n = np.arange(1, 31) * 100
        entry = {
            "skipped": {"output_perplexity": "needs logprobs, which this set does not have"}
            if s["set_kind"] == "source" else {},
            "heaps[step=100]": {"N": n.tolist(), "V": np.round(9 * n**beta).tolist(), "seconds": 0.01,
                                "failed_resamples": 0, "primary": "beta"},
            "semantic_diversity[level=sentence]": {
                "seconds": 0.2, "primary": "value",
                "failed_resamples": 3 if s["condition"] == CONDITIONS[3] else 0},
        }
        details[s["set_name"]] = entry
    return details


def _responses() -> pd.DataFrame:
    prompts = [("p1", "Summarise the passage | in one line.\nKeep it short."), ("p2", "Name three rivers."),
               ("p3", "Describe <b>the</b> weather."), ("p4", "Unused prompt")]
    rows = []
    for i, c in enumerate(CONDITIONS):
        for pid, prompt in prompts:
            response = f"A plain answer from {c} to {pid}."
            if (i, pid) == (3, "p1"):
                response = f"Sure! {SCRIPT} and {TITLE_SCRIPT} then {BREAKOUT} done."
            if (i, pid) == (2, "p2"):
                response = LONG
            rows.append({"set_name": f"{TARGET}/{c}/seed{SEED}", "condition": c, "target": TARGET,
                         "seed": SEED, "prompt_id": pid, "prompt": prompt, "response": response,
                         "human_response": f"Human answer to {pid} & more."})
    return pd.DataFrame(rows)


def _embedding_map(rng: np.random.Generator) -> pd.DataFrame:
    frames = []
    for s in _sets():
        spread = 0.5 if s["set_kind"] == "condition" and s["index"] == 2 else 1.0
        frames.append(pd.DataFrame({"set_name": s["set_name"], "set_kind": s["set_kind"],
                                    "condition": s["condition"] or s["source"], "item_id": range(N_ITEMS),
                                    "x": rng.normal(s["index"] * 0.3, spread, N_ITEMS),
                                    "y": rng.normal(0, spread, N_ITEMS)}))
    return pd.concat(frames, ignore_index=True)


def _training(rng: np.random.Generator) -> list[dict]:
    runs = []
    for c in CONDITIONS[1:]:
        curve = []
        for step in range(1, 61):
            record = {"step": step, "epoch": step / 20, "train_loss": 2.5 * np.exp(-step / 25) + 0.9
                      + rng.normal(0, 0.05), "lr": 5e-5}
            if step % 10 == 0:
                record["val_loss"] = 2.3 * np.exp(-step / 30) + 1.1
            curve.append(record)
        runs.append({"target": TARGET, "condition": c, "seed": SEED, "best_val_loss": curve[-1]["val_loss"],
                     "stopped_early": c == CONDITIONS[2], "curve": curve})
    return runs


def _factorial(rng: np.random.Generator) -> pd.DataFrame:
    cells = [{"diversity": d, "tier": t, "value": rng.normal(d == "multi", 1.0)}
             for d in ("single", "multi") for t in ("small", "medium") for _ in range(6)]
    frame = art_anova(pd.DataFrame(cells), "value", ["diversity", "tier"])
    frame.insert(0, "metric", "output_perplexity")
    return frame


def make_inputs() -> ReportInputs:
    """A small but complete report: 4 conditions, 6 metrics (length undirected), 2 sources and the
    human references, real test / concordance / ART / seed-spread frames, hostile model text."""
    rng = np.random.default_rng(7)
    aggregates = _aggregates()
    per_item = _per_item(rng)
    tests = compare_conditions(per_item[per_item["set_kind"] == "condition"], by="condition",
                               within=("metric", "target", "generation"))
    # the concordance as collapse_statistics builds and stores it
    primary = aggregates[(aggregates["set_kind"] == "condition") & aggregates["primary"]]
    table = primary.pivot_table(index="condition", columns="metric", values="value", aggfunc="mean")
    directions = {m: METRICS[m][1] for m in table.columns}
    result = metric_concordance(table, directions)
    concordance = {TARGET: {
        "ranks": result.ranks.reset_index(),
        "value_ranks": result.value_ranks.reset_index(),
        "correlations": result.correlations,
        "pairwise": result.pairwise,
    }}
    two_seeds = pd.concat([primary.assign(seed=s, value=primary["value"] * (1 + 0.01 * s)) for s in (1, 2)])
    spread = seed_spread(two_seeds, seed="seed", by=["target", "condition", "metric"])
    return ReportInputs(
        title="collapse-demo",
        config_yaml=("name: collapse-demo\n# a comment with <b>markup</b> & `ticks`\n"
                     "conditions: [vanilla, human]\n"),
        aggregates=aggregates, per_item=per_item, tests=tests, concordance=concordance,
        kendalls_w=[{"target": TARGET, **result.kendalls_w}], factorial=_factorial(rng), seed_spread=spread,
        stats_notes=["one seed per condition: no between-seed spread"], details=_details(),
        embedding_map=_embedding_map(rng), responses=_responses(), training=_training(rng),
        run_dir="/runs/collapse-demo", stage_counts={"respond": 4, "train": 3, "evaluate": 7, "stats": 1},
    )


def minimal_inputs() -> ReportInputs:
    """A run with only aggregates: every optional part empty."""
    aggregates = _aggregates()
    return ReportInputs(
        title="bare", config_yaml="", aggregates=aggregates[aggregates["set_kind"] == "condition"],
        per_item=pd.DataFrame(), tests=pd.DataFrame(), concordance={}, kendalls_w=[],
        factorial=pd.DataFrame(), seed_spread=pd.DataFrame(), stats_notes=[], details={},
        embedding_map=pd.DataFrame(), responses=pd.DataFrame(), training=[],
    )


class Page(HTMLParser):
    """Tags, attributes and text of an HTML document, as a browser's tokenizer sees them."""

    def __init__(self, source: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self.feed(source)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    def count(self, tag: str) -> int:
        return sum(1 for t, _ in self.tags if t == tag)

    @property
    def all_text(self) -> str:
        return "".join(self.text)


@pytest.fixture(scope="module")
def inputs() -> ReportInputs:
    return make_inputs()


@pytest.fixture(scope="module")
def html(inputs) -> str:
    from collapselab.report.html import render_html

    return render_html(inputs)


@pytest.fixture(scope="module")
def markdown(inputs) -> str:
    from collapselab.report.markdown import render_markdown

    return render_markdown(inputs)


# ---------------------------------------------------------------------------------------------
# shared tables
# ---------------------------------------------------------------------------------------------


def test_summary_table_marks_the_best_condition_per_directed_metric(inputs):
    from collapselab.report.collapse import summary_table

    t = summary_table(inputs.aggregates)
    assert t.columns == ["metric", *CONDITIONS, "human references"]
    assert t.reference == {"human references"}
    arrows = {True: " ↑", False: " ↓", None: ""}
    assert list(t.frame["metric"]) == [m + arrows[METRICS[m][1]] for m in METRICS]
    best = {(t.frame["metric"][i].split(" ")[0], c) for i, c in t.highlight}
    # lower perplexity is better: single (1.26); higher lexical diversity: human (76.55)
    assert ("output_perplexity", "single:llama-8b") in best
    assert ("lexical_diversity[mode=individual,max_order=3]", "human") in best
    assert not any(m == "length" for m, _ in best)  # no better direction, no "best"
    assert not any(c == "human references" for _, c in best)  # the yardstick never wins
    assert t.frame.loc[0, "vanilla"] == "1.30 [1.29,\u00a01.31]"  # the interval never wraps


def test_source_table_leaves_out_metrics_no_source_has(inputs):
    from collapselab.report.collapse import source_table

    t = source_table(inputs.aggregates)
    assert t.columns == ["metric", *SOURCES, "human references"]
    assert "output_perplexity ↓" not in set(t.frame["metric"])  # skipped on sources: a warning instead


def test_tests_tables_follow_the_statistics(inputs):
    from collapselab.report.labels import directions
    from collapselab.report.stat_tests import omnibus_table, pairwise_table

    omnibus = omnibus_table(inputs.tests)
    assert set(omnibus.frame["metric"]) == set(inputs.per_item["metric"])
    assert "effect" in omnibus.columns and "effect size" in omnibus.columns
    assert "scope" not in omnibus.columns  # one scope: said in the caption
    assert "target=llama-8b" in omnibus.caption
    pairs = pairwise_table(inputs.tests, directions(inputs.aggregates))
    ppl = pairs.frame[pairs.frame["metric"] == "output_perplexity"]
    # the human condition's perplexity (2.68) is far above the rest: larger, hence worse
    human_rows = ppl[(ppl["a"] == "human") | (ppl["b"] == "human")]
    assert len(human_rows) == 3
    assert (human_rows["tends larger"] == "human").all() and (human_rows["better"] != "human").all()
    assert (pairs.frame.loc[pairs.frame["metric"].str.startswith("length"), "better"] == "—").all()


def test_warnings_list_every_dropped_or_failed_piece(inputs):
    from collapselab.report.collapse import warnings_list

    text = "\n".join(warnings_list(inputs))
    # grouped: one line naming both sources
    assert "output_perplexity skipped on source llama-8b, source gemma-9b: needs logprobs" in text
    assert "bootstrap resamples failed on multi:llama-8b,gemma-9b (3)" in text
    assert "output_perplexity: undefined items left out of its statistics on vanilla (2 of 30)" in text
    assert "one seed per condition" in text


def test_reasons_differing_in_one_number_are_merged():
    from collapselab.report.collapse import _merge_reasons

    lines = _merge_reasons("heaps", [("a", "needs 3000 tokens; the set has 90 tokens"),
                                     ("b", "needs 3000 tokens; the set has 11 tokens"),
                                     ("c", "something else")])
    assert lines == ["heaps on a, b: needs 3000 tokens; the set has n tokens (n = 90, 11 respectively)",
                     "heaps on c: something else"]


def test_formatting():
    from collapselab.report.format import fmt_ci, fmt_num, fmt_p

    assert [fmt_num(x) for x in (1234.5, 75.123, 0.95471, 1.2e-5, -0.5, 3, None, float("nan"))] == [
        "1,234", "75.12", "0.9547", "1.2e-05", "−0.5000", "3", "—", "—"]
    assert fmt_p(0.04321) == "0.043" and fmt_p(1e-9) == "1.0e-09"
    assert fmt_ci(1.0, float("nan"), 2.0) == "1.00"


# ---------------------------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------------------------


def test_markdown_has_every_section(markdown):
    for heading in ("# collapse-demo", "## Read before the numbers", "## Summary", "## Statistical tests",
                    "### Pairs that differ", "## Metric concordance", "#### Ranks per metric",
                    "## Factorial ANOVA", "## Seed spread", "## Training-data diversity per source",
                    "## Training", "## Resolved config"):
        assert f"\n{heading}" in f"\n{markdown}", heading
    assert "**1.26 \\[1.25, 1.27\\]**" in markdown  # the best value, bold
    assert "_4.34 \\[4.30, 4.38\\]_" in markdown  # a reference value, italic


def test_markdown_tables_stay_rectangular(markdown):
    # every row of a table has as many (unescaped) pipes as its header
    unescaped = re.compile(r"(?<!\\)\|")
    tables = re.findall(r"((?:^\|.*\|$\n?)+)", markdown, flags=re.M)
    assert len(tables) >= 8
    for block in tables:
        widths = {len(unescaped.findall(line)) for line in block.strip().splitlines()}
        assert len(widths) == 1, block


def test_markdown_escaping():
    from collapselab.report.markdown import escape

    assert escape("a | b\nc") == "a \\| b c"
    assert escape('<script>alert("x")</script>') == '\\<script\\>alert("x")\\</script\\>'
    assert escape("[click](javascript:x) *bold* `code` & more") == (
        "\\[click\\](javascript:x) \\*bold\\* \\`code\\` \\& more")


# ---------------------------------------------------------------------------------------------
# HTML
# ---------------------------------------------------------------------------------------------


def test_html_has_every_section(html):
    page = Page(html)
    ids = {a.get("id") for _, a in page.tags}
    for section in ("warnings", "summary", "plots", "tests", "concordance", "factorial", "seeds", "sources",
                    "training", "examples", "config"):
        assert section in ids, section
    assert page.count("table") >= 12
    assert page.count("details") == 2 + len(CONDITIONS) + 1  # tests, correlations, examples, config
    text = page.all_text
    assert "Kendall's W" in text and "Which conclusions are robust" in text
    assert "collapse-demo" in text and "/runs/collapse-demo" in text


def test_html_is_self_contained(html):
    page = Page(html)
    images = [a for t, a in page.tags if t == "img"]
    assert len(images) == PLOTS
    assert all(a["src"].startswith("data:image/png;base64,") for a in images)
    links = [a["href"] for t, a in page.tags if "href" in a]
    assert links and all(h.startswith("#") for h in links)  # in-page anchors only
    assert page.count("link") == 0 and page.count("script") == 0 and page.count("iframe") == 0
    assert not re.search(r"https?://", html)


def test_model_text_is_escaped(html):
    page = Page(html)
    # no injected element: no script, and the only images are the plots
    assert page.count("script") == 0
    assert not any(a.get("onerror") for _, a in page.tags)
    assert "<script" not in html.lower()
    # ... and the hostile text is shown, as text
    text = page.all_text
    for hostile in (SCRIPT, TITLE_SCRIPT, BREAKOUT, "<b>the</b>", "<b>markup</b>"):
        assert hostile in text, hostile
    assert page.count("b") == 0  # the <b> of a prompt and of the config stayed text


def test_examples_are_truncated(html):
    text = Page(html).all_text
    assert LONG.strip() not in text
    shown = next(t for t in text.split("\n") if t.startswith("The river rose"))
    assert shown.endswith(" …") and len(shown) <= 602


def test_html_without_optional_parts():
    from collapselab.report.html import render_html

    html = render_html(minimal_inputs())
    page = Page(html)
    assert page.count("img") == 1  # only the metric panels have data
    assert "No data for this plot" in page.all_text
    assert "No responses in this run" in page.all_text
    assert 'id="factorial"' not in html


def test_a_failing_plot_is_a_warning_not_a_crash(monkeypatch):
    from collapselab.report import collapse_plots, html

    def broken(_):
        raise ValueError("bad data")

    monkeypatch.setattr(collapse_plots, "metric_intervals", broken)
    page = Page(html.render_html(minimal_inputs()))
    assert 'Plot "Metrics per condition" could not be drawn: ValueError: bad data' in page.all_text
    assert page.count("img") == 0


# ---------------------------------------------------------------------------------------------
# plots
# ---------------------------------------------------------------------------------------------


def test_plots_build_and_handle_missing_data(inputs):
    import base64

    from matplotlib.figure import Figure

    from collapselab.report import collapse_plots as plots
    from collapselab.report.figures import figure_to_data_uri

    built = [plots.metric_intervals(inputs.aggregates), plots.heaps_curves(inputs.details, inputs.aggregates),
             plots.length_histograms(inputs.per_item), plots.embedding_map(inputs.embedding_map),
             plots.source_diversity(inputs.aggregates),
             plots.concordance_heatmap(inputs.concordance[TARGET]["correlations"]),
             plots.training_curves(inputs.training)]
    assert all(isinstance(f, Figure) for f in built)
    # the nested {"curve": {"N", "V"}} spelling is read too; a set without a curve is skipped
    assert plots.heaps_points({"heaps": {"curve": {"N": [10, 20], "V": [5, 8]}}}) is not None
    assert plots.heaps_curves({"s": {"skipped": {}}}) is None
    empty = pd.DataFrame()
    assert plots.metric_intervals(inputs.aggregates.iloc[0:0]) is None
    assert plots.length_histograms(empty) is None and plots.embedding_map(empty) is None
    assert plots.source_diversity(inputs.aggregates[inputs.aggregates["set_kind"] != "source"]) is None
    assert plots.concordance_heatmap(empty) is None and plots.training_curves([]) is None
    uri = figure_to_data_uri(built[-1])
    assert base64.b64decode(uri.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_labels_with_dollar_signs_draw(inputs):
    from collapselab.report import collapse_plots as plots
    from collapselab.report.figures import figure_to_data_uri

    agg = inputs.aggregates.replace({"condition": {"vanilla": "cost $5 $model"}})
    assert figure_to_data_uri(plots.metric_intervals(agg)).startswith("data:image/png")


# ---------------------------------------------------------------------------------------------
# the written folder
# ---------------------------------------------------------------------------------------------


def test_write_report(inputs, tmp_path, monkeypatch):
    from collapselab.report import write

    # the HTML and Markdown renderings are tested above; here only the files matter
    monkeypatch.setattr(write, "render_html", lambda _: "<!DOCTYPE html><title>r</title>")
    paths = write.write_report(inputs, tmp_path / "report")
    names = {p.name for p in (tmp_path / "report").iterdir()}
    assert names == set(paths) and all(paths[n] == tmp_path / "report" / n for n in names)
    for stem in ("aggregates", "per_item", "tests", "factorial", "seed_spread", "embedding_map", "kendalls_w",
                 f"concordance_{TARGET}_ranks", f"concordance_{TARGET}_pairwise",
                 f"concordance_{TARGET}_correlations"):
        assert {f"{stem}.csv", f"{stem}.parquet"} <= names, stem
    assert {"report.html", "report.md"} <= names
    assert not [n for n in names if n.endswith(".tmp") or n.startswith(".")]  # nothing half-written left
    back = pd.read_parquet(paths["aggregates.parquet"])
    assert back.shape == inputs.aggregates.shape
    assert len(pd.read_csv(paths["tests.csv"])) == len(inputs.tests)
    assert paths["report.md"].read_text().startswith("# collapse-demo")


def test_parquet_of_mixed_seed_column(tmp_path):
    from collapselab.report.write import _write_frame

    # compare_conditions with several seeds mixes int seeds with "pooled" / "seed-level"
    frame = pd.DataFrame({"seed": pd.Series([1, 2, "pooled", None], dtype=object), "p": [0.1, 0.2, 0.3, 0.4]})
    paths: dict = {}
    _write_frame(frame, tmp_path, "tests", paths)
    assert list(pd.read_parquet(paths["tests.parquet"])["seed"].iloc[:3]) == ["1", "2", "pooled"]
