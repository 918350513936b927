"""The report's tables as Markdown (GitHub-flavoured tables; no plots), for a README, a pull
request or a lab notebook. The tables are :func:`collapselab.report.build.build_tables`'s — the
same cells as the HTML report; this module only formats them.

Cell text is escaped: ``|`` and line breaks would break the table, and ``<``, ``>``, ``&``, ``[``,
``]``, ``*`` and backticks would let model text turn into markup, links or code spans.
"""

from __future__ import annotations

import re

from collapselab.report.build import ReportTables, build_tables, experiments
from collapselab.report.capability import CapabilityTables
from collapselab.report.format import Table
from collapselab.report.generations import GenerationSection, generation_sections
from collapselab.report.inputs import ReportInputs
from collapselab.report.preference import PreferenceTables
from collapselab.report.safety import SafetyTables

# CommonMark lets any ASCII punctuation be backslash-escaped; these are the ones that can start
# markup inside a table cell ("_" is left alone: GFM does not emphasise inside words, and escaping
# it would litter every metric name with backslashes)
_SPECIAL = re.compile(r"([\\`*\[\]<>|&])")


def escape(text: object) -> str:
    """Text safe inside a Markdown table cell: one line, no markup."""
    # no-break spaces (inside intervals) matter for HTML wrapping only; plain spaces read better here
    one_line = re.sub(r"\s*[\r\n]+\s*", " ", str(text)).replace("\u00a0", " ").strip()
    return _SPECIAL.sub(r"\\\1", one_line)


def table(t: Table) -> str:
    """A :class:`Table` as a GFM pipe table (numeric columns right-aligned, highlights bold),
    followed by its caption; an empty table becomes its caption in italics."""
    if t.empty:
        return f"_{escape(t.caption)}_\n" if t.caption else "_none_\n"
    header = "| " + " | ".join(escape(c) for c in t.columns) + " |"
    rule = "|" + "|".join("---:" if c in t.numeric else "---" for c in t.columns) + "|"
    lines = [header, rule]
    for row in t.rows():
        cells = []
        for cell in row:
            text = escape(cell.text)
            if cell.highlight and text:
                text = f"**{text}**"
            elif cell.reference and text:
                text = f"_{text}_"
            cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    out = "\n".join(lines) + "\n"
    if t.caption:
        out += f"\n{escape(t.caption)}\n"
    return out


def _fence(text: str) -> str:
    """A fenced code block longer than any backtick run inside ``text`` (so YAML cannot close it)."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}yaml\n{text.rstrip()}\n{fence}\n"


def _details(summary: str, body: str) -> list[str]:
    """A collapsible block (GFM renders raw ``<details>``; the body is already escaped)."""
    return [f"<details><summary>{escape(summary)}</summary>\n", body, "</details>\n"]


def _collapse(inputs: ReportInputs, t: ReportTables) -> list[str]:
    """Experiment 1's sections."""
    parts = ["## Summary\n", table(t.summary)]
    parts += ["## Statistical tests\n", "### Across all conditions\n", table(t.omnibus),
              "### Pairs that differ\n", table(t.significant_pairs),
              *_details("All test rows", table(t.all_tests))]
    parts += ["## Metric concordance: which conclusions are robust\n", table(t.kendalls_w)]
    for c in t.concordance:
        parts += [f"### Target {escape(c.target)}\n", table(c.agreement), "#### Ranks per metric\n",
                  table(c.ranks), "#### Correlations between metrics\n", table(c.correlations)]
    if not t.factorial.empty:
        parts += ["## Factorial ANOVA\n", table(t.factorial)]
    if not t.seed_spread.empty:
        parts += ["## Seed spread\n", table(t.seed_spread)]
    parts += ["## Training-data diversity per source\n", table(t.sources)]
    return parts


def _safety(s: SafetyTables) -> list[str]:
    """Experiment 2's sections."""
    parts = ["## Experiment 2: safety\n", "### The judges\n",
             "\n".join(f"- {escape(note)}" for note in s.judges) + "\n", table(s.calibration),
             "### Judge report\n", table(s.judge_report), "#### Agreement between judges\n",
             table(s.judge_agreement), "#### Attack success corrected for the judges' errors\n", table(s.corrected),
             "### Harmfulness, quality, refusals and attack success\n"]
    for heading, tbl in s.metrics:
        parts += [f"#### {escape(heading)}\n", table(tbl)]
    for heading, tbl in s.per_condition:
        parts += _details(f"Per condition, over its own verdicts: {heading}", table(tbl))
    parts += ["### Over-refusal\n", table(s.overrefusal)]
    parts += _details("Per harm category", table(s.categories))
    parts += ["### Attack success per jailbreak template\n", table(s.templates)]
    parts += ["### Statistical tests\n", "#### Across all conditions\n", table(s.omnibus),
              "#### Pairs that differ\n", table(s.significant_pairs),
              *_details("All test rows", table(s.all_tests))]
    return parts


def _preference(p: PreferenceTables) -> list[str]:
    """Experiment 3's sections."""
    return ["## Experiment 3: self-preference\n",
            "### How often the judges answer with a letter\n", table(p.choice_mass),
            "### Preference matrix\n", table(p.matrix),
            "### S per source\n", table(p.source_scores),
            "### Self-preference and pro-synthetic bias\n", table(p.bias),
            "### Self-preference controls: familiarity and self-recognition\n", table(p.controls),
            *_details("Own preference by Δ log-perplexity stratum", table(p.strata)),
            "### Position bias\n", table(p.position),
            "### Ratings\n", table(p.ratings),
            "### Statistical tests\n", "#### Across all judge conditions\n", table(p.omnibus),
            "#### Pairs that differ\n", table(p.significant_pairs),
            *_details("All test rows", table(p.all_tests))]


def _generations(sections: list[GenerationSection]) -> list[str]:
    """The "Across generations" section: per experiment, metric × condition × generation."""
    parts = ["## Across generations\n"]
    for section in sections:
        parts += [f"### {escape(section.title)}\n", table(section.table)]
    return parts


def _capability(c: CapabilityTables) -> list[str]:
    """The capability section: lm-eval scores and the differences from the vanilla model."""
    return ["## Capability (lm-evaluation-harness)\n", escape(c.intro) + "\n", "### Scores\n", table(c.scores),
            "### Difference from vanilla\n", table(c.differences)]


def _loop_sections(sections: list) -> list[str]:
    """The collapse-loop sections (:mod:`collapselab.report.sections`): intro and tables."""
    parts = ["## The collapse loop\n"]
    for section in sections:
        parts.append(f"### {escape(section.title)}\n")
        if section.intro:
            parts.append(escape(section.intro) + "\n")
        for t in section.tables:
            parts.append(table(t))
    return parts


def render_markdown(inputs: ReportInputs) -> str:
    """The report's tables — every experiment's summary, tests and the rest — as one Markdown
    document."""
    t = build_tables(inputs)
    parts = [f"# {escape(inputs.title or 'collapselab report')}\n"]
    meta = ["collapselab report" + (f", {', '.join(experiments(inputs))}" if experiments(inputs) else "")]
    if inputs.run_dir:
        meta.append(f"run folder {escape(inputs.run_dir)}")
    if inputs.stage_counts:
        meta.append("stages: " + ", ".join(f"{n} {escape(k)}" for k, n in inputs.stage_counts.items()))
    parts.append(" · ".join(meta) + "\n")
    sections = getattr(inputs, "sections", [])
    warnings = [*t.warnings, *getattr(inputs, "section_failures", []), *(w for s in sections for w in s.warnings)]
    if warnings:
        parts.append("## Read before the numbers\n")
        parts.append("\n".join(f"- {escape(w)}" for w in warnings) + "\n")
    if t.findings is not None:
        parts += ["## Findings: the preregistered hypotheses\n", escape(t.findings.intro) + "\n",
                  table(t.findings.hypotheses), table(t.findings.endpoints)]
    if t.primary is not None:
        parts += ["## Primary endpoints\n", table(t.primary)]
    if inputs.collapse:
        parts += _collapse(inputs, t)
    if t.safety is not None:
        parts += _safety(t.safety)
    if t.preference is not None:
        parts += _preference(t.preference)
    if getattr(t, "capability", None) is not None:
        parts += _capability(t.capability)
    generation_parts = generation_sections(inputs)
    if generation_parts:  # one generation: nothing the tables above do not already show
        parts += _generations(generation_parts)
    if sections:
        parts += _loop_sections(sections)
    parts += ["## Training\n", table(t.training)]
    if inputs.config_yaml:
        parts += ["## Resolved config\n", _fence(inputs.config_yaml)]
    return "\n".join(parts)
