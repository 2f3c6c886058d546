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

import numpy as np
import torch

from nndiag.diagnostics import curve_logs, curves
from nndiag.findings import DIVERGENCE_FACTOR, Verdict
from nndiag.result import Result
from nndiag.training import batch as batching
from nndiag.training.experiment import Experiment
from nndiag.training.splits import TensorSplit
from nndiag.training.trainer import History, Trainer

ABORT_FACTOR = DIVERGENCE_FACTOR  # stop as diverged above this multiple of the starting loss (CS231n: "3x, stop")
BASELINE_MARGIN = 0.02  # accuracy-at-baseline: the best val accuracy is no more than this above the majority baseline
IMBALANCED = 0.5  # ... a baseline at least this high means the data is imbalanced (a majority class)
BALANCED_MARGIN = 0.1  # ... and then only when the balanced accuracy is no more than this above chance (1/C)
CLIP_ACTIVE_SHARE = 0.9  # clipping-always-active: the gradient norm exceeds train.grad_clip on this share of the steps ...
CLIP_FACTOR = 10.0  # ... and its median is at least this many times the threshold


def measure(
    exp: Experiment, epochs: int | None = None, max_steps: int | None = None, callbacks: Iterable[Any] = (), lr_chosen: str | None = None
) -> tuple[History, dict[str, Any]]:
    """Train the experiment's model in place; return the History and what ran. `lr_chosen`: what chose the LR it
    trains at (babysit: "the search"), for the LR rules of the curves."""
    trainer = Trainer(exp, epochs=epochs, max_steps=max_steps, abort_factor=ABORT_FACTOR, callbacks=list(callbacks), keep_best=True)
    history = trainer.fit()
    facts = {
        "epochs_planned": trainer.epochs,
        "max_steps": trainer.max_steps,
        "steps_planned": trainer.total_steps,
        "metric": exp.recipe.train.early_stopping.metric,
        "patience": exp.recipe.train.early_stopping.patience,
        "grad_clip": exp.recipe.train.grad_clip,
        "majority_baseline": majority_baseline(exp),
        "balanced_val_acc": balanced_accuracy(exp, trainer.model),
        "classes": exp.num_classes if exp.is_classification else None,
        "lr_chosen": lr_chosen,
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
    own = curve_logs.from_history(
        history.steps,
        history.epochs,
        chance_loss=facts.get("chance_loss"),
        chance_acc=facts.get("chance_acc"),
        lr_chosen=facts.get("lr_chosen"),
    )
    own.short_by_request = history.stopped == "max_steps"  # a smoke run of 2 steps asked for its 2 points
    return own


def majority_baseline(exp: Experiment) -> float | None:
    """The share of the most frequent class among the training labels (ignored ones aside): the accuracy of always
    predicting it. None without class labels."""
    if not exp.is_classification:
        return None
    split = exp.data.train
    if isinstance(split, TensorSplit):
        labels = split.y
    else:
        found = [batching.targets_of(b) for b in split.take(5000).batches(5000)]
        labels = torch.cat([t.reshape(-1) for t in found if t is not None]) if any(t is not None for t in found) else None
    if labels is None or labels.is_floating_point():
        return None
    labels = labels.reshape(-1).long()
    labels = labels[(labels >= 0)]
    return float(torch.bincount(labels.cpu()).max()) / len(labels) if len(labels) else None


@torch.no_grad()
def balanced_accuracy(exp: Experiment, model: torch.nn.Module) -> float | None:
    """The mean per-class recall on the validation split (the model as training left it); None without class logits."""
    from nndiag.training import engine
    from nndiag.training.scoring import IGNORE_INDEX, class_axis

    support: torch.Tensor | None = None
    hits: torch.Tensor | None = None
    with engine.eval_mode(model):
        for batch in exp.eval_batches():
            scored = exp.scorer(model, batch)
            axis = class_axis(scored.logits, scored.targets)
            if axis is None:
                return None
            targets = scored.targets.reshape(-1).long()
            predicted = scored.logits.argmax(dim=axis).reshape(-1)
            kept = targets != IGNORE_INDEX
            targets, predicted = targets[kept].cpu(), predicted[kept].cpu()
            size = int(scored.logits.shape[axis])
            s = torch.bincount(targets, minlength=size)
            h = torch.bincount(targets[predicted == targets], minlength=size)
            support, hits = (s, h) if support is None else (support + s, hits + h)  # type: ignore[operator]
    if support is None or not bool((support > 0).any()):
        return None
    present = support > 0
    return float((hits[present].float() / support[present].float()).mean())  # type: ignore[index]


def clipping_finding(verdict: Verdict, norms: list[float], clip: float | None) -> None:
    """clipping-always-active: gradient clipping that rewrites nearly every step's gradient (the norms before clipping)."""
    if not clip or len(norms) < 10:
        return
    values = np.asarray([n for n in norms if math.isfinite(n)], dtype=float)
    if not len(values):
        return
    share, median = float((values > clip).mean()), float(np.median(values))
    if share >= CLIP_ACTIVE_SHARE and median >= CLIP_FACTOR * clip:
        verdict.add(
            "clipping-always-active",
            "warn",
            f"gradient clipping at {clip:g} was active on {share:.0%} of {len(values)} steps, with a median gradient norm of "
            f"{median:.3g} ({median / clip:.0f}x the threshold): every step is shrunk to a fixed length",
            "Raise the clip threshold to about the gradient norm's usual size (the median printed here, or a bit above), "
            "or remove it: clipping meant for rare spikes acts here as a much lower learning rate.",
            grad_clip=clip,
            active_share=share,
            median_grad_norm=median,
            steps=len(values),
        )


def accuracy_finding(
    verdict: Verdict, epochs: Any, baseline: float | None, balanced: float | None = None, classes: int | None = None
) -> None:
    """accuracy-at-baseline: the best validation accuracy is no better than always predicting the majority class, and
    (imbalanced data) the model's balanced accuracy in the end is near chance too: it only predicts the majority class
    (a class-weighted model may trade plain accuracy below the baseline for a good balanced accuracy)."""
    if baseline is None or "val_acc" not in epochs or not epochs["val_acc"].notna().any():
        return
    if {"diverged", "not-generalizing", "too-little-data"} & set(verdict.codes):  # they already say it, with the reason
        return
    best = float(epochs["val_acc"].max())
    imbalanced = baseline >= IMBALANCED
    if imbalanced and balanced is not None and classes and balanced > 1 / classes + BALANCED_MARGIN:
        return  # it tells the classes apart: accuracy alone undersells it
    if best <= baseline + BASELINE_MARGIN:
        verdict.add(
            "accuracy-at-baseline",
            "warn",
            f"the best validation accuracy {best:.1%} is no better than always predicting the most frequent class "
            f"({baseline:.1%} of the training labels): the model learned {'only the class frequencies' if imbalanced else 'nothing'}",
            (
                "Weight the loss by class (CrossEntropyLoss(weight=...)) or resample the minority classes, and judge by balanced "
                "accuracy or per-class recall."
                if imbalanced
                else "Look at the causes of the other findings first (labels that do not follow the inputs, a training bug); "
                "a model at the baseline learned nothing from the inputs."
            ),
            best_val_acc=best,
            majority_baseline=baseline,
            imbalanced=imbalanced,
        )


def decide(history: History, facts: dict[str, Any]) -> Verdict:
    """The curves verdict over the run's own log, plus the Trainer's divergence abort. Pure."""
    verdict = curves.decide(own_curves(history, facts))
    accuracy_finding(verdict, history.epochs, facts.get("majority_baseline"), facts.get("balanced_val_acc"), facts.get("classes"))
    if "grad_norm" in history.steps:
        clipping_finding(verdict, history.steps["grad_norm"].tolist(), facts.get("grad_clip"))
    if history.diverged and "diverged" not in verdict.codes:
        steps = history.steps["loss"]
        last = float(steps.iloc[-1]) if len(steps) else math.nan
        first = history.starting_loss if history.starting_loss is not None else math.nan
        how = "non-finite" if not math.isfinite(last) else f"{last / first:.1f}x the starting loss {first:.4g}" if first > 0 else "diverged"
        verdict.add(
            "diverged",
            "fail",
            f"training stopped at step {len(steps)}: the loss reached {last:.4g} ({how}; abort limit {ABORT_FACTOR:g}x)",
            "Lower the learning rate (`nndiag lr-find` measures how far), check the initialisation scale (`nndiag probe`) "
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
    exp: Experiment,
    epochs: int | None = None,
    max_steps: int | None = None,
    callbacks: Iterable[Any] = (),
    probe_every: int | None = None,
    lr_chosen: str | None = None,
) -> Result:
    """Train; with `probe_every` N, also probe activations/gradients every N steps (probe.csv + its findings).
    `lr_chosen`: what chose the LR it trains at (babysit: "the search")."""
    probe = None
    if probe_every is not None:
        from nndiag.diagnostics.probe import ProbeCallback

        probe = ProbeCallback(every=probe_every)
        callbacks = [*callbacks, probe]
    history, facts = measure(exp, epochs, max_steps, callbacks, lr_chosen)  # the trainer closes the probe's hooks at the end
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
    if facts.get("balanced_val_acc") is not None:
        metrics["balanced_val_acc"] = facts["balanced_val_acc"]
    metrics["seconds"] = float(ep["seconds"].sum()) if len(ep) else 0.0
    for key in ("chance_loss", "chance_acc"):  # what `nndiag curves` on this folder judges against (curve_logs.run_chance)
        if facts.get(key) is not None:
            metrics[key] = facts[key]
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
