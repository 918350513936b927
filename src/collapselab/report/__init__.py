"""The report: tables, one function per plot, self-contained HTML and Markdown, CSV/Parquet results.

Layers (each module imports only the ones above it; ``tests/unit/report/test_report_imports.py``
checks there is no import circle):

* primitives — :mod:`~collapselab.report.format` (cells, tables, number formatting),
  :mod:`~collapselab.report.labels` (set and run labels, ordering, metric directions),
  :mod:`~collapselab.report.figures` (colours, panel grids, PNG data URIs), and
  :mod:`~collapselab.report.inputs` (what the report reads from a run);
* shared tables — :mod:`~collapselab.report.stat_tests` (the statistical tests),
  :mod:`~collapselab.report.training` (the fine-tuning runs);
* one module per section — :mod:`~collapselab.report.collapse` (Experiment 1),
  :mod:`~collapselab.report.safety` (Experiment 2), :mod:`~collapselab.report.preference`
  (Experiment 3), :mod:`~collapselab.report.generations` (across generations), and their figures
  :mod:`~collapselab.report.collapse_plots`, :mod:`~collapselab.report.safety_plots`,
  :mod:`~collapselab.report.preference_plots`;
* the orchestrator — :mod:`~collapselab.report.build` (every section's tables, in order), the
  renderers :mod:`~collapselab.report.html` and :mod:`~collapselab.report.markdown`, and
  :mod:`~collapselab.report.write` (the report folder).
"""
