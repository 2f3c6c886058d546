"""Step 2 of the recipe: overfit a small sample.

A fixed tiny subset (`batches` minibatches, the notes' 5-10), weight decay and dropout off, the
recipe's optimizer and learning rate. A healthy model and training loop memorise it: training
accuracy 100% and the loss down to a small fraction of where it started. The model, optimizer and
RNG state are handed back untouched.

Rules (documented thresholds, all tested):
  pass                 accuracy on the subset reaches 100% and its loss <= target_fraction x initial (default 0.1)
  loss-diverged        fail  the loss is NaN/Inf, or rises above 3x its initial value (CS231n: "stop early")
  loss-not-decreasing  fail  after all steps the best loss is still > 0.9x the initial (it barely moved); when every
                             weight's gradient was exactly zero at the first step (measured: `zero_grad_weights` of
                             `weights`), the advice rules the learning rate out instead of suggesting a higher one
  cannot-overfit       fail  the loss fell but stalled short of the target, or accuracy stayed below 100%
  not-checked          info  there are no class logits and targets to judge accuracy by (a step or a
                             custom loss that returns only the loss): the loss alone decides
The subset is `batches` x batch_size examples drawn at random from data held as tensors, or the first
`batches` batches of a user's DataLoader, kept fixed. Accuracy counts targets that are not -100.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import torch

from nndiag.diagnostics.defaults import OVERFIT_BATCHES, OVERFIT_STEPS, OVERFIT_TARGET
from nndiag.diagnostics.train import clipping_finding
from nndiag.findings import DIVERGENCE_FACTOR, Verdict
from nndiag.result import Result
from nndiag.training import engine
from nndiag.training.experiment import Experiment
from nndiag.training.progress import Progress, Ticker
from nndiag.training.scoring import counted_targets

DIVERGED_FACTOR = DIVERGENCE_FACTOR  # a loss above this multiple of the initial one has diverged (CS231n)
NOT_DECREASING = 0.9  # a best loss above this fraction of the initial one has "barely moved"
CONVERGED = 0.01  # a loss whose floor is unknown has converged when the last CONVERGED_WINDOW of the steps improved it by less
CONVERGED_WINDOW = 0.2  # than this share of its whole drop (judged with 100% accuracy)
EVAL_GAP_FACTOR = 2.0  # eval-train-mismatch: the eval-mode loss is over this multiple of the train-mode loss ...
EVAL_GAP_SHARE = 0.1  # ... and above it by over this share of the initial loss, after the statistics had time to settle
SETTLE_PASSES = 50  # train-mode forward passes (no step) over the subset that let BatchNorm's running statistics catch up


def measure(
    exp: Experiment,
    batches: int = OVERFIT_BATCHES,
    steps: int = OVERFIT_STEPS,
    target_fraction: float = OVERFIT_TARGET,
    progress: Progress | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Train on the subset; one row per step (batch loss) with the whole-subset loss/accuracy each pass.
    `progress` hears every step (nndiag.training.progress)."""
    batch_size = exp.recipe.train.batch_size
    subset = exp.data.train.take(batches * batch_size, generator=torch.Generator().manual_seed(exp.recipe.seed))
    model = exp.model
    rows: list[dict[str, Any]] = []
    with engine.preserved(model), engine.dropout_off(model):
        model.train()
        optimizer = exp.optimizer(weight_decay=0.0)
        order = torch.Generator().manual_seed(exp.recipe.seed)  # a private batch order: exp.generator is left untouched
        initial = _evaluate(exp, subset)
        probabilities = initial.pop("probabilities")
        rows.append(
            {
                "step": 0,
                "loss": initial["loss"],
                "evaluated": True,
                "subset_loss": initial["loss"],
                "subset_acc": initial["acc"],
                "lr": optimizer.param_groups[0]["lr"],
            }
        )
        step, first_grads, norms = 0, (0, 0), []
        floor = exp.scorer.loss_floor(exp.num_classes)
        ticker = Ticker(progress, "overfit-small", steps)
        while step < steps:
            for batch in subset.batches(batch_size, shuffle=True, generator=order):
                step += 1
                scored = exp.step(optimizer, batch)
                loss = scored.loss
                if scored.grad_norm is not None:
                    norms.append(scored.grad_norm)
                if step == 1:
                    first_grads = _zero_grad_weights(model)  # (weights whose first gradient was exactly zero, weights)
                ticker(step, float(loss))
                rows.append(
                    {
                        "step": step,
                        "loss": float(loss),
                        "evaluated": False,
                        "subset_loss": math.nan,
                        "subset_acc": math.nan,
                        "lr": optimizer.param_groups[0]["lr"],
                    }
                )
                if step >= steps:
                    break
            state = _evaluate(exp, subset)
            rows[-1].update(evaluated=True, subset_loss=state["loss"], subset_acc=state["acc"])
            history = [r["subset_loss"] for r in rows if r["evaluated"]]
            if _passed(state, initial["loss"], target_fraction, floor, history) or _blown_up(state["loss"], initial["loss"]):
                break
        last_acc = rows[-1]["subset_acc"]
        ticker.finish(note=f"subset loss {rows[-1]['subset_loss']:.4g}" + (f", accuracy {last_acc:.0%}" if math.isfinite(last_acc) else ""))
        train_mode_loss, eval_mode_loss = _eval_gap(exp, subset)
    frame = pd.DataFrame(rows)
    objective = exp.scorer.objective
    expects_logits = exp.is_classification and (
        objective is None and exp.scorer.way != "loss" or objective is not None and objective.name == "cross_entropy"
    )
    facts = {
        "initial_loss": initial["loss"],
        "examples": len(subset),
        "batches": batches,
        "steps_allowed": steps,
        "outputs_are_probabilities": probabilities and expects_logits,
        "accuracy_unchecked": math.isnan(initial["acc"]) and objective is None,  # a named regression loss has no accuracy to check
        "zero_grad_weights": first_grads[0],
        "weights": first_grads[1],
        "loss_floor": floor,
        "train_mode_loss": train_mode_loss,
        "eval_mode_loss": eval_mode_loss,
        "grad_clip": exp.recipe.train.grad_clip,
        "grad_norms": torch.stack(norms).tolist() if norms else [],
    }
    return frame, facts


@torch.no_grad()
def _eval_gap(exp: Experiment, subset: Any) -> tuple[float, float]:
    """(train-mode, eval-mode) loss on the subset once the memorising is over; first SETTLE_PASSES train-mode forward
    passes (no step) let running statistics (BatchNorm) catch up with the weights, so only statistics that cannot
    follow them (momentum 0, frozen buffers) leave a gap."""
    if any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in exp.model.modules()):
        for _ in range(SETTLE_PASSES):
            for batch in subset.batches(len(subset)):
                exp.scorer(exp.model, batch)
    train_mode = _evaluate(exp, subset)["loss"]
    return train_mode, exp.evaluate(split=subset)["loss"]


@torch.no_grad()
def _evaluate(exp: Experiment, subset: Any) -> dict[str, Any]:
    """Loss and accuracy on the whole subset, as training sees it (train mode, dropout off): one forward
    pass when the subset is held as tensors, its fixed batches one by one otherwise."""
    loss_sum, weight, correct, counted, probabilities = 0.0, 0.0, 0.0, 0.0, True
    for batch in subset.batches(len(subset)):
        scored = exp.scorer(exp.model, batch)
        w = float(counted_targets(scored.targets, scored.examples))
        loss_sum, weight = loss_sum + float(scored.loss) * w, weight + w
        counts = exp.scorer.correct(scored)
        if counts is not None:
            correct, counted = correct + float(counts[0]), counted + float(counts[1])
        probabilities = probabilities and _looks_like_probabilities(scored.logits)
    return {
        "loss": loss_sum / weight if weight else math.nan,
        "acc": correct / counted if counted else math.nan,
        "probabilities": probabilities,
    }


@torch.no_grad()
def _zero_grad_weights(model: torch.nn.Module) -> tuple[int, int]:
    """(weight tensors whose gradient is None or exactly zero, weight tensors): trainable parameters with >= 2 dimensions."""
    weights = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    return sum(1 for p in weights if p.grad is None or not bool(p.grad.any())), len(weights)


def _looks_like_probabilities(logits: torch.Tensor | None) -> bool:
    """Rows that are non-negative and sum to 1: a softmax in front of a loss that expects logits."""
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[1] < 2:
        return False
    logits = logits.float()
    ones = torch.ones(logits.shape[0], device=logits.device)
    return bool((logits >= 0).all() and torch.allclose(logits.sum(dim=1), ones, atol=1e-3))


def _passed(
    state: dict[str, float], initial: float, target_fraction: float, floor: float | None = 0.0, history: list[float] | None = None
) -> bool:
    """Memorised: 100% accuracy (where it can be checked) and the loss within `target_fraction` of its way down to the
    loss's floor (0 for the plain losses; label smoothing's entropy for a smoothed cross-entropy). A loss whose floor is
    unknown (a custom loss, a step) also passes at 100% accuracy once it has converged (`history`: its subset losses)."""
    loss = state["loss"]
    checked = not math.isnan(state["acc"])
    acc_ok = not checked or state["acc"] >= 1.0  # regression: the loss alone decides
    if not (acc_ok and math.isfinite(loss)):
        return False
    if floor is not None:
        return loss - floor <= target_fraction * (initial - floor)
    return loss <= target_fraction * initial or (checked and _converged(history or [], initial))


def _converged(history: list[float], initial: float) -> bool:
    """The last CONVERGED_WINDOW of the evaluations lowered the loss by less than CONVERGED of its whole drop."""
    if len(history) < 5:
        return False
    back = max(1, int(round(CONVERGED_WINDOW * len(history))))
    drop = initial - min(history)
    return drop > 0 and history[-1 - back] - history[-1] < CONVERGED * drop


def _blown_up(loss: float, initial: float) -> bool:
    return not math.isfinite(loss) or loss > DIVERGED_FACTOR * initial


def _eval_mismatch(verdict: Verdict, facts: dict[str, Any], initial: float) -> None:
    train_loss, eval_loss = facts.get("train_mode_loss"), facts.get("eval_mode_loss")
    if train_loss is None or eval_loss is None or not (math.isfinite(train_loss) and math.isfinite(initial)):
        return
    if not math.isfinite(eval_loss) or (eval_loss > EVAL_GAP_FACTOR * train_loss and eval_loss - train_loss > EVAL_GAP_SHARE * initial):
        verdict.add(
            "eval-train-mismatch",
            "warn",
            f"after training on the subset the model scores {train_loss:.4g} on it in train mode but {eval_loss:.4g} in eval mode: "
            "what the model uses at evaluation (running statistics) does not follow training",
            "Look at the BatchNorm layers: momentum=0 or track_running_stats changed, running statistics frozen or "
            "overwritten, or buffers that are not updated; validation numbers are wrong until they follow training.",
            train_mode_loss=train_loss,
            eval_mode_loss=eval_loss,
            initial_loss=initial,
        )


def decide(frame: pd.DataFrame, facts: dict[str, Any], target_fraction: float = OVERFIT_TARGET) -> Verdict:
    """The verdict over a training run on the subset. Pure: numbers in, findings out."""
    verdict = Verdict()
    initial = float(facts["initial_loss"])
    evaluated = frame[frame["evaluated"].astype(bool)]
    losses = frame["loss"].to_numpy(dtype=float)
    final = evaluated.iloc[-1]
    final_state = {"loss": float(final["subset_loss"]), "acc": float(final["subset_acc"])}
    steps = int(frame["step"].max())
    if not math.isfinite(initial):
        verdict.add(
            "loss-diverged",
            "fail",
            "the loss is NaN/Inf before training starts",
            "Run `nndiag check-loss` first: the model or the data produce non-finite values at initialisation.",
            initial_loss=initial,
            at_init=True,
        )
        return verdict
    if facts.get("accuracy_unchecked"):
        verdict.add(
            "not-checked",
            "info",
            "training accuracy on the subset was not checked (no class logits and targets to compare), so the verdict rests on the loss alone",
            "Return logits and targets from your step (a mapping {loss, logits, targets}) to have 100% accuracy checked too.",
        )
    evaluated_losses = evaluated["subset_loss"].tolist()
    _eval_mismatch(verdict, facts, initial)
    clipping_finding(verdict, facts.get("grad_norms") or [], facts.get("grad_clip"))
    if _passed(final_state, initial, target_fraction, facts.get("loss_floor", 0.0), evaluated_losses):
        if facts.get("loss_floor") is None and not final_state["loss"] <= target_fraction * initial:
            verdict.add(
                "not-checked",
                "info",
                f"the loss's floor is not known (a custom loss or step), so memorising was judged by 100% accuracy and a loss "
                f"that stopped falling ({final_state['loss']:.4g}, from {initial:.4g})",
                "Nothing to do; a loss with a floor above 0 (label smoothing, a regulariser inside the loss) cannot reach "
                f"{target_fraction:.0%} of its initial value.",
                initial_loss=initial,
                final_loss=final_state["loss"],
            )
        return verdict
    bad_subset = frame["evaluated"].astype(bool) & ~np.isfinite(frame["subset_loss"].to_numpy(dtype=float))
    nonfinite = frame["step"][~np.isfinite(losses) | bad_subset].astype(int).tolist()
    peak = float(pd.Series(losses).replace([math.inf, -math.inf], math.nan).max())
    if nonfinite or _blown_up(final_state["loss"], initial) or peak > DIVERGED_FACTOR * initial and final_state["loss"] > initial:
        what = (
            f"the loss became NaN/Inf at step {nonfinite[0]}"
            if nonfinite
            else f"the loss rose to {peak:.4g}, {peak / initial:.3g}x its initial {initial:.4g}"
        )
        verdict.add(
            "loss-diverged",
            "fail",
            what,
            "The learning rate is too high or the initialisation too large: lower optim.lr (`nndiag lr-find` measures how far), "
            "check the init scale, and clip gradients (train.grad_clip) if spikes persist.",
            initial_loss=initial,
            peak_loss=peak,
            first_nonfinite_step=nonfinite[0] if nonfinite else None,
            steps=steps,
        )
        return verdict
    best = float(evaluated["subset_loss"].min())
    best_acc = float(evaluated["subset_acc"].max())
    evidence = {
        "initial_loss": initial,
        "best_loss": best,
        "final_loss": final_state["loss"],
        "best_fraction": best / initial,
        "final_accuracy": final_state["acc"],
        "best_accuracy": best_acc,
        "steps": steps,
        "target_fraction": target_fraction,
    }
    if best > NOT_DECREASING * initial:
        message = f"after {steps} steps the loss is {best:.4g}, {best / initial:.0%} of its initial {initial:.4g}: it barely moved"
        zero, weights = int(facts.get("zero_grad_weights") or 0), int(facts.get("weights") or 0)
        if weights and zero == weights:  # the evidence rules the learning rate out
            message += f"; the gradient of every weight ({weights} tensors) was exactly zero at the first step"
            advice = (
                "No learning rate can move weights whose gradient is exactly zero, so do not raise optim.lr. Look for ReLU "
                "units dead from the start (a large negative bias or a bad init: run `nndiag probe`), a graph cut by "
                ".detach(), torch.no_grad() or .data in the model or the loss, or a loss that does not depend on the outputs."
            )
        else:
            advice = (
                "The learning rate is probably far too low: raise optim.lr (`nndiag lr-find` measures how far); otherwise look for a bad "
                "init (run `nndiag probe`), dead units, frozen parameters (requires_grad) or an optimizer not given the model's parameters."
            )
            if zero:
                advice += (
                    f" Note: {zero} of {weights} weight tensors got exactly zero gradient at the first step (dead units or a cut graph?)."
                )
        verdict.add(
            "loss-not-decreasing",
            "fail",
            message,
            advice,
            **evidence,
            zero_gradients=bool(weights and zero == weights),
            zero_grad_weights=zero,
            weights=weights,
        )
        return verdict
    message = (
        f"the loss fell from {initial:.4g} to {best:.4g} ({best / initial:.0%} of initial) but stalled; "
        f"training accuracy reached {best_acc:.1%} in {steps} steps (target: 100% and <= {target_fraction:.0%} of the initial loss)"
    )
    advice = (
        "The model cannot memorise even a tiny sample: give it more capacity (wider/deeper layers, a nonlinearity), "
        "train longer (--steps) or look for a bug in the model or the loss."
    )
    if facts.get("outputs_are_probabilities"):
        message += "; the model's outputs are probabilities (rows are non-negative and sum to 1)"
        advice = (
            "Remove the softmax at the end of the model: cross_entropy applies log-softmax itself and expects raw logits, "
            "so squashed outputs cap how low the loss can go."
        )
    verdict.add(
        "cannot-overfit", "fail", message, advice, outputs_are_probabilities=bool(facts.get("outputs_are_probabilities")), **evidence
    )
    return verdict


def run(
    exp: Experiment,
    batches: int = OVERFIT_BATCHES,
    steps: int = OVERFIT_STEPS,
    target_fraction: float = OVERFIT_TARGET,
    progress: Progress | None = None,
) -> Result:
    frame, facts = measure(exp, batches, steps, target_fraction, progress)
    verdict = decide(frame, facts, target_fraction)
    evaluated = frame[frame["evaluated"].astype(bool)]
    perfect = evaluated[evaluated["subset_acc"] >= 1.0]
    final = evaluated.iloc[-1]
    metrics = {
        "examples": facts["examples"],
        "initial_loss": facts["initial_loss"],
        "final_loss": float(final["subset_loss"]),
        # the final subset loss over the initial one: a ratio (0.1 = a tenth; above 1 the loss rose), never a percentage
        "final_loss_ratio": float(final["subset_loss"]) / facts["initial_loss"] if facts["initial_loss"] else math.nan,
        "final_accuracy": float(final["subset_acc"]),
        "best_accuracy": float(evaluated["subset_acc"].max()),
        "steps_to_100pct": int(perfect["step"].iloc[0]) if len(perfect) else None,
        "steps_run": int(frame["step"].max()),
        "lr": float(frame["lr"].iloc[0]),
    }
    return Result("overfit-small", verdict, {"overfit_small": frame}, metrics)
