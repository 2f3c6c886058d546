"""The training loop shared by `train`, `search` and `babysit`.

`Trainer(exp, ...).fit()` trains with the recipe's optimizer, schedule, epochs and early stopping,
logs the training loss every step and train/validation loss and accuracy every epoch, and
returns a `History` of plain numbers. It never prints and never writes files; progress bars,
probes and trial pruning plug in as callbacks.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import pandas as pd
import torch
from torch import nn

from nndiag.findings import DIVERGENCE_FACTOR
from nndiag.training import engine
from nndiag.training.experiment import Experiment
from nndiag.training.splits import batches_per_epoch

SYNC_EVERY_ACCELERATOR = 10  # steps between loss read-backs on a GPU (a divergence is seen at most this late)


class Callback(Protocol):
    """Hooks into the loop. Call `trainer.request_stop(reason)` to end training early."""

    def on_step(self, trainer: "Trainer", step: int, loss: float) -> None: ...

    def on_epoch(self, trainer: "Trainer", row: dict[str, Any]) -> None: ...

    # Optional: `on_train_begin(trainer)` is called before the first step; `on_train_end(trainer)` when training ends,
    # however it ends (clean up hooks here; `trainer.ended_by` is the exception that ended it, or None). A callback with
    # `every_loss = False` does not need each loss read back at once (it reads `trainer.step_rows` when told).


@dataclass
class History:
    steps: pd.DataFrame  # one row per optimizer step: step, epoch, lr, loss (and grad_norm, before clipping, with train.grad_clip)
    epochs: pd.DataFrame  # one row per epoch: epoch, step, lr, train_loss, train_acc, val_loss, val_acc, seconds
    stopped: str  # completed | max_steps | early_stopping | diverged | a callback's reason
    best_epoch: int | None = None  # epoch with the best validation metric
    best_state: dict[str, torch.Tensor] | None = field(default=None, repr=False)
    starting_loss: float | None = (
        None  # the divergence rule's baseline: max(first step's loss, chance-level loss)  # its weights, when early stopping is on
    )

    @property
    def diverged(self) -> bool:
        return self.stopped == "diverged"


class Trainer:
    def __init__(
        self,
        exp: Experiment,
        *,
        model: nn.Module | None = None,
        epochs: int | None = None,
        max_steps: int | None = None,
        use_schedule: bool = True,
        abort_factor: float | None = DIVERGENCE_FACTOR,
        callbacks: list[Any] | tuple[Any, ...] = (),
        keep_best: bool | None = None,
        sync_every: int | None = None,
    ):
        """`epochs`/`max_steps` default to the recipe's; `abort_factor`: stop as diverged when the
        loss is non-finite or above this multiple of the starting loss (None = never), where the
        starting loss is the larger of the first step's loss and the chance-level loss of an
        untrained model (ln C for cross-entropy): a model that starts well trained (fine-tuning,
        a resumed run) is not "diverged" merely because its loss moved off ~0;
        `keep_best`: keep a copy of the best validation weights in `History.best_state` (default:
        only when early stopping is on). The model is reset to them only when early stopping is on."""
        self.exp = exp
        self.model = model if model is not None else exp.model
        self.epochs = epochs if epochs is not None else exp.recipe.train.epochs
        self.max_steps = max_steps if max_steps is not None else exp.recipe.train.max_steps
        self.abort_factor = abort_factor
        self.callbacks = list(callbacks)
        self.keep_best = keep_best
        self.optimizer = exp.optimizer(self.model)
        steps_per_epoch = batches_per_epoch(len(exp.data.train), exp.recipe.train.batch_size)
        total = steps_per_epoch * self.epochs if self.max_steps is None else min(self.max_steps, steps_per_epoch * self.epochs)
        self.total_steps = total  # optimizer steps the run will take at most (for progress bars)
        schedule = exp.recipe.schedule if use_schedule else None
        self.scheduler = (
            engine.build_scheduler(self.optimizer, schedule, total, steps_per_epoch)
            if schedule and (schedule.name != "none" or schedule.warmup_steps)
            else None
        )
        self.step = 0
        self._stop_reason: str | None = None
        # How many steps' losses stay on the device before one read-back: every step on the CPU (free)
        # or when callbacks need each loss; every SYNC_EVERY_ACCELERATOR steps on a GPU otherwise.
        eager = [cb for cb in self.callbacks if getattr(cb, "every_loss", True)]
        self.sync_every = sync_every or (1 if exp.device.type == "cpu" or eager else SYNC_EVERY_ACCELERATOR)
        self.chance_loss = 0.0
        self.step_rows: list[dict[str, Any]] = []  # the History's rows as they are logged (callbacks may read them)
        self.epoch_rows: list[dict[str, Any]] = []
        self.ended_by: BaseException | None = None  # what ended fit() early, for on_train_end (KeyboardInterrupt: Ctrl-C)

    def request_stop(self, reason: str) -> None:
        self._stop_reason = reason

    def fit(self) -> History:
        """Train. Callbacks that have `on_train_end(trainer)` hear when training ends, however it ends."""
        try:
            for cb in self.callbacks:
                begin = getattr(cb, "on_train_begin", None)
                if begin is not None:
                    begin(self)
            return self._fit()
        except BaseException as exc:
            self.ended_by = exc
            raise
        finally:
            for cb in self.callbacks:
                end = getattr(cb, "on_train_end", None)
                if end is not None:
                    end(self)

    def _fit(self) -> History:
        exp, model = self.exp, self.model
        early = exp.recipe.train.early_stopping
        step_rows, epoch_rows = self.step_rows, self.epoch_rows
        best, best_epoch, best_state, waited = math.inf, None, None, 0
        keep = self.keep_best if self.keep_best is not None else early.patience is not None
        self.starting_loss: float | None = None
        model.train()
        for epoch in range(1, self.epochs + 1):
            started = time.perf_counter()
            loss_sum = torch.zeros((), device=exp.device)  # summed on the device: no sync per step
            correct_sum = torch.zeros((), device=exp.device)
            counted_sum = torch.zeros((), device=exp.device)
            seen = 0
            pending: list[tuple[int, float, torch.Tensor, torch.Tensor | None]] = []  # (step, lr, loss, grad norm) not yet read back
            for batch in exp.train_batches():
                lr = self.optimizer.param_groups[0]["lr"]
                scored = exp.step(self.optimizer, batch, model=model)
                if self.scheduler is not None:
                    self.scheduler.step()
                self.step += 1
                if self.step == 1:  # the divergence baseline also counts the chance level
                    self.chance_loss = exp.scorer.expected_initial_loss([scored])[0] or 0.0
                loss_sum += scored.loss.float() * scored.examples
                counts = exp.scorer.correct(scored)
                if counts is not None:
                    correct_sum += counts[0]
                    counted_sum += counts[1]
                seen += scored.examples
                pending.append((self.step, lr, scored.loss, scored.grad_norm))
                if self.max_steps is not None and self.step >= self.max_steps:
                    self.request_stop("max_steps")
                if len(pending) >= self.sync_every or self._stop_reason:
                    self._read_back(pending, step_rows, epoch)
                if self._stop_reason:
                    break
            self._read_back(pending, step_rows, epoch)
            val = exp.evaluate(model=model)
            row = {
                "epoch": epoch,
                "step": self.step,
                "lr": self.optimizer.param_groups[0]["lr"],
                "train_loss": float(loss_sum) / max(seen, 1),
                "train_acc": float(correct_sum) / float(counted_sum) if exp.is_classification and float(counted_sum) > 0 else math.nan,
                "val_loss": val["loss"],
                "val_acc": val["acc"],
                "seconds": time.perf_counter() - started,
            }
            epoch_rows.append(row)
            for cb in self.callbacks:
                cb.on_epoch(self, row)
            score = row[early.metric] * (-1 if early.metric == "val_acc" else 1)
            if math.isfinite(score) and score < best - early.min_delta:
                best, best_epoch, waited = score, epoch, 0
                if keep:
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                waited += 1
                if early.patience is not None and waited >= early.patience and self._stop_reason is None:
                    self.request_stop("early_stopping")
            if self._stop_reason:
                break
        if best_state is not None and early.patience is not None:
            model.load_state_dict(best_state)
        return History(
            steps=pd.DataFrame(step_rows, columns=["step", "epoch", "lr", "loss", *(["grad_norm"] if exp.recipe.train.grad_clip else [])]),
            epochs=pd.DataFrame(epoch_rows, columns=["epoch", "step", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "seconds"]),
            stopped=self._stop_reason or "completed",
            best_epoch=best_epoch,
            best_state=best_state,
            starting_loss=self.starting_loss,
        )

    def _read_back(
        self, pending: list[tuple[int, float, torch.Tensor, torch.Tensor | None]], rows: list[dict[str, Any]], epoch: int
    ) -> None:
        """Read the pending losses back from the device in one go; log them, tell the callbacks, and
        apply the divergence rule (a max_steps stop requested meanwhile is kept)."""
        if not pending:
            return
        values = torch.stack([loss for _, _, loss, _ in pending]).tolist()
        norms = torch.stack([n for *_, n in pending]).tolist() if all(n is not None for *_, n in pending) else [None] * len(pending)
        for (step, lr, _, _), loss, norm in zip(pending, values, norms):
            if self.starting_loss is None:
                self.starting_loss = max(loss, self.chance_loss) if math.isfinite(loss) else loss
            row = {"step": step, "epoch": epoch, "lr": lr, "loss": loss}
            if norm is not None:
                row["grad_norm"] = norm  # the norm before clipping (train.grad_clip)
            rows.append(row)
            for cb in self.callbacks:
                cb.on_step(self, step, loss)
            if self._diverged(loss, self.starting_loss):
                self._stop_reason = "diverged"
                break
        pending.clear()

    def _diverged(self, loss: float, first: float | None) -> bool:
        if not math.isfinite(loss):
            return True
        return self.abort_factor is not None and first is not None and first > 0 and loss > self.abort_factor * first
