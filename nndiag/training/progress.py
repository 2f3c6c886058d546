"""Progress of long work, as plain events: the diagnostics report, the faces (the CLI, the Python API's
`progress=True`) show. No Rich here: nndiag.output.progress draws the bar.

    progress(Tick("lr-find: range test", done=120, total=400, loss=2.1))   # a bar's update
    progress(Note("threads: 1 (small model)"))                             # a line to show once

A `Progress` is any callable that takes a Tick or a Note. A diagnostic wraps it in a `Ticker`, which
forwards at most one Tick every MIN_INTERVAL_S (the last one always), so a callback costs nothing
measurable even on sub-millisecond steps; `TrainerProgress` is the Trainer callback that reports a
training run's steps.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Union

MIN_INTERVAL_S = 0.1  # a Ticker forwards at most one Tick this often (the final one always)


@dataclass(frozen=True)
class Tick:
    """Where a piece of long work stands."""

    task: str  # what runs: "overfit-small", "lr-find: range test", "search coarse", "train"
    done: int  # units done
    total: int | None  # units planned (None: unknown); a task may end early (`finished`)
    unit: str = "steps"  # steps | trials | batches | cases
    loss: float | None = None  # the latest loss, when one is known
    note: str = ""  # a few words more: "LR 3.2e-3", "epoch 2: val loss 0.31"
    finished: bool = False  # the task is over (perhaps before `total`: a run that passed or diverged early)


@dataclass(frozen=True)
class Note:
    """A line to show once: a choice that was made (the thread count), a step that started or ended."""

    text: str


Progress = Callable[[Union[Tick, Note]], None]


def note(progress: Progress | None, text: str) -> None:
    if progress is not None:
        progress(Note(text))


class Ticker:
    """One task's Ticks, rate-limited: `ticker(done, loss)` as the work goes, `ticker.finish()` at its end."""

    def __init__(self, progress: Progress | None, task: str, total: int | None, unit: str = "steps"):
        self.progress, self.task, self.total, self.unit = progress, task, total, unit
        self.last = -math.inf
        self.done, self.loss = 0, None

    def __call__(self, done: int, loss: float | None = None, note: str = "") -> None:
        self.done, self.loss = done, loss if loss is not None else self.loss
        if self.progress is None:
            return
        now = time.perf_counter()
        if now - self.last < MIN_INTERVAL_S and (self.total is None or done < self.total):
            return
        self.last = now
        self.progress(Tick(self.task, done, self.total, self.unit, _finite(loss), note))

    def finish(self, loss: float | None = None, note: str = "") -> None:
        """The task is over (at `done`, perhaps before `total`); the last loss heard stands unless one is given."""
        if self.progress is not None:
            shown = loss if loss is not None else self.loss
            self.progress(Tick(self.task, self.done, self.total, self.unit, _finite(shown), note, finished=True))


def _finite(loss: Any) -> float | None:
    if loss is None:
        return None
    value = float(loss)
    return value if math.isfinite(value) else math.nan


class TrainerProgress:
    """A Trainer callback (nndiag.training.trainer) that reports each step and each epoch's validation."""

    def __init__(self, progress: Progress | None, task: str = "train"):
        self.progress, self.task = progress, task
        self.ticker: Ticker | None = None
        self.epoch_note = ""

    def on_step(self, trainer: Any, step: int, loss: float) -> None:
        if self.ticker is None:
            self.ticker = Ticker(self.progress, self.task, getattr(trainer, "total_steps", None))
        self.ticker(step, loss, self.epoch_note)

    def on_epoch(self, trainer: Any, row: dict[str, Any]) -> None:
        acc = row.get("val_acc")
        shown = f", acc {acc:.1%}" if isinstance(acc, float) and math.isfinite(acc) else ""
        self.epoch_note = f"epoch {row['epoch']}: val loss {row['val_loss']:.4g}{shown}"

    def on_train_end(self, trainer: Any) -> None:
        if self.ticker is not None:
            self.ticker.finish(note=self.epoch_note)
