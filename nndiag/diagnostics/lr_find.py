"""Step 3 of the recipe: find a learning rate that makes the loss drop.

Two modes.

**Range test** (Smith 2015, as in fastai / torch-lr-finder / Lightning). The LR rises from `start` to
`end` over `steps` points, exponentially (default 1e-7 -> 10) or linearly; at each point the model
takes `batches_per_lr` optimizer steps at that LR (default LR_FIND_BATCHES_PER_LR = 4) and the point's
loss is their mean. The recorded LR is the one the optimizer actually used. Four batches, not fastai's
one: the mean of 4 has half the point-to-point noise, and the curve reflects 4x more training at each
LR. On the 17 tuning problems of benchmarks/problems.py the rule below was good (screened on the cached grid) on 27 of 34
(problem, step count) pairs on 4-batch curves, 26 on 2-batch and 22 on 1-batch curves, and too high
on 5 of 102 runs against 15 (benchmarks/results/lr_find_rule_search.md). The test takes 4x fastai's
steps (400 by default; the per-step overhead against a bare loop is unchanged). The loss is smoothed for display and for the
stop rule by a bias-corrected exponential moving average, beta = SMOOTH_BETA (0.9: fastai's 0.98 lags
about 50 steps, half of a 100-step test). The test stops on divergence: a non-finite loss, or a
smoothed loss above STOP_FACTOR (4, fastai's) times the best smoothed loss so far. It runs on the
experiment's model, with a fresh optimizer of the recipe's kind, inside `engine.preserved`, with its own seeded batch order, so the
model's parameters and buffers, the optimizer's state and LR, train/eval flags, the torch / numpy /
python RNG states and the experiment's batch order are all exactly as before.

**Candidates** (the notes' "try 1e-1, 1e-2, 1e-3, 1e-4"; the trial runs of this mode and of the refine stage
live in nndiag.diagnostics.lr_trials): `candidate_steps` (100) iterations at each
LR over the full training data, each from the same initial weights and batch order, with a small
weight decay (the recipe's, or CANDIDATE_WEIGHT_DECAY = 1e-4 when it has none). A candidate makes the
loss "drop significantly" when its loss on a fixed training subset (up to EVAL_EXAMPLES) falls by at
least SIGNIFICANT_DROP (10%) of the initial value; "diverged" when that loss is non-finite or above
DIVERGED_FACTOR (3, CS231n's "stop early") times the initial one.

**Refine** (after the range test, unless `refine_steps` is 0): the range test's pick is settled by
trial runs of `refine_steps` (LR_FIND_REFINE_STEPS = 100) iterations at the pick x REFINE_FACTORS
(0.316, 1, 3.16, 10), none above the divergence point or the highest LR tested, measured like
candidates (same initial weights, the fixed training subset) but with the optimizer exactly as
configured (only its LR changed: param groups keep their LR ratios and weight decays) and a batch
order of the trials' own (seed + TRIAL_ORDER_OFFSET). The suggestion is the smallest trial LR whose
subset loss is within REFINE_TOLERANCE (5%) of the best trial's drop (`pick_refined`, pure), and
[lr_min, lr_max] widens to hold it: `decide(frame, facts, trials)` reads the trials (`settle`, pure) into the one verdict. No trial lowered the loss: `unreliable-suggestion` (warn), the
range test's pick stands (none diverged) or falls below the diverging trials. A range test sweeps
the LR past the model, so its curve shows how fast the loss falls during the sweep, not how well one
constant LR trains: read off the curve alone the best LR was missed on 8 of 33 benchmark problems at
300 steps, mostly 3-30x too low; with the trials, on 2 (benchmarks/results/lr_find_quality.md).

The range test's pick (`suggest`, pure; invariant to scaling and shifting the loss, because every step
is an order statistic, a mean, or a comparison of loss differences):
  1. Keep the points before the first non-finite loss.
  2. Smooth the raw losses with a centred running median (robust to spikes) followed by a centred
     running mean, each over ROBUST_WINDOW of the points (at least 3). Centred, so there is no lag
     to shift the curve toward higher LRs (an EMA does). Noise = 1.4826 x median |second
     difference of the raw losses| / sqrt 6 (a robust standard deviation of the point-to-point
     noise, blind to linear trends).
  3. drop = start level - smoothed minimum, where the start level is the median raw loss of the first
     START_POINTS (10%, at least 3) points. If drop <= NOISE_FACTOR (3) x noise: `no-decrease`
     (unless the curve then rises: step 6's flat case). (On 500 simulated flat curves of pure noise
     the largest chance drop was 2.8 deviations.)
  4. Divergence point = the first non-finite loss, or the first point after the minimum whose smoothed
     loss climbs back by more than RISE_FRACTION (50%) of the drop (when there was no drop: the first
     point NOISE_FACTOR x noise above the start), or the last point when the measurement stopped on
     its divergence rule.
  5. lr_max = the LR of the smoothed minimum, never above the divergence point: beyond it a larger
     LR stops helping. lr_min = the first LR where the smoothed loss has covered HALF_FRACTION (50%)
     of its drop (the middle of the steep descent, where steepest-slope rules land), or the
     suggestion when that is lower.
  6. suggested_lr = the knee, the first LR where the smoothed loss has covered KNEE_FRACTION (90%) of
     its drop (where the descent ends), but never closer than DIVERGENCE_MARGIN (20x) below the
     divergence point: min(knee, lr_diverged / DIVERGENCE_MARGIN). Why: the best constant LR for a
     fixed budget lies near where the descent ends, and a run at a constant LR must stay well clear of
     the LR that blows the range test up (the range test's minimum lies past the best LR with
     Adam-like optimizers, whose loss at a point reflects all the training before it; and a too-high
     LR destroys a run while a too-low one only trains slower, so where the knee sits near the cliff
     the margin wins). Derived on the tuning problems of benchmarks/problems.py (splits derive and
     report), reported on the holdout (benchmarks/results/lr_find_quality.md; docs/commands/lr-find.md, "The
     suggestion rule"). No divergence seen: the knee.
     A flat curve that then rises (drop within the noise, a divergence point after the first
     EARLY_FRACTION of the points), as a model that is already trained gives (fine-tuning): the
     suggestion is the LR where the loss starts to rise divided by the same DIVERGENCE_MARGIN,
     flagged `unreliable-suggestion` (reason "flat"), and lr_max = that LR.
  7. Reliability (`unreliable-suggestion`): the rule is run again on the even and on the odd points
     alone (two range tests of half the resolution over the same span). The suggestion is unreliable
     when the drop is under RELIABLE_DROP (5) noise deviations ("noisy": noise comparable to the drop),
     or when the three suggestions are more than UNSTABLE_FACTOR (4x, 0.6 decade) apart or a half gives
     none ("unstable"). The suggestion is still given (and --apply still writes it), with the spread.
Findings:
  no-decrease           fail  step 3; or fewer than MIN_POINTS (5) finite points to judge a curve
  diverged-immediately  fail  the divergence point lies in the first EARLY_FRACTION (10%) of the
                              points, or the very first loss is non-finite (the start LR is already too high)
  range-too-narrow      warn  no divergence seen and the minimum lies in the last EDGE_FRACTION
                              (10%) of the points: the best LR may lie beyond `end`
  unreliable-suggestion warn  step 7 (noisy, unstable), or the flat-then-rising curve of step 6;
                              info once a refine trial that clearly lowered the loss settled the LR;
                              or no refine trial lowered the loss (trials-flat, trials-diverged)
Candidates mode: no-decrease (fail) when no candidate drops significantly (diverged-immediately when
every candidate diverged); range-too-narrow (warn) when the best candidate is the largest LR tried
and it did not diverge, or the smallest while a larger one diverged.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from nndiag.config import edit
from nndiag.diagnostics import lr_trials
from nndiag.diagnostics.defaults import (
    LR_FIND_BATCHES_PER_LR,
    LR_FIND_CANDIDATE_STEPS,
    LR_FIND_END,
    LR_FIND_MODE,
    LR_FIND_REFINE_STEPS,
    LR_FIND_START,
    LR_FIND_STEPS,
)
from nndiag.diagnostics.lr_trials import endless_batches, pick_refined
from nndiag.errors import BadInput
from nndiag.findings import Verdict
from nndiag.result import Result
from nndiag.training import engine
from nndiag.training.experiment import Experiment
from nndiag.training.progress import Progress, Ticker
from nndiag.training.splits import order_kept

# -- measurement ------------------------------------------------------------------------------
SMOOTH_BETA = 0.9  # bias-corrected EMA factor of smoothed_loss (fastai 0.98 lags ~50 steps; 0.9 ~9)
STOP_FACTOR = 4.0  # stop when smoothed loss > this x best smoothed loss (fastai 4, torch-lr-finder 5)
CHECK_EVERY_ACCELERATOR = 10  # on GPU/MPS the stop rule reads losses back every this many points (one sync each)

# -- suggestion (all thresholds are fractions of the curve's own drop or of its points) ---------
ROBUST_WINDOW = 0.05  # smoothing window, as a fraction of the points (5 of 100), at least 3
NOISE_FACTOR = 3.0  # a drop must exceed this many (per-point) noise standard deviations
START_POINTS = 0.1  # the start level: median raw loss of this fraction of the first points (at least 3)
RISE_FRACTION = 0.5  # a climb back by this fraction of the drop after the minimum is divergence
HALF_FRACTION = 0.5  # lr_min: the first point that has covered this fraction of the drop
KNEE_FRACTION = 0.9  # the knee (the suggestion): the first point that has covered this fraction of the drop (derived on the tuning problems: 0.9 and 20 lie on a plateau of the rule's score)
DIVERGENCE_MARGIN = 20.0  # the suggestion stays at least this factor below the divergence point, flat curves included (LR ratio; derived with KNEE_FRACTION)
MIN_POINTS = 5  # fewer finite points cannot make a curve
EARLY_FRACTION = 0.1  # divergence within this fraction of the points: diverged immediately
EDGE_FRACTION = 0.1  # a minimum within this fraction of the end, without divergence: range too narrow
RELIABLE_DROP = 5.0  # unreliable-suggestion: a drop below this many (per-point) noise deviations is comparable to the noise
UNSTABLE_FACTOR = 4.0  # unreliable-suggestion: the half-curves' suggestions differ by more than this factor (0.6 decade)


# --------------------------------------------------------------------------------------------
# Range test: measure
# --------------------------------------------------------------------------------------------


def check_options(start: float, end: float, mode: str, candidates: list[float] | None = None, refine_steps: int = 0) -> None:
    """Reject a range, candidates or a refine stage that cannot make a test (BadInput naming the flag)."""
    if mode not in ("exp", "linear"):
        raise BadInput(f"expected exp or linear, got {mode!r}", where="--mode")
    if not 0 < start < math.inf:
        raise BadInput(f"expected a learning rate > 0, got {start:g}", where="--start")
    if not start < end < math.inf:  # also rejects NaN
        raise BadInput(f"--start ({start:g}) must be below --end ({end:g})", where="--start")
    for lr in candidates or []:
        if not 0 < lr < math.inf:
            raise BadInput(f"every candidate LR must be a finite number > 0, got {lr!r}", where="--candidates")
    if isinstance(refine_steps, bool) or not isinstance(refine_steps, (int, np.integer)) or refine_steps < 0:
        raise BadInput(f"expected a whole number of iterations >= 0 (0: no refine stage), got {refine_steps!r}", where="--refine-steps")


def parse_candidates(text: str | None) -> list[float] | None:
    """'1e-1,1e-2' -> [0.1, 0.01]; bad text raises BadInput naming --candidates."""
    if text is None:
        return None
    values = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        try:
            values.append(float(part))
        except ValueError:
            raise BadInput(
                f"expected comma-separated learning rates such as 1e-1,1e-2,1e-3,1e-4, got {part!r}", where="--candidates"
            ) from None
    if not values:
        raise BadInput("expected at least one learning rate, e.g. 1e-1,1e-2,1e-3,1e-4", where="--candidates")
    return values


def lr_schedule(start: float, end: float, steps: int, mode: str = LR_FIND_MODE) -> list[float]:
    """The LR at each point: geometric (exp) or evenly spaced (linear), both ends included."""
    if steps == 1:
        return [float(start)]
    if mode == "exp":
        ratio = math.log(end / start)
        return [float(start * math.exp(ratio * i / (steps - 1))) for i in range(steps)]
    return [float(start + (end - start) * i / (steps - 1)) for i in range(steps)]


def measure(
    exp: Experiment,
    start: float = LR_FIND_START,
    end: float = LR_FIND_END,
    steps: int = LR_FIND_STEPS,
    mode: str = LR_FIND_MODE,
    batches_per_lr: int = LR_FIND_BATCHES_PER_LR,
    optimizer: torch.optim.Optimizer | None = None,
    check_every: int | None = None,
    progress: Progress | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Run the range test; one row per LR point: step, lr, loss, smoothed_loss.

    `optimizer` defaults to a fresh one of the recipe's kind; whichever is used, it and the model are
    handed back exactly as found. Losses stay on the device and are read back every `check_every`
    points (1 on CPU, where reading is free) to apply the stop rule; `progress` hears each read-back
    (optimizer steps done of steps x batches_per_lr).
    """
    model = exp.model
    optimizer = optimizer if optimizer is not None else exp.optimizer()
    lrs = lr_schedule(start, end, steps, mode)
    if check_every is None:
        check_every = 1 if exp.device.type == "cpu" else CHECK_EVERY_ACCELERATOR
    generator = torch.Generator().manual_seed(exp.recipe.seed)  # exp.generator is left untouched
    pending: list[torch.Tensor] = []  # losses on the device, not yet read back
    losses: list[float] = []
    used: list[float] = []
    ema = _Ema(SMOOTH_BETA)
    smoothed: list[float] = []
    stopped = "completed"
    started = time.perf_counter()
    ticker = Ticker(progress, "lr-find: range test", steps * batches_per_lr)
    with engine.preserved(model, optimizer), order_kept(exp.data.train):
        model.train()
        set_lr = engine.lr_setter(optimizer)  # other param groups keep their ratio to the first
        batches = endless_batches(exp, generator)
        for i, lr in enumerate(lrs):
            set_lr(lr)
            used.append(float(optimizer.param_groups[0]["lr"]))
            total = None
            for _ in range(batches_per_lr):
                loss = exp.step(optimizer, next(batches), model=model).loss
                total = loss if total is None else total + loss
            pending.append(total / batches_per_lr if batches_per_lr > 1 else total)
            if (i + 1) % check_every and i + 1 < steps:
                continue
            values = [pending[0].item()] if len(pending) == 1 else torch.stack(pending).tolist()  # one read-back
            pending.clear()
            for value in values:
                losses.append(value)
                smoothed.append(ema.update(value))
                reason = ema.stop_reason(value)
                if reason:
                    stopped = reason
                    break
            ticker(len(losses) * batches_per_lr, losses[-1], f"LR {used[len(losses) - 1]:.3g}")
            if stopped != "completed":
                break
    ticker.finish(note="" if stopped == "completed" else f"stopped: {stopped}")
    seconds = time.perf_counter() - started
    n = len(smoothed)
    frame = pd.DataFrame({"step": range(1, n + 1), "lr": used[:n], "loss": losses, "smoothed_loss": smoothed})
    facts = {
        "start": start,
        "end": end,
        "planned_steps": steps,
        "mode": mode,
        "batches_per_lr": batches_per_lr,
        "stopped": stopped,
        "seconds": seconds,
        "beta": SMOOTH_BETA,
        "stop_factor": STOP_FACTOR,
    }
    return frame, facts


class _Ema:
    """Bias-corrected exponential moving average with the stop rule."""

    def __init__(self, beta: float):
        self.beta, self.avg, self.t, self.best = beta, 0.0, 0, math.inf

    def update(self, value: float) -> float:
        if not math.isfinite(value):
            return math.nan
        self.t += 1
        self.avg = self.beta * self.avg + (1 - self.beta) * value
        smoothed = self.avg / (1 - self.beta**self.t)
        self.last = smoothed
        return smoothed

    def stop_reason(self, value: float) -> str | None:
        if not math.isfinite(value):
            return "non-finite"
        if self.best > 0 and self.last > STOP_FACTOR * self.best:
            return "diverged"
        self.best = min(self.best, self.last)
        return None


# --------------------------------------------------------------------------------------------
# Range test: the suggestion and the verdict (pure)
# --------------------------------------------------------------------------------------------


@dataclass
class Suggestion:
    suggested_lr: float | None  # the LR to use
    lr_min: float | None  # the low end of the useful range (the loss starts to respond)
    lr_max: float | None  # the high end (the descent is over), never above the divergence point
    lr_at_min_loss: float | None  # where the smoothed loss is lowest
    lr_diverged: float | None  # where the loss blew up (None: not seen)
    drop: float  # smoothed start loss - smoothed minimum
    noise: float  # robust standard deviation of the raw loss, from its second differences (trends cancel)
    points: int  # finite points used
    index_min: int | None = None
    index_diverged: int | None = None
    problem: str | None = None  # why there is no suggestion: too-few-points | no-decrease | first-non-finite
    spread: tuple[float, float] | None = None  # lowest and highest suggestion over the curve and its two half-curves
    unreliable: str | None = None  # why the suggestion is not to be trusted: noisy | unstable (None: it is)
    range_test_lr: float | None = None  # the range test's own pick, before the refine stage's trials (decide sets it)
    refined_lr: float | None = None  # the trial LR the refine stage chose (None: no trials, or none lowered the loss)


def robust_smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Centred running median, then centred running mean, both over `window` points (shrinking at
    the ends). Equivariant: robust_smooth(a*v + b) = a*robust_smooth(v) + b for a > 0."""
    n = len(values)
    half = max(window // 2, 1)
    median = np.array([np.median(values[max(0, i - half) : i + half + 1]) for i in range(n)])
    return np.array([median[max(0, i - half) : i + half + 1].mean() for i in range(n)])


def _window(n: int) -> int:
    w = max(3, int(round(ROBUST_WINDOW * n)))
    return w if w % 2 else w + 1


def suggest(lrs: Any, losses: Any, stopped_on_divergence: bool = False) -> Suggestion:
    """The suggestion rule of the module docstring, and how far to trust it. Pure: numbers in, numbers out."""
    result = _suggest_one(lrs, losses, stopped_on_divergence)
    if result.suggested_lr is not None:
        _judge_reliability(result, np.asarray(lrs, dtype=float), np.asarray(losses, dtype=float), stopped_on_divergence)
    return result


def _judge_reliability(result: Suggestion, lrs: np.ndarray, losses: np.ndarray, stopped_on_divergence: bool) -> None:
    """Step 7 of the module docstring: the suggestion on the even and the odd points alone (two range
    tests of half the resolution over the same span), and the drop against the noise."""
    halves = [_suggest_one(lrs[i::2], losses[i::2], stopped_on_divergence).suggested_lr for i in (0, 1)]
    found = [result.suggested_lr] + [h for h in halves if h is not None]
    result.spread = (float(min(found)), float(max(found)))
    if result.unreliable is not None:  # already known (flat)
        return
    if result.drop < RELIABLE_DROP * result.noise:
        result.unreliable = "noisy"
    elif None in halves or result.spread[1] > UNSTABLE_FACTOR * result.spread[0]:
        result.unreliable = "unstable"


def _suggest_one(lrs: Any, losses: Any, stopped_on_divergence: bool = False) -> Suggestion:
    """Steps 1-6 of the module docstring on one curve."""
    lrs = np.asarray(lrs, dtype=float)
    losses = np.asarray(losses, dtype=float)
    bad = np.flatnonzero(~np.isfinite(losses))
    first_bad = int(bad[0]) if len(bad) else None
    n = first_bad if first_bad is not None else len(losses)
    empty = Suggestion(None, None, None, None, None, 0.0, 0.0, n, index_diverged=first_bad)
    if first_bad == 0:
        empty.lr_diverged, empty.problem = float(lrs[0]), "first-non-finite"
        return empty
    if n < MIN_POINTS:
        empty.problem = "too-few-points"
        if first_bad is None and stopped_on_divergence and n > 0:  # the stop rule fired within the first points
            empty.index_diverged = n - 1
        empty.lr_diverged = float(lrs[empty.index_diverged]) if empty.index_diverged is not None else None
        return empty
    x, y = lrs[:n], losses[:n]
    s = robust_smooth(y, _window(n))
    noise = float(1.4826 * np.median(np.abs(np.diff(y, 2))) / math.sqrt(6)) if n > 2 else 0.0  # robust sigma; trends cancel
    i_min = int(np.argmin(s))
    start_level = float(np.median(y[: max(3, int(START_POINTS * n))]))  # robust level before the LR does anything
    drop = float(start_level - s[i_min])
    # divergence: non-finite, a climb back after the minimum, or the measurement's stop rule
    i_div = first_bad
    if i_div is None:
        if drop > NOISE_FACTOR * noise:  # a real descent: divergence is climbing back up from the minimum
            climbed = i_min + np.flatnonzero(s[i_min:] - s[i_min] > RISE_FRACTION * drop)
        else:  # no descent: divergence is any significant rise above the start
            climbed = np.flatnonzero(s - start_level > NOISE_FACTOR * noise)
        if len(climbed):
            i_div = int(climbed[0])
        elif stopped_on_divergence:
            i_div = n - 1
    result = Suggestion(
        None,
        None,
        None,
        float(x[i_min]),
        float(lrs[i_div]) if i_div is not None else None,
        drop,
        noise,
        n,
        index_min=i_min,
        index_diverged=i_div,
    )
    if drop <= 0 or drop <= NOISE_FACTOR * noise:
        if i_div is not None and i_div >= max(EARLY_FRACTION * n, 2):
            # flat, then a rise: a model already trained (fine-tuning), or one that cannot learn
            result.lr_max = float(lrs[i_div])
            result.suggested_lr = result.lr_min = result.lr_max / DIVERGENCE_MARGIN
            result.unreliable = "flat"
            return result
        result.problem = "no-decrease"
        return result
    half = int(np.flatnonzero(s[: i_min + 1] <= start_level - HALF_FRACTION * drop)[0])
    knee = int(np.flatnonzero(s[: i_min + 1] <= start_level - KNEE_FRACTION * drop)[0])
    lr_max = float(x[i_min])
    suggested = float(x[knee])
    if i_div is not None:
        lr_max = min(lr_max, float(lrs[i_div]))
        suggested = min(suggested, float(lrs[i_div]) / DIVERGENCE_MARGIN)
    result.lr_max = lr_max
    result.suggested_lr = suggested
    result.lr_min = min(float(x[half]), suggested)
    return result


def decide(frame: pd.DataFrame, facts: dict[str, Any], trials: pd.DataFrame | None = None) -> tuple[Verdict, Suggestion]:
    """The verdict over a recorded range test and, when they ran (`trials`: lr_trials.refine's table;
    `facts["refine_steps"]` their length), the refine stage's trial runs, which settle the suggestion
    (`settle`). Pure: numbers in, findings and a suggestion out."""
    verdict = Verdict()
    stopped_div = facts.get("stopped") in ("diverged", "non-finite")
    sug = suggest(frame["lr"], frame["loss"], stopped_div)
    sug.range_test_lr = sug.suggested_lr
    planned = int(facts.get("planned_steps", len(frame)))
    lrs = frame["lr"].to_numpy(dtype=float)
    span = f"{facts.get('start', lrs[0] if len(lrs) else math.nan):.3g} -> {facts.get('end', lrs[-1] if len(lrs) else math.nan):.3g}"
    evidence = {
        "points": sug.points,
        "planned_steps": planned,
        "drop": sug.drop,
        "noise": sug.noise,
        "lr_diverged": sug.lr_diverged,
        "stopped": facts.get("stopped"),
    }
    lower_start = (
        "The start LR is already too high for this model: lower --start (e.g. 100x), check the initialisation "
        "(`nndiag check-loss`) and clip gradients (train.grad_clip) if the loss spikes."
    )
    if sug.problem == "first-non-finite":
        verdict.add(
            "diverged-immediately",
            "fail",
            f"the very first loss of the range test (LR {lrs[0]:.3g}) is NaN/Inf",
            lower_start + " A NaN at the smallest LR can also mean NaN/Inf in the data or the loss.",
            **evidence,
        )
        return verdict, sug
    if sug.problem == "too-few-points":
        why = (
            f"only {planned} points were planned"
            if planned < MIN_POINTS
            else f"the loss became NaN/Inf at point {sug.index_diverged + 1}"
            if sug.index_diverged is not None
            else f"only {len(frame)} points were recorded"
        )
        if sug.index_diverged is not None and planned >= MIN_POINTS:  # too few planned points is the problem, not the LR
            verdict.add(
                "diverged-immediately",
                "fail",
                f"only {sug.points} finite points before divergence ({why}; range {span})",
                lower_start,
                **evidence,
            )
        else:
            verdict.add(
                "no-decrease",
                "fail",
                f"{why} (fewer than {MIN_POINTS}): too few to tell where the loss drops (range {span})",
                f"Use more points (--steps {LR_FIND_STEPS} is the usual), or try the candidates mode (--candidates 1e-1,1e-2,1e-3,1e-4).",
                **evidence,
            )
        return verdict, sug
    if sug.index_diverged is not None and sug.index_diverged < max(EARLY_FRACTION * planned, 2):
        verdict.add(
            "diverged-immediately",
            "fail",
            f"the loss diverged at LR {sug.lr_diverged:.3g}, point {sug.index_diverged + 1} of {planned} (range {span})",
            lower_start,
            **evidence,
        )
        return verdict, sug
    if sug.problem == "no-decrease":
        verdict.add(
            "no-decrease",
            "fail",
            f"no LR in {span} lowered the loss: the smoothed loss fell by {sug.drop:.3g}, within "
            f"{NOISE_FACTOR:g}x its noise ({sug.noise:.3g})",
            "Raise --end (the loss may need a larger LR), use more --steps or --batches-per-lr, and check for a "
            "training bug: run `nndiag overfit-small`; look for frozen parameters or an optimizer not given the model's parameters.",
            **evidence,
        )
        return verdict, sug
    doubt: Doubt | None = None  # the curve's doubt about its own pick, settled or not by the trials below
    if sug.unreliable == "flat":
        doubt = Doubt(
            f"the loss did not fall measurably anywhere in {span} (by {sug.drop:.3g}, within {NOISE_FACTOR:g}x its noise "
            f"{sug.noise:.3g}) before it rose at LR {sug.lr_diverged:.3g}: the range test's pick {sug.suggested_lr:.3g} is "
            f"only {DIVERGENCE_MARGIN:g}x below that rise",
            "A model that is already trained (fine-tuning) looks like this: keep the LR at or below the suggestion and "
            f"compare a few with --candidates (e.g. {sug.suggested_lr / 10:.2g},{sug.suggested_lr:.2g}). So does a model that "
            "learns too slowly for the batches per LR to show it (e.g. a transformer from scratch): retry with "
            "--batches-per-lr 8. If it still looks flat, look for a training bug with `nndiag overfit-small`.",
            {**evidence, "reason": "flat", "lr_rise": sug.lr_diverged},
        )
    elif sug.unreliable is not None:
        low, high = sug.spread if sug.spread else (math.nan, math.nan)
        why = (
            f"the loss fell by only {sug.drop / sug.noise:.1f} times its point-to-point noise (under {RELIABLE_DROP:g})"
            if sug.unreliable == "noisy"
            else f"half of the points alone (every other LR) place it anywhere from {low:.3g} to {high:.3g}, more than "
            f"{UNSTABLE_FACTOR:g}x apart"
        )
        doubt = Doubt(
            f"the curve cannot place the LR confidently: {why}; the range test's pick {sug.suggested_lr:.3g} is a rough guess",
            "Measure a smoother curve: --batches-per-lr 8 (or a larger train.batch_size), or more --steps; or compare "
            f"a few LRs directly with --candidates (e.g. {low:.2g},{sug.suggested_lr:.2g},{high:.2g}).",
            {**evidence, "reason": sug.unreliable, "spread_low": low, "spread_high": high},
        )
    if trials is not None:
        doubt = settle(sug, trials, int(facts.get("refine_steps", 0)), doubt)
    if doubt is not None:
        verdict.add("unreliable-suggestion", doubt.severity, doubt.message, doubt.advice, **doubt.evidence)
    if sug.index_diverged is None and sug.index_min is not None and sug.index_min >= (1 - EDGE_FRACTION) * sug.points - 1:
        # the trials settle it when one that clearly lowered the loss was chosen below the largest LR they tried
        settled = (
            trials is not None
            and sug.refined_lr is not None
            and sug.refined_lr < float(trials["lr"].max())
            and bool((trials.loc[trials["lr"] == sug.refined_lr, "outcome"] == "drops").any())
        )
        verdict.add(
            "range-too-narrow",
            "info" if settled else "warn",
            f"the loss was still falling at the end of the range ({span}) and never diverged: the best LR may lie above {lrs[-1]:.3g}"
            + (f"; the refine stage's trials settled it at {sug.refined_lr:.3g}, below the largest LR they tried" if settled else ""),
            "Raise --end (e.g. 10-100x) until the loss blows up; the suggestion below is a lower bound.",
            **evidence,
            refined_lr=sug.refined_lr if settled else None,
        )
    return verdict, sug


@dataclass
class Doubt:
    """The unreliable-suggestion finding in the making: the curve's doubt, then what the trials said."""

    message: str
    advice: str
    evidence: dict[str, Any]
    severity: str = "warn"


def settle(sug: Suggestion, trials: pd.DataFrame, steps: int, doubt: Doubt | None) -> Doubt | None:
    """Read the refine stage's trials into the suggestion (pure). A chosen trial LR becomes the suggestion and
    [lr_min, lr_max] widens to hold it; the curve's doubt becomes info when that trial clearly lowered the loss.
    No trial lowered the loss: when some diverged, the suggestion falls below them (to the largest trial LR under
    the lowest diverging one, else a decade below that one, untested), otherwise the range test's pick stands;
    either way the doubt says the trials did not confirm it (a new one when the curve had none)."""
    chosen = pick_refined(trials)
    range_test_lr = float(sug.range_test_lr) if sug.range_test_lr is not None else math.nan
    if chosen is not None:
        sug.refined_lr = chosen
        _suggest_within_range(sug, chosen)
        settled = trials.loc[trials["lr"] == chosen, "outcome"].iloc[0] == "drops"
        if doubt is not None and settled:  # the trials measured what the curve could not show
            doubt.severity = "info"
            doubt.message += f"; the refine stage's trial runs settled it at {chosen:.3g}"
            doubt.evidence["refined_lr"] = chosen
        return doubt
    span = f"{trials['lr'].min():.3g} to {trials['lr'].max():.3g}"
    diverged = trials[trials["outcome"] == "diverged"]
    if diverged.empty:
        message = (
            f"none of the {len(trials)} trial runs (LR {span}, {steps} iterations each) lowered the loss on the training "
            f"subset: the range test's pick {range_test_lr:.3g} is unconfirmed"
        )
        advice = (
            "Longer trials may show a drop (--refine-steps 300), or compare a few LRs with --candidates; if no LR lowers "
            "the loss, look for a training bug with `nndiag overfit-small`."
        )
        reason = "trials-flat"
    else:
        lowest = float(diverged["lr"].min())
        below = trials[(trials["lr"] < lowest) & (trials["outcome"] != "diverged")]
        fallback = float(below["lr"].max()) if len(below) else lowest / 10
        _suggest_within_range(sug, fallback)
        how = "the largest trial LR below them" if len(below) else "10x below the lowest of them, untested"
        message = (
            f"{len(diverged)} of the {len(trials)} trial runs diverged (from LR {lowest:.3g}) when held at one LR for "
            f"{steps} iterations, and none lowered the loss: the suggestion falls from the range test's pick "
            f"{range_test_lr:.3g} to {fallback:.3g} ({how})"
        )
        advice = (
            "A constant LR that a rising range test passed through still blows up: the model needs a gentler start. "
            "Use a warm-up (schedule: {name: cosine, warmup_steps: 500}), clip gradients (train.grad_clip), "
            "and check the initialisation with `nndiag check-loss`."
        )
        reason = "trials-diverged"
    if doubt is not None:  # one finding for the suggestion: the curve's doubt and the trials' together
        doubt.message += f"; and {message}"
        doubt.advice = advice
        doubt.evidence["trials"] = reason
        return doubt
    return Doubt(message, advice, {"reason": reason, "range_test_lr": range_test_lr, "trials": len(trials), "diverged": len(diverged)})


def _suggest_within_range(sug: Suggestion, lr: float) -> None:
    """Make `lr` the suggestion, widening [lr_min, lr_max] to hold it."""
    sug.suggested_lr = lr
    sug.lr_min = lr if sug.lr_min is None else min(sug.lr_min, lr)
    sug.lr_max = lr if sug.lr_max is None else max(sug.lr_max, lr)


# --------------------------------------------------------------------------------------------
# run
# --------------------------------------------------------------------------------------------


def run(
    exp: Experiment,
    start: float = LR_FIND_START,
    end: float = LR_FIND_END,
    steps: int = LR_FIND_STEPS,
    mode: str = LR_FIND_MODE,
    batches_per_lr: int = LR_FIND_BATCHES_PER_LR,
    candidates: list[float] | None = None,
    candidate_steps: int = LR_FIND_CANDIDATE_STEPS,
    apply: bool = False,
    recipe_text: str | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    refine_steps: int = LR_FIND_REFINE_STEPS,
    progress: Progress | None = None,
) -> Result:
    """`optimizer`: the user's own optimizer for the range test (handed back as found); default a fresh
    one of the recipe's kind. `refine_steps`: iterations per trial LR of the refine stage (0: none, the
    range test's suggestion is final). `progress` hears the range test's and the trials' steps."""
    if candidates:
        summary, curves, facts = lr_trials.measure_candidates(
            exp, candidates, candidate_steps, progress=progress, task="lr-find: candidates"
        )
        verdict, best = lr_trials.decide_candidates(summary)
        metrics = {
            "mode": "candidates",
            "suggested_lr": best,
            "lr_min": None,
            "lr_max": None,
            "candidates": len(candidates),
            "candidate_steps": candidate_steps,
            "weight_decay": facts["weight_decay"],
            "dropping": int((summary["outcome"] == "drops").sum()),
        }
        if best is not None:
            dropping = summary[summary["outcome"] == "drops"]["lr"]
            metrics["lr_min"], metrics["lr_max"] = float(dropping.min()), float(dropping.max())
        result = Result("lr-find", verdict, {"lr_candidates": summary, "lr_candidate_curves": curves}, metrics)
    else:
        frame, facts = measure(exp, start, end, steps, mode, batches_per_lr, optimizer=optimizer, progress=progress)
        verdict, sug = decide(frame, facts)
        tables: dict[str, pd.DataFrame] = {"lr_find": frame}
        refine: dict[str, Any] = {}
        if refine_steps > 0 and sug.suggested_lr is not None and verdict.status != "fail":
            started = time.perf_counter()
            ceiling = min(sug.lr_diverged if sug.lr_diverged is not None else math.inf, float(frame["lr"].max()))
            trials = lr_trials.refine(exp, sug.suggested_lr, ceiling, refine_steps, progress=progress)
            verdict, sug = decide(frame, {**facts, "refine_steps": refine_steps}, trials)
            tables["lr_refine"] = trials
            refine = {
                "range_test_lr": sug.range_test_lr,
                "refine_steps": refine_steps,
                "refine_trials": len(trials),
                "refined_lr": sug.refined_lr,
                "refine_seconds": time.perf_counter() - started,
            }
        best_row = frame["smoothed_loss"].idxmin() if frame["smoothed_loss"].notna().any() else None
        metrics = {
            "mode": mode,
            "suggested_lr": sug.suggested_lr,
            "lr_min": sug.lr_min,
            "lr_max": sug.lr_max,
            "lr_at_min_loss": sug.lr_at_min_loss,
            "lr_diverged": sug.lr_diverged,
            "points": len(frame),
            "planned_steps": steps,
            "stopped": facts["stopped"],
            "min_smoothed_loss": float(frame["smoothed_loss"][best_row]) if best_row is not None else None,
            "seconds": facts["seconds"],
            **refine,
        }
        result = Result("lr-find", verdict, tables, metrics)
    suggested = result.metrics["suggested_lr"]  # the refine stage's choice when it ran
    if apply and suggested is not None:
        result.extra_files["recipe.lr-applied.yaml"] = edit.apply_lr(exp.recipe, float(suggested), recipe_text)
        result.metrics["applied_lr"] = edit.round_lr(float(suggested))
        result.metrics["applied_recipe"] = "recipe.lr-applied.yaml"
    return result
