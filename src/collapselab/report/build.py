"""The report's orchestrator: every section's tables and warnings, built once, in the order both
renderers (:mod:`collapselab.report.html`, :mod:`collapselab.report.markdown`) show them.

:func:`build_tables` calls each experiment's section module — :mod:`~collapselab.report.collapse`
(Experiment 1), :mod:`~collapselab.report.safety` (Experiment 2),
:mod:`~collapselab.report.preference` (Experiment 3) — and the shared
:mod:`~collapselab.report.stat_tests` and :mod:`~collapselab.report.training`; the warnings of
every experiment go into one list (the report's warning box).
"""

from __future__ import annotations

from dataclasses import dataclass

from collapselab.report.capability import CapabilityTables, build_capability_tables
from collapselab.report.collapse import (
    ConcordanceTables,
    concordance_tables,
    factorial_table,
    kendalls_w_table,
    seed_spread_table,
    source_table,
    summary_table,
    warnings_list,
)
from collapselab.report.findings import FindingsTables, findings_tables
from collapselab.report.format import Table
from collapselab.report.inputs import ReportInputs
from collapselab.report.labels import directions
from collapselab.report.preference import PreferenceTables, build_preference_tables
from collapselab.report.safety import SafetyTables, build_safety_tables
from collapselab.report.stat_tests import all_tests_table, omnibus_table, pairwise_table, primary_table
from collapselab.report.training import training_table


def experiments(inputs: ReportInputs) -> list[str]:
    """The experiments the run has, as the header names them."""
    names = []
    if inputs.collapse:
        names.append("Experiment 1 (distribution collapse)")
    if inputs.safety is not None:
        names.append("Experiment 2 (safety)")
    if inputs.preference is not None:
        names.append("Experiment 3 (self-preference)")
    if getattr(inputs, "capability", None) is not None:
        names.append("capability (lm-evaluation-harness)")
    return names


@dataclass
class ReportTables:
    """All tables and warnings of a report, in the order both renderers show them."""

    warnings: list[str]
    summary: Table
    omnibus: Table
    significant_pairs: Table
    all_tests: Table
    kendalls_w: Table
    concordance: list[ConcordanceTables]
    factorial: Table
    seed_spread: Table
    sources: Table
    training: Table
    safety: SafetyTables | None = None  # Experiment 2, when the run has it
    preference: PreferenceTables | None = None  # Experiment 3, when the run has it
    primary: Table | None = None  # the primary endpoints of every experiment (stats.primary)
    findings: FindingsTables | None = None  # the preregistered hypotheses, when the config declares them
    capability: CapabilityTables | None = None  # lm-evaluation-harness scores, when the run has them


def _primary(inputs: ReportInputs) -> Table | None:
    """The primary-endpoint rows of every experiment the run has (None when no test table was
    marked: a run without tests)."""
    tests = {"collapse": inputs.tests} if inputs.collapse else {}
    if getattr(inputs, "safety", None) is not None:
        tests["safety"] = inputs.safety.tests
    if getattr(inputs, "preference", None) is not None:
        tests["preference"] = inputs.preference.tests
    if not any("endpoint" in frame.columns for frame in tests.values()):
        return None
    primary = {k: v for k, v in getattr(inputs, "primary", {}).items() if k in tests}
    return primary_table(tests, primary, getattr(inputs, "primary_correction", "holm"))


def build_tables(inputs: ReportInputs) -> ReportTables:
    """Build every table of the report from a :class:`~collapselab.report.inputs.ReportInputs`;
    the warnings of every experiment go into one list (the report's warning box)."""
    safety = build_safety_tables(inputs.safety) if getattr(inputs, "safety", None) is not None else None
    preference = (build_preference_tables(inputs.preference)
                  if getattr(inputs, "preference", None) is not None else None)
    capability = (build_capability_tables(inputs.capability)
                  if getattr(inputs, "capability", None) is not None else None)
    warnings = [*warnings_list(inputs), *(safety.warnings if safety else []),
                *(preference.warnings if preference else []), *(capability.warnings if capability else [])]
    return ReportTables(
        warnings=warnings,
        summary=summary_table(inputs.aggregates),
        omnibus=omnibus_table(inputs.tests),
        significant_pairs=pairwise_table(inputs.tests, directions(inputs.aggregates), significant_only=True),
        all_tests=all_tests_table(inputs.tests),
        kendalls_w=kendalls_w_table(inputs.kendalls_w),
        concordance=concordance_tables(inputs.concordance, inputs.aggregates),
        factorial=factorial_table(inputs.factorial),
        seed_spread=seed_spread_table(inputs.seed_spread, inputs.aggregates),
        sources=source_table(inputs.aggregates),
        training=training_table(inputs.training),
        safety=safety,
        preference=preference,
        primary=_primary(inputs),
        findings=findings_tables(getattr(inputs, "findings", None), getattr(inputs, "hypotheses", None),
                                 getattr(inputs, "hypotheses_settings", None)),
        capability=capability,
    )
