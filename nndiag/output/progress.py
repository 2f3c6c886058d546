"""Progress on STDERR, drawn with Rich (presentation layer: the CLI and the Python API's `progress=True` own it).

A `ProgressBar` is a Progress (nndiag.training.progress, read by duck typing: this module sits below it):
called with a Tick it draws one bar per task (steps done of planned, the latest loss smoothed, time
elapsed and left); called with a Note it prints the note's line above the bars. On a console that is
not a terminal (a CI log, a pipe) it prints a plain line per task at most every LOG_EVERY_S instead of
redrawing. It writes to stderr, so `--json` output on stdout stays one object.
"""

from __future__ import annotations

import math
import time
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

EMA_BETA = 0.9  # smoothing of the displayed loss over the Ticks shown (bias-corrected, as fastai's lr_find; restarts when the note changes)
LOG_EVERY_S = 15.0  # not a terminal: one plain line per task at most this often


class ProgressBar:
    """Bars for Ticks, lines for Notes. `bars=False` prints the Notes only (--no-progress). Call `close()` at the end."""

    def __init__(self, console: Console | None = None, bars: bool = True):
        self.console = console or Console(stderr=True, highlight=False)
        self.bars = bars
        self.live = self.console.is_terminal
        self.progress: Progress | None = None
        self.tasks: dict[str, Any] = {}  # task name -> Rich task id
        self.smooth: dict[str, tuple[str, float, int]] = {}  # task name -> (the note it was smoothed under, EMA, Ticks seen)
        self.logged: dict[str, float] = {}  # task name -> when its last plain line was printed

    def __call__(self, event: Any) -> None:
        if hasattr(event, "text"):
            self._print(event.text)
        elif self.bars:
            self._tick(event)

    def _print(self, text: str) -> None:
        (self.progress.console if self.progress is not None else self.console).print(f"[dim]{escape(text)}[/]", soft_wrap=True)

    def _tick(self, tick: Any) -> None:
        status = self._status(tick)
        if not self.live:  # a line for a task that has run LOG_EVERY_S, then one every LOG_EVERY_S
            now = time.monotonic()
            if tick.finished or now - self.logged.setdefault(tick.task, now) < LOG_EVERY_S:
                return
            self.logged[tick.task] = now
            total = f"/{tick.total}" if tick.total else ""
            self.console.print(f"[dim]{escape(tick.task)}: {tick.done}{total} {tick.unit}{escape(status)}[/]", soft_wrap=True)
            return
        if self.progress is None:
            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(bar_width=24),
                MofNCompleteColumn(),
                TextColumn("{task.fields[unit]}"),
                TimeElapsedColumn(),
                TextColumn("left"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[status]}"),
                console=self.console,
                transient=False,
            )
            self.progress.start()
        if tick.task not in self.tasks:
            for task in self.tasks.values():  # a new task: the ones before it are over
                self._stop_task(task)
            self.tasks[tick.task] = self.progress.add_task(escape(tick.task), total=tick.total, unit=tick.unit, status="")
        task = self.tasks[tick.task]
        fields = {"status": escape(status)} if status or not tick.finished else {}  # a bare end keeps the last status
        self.progress.update(task, completed=tick.done, total=tick.total, **fields)
        if tick.finished:
            self._stop_task(task)

    def _stop_task(self, task: Any) -> None:
        assert self.progress is not None
        current = self.progress.tasks[self.progress.task_ids.index(task)]
        if not current.finished:
            self.progress.update(task, total=current.completed)  # ended early: show it complete at what it did
            self.progress.stop_task(task)

    def _status(self, tick: Any) -> str:
        parts = []
        if tick.loss is not None:
            if math.isfinite(tick.loss):
                under, ema, seen = self.smooth.get(tick.task, (tick.note, 0.0, 0))
                if under != tick.note:  # another LR, another epoch: the average starts again
                    ema, seen = 0.0, 0
                ema, seen = EMA_BETA * ema + (1 - EMA_BETA) * tick.loss, seen + 1
                self.smooth[tick.task] = (tick.note, ema, seen)
                parts.append(f"loss {tick.loss:.4g} (avg {ema / (1 - EMA_BETA**seen):.4g})")
            else:
                parts.append("loss NaN/Inf")
        if tick.note:
            parts.append(tick.note)
        return ("  " + "  ".join(parts)) if parts else ""

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()  # a task that did not end (Ctrl-C, an error) stays at what it did
            self.progress = None
        self.tasks.clear()
