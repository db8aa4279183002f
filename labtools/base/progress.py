"""Progress of long work, in one place: a rich bar on the terminal, and one line per step to the file
named by ``$LABTOOLS_PROGRESS`` (the pipeline sets it and prints those lines while papermill runs a
notebook, so progress reaches the terminal and never the notebook's outputs)."""

from __future__ import annotations

import os
import sys
import time

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

PERIOD = 15.0  # seconds between progress lines in the file (the first and the last are always written)


class Bar:
    """`advance()` after each step, `close()` at the end (also on failure)."""

    def __init__(self, desc: str, total: int, done: int = 0, enabled: bool = True, unit: str = "point"):
        self.desc, self.total, self.done, self.unit = desc, total, done, unit
        self.t0 = self._last = time.monotonic()
        self._start = done  # the ETA counts only this run's steps, not those a resumed run found done
        self._file = os.environ.get("LABTOOLS_PROGRESS")
        self._progress: Progress | None = None
        if enabled and sys.stderr.isatty():
            self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TimeElapsedColumn(), TimeRemainingColumn(), transient=True)  # fmt: skip
            self._progress.start()
            self._task = self._progress.add_task(desc, total=total, completed=done)
        elif enabled and not self._file:
            print(f"{desc}: {done}/{total} {unit}s already done", file=sys.stderr, flush=True)
        self._line(force=True)

    def _line(self, force: bool = False) -> None:
        if not self._file:
            return
        now = time.monotonic()
        if not (force or self.done >= self.total or now - self._last >= PERIOD):
            return
        self._last = now
        elapsed, new = now - self.t0, self.done - self._start
        eta = f"{elapsed / new * (self.total - self.done):.0f} s" if new else "?"
        with open(self._file, "a") as fh:
            fh.write(f"{self.desc}: {self.done}/{self.total} {self.unit}s, {elapsed:.0f} s elapsed, ETA {eta}\n")

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self._progress is not None:
            self._progress.update(self._task, advance=n)
        self._line()

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def bar(desc: str, total: int, done: int = 0, enabled: bool = True, unit: str = "point") -> Bar:
    return Bar(desc, total, done, enabled, unit)
