"""Step 1 of the recipe: check the loss at initialisation, regularization off.

An untrained model should score what its loss function predicts for near-uniform outputs: ln C
for softmax cross-entropy, (C-1)·margin/C for PyTorch's multi_margin (SVM hinge), ln 2 for binary
cross-entropy, the target variance for MSE. A loss far above that usually means an output layer
initialised too large or unnormalised inputs; far below it, a model that already "knows" the
labels (a leak, or weights that are not fresh). Turning weight decay on must raise the objective.

Rules (documented thresholds, all tested):
  non-finite-loss          fail  any measured batch loss is NaN/Inf
  initial-loss-high        fail  mean loss > expected x (1 + tolerance)          (default tolerance 1.0)
  initial-loss-low         fail  mean loss < expected / (1 + tolerance) while the accuracy at init is at chance (the loss
                                 measures something else); info when the model already predicts the labels (trained weights)
  regularization-no-effect warn  weight_decay > 0 but the L2 term it adds is < 1e-4 of the loss
  not-checked              info  no expected loss is known: the step or model gives no class logits
                                 (the loss is still reported; `expected=` / --expected supplies one); or the
                                 weight decay is decoupled (AdamW): it adds no L2 term to the loss, so whether
                                 it raises the objective does not apply; the finding says what it does instead
                                 (each step shrinks every weight by lr x weight_decay of its value)
  ... and the checks of nndiag.diagnostics.structure on one batch (frozen parameters, parameters without a
  gradient or outside the optimizer, bounded outputs, symmetric units, randomness at eval, examples that
  depend on each other, a loss that broadcasts or sums, regularisation that dominates); their table is
  parameters.csv. The input scale is check-data's (nndiag.diagnostics.check_data).
Where the logits are known, C is the size of their class axis (the last dimension for a language
model's (B, T, V) logits), and targets of -100 are ignored; a step, a model's own loss or a custom
loss with class logits and integer targets is taken to be a softmax cross-entropy (ln C).
The tolerance is symmetric in log-ratio: by default the loss must lie within a factor of 2 of the
prediction. Why so wide: a healthy Kaiming or Xavier network applies its variance-preserving init to
the output layer too, so its logits start with std ~1-1.5, which adds up to ~1 nat to ln C (measured:
1.3x ln 10 on digits, 1.8x ln 3 on the standardised 2-D spiral). An output layer initialised an
order of magnitude too large lands far outside (a last layer scaled x20: 2.4x ln 3 on the spiral,
14x ln 10 on a digits Kaiming MLP); `--tolerance 0.25` holds a model to the notes' "loss ~ ln C" more strictly.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import torch

from nndiag.diagnostics import structure
from nndiag.diagnostics.defaults import CHECK_LOSS_BATCHES, CHECK_LOSS_TOLERANCE
from nndiag.findings import Verdict
from nndiag.result import Result
from nndiag.training import engine
from nndiag.training.experiment import Experiment
from nndiag.training.progress import Progress, Ticker
from nndiag.training.scoring import Scored
from nndiag.training.splits import TensorSplit

NEGLIGIBLE_PENALTY = 1e-4  # an L2 term smaller than this fraction of the loss has no effect
TRAINED_SHARE = 0.4  # initial-loss-low is info when the accuracy at init covers this share of the way from chance to
# 100% (10 classes: 46%; 2 classes: 70%): the weights are trained (fine-tuning, a checkpoint), the loss is fine


def measure(
    exp: Experiment,
    batches: int = CHECK_LOSS_BATCHES,
    expected: float | None = None,
    expected_why: str = "given by the user",
    progress: Progress | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Loss of the untrained model on `batches` training batches (dropout and weight decay off).
    `expected`: the loss an untrained model should have, when the user knows better than the rule;
    `expected_why` says where it came from. `progress` hears every batch."""
    model = exp.model
    rows, scored = [], []
    ticker = Ticker(progress, "check-loss", batches, "batches")
    with engine.preserved(model), torch.no_grad(), engine.dropout_off(model):
        model.train()  # BatchNorm as in training; dropout is off
        optimizer = exp.optimizer()
        penalty = float(engine.l2_penalty(optimizer))  # what the recipe's weight decay adds (nothing when it is decoupled)
        order = torch.Generator().manual_seed(exp.recipe.seed)  # a private batch order: exp.generator is left untouched
        for i, batch in enumerate(exp.data.train.batches(exp.recipe.train.batch_size, shuffle=True, generator=order)):
            if i >= batches:
                break
            result = exp.scorer(model, batch)
            loss = float(result.loss)
            counts = exp.scorer.correct(result)
            logits = result.logits if isinstance(result.logits, torch.Tensor) else None
            rows.append(
                {
                    "batch": i,
                    "examples": result.examples,
                    "loss": loss,
                    "regularized_loss": loss + penalty,
                    "accuracy": float(counts[0]) / float(counts[1]) if counts is not None and float(counts[1]) > 0 else math.nan,
                    "logit_std": float(logits.float().std()) if logits is not None and logits.numel() > 1 else math.nan,
                }
            )
            scored.append(result if i == 0 else Scored(result.loss, None, result.targets, result.examples))  # keep one batch's logits
            ticker(i + 1, loss)
    ticker.finish()
    frame = pd.DataFrame(rows)
    if expected is not None:
        why = expected_why
    else:
        targets = exp.data.train.take(10_000).y if isinstance(exp.data.train, TensorSplit) else None
        expected, why = exp.scorer.expected_initial_loss(scored, targets if isinstance(targets, torch.Tensor) else None)
    frame["expected_loss"] = expected if expected is not None else math.nan
    facts = {
        "expected": expected,
        "expected_why": why,
        "penalty": penalty,
        "weight_decay": max(  # coupled (L2) decay only: decoupled decay (AdamW) adds no term to the loss
            (g.get("weight_decay", 0.0) for g in optimizer.param_groups if not engine.decoupled(optimizer, g)), default=0.0
        ),
        "decoupled_decay": max((g.get("weight_decay", 0.0) for g in optimizer.param_groups if engine.decoupled(optimizer, g)), default=0.0),
        "decay_per_step": engine.decay_per_step(optimizer),  # decoupled: the share of each weight one step takes off
        "optimizer": type(optimizer).__name__,
        "chance_accuracy": 1.0 / exp.num_classes if exp.is_classification and exp.num_classes else None,
    }
    mean = float(frame["loss"].mean()) if len(frame) else math.nan
    facts["structure"] = structure.measure(exp, initial_loss=mean if math.isfinite(mean) else None)
    return frame, facts


def decide(frame: pd.DataFrame, facts: dict[str, Any], tolerance: float = CHECK_LOSS_TOLERANCE) -> Verdict:
    """The verdict over the measured losses. Pure: numbers in, findings out."""
    verdict = Verdict()
    losses = frame["loss"].to_numpy(dtype=float)
    if "structure" in facts:
        structure.decide(facts["structure"], verdict)
    bad = [i for i, v in enumerate(losses) if not math.isfinite(v)]
    if bad:
        verdict.add(
            "non-finite-loss",
            "fail",
            f"the loss at initialisation is NaN/Inf on {len(bad)} of {len(losses)} batches (first: batch {bad[0]})",
            "Look for NaN/Inf in the inputs, a log or division of zero in the model or loss, and an init scale that overflows; "
            "check that the targets are valid class indices.",
            nonfinite_batches=len(bad),
            batches=len(losses),
        )
        return verdict
    mean = float(losses.mean())
    if facts["expected"] is None:
        verdict.add(
            "not-checked",
            "info",
            f"the initial loss {mean:.4g} was not compared with what an untrained model should score: {facts['expected_why']}",
            "Return logits and targets from your step (a mapping {loss, logits, targets}) so that C and ln C follow from the "
            "logits, or give the expected value (--expected, or expected= in Python).",
            initial_loss=mean,
        )
        _check_regularization(verdict, facts, mean)
        return verdict
    expected = float(facts["expected"])
    ratio = mean / expected if expected > 0 else math.inf if mean > 0 else 1.0
    evidence = {
        "initial_loss": mean,
        "expected_loss": expected,
        "ratio": ratio,
        "tolerance": tolerance,
        "logit_std": float(frame["logit_std"].mean()),
    }
    if ratio > 1 + tolerance:
        verdict.add(
            "initial-loss-high",
            "fail",
            f"initial loss {mean:.4g} is {ratio:.2f}x the expected {expected:.4g} ({facts['expected_why']}); "
            f"the outputs have std {evidence['logit_std']:.3g}",
            "The untrained model is confidently wrong. Scale down the last layer's initial weights (e.g. x0.01 or zeros), "
            "use xavier/kaiming init, and normalise the inputs"
            + (" and the regression targets" if "variance" in facts["expected_why"] else "")
            + ".",
            **evidence,
        )
    elif ratio < 1 / (1 + tolerance):
        accuracy, chance = float(frame["accuracy"].mean()) if "accuracy" in frame else math.nan, facts.get("chance_accuracy")
        trained = chance is not None and math.isfinite(accuracy) and accuracy - chance >= TRAINED_SHARE * (1 - chance)
        if trained:  # weights that already predict the labels: fine-tuning or a checkpoint, not a fault of the loss
            verdict.add(
                "initial-loss-low",
                "info",
                f"initial loss {mean:.4g} is only {ratio:.2f}x the expected {expected:.4g} ({facts['expected_why']}) and the model "
                f"already predicts {accuracy:.0%} of the labels (chance {chance:.0%}): its weights are trained (fine-tuning, a "
                "checkpoint), so an untrained model's loss does not apply",
                "Nothing to do when you fine-tune or resume; if the model should start from scratch, it is not freshly "
                "initialised (or it reads a label that leaks into the inputs).",
                **evidence,
                initial_accuracy=accuracy,
            )
        else:
            measured = (
                f"while the model predicts only {accuracy:.0%} of the labels (chance {chance:.0%}): its weights are not trained, "
                if chance is not None and math.isfinite(accuracy)
                else ": "
            )
            verdict.add(
                "initial-loss-low",
                "fail",
                f"initial loss {mean:.4g} is only {ratio:.2f}x the expected {expected:.4g} ({facts['expected_why']}) "
                f"{measured}so the loss is lower than an untrained model can score: it does not measure the outputs against "
                "the targets",
                "Check that the loss is the one you meant and that it compares the outputs with the targets (not the "
                "outputs with themselves, or a constant); when the model is trained already (fine-tuning), nothing to do.",
                **evidence,
            )
    _check_regularization(verdict, facts, mean)
    return verdict


def _check_regularization(verdict: Verdict, facts: dict[str, Any], mean: float) -> None:
    weight_decay = float(facts["weight_decay"])  # coupled (L2) decay only
    decoupled = float(facts.get("decoupled_decay") or 0.0)
    if decoupled > 0:
        per_step = float(facts.get("decay_per_step") or 0.0)
        verdict.add(
            "not-checked",
            "info",
            f"{facts.get('optimizer', 'the optimizer')}'s weight decay {decoupled:g} is decoupled: it adds no L2 term to the "
            f"loss, so whether it raises the objective does not apply; instead each step shrinks every weight by lr x "
            f"weight_decay = {per_step:.3g} of its value (x{(1 - per_step) ** 1000:.3g} over 1,000 steps, before the gradients' own changes)",
            "To see regularization raise the objective, use an optimizer with coupled (L2) weight decay, such as SGD or Adam; "
            "with AdamW, judge weight_decay by the validation curves (`nndiag curves`).",
            weight_decay=decoupled,
            decay_per_step=per_step,
            decoupled=True,
        )
    if weight_decay > 0 and facts["penalty"] < NEGLIGIBLE_PENALTY * max(mean, 1e-12):
        verdict.add(
            "regularization-no-effect",
            "warn",
            f"weight_decay {weight_decay:g} adds only {facts['penalty']:.3g} to a loss of {mean:.4g} "
            f"(< {NEGLIGIBLE_PENALTY:g} of it): turning regularization on barely raises the objective",
            "Raise weight_decay (1e-5 to 1e-3 are usual starting points), or check that the optimizer's parameter groups "
            "actually carry the weight decay.",
            weight_decay=weight_decay,
            penalty=facts["penalty"],
            initial_loss=mean,
        )


def run(
    exp: Experiment,
    batches: int = CHECK_LOSS_BATCHES,
    tolerance: float = CHECK_LOSS_TOLERANCE,
    expected: float | None = None,
    expected_why: str = "given by the user",
    progress: Progress | None = None,
) -> Result:
    frame, facts = measure(exp, batches, expected, expected_why, progress)
    verdict = decide(frame, facts, tolerance)
    losses = frame["loss"]
    expected = facts["expected"]
    metrics = {
        "initial_loss": float(losses.mean()),
        "expected_loss": expected,
        "expected_from": facts["expected_why"],
        "ratio": float(losses.mean()) / expected if expected else math.nan,
        "loss_std_across_batches": float(losses.std()) if len(losses) > 1 else 0.0,
        "initial_accuracy": float(frame["accuracy"].mean()),
        "logit_std": float(frame["logit_std"].mean()),
        "regularized_loss": float(frame["regularized_loss"].mean()) if facts["weight_decay"] or not facts["decoupled_decay"] else None,
        "l2_penalty": facts["penalty"] if facts["weight_decay"] or not facts["decoupled_decay"] else None,  # AdamW adds no L2 term
        "weight_decay": facts["weight_decay"] or facts["decoupled_decay"],
        "weight_decay_kind": ("L2" if facts["weight_decay"] else "decoupled")
        if facts["weight_decay"] or facts["decoupled_decay"]
        else None,
        "decay_per_step": facts["decay_per_step"]
        if facts["decoupled_decay"]
        else None,  # decoupled: the share of each weight one step takes off
        "batches": len(frame),
        "trainable_share": facts["structure"]["trainable"] / max(facts["structure"]["parameters"], 1),
    }
    tables = {"check_loss": frame, "parameters": pd.DataFrame(facts["structure"]["table"])}
    return Result("check-loss", verdict, tables, metrics)
