"""A Rich progress bar with the live loss, as a Trainer callback (presentation layer: the CLI owns it).

It prints to STDERR, so `--json` output on stdout stays one object; the CLI turns it off with
`--json`, `--no-progress`, or when stderr is not a terminal.
"""

from __future__ import annotations

import math
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

EMA_BETA = 0.98  # smoothing of the displayed loss (bias-corrected, as fastai's lr_find)


class ProgressBar:
    def __init__(self, console: Console | None = None):
        self.console = console or Console(stderr=True)
        self.progress: Progress | None = None
        self.task: Any = None
        self.ema, self.seen = 0.0, 0
        self.last_epoch = ""

    def _start(self, trainer: Any) -> None:
        self.progress = Progress(
            TextColumn("[bold]train[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.task = self.progress.add_task("train", total=getattr(trainer, "total_steps", None), status="")
        self.progress.start()

    def on_step(self, trainer: Any, step: int, loss: float) -> None:
        if self.progress is None:
            self._start(trainer)
        if math.isfinite(loss):
            self.seen += 1
            self.ema = EMA_BETA * self.ema + (1 - EMA_BETA) * loss
        smoothed = self.ema / (1 - EMA_BETA**self.seen) if self.seen else math.nan
        status = f"loss {loss:.4g} (avg {smoothed:.4g}){self.last_epoch}"
        assert self.progress is not None
        self.progress.update(self.task, completed=step, status=status)

    def on_epoch(self, trainer: Any, row: dict[str, Any]) -> None:
        acc = f" acc {row['val_acc']:.1%}" if isinstance(row.get("val_acc"), float) and math.isfinite(row["val_acc"]) else ""
        self.last_epoch = f"  | epoch {row['epoch']}: val loss {row['val_loss']:.4g}{acc}"

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
