"""Train with the recipe, log the curves, and read them.

`run(exp)` trains with the recipe's optimizer, schedule, regularization, epochs and early stopping
(the shared `Trainer`), logs the training loss every step (train_steps.csv) and train/validation
loss and accuracy every epoch (train_epochs.csv), keeps the weights with the best validation metric
(`train.early_stopping.metric`, written as best.pt), and ends with the `curves` verdict over its
own log (see diagnostics/curves.py for every rule). Progress bars, probes and trial pruning plug in
as `callbacks` (objects with `on_step(trainer, step, loss)` and `on_epoch(trainer, row)`).

Rules on top of `curves.decide`:
  diverged  fail  the Trainer aborted the run as diverged (loss NaN/Inf, or above 3x the starting
                  loss = max(first step's loss, chance-level loss), CS231n) and the curves alone
                  did not already say so.
"""

from __future__ import annotations

import io
import math
from typing import Any, Iterable

import torch

from nndiag.diagnostics import curve_logs, curves
from nndiag.findings import DIVERGENCE_FACTOR, Verdict
from nndiag.result import Result
from nndiag.training.experiment import Experiment
from nndiag.training.trainer import History, Trainer

ABORT_FACTOR = DIVERGENCE_FACTOR  # stop as diverged above this multiple of the starting loss (CS231n: "3x, stop")


def measure(
    exp: Experiment, epochs: int | None = None, max_steps: int | None = None, callbacks: Iterable[Any] = ()
) -> tuple[History, dict[str, Any]]:
    """Train the experiment's model in place; return the History and what ran."""
    trainer = Trainer(exp, epochs=epochs, max_steps=max_steps, abort_factor=ABORT_FACTOR, callbacks=list(callbacks), keep_best=True)
    history = trainer.fit()
    facts = {
        "epochs_planned": trainer.epochs,
        "max_steps": trainer.max_steps,
        "steps_planned": trainer.total_steps,
        "metric": exp.recipe.train.early_stopping.metric,
        "patience": exp.recipe.train.early_stopping.patience,
        **chance_levels(trainer, exp),
    }
    return history, facts


def chance_levels(trainer: Trainer, exp: Experiment) -> dict[str, float]:
    """What a model that knows nothing scores: the Trainer's chance-level loss (ln C for cross-entropy) and, for class
    labels, 1/C accuracy. `curves.decide` reads them as the reference of its not-generalizing rule."""
    out: dict[str, float] = {}
    if trainer.chance_loss and trainer.chance_loss > 0:
        out["chance_loss"] = float(trainer.chance_loss)
    classes = exp.num_classes if exp.is_classification else None
    if classes:
        out["chance_acc"] = 1.0 / classes
    return out


def own_curves(history: History, facts: dict[str, Any]) -> curve_logs.Curves:
    """The run's own log as Curves, with the chance levels the run knows."""
    own = curve_logs.from_history(history.steps, history.epochs, chance_loss=facts.get("chance_loss"), chance_acc=facts.get("chance_acc"))
    own.short_by_request = history.stopped == "max_steps"  # a smoke run of 2 steps asked for its 2 points
    return own


def decide(history: History, facts: dict[str, Any]) -> Verdict:
    """The curves verdict over the run's own log, plus the Trainer's divergence abort. Pure."""
    verdict = curves.decide(own_curves(history, facts))
    if history.diverged and "diverged" not in verdict.codes:
        steps = history.steps["loss"]
        last = float(steps.iloc[-1]) if len(steps) else math.nan
        first = history.starting_loss if history.starting_loss is not None else math.nan
        how = "non-finite" if not math.isfinite(last) else f"{last / first:.1f}x the starting loss {first:.4g}" if first > 0 else "diverged"
        verdict.add(
            "diverged",
            "fail",
            f"training stopped at step {len(steps)}: the loss reached {last:.4g} ({how}; abort limit {ABORT_FACTOR:g}x)",
            "Lower the learning rate (10x, or `nndiag lr-find`), check the initialisation scale (`nndiag probe`) "
            "and clip gradients (train.grad_clip).",
            at=len(steps),
            x="step",
            last_loss=last,
            first_loss=first,
        )
    return verdict


def checkpoint(history: History, model: torch.nn.Module) -> bytes:
    """The best validation weights (the final ones when no epoch had a finite metric), as torch.save bytes."""
    state = history.best_state if history.best_state is not None else model.state_dict()
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in state.items()}, buffer)
    return buffer.getvalue()


def run(
    exp: Experiment, epochs: int | None = None, max_steps: int | None = None, callbacks: Iterable[Any] = (), probe_every: int | None = None
) -> Result:
    """Train; with `probe_every` N, also probe activations/gradients every N steps (probe.csv + its findings)."""
    probe = None
    if probe_every is not None:
        from nndiag.diagnostics.probe import ProbeCallback

        probe = ProbeCallback(every=probe_every)
        callbacks = [*callbacks, probe]
    history, facts = measure(exp, epochs, max_steps, callbacks)  # the trainer closes the probe's hooks at the end
    verdict = decide(history, facts)
    ep = history.epochs
    metrics: dict[str, Any] = {
        "stopped": history.stopped,
        "epochs_run": int(len(ep)),
        "steps_run": int(len(history.steps)),
        "initial_train_loss": float(history.steps["loss"].iloc[0]) if len(history.steps) else math.nan,
    }
    if len(ep):
        last = ep.iloc[-1]
        metrics.update(
            final_train_loss=float(last["train_loss"]),
            final_val_loss=float(last["val_loss"]),
            final_train_acc=float(last["train_acc"]),
            final_val_acc=float(last["val_acc"]),
        )
    if history.best_epoch is not None:
        best = ep[ep["epoch"] == history.best_epoch].iloc[0]
        metrics.update(
            best_epoch=int(history.best_epoch), best_epoch_val_loss=float(best["val_loss"]), best_epoch_val_acc=float(best["val_acc"])
        )
    metrics["seconds"] = float(ep["seconds"].sum()) if len(ep) else 0.0
    extra = {"best.pt": checkpoint(history, exp.model)}
    context = {
        "stopped": history.stopped,
        "best weights": f"epoch {history.best_epoch} ({facts['metric']})" if history.best_epoch else "final",
    }
    tables = {"train_steps": history.steps, "train_epochs": history.epochs, "curves": curves.measure([own_curves(history, facts)])[0]}
    if probe is not None:
        tables.update(probe=probe.rows, probe_hist=probe.histograms)
        verdict.extend(probe.verdict())
        metrics["probed_steps"] = int(probe.rows["step"].nunique()) if len(probe.rows) else 0
    return Result("train", verdict, tables, metrics, context=context, extra_files=extra)
