"""Export a run for others: its training sets, answers, judgements and preference read-outs as a
Hugging Face dataset (Parquet + dataset card), its adapters with model cards, and optionally an
upload to the Hub (``collapselab export RUN_DIR OUT [--push ORG/NAME]``, docs/export.md).

* :mod:`~collapselab.export.tables` — what is read from the run's finished stages;
* :mod:`~collapselab.export.dataset` — the tables as Parquet files;
* :mod:`~collapselab.export.cards` / :mod:`~collapselab.export.licences` — the cards;
* :mod:`~collapselab.export.adapters` — the adapter folders;
* :mod:`~collapselab.export.run` — :func:`export_run`, the whole export;
* :mod:`~collapselab.export.push` / :mod:`~collapselab.export.hub_names` — :func:`push_export`, the upload,
  and the repositories it goes to.
"""
