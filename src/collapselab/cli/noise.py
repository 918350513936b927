"""Keep third-party deprecation noise out of the command's output.

Libraries (transformers, torch, datasets) emit ``FutureWarning``/``DeprecationWarning`` and
``UserWarning`` messages meant for their own developers; in the demo they flooded the progress
display. While a command runs, Python warnings are captured to a log file in the run folder
(``RUN_DIR/logs/warnings.log``) instead of the terminal; collapselab's own messages are printed
by the CLI, not as warnings, so nothing of ours is hidden.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def warnings_to_log(path: Path) -> Iterator[Path]:
    """Route Python warnings (and transformers' logger) to ``path`` for the duration."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8", delay=True)  # no empty log file
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
    loggers = [logging.getLogger("py.warnings"), logging.getLogger("transformers")]
    saved = [(lg, lg.handlers[:], lg.propagate) for lg in loggers]
    for lg in loggers:
        lg.handlers = [handler]
        lg.propagate = False
    logging.captureWarnings(True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")  # every distinct warning once per location, into the log
            yield path
    finally:
        logging.captureWarnings(False)
        for lg, handlers, propagate in saved:
            lg.handlers, lg.propagate = handlers, propagate
        handler.close()
