"""Judges: the registry :data:`JUDGES` (one module per judge: harm, quality, refusal, pairwise,
rating, recognition; ``classifiers`` holds the fine-tuned safety classifiers), the one prompt-template subsystem,
the parsers, the judge loop and the calibration set.

Importing this package registers every judge; nothing here imports torch, so ``collapselab ls
judges`` stays fast. Adding a judge: one module that builds its :class:`Judge` with
:func:`register_judge`, its name in the import below, and one test.
"""

from collapselab.judges.registry import JUDGES, Judge, register_judge

# Registration only: each module builds its Judge and adds it to JUDGES.
from collapselab.judges import classifiers, harm, pairwise, quality, rating, recognition, refusal  # noqa: F401  # isort: skip

__all__ = ["JUDGES", "Judge", "register_judge"]
