"""Capability alongside collapse: lm-evaluation-harness tasks run on the vanilla target and every
fine-tuned adapter, so a report can say whether a collapsed model also lost ability.

* :mod:`~collapselab.capability.tasks` — the configured tasks: registered lm-eval names or local
  task YAML files (their data files found, fingerprinted for the stage key, checked);
* :mod:`~collapselab.capability.harness` — one model's lm-eval run (in process, on the model the
  stage loaded) and its outputs without anything machine-specific;
* :mod:`~collapselab.capability.compare` — the scores table and each condition's difference from
  the vanilla model on the same items, with a paired interval and test.

lm-eval is an optional extra (``pip install 'collapselab[capability]'``), imported only here.
"""
