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
