"""A rich progress display for the executor: one bar for the run, one per running stage (the Ray
executor runs several at once; per-item progress comes only from stages run in this process)."""

from __future__ import annotations

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from collapselab.executors import StageProgress
from collapselab.pipeline.stage import Stage


class RichStageProgress(StageProgress):
    def __init__(self, n_stages: int, console) -> None:
        self.progress = Progress(
            TextColumn("{task.description:<48}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False,
        )
        self.overall = self.progress.add_task("stages", total=n_stages)
        self.current: int | None = None
        self.bars: dict[str, int] = {}  # stage label -> bar

    def __enter__(self) -> RichStageProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def start(self, stage: Stage, index: int, total: int) -> None:
        self.current = self.bars[stage.label] = self.progress.add_task(f"  {stage.label}", total=None)

    def set_total(self, n: int) -> None:
        if self.current is not None:
            self.progress.update(self.current, total=n)

    def advance(self, n: int) -> None:
        if self.current is not None:
            self.progress.advance(self.current, n)

    def finish(self, stage: Stage, skipped: bool) -> None:
        if skipped:
            self.progress.console.print(f"  [dim]done already: {stage.label}[/]")
        elif stage.label in self.bars:
            bar = self.bars.pop(stage.label)
            task = self.progress.tasks[[t.id for t in self.progress.tasks].index(bar)]
            self.progress.update(bar, total=task.completed or 1, completed=task.completed or 1)
            if self.current == bar:
                self.current = None
        self.progress.advance(self.overall, 1)


class PlainStageProgress(StageProgress):
    """Progress without a terminal (CI, nohup, a pipe): plain lines, at most one per stage every
    ``every`` seconds while it runs, so a log shows how far a run is without a redrawn bar."""

    def __init__(self, n_stages: int, console, every: float = 30.0, clock=None) -> None:
        import time

        self.console, self.n_stages, self.every = console, n_stages, every
        self.clock = clock or time.monotonic
        self.done = 0
        self.label: str | None = None
        self.total: int | None = None
        self.completed = 0
        self.started = self.last = 0.0

    def __enter__(self) -> PlainStageProgress:
        return self

    def __exit__(self, *exc) -> None:
        pass

    def _line(self, text: str) -> None:
        self.console.print(text, highlight=False, markup=False, soft_wrap=True)

    def start(self, stage: Stage, index: int, total: int) -> None:
        self.label, self.total, self.completed = stage.label, None, 0
        self.started = self.last = self.clock()
        self._line(f"[{self.done + 1}/{self.n_stages}] {stage.label}: started")

    def set_total(self, n: int) -> None:
        self.total = n

    def advance(self, n: int) -> None:
        self.completed += n
        now = self.clock()
        if self.label is not None and now - self.last >= self.every:
            self.last = now
            share = f" ({100 * self.completed / self.total:.0f}%)" if self.total else ""
            of = f"/{self.total}" if self.total else ""
            self._line(f"    {self.label}: {self.completed}{of}{share}, {now - self.started:.0f} s")

    def finish(self, stage: Stage, skipped: bool) -> None:
        self.done += 1
        if skipped:
            self._line(f"[{self.done}/{self.n_stages}] {stage.label}: done already")
        else:
            self._line(f"[{self.done}/{self.n_stages}] {stage.label}: finished in {self.clock() - self.started:.0f} s")
            self.label = None


def stage_progress(n_stages: int, console) -> StageProgress:
    """A live rich display on a terminal, plain periodic lines otherwise."""
    if console.is_terminal:
        return RichStageProgress(n_stages, console)
    return PlainStageProgress(n_stages, console)
