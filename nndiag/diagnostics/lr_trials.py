"""Short trial runs at fixed learning rates, for lr-find: the candidates mode (the notes' "try 1e-1, 1e-2,
1e-3, 1e-4") and the refine stage that settles the range test's pick.

Every trial starts from the same initial weights (inside `engine.preserved`) and the same batch order,
trains `steps` iterations at one LR and is scored on a fixed training subset (up to EVAL_EXAMPLES
examples). A trial "drops significantly" when that loss falls by at least SIGNIFICANT_DROP of the
initial value, and "diverged" when it is non-finite or above DIVERGED_FACTOR x the initial one.

Candidates: one LR for every param group, and a small weight decay (the recipe's largest, or
CANDIDATE_WEIGHT_DECAY when it has none); `decide_candidates` judges them (pure).
Refine: the range test's pick x REFINE_FACTORS (none above the divergence point or the highest LR the
range test reached), the optimizer exactly as configured (only its LR changes: param groups keep their
LR ratios and weight decays), a batch order of the trials' own (seed + TRIAL_ORDER_OFFSET);
`pick_refined` chooses among them (pure). lr_find.decide reads the trials into its verdict.
"""

from __future__ import annotations

import math
from typing import Any, Iterator

import numpy as np
import pandas as pd
import torch

from nndiag.diagnostics.defaults import LR_FIND_CANDIDATE_STEPS, LR_FIND_REFINE_STEPS
from nndiag.findings import DIVERGENCE_FACTOR, Verdict
from nndiag.training import engine
from nndiag.training.experiment import Experiment
from nndiag.training.progress import Progress, Ticker
from nndiag.training.splits import StreamSplit, order_kept

# -- candidates mode ---------------------------------------------------------------------------
CANDIDATE_WEIGHT_DECAY = 1e-4  # the notes' "small regularization", when the recipe sets none
SIGNIFICANT_DROP = 0.1  # a candidate "drops significantly" when its loss falls by >= 10% of the initial
DIVERGED_FACTOR = DIVERGENCE_FACTOR  # a candidate whose loss ends above 3x the initial diverged (CS231n)
EVAL_EXAMPLES = 2048  # the fixed training subset on which candidates are scored

# -- refine: short trial runs around the range test's suggestion ----------------------------
REFINE_FACTORS = (10**-0.5, 1.0, 10**0.5, 10.0)  # trial LRs: the range test's suggestion times these (half-decade steps)
REFINE_TOLERANCE = 0.05  # the smallest trial LR whose loss is within this fraction of the best trial's drop wins
TRIAL_ORDER_OFFSET = 7919  # the trials' batch order is seeded with the recipe's seed + this: an order of their own, not the range test's


def endless_batches(exp: Experiment, generator: torch.Generator) -> Iterator[Any]:
    """Shuffled training batches, epoch after epoch, in an order private to this test."""
    while True:
        empty = True
        for batch in exp.data.train.batches(exp.recipe.train.batch_size, shuffle=True, generator=generator):
            empty = False
            yield batch
        if empty:
            return


# --------------------------------------------------------------------------------------------
# Candidates mode
# --------------------------------------------------------------------------------------------


def measure_candidates(
    exp: Experiment,
    candidates: list[float],
    steps: int = LR_FIND_CANDIDATE_STEPS,
    weight_decay: float | None = None,
    *,
    own_settings: bool = False,
    order_seed: int | None = None,
    progress: Progress | None = None,
    task: str = "lr-find: trials",
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Train `steps` iterations at each LR from the same initial weights and the same batch order.

    Candidates mode (the default): one LR for every param group and `weight_decay` (default the
    optimizer's largest, or CANDIDATE_WEIGHT_DECAY when it has none). `own_settings` (the refine stage):
    the recipe's (or the user's) optimizer exactly as configured, param groups' LR ratios and weight
    decays included; only the LR changes. `order_seed` seeds the batch order (default: the recipe's seed;
    a user's DataLoader replays its own order from the same state for every LR). `progress` hears every
    iteration, as `task` (the loss is read back only on the CPU, where that is free).

    Returns (summary: one row per candidate, curves: step, lr, loss per iteration, facts)."""
    if own_settings:
        wd = None

        def make_optimizer(lr: float) -> torch.optim.Optimizer:
            optimizer = exp.optimizer()
            engine.lr_setter(optimizer)(lr)
            return optimizer
    else:
        wd = weight_decay if weight_decay is not None else (_largest_weight_decay(exp) or CANDIDATE_WEIGHT_DECAY)

        def make_optimizer(lr: float) -> torch.optim.Optimizer:
            return exp.optimizer(lr=lr, weight_decay=wd)

    seed = exp.recipe.seed if order_seed is None else order_seed
    model = exp.model
    rows, curves = [], []
    ticker = Ticker(progress, task, steps * len(candidates))
    on_cpu = exp.device.type == "cpu"
    with engine.preserved(model) as initial, order_kept(exp.data.train) as order:
        subset = _eval_subset(exp)  # a user's loader gives its first batches (and is rewound for every LR)
        before = _subset_loss(exp, subset)
        for k, lr in enumerate(candidates):
            initial.restore(model)
            order.rewind()
            model.train()
            optimizer = make_optimizer(lr)
            batches = endless_batches(exp, torch.Generator().manual_seed(seed))
            record = []
            for i in range(steps):
                record.append(exp.step(optimizer, next(batches), model=model).loss)
                ticker(k * steps + i + 1, float(record[-1]) if on_cpu else None, f"LR {lr:.3g} ({k + 1} of {len(candidates)})")
            values = torch.stack(record).tolist()
            curves += [{"lr": lr, "step": i + 1, "loss": v} for i, v in enumerate(values)]
            after = _subset_loss(exp, subset)
            rows.append(
                {
                    "lr": lr,
                    "initial_loss": before,
                    "final_loss": after,
                    "relative_drop": (before - after) / before if before else math.nan,
                    "first_batch_loss": values[0],
                    "last_batch_loss": values[-1],
                }
            )
    ticker.finish()
    summary = pd.DataFrame(rows, columns=["lr", "initial_loss", "final_loss", "relative_drop", "first_batch_loss", "last_batch_loss"])
    summary["outcome"] = [candidate_outcome(r.initial_loss, r.final_loss) for r in summary.itertuples()]
    facts = {"steps": steps, "weight_decay": wd, "eval_examples": len(subset)}
    return summary, pd.DataFrame(curves, columns=["lr", "step", "loss"]), facts


def _largest_weight_decay(exp: Experiment) -> float:
    """The largest weight decay among the param groups of the recipe's (or the user's) optimizer."""
    return max((g.get("weight_decay", 0.0) for g in exp.optimizer().param_groups), default=0.0)


def _eval_subset(exp: Experiment) -> Any:
    """The fixed training subset on which candidates and trials are scored (up to EVAL_EXAMPLES examples,
    a seeded choice). Streamed data stays streamed: a few thousand images would not fit on a GPU at once."""
    generator = torch.Generator().manual_seed(exp.recipe.seed)
    if isinstance(exp.data.train, StreamSplit):
        return exp.data.train.subset(EVAL_EXAMPLES, generator=generator)
    return exp.data.train.take(EVAL_EXAMPLES, generator=generator)


@torch.no_grad()
def _subset_loss(exp: Experiment, subset: Any) -> float:
    return exp.evaluate(split=subset)["loss"]


def candidate_outcome(initial: float, final: float) -> str:
    """drops | too-low (barely moved) | diverged. Pure."""
    if not math.isfinite(final) or (initial > 0 and final > DIVERGED_FACTOR * initial):
        return "diverged"
    if initial > 0 and (initial - final) >= SIGNIFICANT_DROP * initial:
        return "drops"
    return "too-low"


def decide_candidates(summary: pd.DataFrame) -> tuple[Verdict, float | None]:
    """The verdict over candidate runs, and the best candidate LR. Pure."""
    verdict = Verdict()
    table = ", ".join(f"{r.lr:g}: {r.final_loss:.3g} ({r.outcome})" for r in summary.itertuples())
    dropping = summary[summary["outcome"] == "drops"]
    if dropping.empty:
        if (summary["outcome"] == "diverged").all():
            verdict.add(
                "diverged-immediately",
                "fail",
                f"every candidate LR diverged ({table})",
                "Try smaller LRs (e.g. 1e-4,1e-5,1e-6) and check the initialisation with `nndiag check-loss`.",
                candidates=summary["lr"].tolist(),
            )
        else:
            verdict.add(
                "no-decrease",
                "fail",
                f"no candidate LR lowered the loss by {SIGNIFICANT_DROP:.0%} or more in the allotted iterations ({table})",
                "Try larger LRs or more --candidate-steps; if none helps, look for a bug with `nndiag overfit-small`.",
                candidates=summary["lr"].tolist(),
            )
        return verdict, None
    best = dropping.loc[dropping["final_loss"].idxmin()]
    best_lr = float(best["lr"])
    lrs = sorted(summary["lr"].tolist())
    diverged = summary[summary["outcome"] == "diverged"]["lr"].tolist()
    if best_lr == lrs[-1] and len(lrs) > 1:
        verdict.add(
            "range-too-narrow",
            "warn",
            f"the best candidate is the largest one tried ({best_lr:g}) and it did not diverge",
            f"Also try {best_lr * 10:g} and {best_lr * 100:g}: a larger LR may be better.",
            best_lr=best_lr,
        )
    elif best_lr == lrs[0] and len(lrs) > 1 and diverged:
        verdict.add(
            "range-too-narrow",
            "warn",
            f"the best candidate is the smallest one tried ({best_lr:g})",
            f"Also try {best_lr / 10:g}: a smaller LR may be better.",
            best_lr=best_lr,
        )
    return verdict, best_lr


# --------------------------------------------------------------------------------------------
# Refine: short trial runs around the range test's suggestion
# --------------------------------------------------------------------------------------------


def refine_lrs(range_test_lr: float, ceiling: float) -> list[float]:
    """The trial LRs: the range test's pick x REFINE_FACTORS, none above `ceiling` (the divergence point,
    or the highest LR the range test reached when it never diverged: no trial goes where the test did
    not). Pure."""
    return [range_test_lr * f for f in REFINE_FACTORS if range_test_lr * f <= ceiling]


def pick_refined(summary: pd.DataFrame) -> float | None:
    """The trial LR to use: among the trials that did not diverge, the smallest whose subset loss is within
    REFINE_TOLERANCE of the best trial's drop from the initial loss (a smaller LR that trains as well is
    the safer pick for a longer run). None when no trial lowered the loss. Pure; given the trials'
    outcomes, invariant to scaling and shifting the loss."""
    usable = summary[(summary["outcome"] != "diverged") & np.isfinite(summary["final_loss"])]
    if usable.empty:
        return None
    initial, best = float(usable["initial_loss"].iloc[0]), float(usable["final_loss"].min())
    if not best < initial:
        return None
    close = usable[usable["final_loss"] <= best + REFINE_TOLERANCE * (initial - best)]
    return float(close["lr"].min())


def refine(
    exp: Experiment, range_test_lr: float, ceiling: float, steps: int = LR_FIND_REFINE_STEPS, progress: Progress | None = None
) -> pd.DataFrame:
    """Train `steps` iterations at each trial LR (`refine_lrs`) with the recipe's (or the user's) optimizer
    as configured, only the LR changed, from the same initial weights, in a batch order of the trials'
    own (seed + TRIAL_ORDER_OFFSET). Returns one row per trial, with its `factor` of the range test's pick
    and whether `pick_refined` chose it (`chosen`)."""
    summary, _, _ = measure_candidates(
        exp,
        refine_lrs(range_test_lr, ceiling),
        steps,
        own_settings=True,
        order_seed=exp.recipe.seed + TRIAL_ORDER_OFFSET,
        progress=progress,
        task="lr-find: refine",
    )
    chosen = pick_refined(summary)
    summary.insert(1, "factor", summary["lr"] / range_test_lr)
    summary["chosen"] = summary["lr"] == chosen
    return summary
