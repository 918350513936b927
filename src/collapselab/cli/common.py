"""Helpers shared by the commands: console, error handling, config loading."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from rich.console import Console

from collapselab.errors import CollapselabError

console = Console()
err_console = Console(stderr=True)

T = TypeVar("T")


def offline_defaults() -> None:
    """Fail fast instead of waiting on a network timeout when no hub is configured (users with
    the internet set HF_HUB_OFFLINE=0)."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ.setdefault(name, "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


@contextmanager
def user_errors() -> Iterator[None]:
    """Print a CollapselabError's message (no traceback) and exit non-zero."""
    try:
        yield
    except CollapselabError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]: completed stages are kept; rerun to resume")
        sys.exit(130)


def load(config: Path, overrides: list[str] | None):
    from collapselab.config.load import load_config

    return load_config(config, overrides or [])


def default_run_dir(name: str) -> Path:
    return Path("runs") / name


def guarded(fn: Callable[[], T]) -> T:
    with user_errors():
        return fn()


def load_run_spec(run_dir: Path):
    """The resolved config a run folder was last run with (``RUN_DIR/experiment.yaml``)."""
    from collapselab.config.load import load_config
    from collapselab.errors import CollapselabError

    config = run_dir / "experiment.yaml"
    if not config.is_file():
        raise CollapselabError(f"{run_dir}: not a run folder (no experiment.yaml)")
    return load_config(config, use_env=False)
