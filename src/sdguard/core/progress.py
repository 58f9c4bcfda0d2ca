"""Progress bars for long work (rich), quiet when not attached to a terminal or when disabled."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def progress_enabled(flag: bool | None = None) -> bool:
    if flag is not None:
        return flag
    if os.environ.get("SDGUARD_NO_PROGRESS"):
        return False
    return sys.stderr.isatty()


class _Task:
    def __init__(self, progress: Progress | None, task_id):
        self._progress, self._id = progress, task_id

    def advance(self, n: int = 1) -> None:
        if self._progress is not None:
            self._progress.advance(self._id, n)

    def update(self, **kwargs) -> None:
        if self._progress is not None:
            self._progress.update(self._id, **kwargs)


@contextlib.contextmanager
def progress_bar(description: str, total: int | None, *, enabled: bool | None = None, completed: int = 0) -> Iterator[_Task]:
    """A progress bar on stderr; ``advance()`` it as work finishes."""
    if not progress_enabled(enabled):
        yield _Task(None, None)
        return
    from rich.console import Console

    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    )
    with progress:
        yield _Task(progress, progress.add_task(description, total=total, completed=completed))
