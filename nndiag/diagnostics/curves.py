"""Step 6 of the recipe: read the loss curves.

`decide(curves)` is a pure function over series of numbers (a `Curves`, read from a log by
nndiag.diagnostics.curve_logs); `run(paths)` reads and decides, and returns a Result with the long
curves table (curves.csv). `train` calls `decide` over its own History, with the chance levels it
knows (ln C, 1/C).

Measures (all relative, so a loss in nats or in dollars gives the same verdict):
  u            position along the run, 0 at the first point and 1 at the last (x normalised)
  smooth       centred rolling median, window max(3, n/10) points, odd (robust to spikes; it
               follows a monotone trend exactly, so it does not lag)
  S (start)    median of the first clamp(n/100, 1, 5) raw points: the initial loss
  E (end)      median of the last max(2, n/10) raw points: where the run ended
  B (best)     minimum of the smoothed curve;  D = S - B, the total drop
  t_q          first u where the smoothed curve has fallen by q x (S - E) (t10, t90)
  early        share of the fall S - E done by u = 0.1
  noise        robust std (1.4826 x MAD) of raw - smooth over the second half of the run (flatness tests)
  wiggle       plain std of the same residuals (the noisy rule: a batch of 2 is mostly ~0 with big
               jumps, whose MAD is ~0)
  M (middle)   median of the points with u in [0.45, 0.55]; M - E is the second half's drop
  flat         the second half fell less than PLATEAU_FLAT x S + 3 standard errors of M - E
  val swing    mean |log(val / its 3-point median)| over the second half: jumps around the trend

Rules (severity; threshold constants below, calibrated on a corpus of real training logs with
planted causes, tests/data/curves/ from benchmarks/curves_corpus.py, and on synthetic curves; each
tested with inputs that must and must not trigger it). A healthy curve -- a fast, exponential-ish
fall to a low floor, mild noise, train and validation close -- raises nothing.
  diverged         fail  a logged NaN/Inf (train or val); or the run ended on a blow-up (last train
                         loss >= DIVERGE_FACTOR x the initial one, even with 2 points: a trainer's 3x
                         abort); or >= SPIKE_POINTS train points above DIVERGE_FACTOR x the initial
                         loss (CS231n: "> 3x the initial loss, stop"); or the val loss spiked above
                         DIVERGE_FACTOR x max(S, its end level) and came back down (a val point
                         logged before the first train point scores the untrained model: not a
                         spike); or the smoothed
                         train loss rises above DIVERGE_FACTOR x S; or, after a real drop
                         (D >= BLOWUP_MIN_DROP x S), it climbs back: E >= B + BLOWUP_RETRACE x D and
                         E >= BLOWUP_RATIO x B. Nothing else is reported for a diverged run. When the
                         chance-level loss is known (train passes ln C), "the initial loss" of these
                         rules is at least that level, as in the Trainer's abort: a fine-tuned model's
                         near-zero loss that wobbles 4x has not diverged.
  plateau          warn  the loss never moved (D < PLATEAU_MOVE x S; not for a run that starts below
                         PLATEAU_LEVEL x the chance loss: trained weights that converged); or it
                         stalled high: E >= PLATEAU_LEVEL x L and the second half is flat. L, the level
                         "high" is judged against: max(S, the chance-level loss when it is known), also
                         in lr-too-low's and lr-too-high's floors (S when it is not).
  lr-too-low       warn  slow from the start and still falling: E >= LOW_LEVEL x S, t90 >= LOW_SLOW,
                         early <= LOW_EARLY, the second half not flat (and >= LOW_MIN_DROP x S), the
                         first half fell at most LOW_LINEARITY x the second; a step-indexed log spans at
                         least LOW_MIN_STEPS (100) optimizer steps; not after a flat start
                         (bad-init).
  lr-too-high      warn  fast drop then a high, noisy floor: t90 <= HIGH_FAST, E >= HIGH_FLOOR x S,
                         noise >= HIGH_NOISE x E, the second half flat, >= NOISY_MIN_POINTS points;
                         or an unstable validation loss: val swing >= HIGH_VAL_SWING over
                         >= HIGH_VAL_POINTS points (not with bad-init, whose late drop moves it too).
  bad-init         warn  flat start then a sudden drop: D >= BAD_INIT_DROP x S, t10 >= BAD_INIT_FLAT
                         (and >= 2 points), and the fall from 10% to 90% of D takes at most
                         BAD_INIT_SUDDEN x t10.
  noisy            warn  wiggle >= NOISY_RATIO x max(D, chance loss - E) (at least NOISY_MIN_POINTS points; not with
                         lr-too-high or lr-too-low, which already explain a noisy floor / a small drop).
  still-improving  info  the validation loss (the training loss when there is none) is still
                         clearly falling at the end: a line fitted to the last quarter (at least
                         3 points) drops >= STILL_FRACTION of the total improvement and >= STILL_LEVEL
                         x E, with t-statistic >= STILL_T (or every last-quarter point lower than the
                         one before when there are fewer than 5). Not with lr-too-low or plateau.
  not-generalizing fail  training learns, validation does not: the training loss ended <= NOGEN_TRAIN
                         x its initial value, while the val loss (3-point median) never fell
                         NOGEN_VAL_DROP below its first value (which was >= NOGEN_START x S) -- or
                         below the chance loss ln C when `train` passes it -- and, when logged, the
                         val accuracy never rose NOGEN_VAL_ACC above its first value (or 1/C), with
                         the train accuracy >= NOGEN_GAP above it. Random labels look like this.
                         Replaces overfitting and underfitting (there is no good epoch to stop at).
  overfitting      warn  the validation loss at the end (median of the last max(2, n/10) points) is
                         >= OVERFIT_RISE above the minimum of its 3-point median, and >= OVERFIT_NOISE
                         x its own noise, the minimum at least 2 points before the end, while the
                         training loss (window medians, not single points) rose less than
                         OVERFIT_TRAIN_SHARE x as much; or a gap opened: train acc (its moving median
                         when step-level) - val acc >= GAP_ACC at the end and grew by >= GAP_ACC_GROWTH;
                         or, without accuracies, train loss <= GAP_LOSS_RATIO x val loss at the end,
                         with the gap >= GAP_LOSS_MIN x the first val loss, and the two closer than
                         that at the start.
  too-little-data  fail  fewer than MIN_DATA points of training loss and of validation loss (1 or 2: a run that
                         died after a step), and not diverged: no rule can read them, so the log is no pass
                         (warn when `train` was asked for this few steps with --max-steps).
  log-damaged      warn  records of a TensorBoard event file could not be read (corrupted bytes, a file cut short):
                         the count, and where; the verdict reads the rest. A log that lost at least half of its
                         records is bad input (exit 2), not a verdict.
  run-incomplete   info  the run folder's summary.json says the run is still running (its process is alive);
                   warn  ... or was interrupted, or says running while its process is gone (killed).
  underfitting     warn  train and validation close (|val - train| <= UNDERFIT_CLOSE x the larger,
                         and |acc gap| <= UNDERFIT_CLOSE_ACC when known) and both poor: the training
                         loss ended >= UNDERFIT_LEVEL x its initial value. Not with lr-too-low (the
                         loss is still falling: not yet a capacity limit).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nndiag.diagnostics.curve_logs import Curves, from_frame, load
from nndiag.findings import DIVERGENCE_FACTOR, Verdict
from nndiag.result import Result

# -- thresholds (units: fractions of the start level S, of the drop D, or of the run length u) ----
# Calibrated on the corpus of real training logs in tests/data/curves/ (benchmarks/curves_corpus.py;
# margins in benchmarks/results/curves_corpus.md) and on the synthetic curves of tests/curvegen.py.
MIN_POINTS = 8  # shape rules need at least this many points of training loss
MIN_DATA = 3  # a log whose training and validation loss both have fewer points is too-little-data, not a pass (a run that died)
MAX_JUDGED = 20_000  # the shape rules read at most this many points: a longer curve is judged on every k-th logged point (each a
#                      raw point, so its noise is kept) and its smoothed curve is interpolated; curves.csv keeps the same points
NOISY_MIN_POINTS = 30  # noise is only estimated on curves this long (step-level logs)
DIVERGE_FACTOR = DIVERGENCE_FACTOR  # x S; CS231n: a loss above ~3x the initial one means stop early
SPIKE_POINTS = 2  # logged train-loss points above DIVERGE_FACTOR x the initial loss that make a divergence (one is a bad batch)
BLOWUP_MIN_DROP = 0.2  # x S; a "blow-up after a decline" needs a real decline first
BLOWUP_RETRACE = 0.5  # x D; ... and the end level gives back at least half of the drop
BLOWUP_RATIO = 1.5  # x B; ... and ends at least 1.5x the best level
PLATEAU_MOVE = 0.05  # x S; a total drop below 5% of the start = the loss never moved
PLATEAU_LEVEL = 0.5  # x S; a run that ends above half its initial loss "stalled high"
PLATEAU_FLAT = 0.02  # x S; a second half that fell less than 2% of the start is flat
LOW_LEVEL = 0.1  # x S; lr-too-low: still above a tenth of the initial loss
#                  (corpus: LR 100x too low ends at 0.16-0.77 S; slowly memorised random labels at 0.005-0.03 S)
LOW_SLOW = 0.5  # u; ... and 90% of its fall took more than half the run (corpus: LR too low 0.57-0.82; healthy runs at most 0.38)
LOW_MIN_DROP = 0.02  # x S; ... and the second half still fell at least 2% of the start (and > 3 standard errors): not flat
LOW_EARLY = 0.5  # ... and the first 10% of the run brought at most half of its fall (corpus: LR too low 0.15-0.44; healthy 0.54-0.99)
LOW_LINEARITY = 8.0  # first-half drop / second-half drop at most this: no fast phase (corpus: LR too low 2.8-6.3; healthy 7.9 and more)
LOW_MIN_STEPS = 100  # optimizer steps a step-indexed log must span before its LR is judged too low (CS231n: an LR should make the
#                      loss drop "within ~100 iterations"); a healthy 32-step run (spiral, 4 short epochs) has the same shape as
#                      an LR 100x too low and is "still improving" instead
HIGH_FAST = 0.2  # u; lr-too-high: 90% of the drop done within the first 20% of the run
HIGH_FLOOR = 0.25  # x S; ... to a floor at least a quarter of the initial loss
HIGH_NOISE = 0.1  # x E; ... with noise at least 10% of the floor
HIGH_VAL_POINTS = 8  # lr-too-high from an unstable validation loss needs at least this many validation points
HIGH_VAL_SWING = 0.1  # mean |log(val / its 3-point median)| over the second half: validation jumps ~10% around its trend
#                       (corpus: LR 10-30x too high 0.106-0.214; healthy runs at most 0.081; overfitting, underfitting, LR too low < 0.01)
BAD_INIT_DROP = 0.3  # x S; bad-init: the eventual drop is at least 30% of the start
BAD_INIT_FLAT = 0.1  # u; ... after a flat start at least 10% of the run long
BAD_INIT_SUDDEN = 2.0  # (t90 - t10) / t10 at most this: the drop is quick compared with the wait
NOISY_RATIO = 0.1  # x D; step-to-step noise (std around the moving median) at least 10% of the whole drop
#                    (corpus: batch 2-4 runs 0.13-0.51; healthy runs at most 0.056). The notes: "too wiggly: batch too small"
STILL_FRACTION = 0.05  # of (S - E); the last quarter brought at least 5% of the improvement (corpus: healthy val curves 0.4-2.9%,
#                        except one 10-epoch CNN at 6.7% with t = 1.1)
STILL_LEVEL = 0.02  # x E; ... and at least 2% of the current level
STILL_T = 3.0  # t-statistic of the last-quarter slope: clearly, not noise
OVERFIT_RISE = 0.1  # x min; val loss 10% above its minimum (Google tuning playbook: "turns upward")
OVERFIT_NOISE = 3.0  # x the val curve's own noise (robust std around its 3-point median): a rise, not a wobble
OVERFIT_TRAIN_SHARE = 0.5  # the training loss (window medians) rose less than half as much as the val loss: not an instability
GAP_ACC = 0.1  # train acc - val acc at the end, in accuracy units (10 points)
GAP_ACC_GROWTH = 0.05  # ... and it grew by at least 5 points since the first record
GAP_LOSS_RATIO = 0.5  # without accuracies: train loss at most half the val loss ...
GAP_LOSS_MIN = 0.25  # ... the gap at least a quarter of the first val loss ...
GAP_LOSS_START = 0.75  # ... and at the start train >= 0.75 x val (they were close, the gap opened)
UNDERFIT_CLOSE = 0.1  # |val - train| <= 10% of the larger loss
UNDERFIT_CLOSE_ACC = 0.05  # |train acc - val acc| <= 5 points
UNDERFIT_LEVEL = 0.5  # x initial loss; training loss has not even halved
NOGEN_TRAIN = 0.5  # not-generalizing: the training loss ended at most half its initial value (it learned) ...
NOGEN_VAL_DROP = 0.1  # ... while the val loss (3-point median) never fell 10% below its first value (or ln C when known) ...
NOGEN_START = 0.75  # ... and that first value was no better than 0.75 x the untrained loss S (it had learned nothing yet)
NOGEN_VAL_ACC = 0.05  # ... and the val accuracy (3-point median) never rose 5 points above its first value (or 1/C when known)
#                       (corpus: random labels +0.9 to +3.6 points; 200-example overfitting +6 to +9 points)
NOGEN_GAP = 0.2  # ... with the training accuracy at least 20 points above the best val accuracy at the end
# lr-schedule-collapses (read from the log's lr column: nndiag train's train_steps.csv, HF's learning_rate, nndiag.watch)
LR_COLLAPSE_FRACTION = 1e-3  # x the peak LR: below this the LR is ~0 (a cosine decay to 0 spends its last ~2% of the run here;
#                              the classic x0.1 steps at 1/3 and 2/3 of the run reach 1e-2, not this)
LR_COLLAPSE_BY = 0.5  # u; ... reached by the middle of the run and held to its end: half the run or more trained at ~0 LR
LR_COLLAPSE_MIN_POINTS = 10  # LR values the log must hold


# ------------------------------------------------------------------------------------------------
# Measures
# ------------------------------------------------------------------------------------------------


def window(n: int) -> int:
    w = max(3, n // 10)
    return w + 1 if w % 2 == 0 else w


def smooth(y: np.ndarray) -> np.ndarray:
    """Centred rolling median (robust to spikes); short series are returned as they are. A series longer than
    MAX_JUDGED is smoothed on every k-th point and interpolated back (bounded time whatever its length)."""
    y = np.asarray(y, dtype=float)
    if len(y) < 3:
        return y
    if len(y) > MAX_JUDGED:
        at = thinned_positions(len(y))
        return np.interp(np.arange(len(y)), at, smooth(y[at]))
    return pd.Series(y).rolling(window(len(y)), center=True, min_periods=1).median().to_numpy()


def thinned_positions(n: int, limit: int = MAX_JUDGED) -> np.ndarray:
    """Every k-th position of n (k = ceil(n / limit)), and the last one: at most limit + 1 positions."""
    step = max(1, math.ceil(n / limit))
    return np.unique(np.r_[np.arange(0, n, step), n - 1]) if n else np.arange(0)


def thin(series: pd.Series, limit: int = MAX_JUDGED) -> pd.Series:
    """A long series as every k-th logged point (and its last): what the shape rules and curves.csv read."""
    return series if len(series) <= limit else series.iloc[thinned_positions(len(series), limit)]


def head(n: int) -> int:
    """Points whose median is the start level: 1 on short (epoch) curves, 3-5 on long (step) ones."""
    return 1 if n < NOISY_MIN_POINTS else min(max(n // 100, 3), 5)


def plain_std(r: np.ndarray) -> float:
    """Standard deviation. Skewed minibatch losses (a batch of 2 is mostly ~0 with big jumps) make a MAD near zero;
    the plain std keeps their spread (one spike among n points adds only spike / sqrt(n))."""
    if len(r) < 2:
        return 0.0
    return float(np.std(r))


def robust_std(r: np.ndarray) -> float:
    if len(r) == 0:
        return 0.0
    return float(1.4826 * np.median(np.abs(r - np.median(r))))


@dataclass
class Shape:
    """The measures of one series (see the module docstring)."""

    n: int
    x: np.ndarray
    u: np.ndarray
    y: np.ndarray
    s: np.ndarray  # smoothed
    start: float
    end: float
    best: float
    best_x: float
    drop: float
    noise: float
    wiggle: float  # plain std of the second half's residuals (the noisy rule's noise)
    mid: float  # median of the points with u in [0.45, 0.55]
    se: float  # standard error of (mid - end), from the noise and the points in both windows

    @classmethod
    def of(cls, series: pd.Series) -> "Shape":
        series = thin(series)
        x = series.index.to_numpy(dtype=float)
        y = series.to_numpy(dtype=float)
        n = len(y)
        span = x[-1] - x[0] if n > 1 and x[-1] > x[0] else 1.0
        u = (x - x[0]) / span
        s = smooth(y)
        start = float(np.median(y[: head(n)]))
        end = float(np.median(y[-max(2, n // 10) :]))
        i_best = int(np.argmin(s))
        half = y[n // 2 :] - s[n // 2 :]
        middle = y[(u >= 0.45) & (u <= 0.55)]
        mid = float(np.median(middle)) if len(middle) else float(np.interp(0.5, u, s))
        noise = robust_std(half)
        wiggle = plain_std(half)
        se = 1.2533 * noise * math.sqrt(1 / max(len(middle), 1) + 1 / max(2, n // 10))  # 1.2533: s.e. of a median / of a mean
        return cls(n, x, u, y, s, start, end, float(s[i_best]), float(x[i_best]), start - float(s[i_best]), noise, wiggle, mid, se)

    def t(self, q: float) -> float:
        """First u where the smoothed curve has fallen by q x (S - E), the drop to where it ended (1.0 if never)."""
        fall = self.start - self.end
        if fall <= 0:
            return 1.0
        hit = np.nonzero(self.s <= self.start - q * fall)[0]
        return float(self.u[hit[0]]) if len(hit) else 1.0

    def x_at(self, u: float) -> float:
        return float(self.x[0] + u * (self.x[-1] - self.x[0]))


def first_nonfinite(series: pd.Series | None) -> float | None:
    if series is None or not len(series):
        return None
    bad = ~np.isfinite(series.to_numpy(dtype=float))
    return float(series.index[np.argmax(bad)]) if bad.any() else None


def last_quarter_slope(u: np.ndarray, y: np.ndarray) -> tuple[float, float, int]:
    """Drop (in y units) over the last quarter of the run by a least-squares line, its t-statistic, points."""
    m = max(3, math.ceil(len(u) / 4))
    uu, yy = u[-m:], y[-m:]
    m = len(uu)
    if m < 3 or np.ptp(uu) == 0:
        return 0.0, 0.0, m
    slope, intercept = np.polyfit(uu, yy, 1)
    resid = yy - (slope * uu + intercept)
    se = math.sqrt(float(np.sum(resid**2)) / max(m - 2, 1) / float(np.sum((uu - uu.mean()) ** 2)))
    drop = -slope * float(np.ptp(uu))
    t = -slope / se if se > 0 else (math.inf if slope < 0 else 0.0)
    return float(drop), float(t), m


def _n(v: float) -> str:
    return f"{v:.4g}"


def _x(name: str, v: float) -> str:
    return f"{name} {int(v)}" if float(v).is_integer() else f"{name} {v:.4g}"


# ------------------------------------------------------------------------------------------------
# Deciding (pure)
# ------------------------------------------------------------------------------------------------


def decide(curves: Curves) -> Verdict:
    """The verdict over one run's curves. Pure: numbers in, findings out."""
    verdict = Verdict()
    _log_state(verdict, curves)
    loss = curves.loss()
    val = curves.fit.get("val_loss")
    if loss is None or not len(loss):
        if val is not None and len(val) < MIN_DATA:
            _too_little(verdict, curves, 0, len(val))
        return verdict
    lx = curves.loss_x()
    if _diverged(verdict, curves, loss, lx):
        return verdict
    if len(loss) < MIN_DATA and (val is None or len(val) < MIN_DATA):
        _too_little(verdict, curves, len(loss), 0 if val is None else len(val))
        return verdict
    _lr_schedule(verdict, curves)
    shape = Shape.of(loss) if len(loss) >= MIN_POINTS else None
    if shape is not None:
        _shape_rules(verdict, shape, lx, curves.chance_loss)
    _unstable_val(verdict, curves)
    _fit_rules(verdict, curves, shape)
    _still_improving(verdict, curves, lx)
    if curves.lr_chosen:
        _at_chosen_lr(verdict, curves.lr_chosen)
    return verdict


LR_SHAPES = ("lr-too-high", "lr-too-low")  # the rules that name the LR from the curve's shape alone


def _at_chosen_lr(verdict: Verdict, chooser: str) -> None:
    """A run that trained at the LR lr-find or the search chose, and did not diverge: the curve's shape alone does not
    make that LR wrong (the choice measured it directly), so the shape's LR findings only inform."""
    for finding in verdict.findings:
        if finding.code in LR_SHAPES:
            finding.severity = "info"
            finding.message += f" (at the LR {chooser} chose, which measured it directly: not counted against the LR)"
            finding.evidence["at_chosen_lr"] = True


def _too_little(verdict: Verdict, curves: Curves, train: int, val: int) -> None:
    """1 or 2 points: no rule can read them, and "no problems found" would let a run that died after a step pass a CI gate."""
    said = f"{train} point{'s' if train != 1 else ''} of training loss" + (f" and {val} of validation loss" if val else "")
    verdict.add(
        "too-little-data",
        "warn" if curves.short_by_request else "fail",
        f"the log holds only {said}: too few to judge (the rules need at least {MIN_DATA} points, the shape rules {MIN_POINTS})"
        + ("; the run was asked for this few steps" if curves.short_by_request else "; a run that stopped this early is no pass"),
        "Find out why the run stopped so early (a crash, a kill, a tiny max_steps) and log more points: the training loss "
        "every optimizer step and the validation loss every epoch.",
        train_points=train,
        val_points=val,
        minimum=MIN_DATA,
    )


def _log_state(verdict: Verdict, curves: Curves) -> None:
    """What the log itself says besides its numbers: records that could not be read, a run that has not finished."""
    damage = curves.damage
    if damage.get("unreadable"):
        unreadable, records = int(damage["unreadable"]), int(damage["records"])
        how = "the file ends in the middle of a record: cut short, or still being written" if damage.get("truncated") else "corrupted bytes"
        where = f", at {', '.join(damage['at'])}" if damage.get("at") else ""
        verdict.add(
            "log-damaged",
            "warn",
            f"{unreadable} of the {records} records of the TensorBoard log could not be read ({how}{where}); the verdict reads "
            f"the other {records - unreadable}",
            "Copy the event file again from where the run wrote it, or read the run's other logs (a CSV); a log cut short "
            "by a full disk or a killed run has lost its end.",
            unreadable=unreadable,
            records=records,
            truncated=bool(damage.get("truncated")),
        )
    state = curves.state
    if state.get("status"):
        points = len(curves.loss()) if curves.loss() is not None else 0
        running = state["status"] == "running" and state.get("alive")
        if running:
            said = f"the run is still in progress: the verdict reads the {points} points of training loss logged so far"
        elif state["status"] == "interrupted":
            said = f"the run was interrupted (Ctrl-C) before it finished: the verdict reads the {points} points it logged"
        elif state["status"] == "crashed":
            said = f"the run crashed before it finished: the verdict reads the {points} points it logged"
        else:
            said = f"the run ended without finishing (its process is gone: killed?): the verdict reads the {points} points it logged"
        verdict.add(
            "run-incomplete",
            "info" if running else "warn",
            f"{said} (its summary.json says {state['status']!r})",
            "Judge the finished run: wait for it to end, or run it again; the curves of a partial run often look still-improving.",
            status=state["status"],
            alive=bool(state.get("alive")),
            points=points,
        )


DIVERGED_ADVICE = (
    "Lower the learning rate (`nndiag lr-find` measures how far), check the initialisation scale "
    "(`nndiag probe`), clip gradients (train.grad_clip) and look for log(0) or division by zero in the loss."
)


def _diverged(verdict: Verdict, curves: Curves, loss: pd.Series, lx: str) -> bool:
    advice = DIVERGED_ADVICE
    val = curves.fit.get("val_loss")
    for name, series, xname in (("train loss", loss, lx), ("val loss", val, curves.fit_x)):
        at = first_nonfinite(series)
        if at is not None:
            before = series[series.index < at].to_numpy(dtype=float)
            history = f" after going from {_n(before[0])} to {_n(before[-1])}" if len(before) > 1 else ""
            verdict.add("diverged", "fail", f"{name} became {series[at]} at {_x(xname, at)}{history}", advice, series=name, at=at, x=xname)
            return True
    y = loss.to_numpy(dtype=float)
    if len(y) < 2:
        return False
    start = float(np.median(y[: head(len(y))]))
    initial = min(float(y[0]), start)  # the first point, or the head's median when the first point is a spike
    # a run that starts already trained (fine-tuning) is not diverging because its near-zero loss wobbles: with the
    # chance-level loss known (train passes ln C), the baseline is the larger of the two, as the Trainer's own abort rule
    initial = max(initial, curves.chance_loss or 0.0)
    if initial > 0 and y[-1] >= DIVERGE_FACTOR * initial:  # the run ended on a blow-up (a trainer's 3x abort looks like this)
        verdict.add(
            "diverged",
            "fail",
            f"train loss ended at {_n(float(y[-1]))} at {_x(lx, float(loss.index[-1]))}, {y[-1] / initial:.1f}x its initial "
            f"{_n(initial)} (limit {DIVERGE_FACTOR:g}x)",
            advice,
            at=float(loss.index[-1]),
            x=lx,
            last=float(y[-1]),
            initial=initial,
        )
        return True
    spikes = np.nonzero(y >= DIVERGE_FACTOR * initial)[0] if initial > 0 else np.array([], dtype=int)
    if len(spikes) >= SPIKE_POINTS:
        peak_i = int(spikes[np.argmax(y[spikes])])
        verdict.add(
            "diverged",
            "fail",
            f"train loss spiked above {DIVERGE_FACTOR:g}x its initial {_n(initial)} at {len(spikes)} logged points, up to "
            f"{_n(float(y[peak_i]))} at {_x(lx, float(loss.index[peak_i]))} ({y[peak_i] / initial:.1f}x)",
            advice,
            at=float(loss.index[peak_i]),
            x=lx,
            peak=float(y[peak_i]),
            initial=initial,
            spikes=int(len(spikes)),
        )
        return True
    if val is not None and len(val) >= 3 and start > 0:
        v = val.to_numpy(dtype=float)
        v_end = float(np.median(v[-max(2, len(v) // 10) :]))
        ref = max(start, v_end, curves.chance_loss or 0.0)
        # a val point logged before the first train point scored the untrained model (a loop that validates first): where val
        # starts, not a spike, however high (an untrained model in eval mode can score far above chance)
        train_fit = curves.fit.get("train_loss")
        first_train = train_fit if train_fit is not None and len(train_fit) else (loss if lx == curves.fit_x else None)
        skip = 1 if first_train is not None and float(val.index[0]) < float(first_train.index[0]) else 0
        k = skip + int(np.argmax(v[skip:]))
        if v[k] >= DIVERGE_FACTOR * ref and k < len(v) - 1:  # a spike that came back down (a rise to the end is overfitting)
            verdict.add(
                "diverged",
                "fail",
                f"val loss spiked to {_n(float(v[k]))} at {_x(curves.fit_x, float(val.index[k]))}, {v[k] / ref:.1f}x both the initial "
                f"train loss {_n(start)} and where val loss ended ({_n(v_end)}): the weights blew up (limit {DIVERGE_FACTOR:g}x)",
                advice,
                at=float(val.index[k]),
                x=curves.fit_x,
                peak=float(v[k]),
                initial=start,
                val_end=v_end,
            )
            return True
    if len(y) < 3:
        return False
    shape = Shape.of(loss)
    peak_i = int(np.argmax(shape.s))
    peak = float(shape.s[peak_i])
    if shape.start > 0 and peak >= DIVERGE_FACTOR * max(shape.start, curves.chance_loss or 0.0):
        verdict.add(
            "diverged",
            "fail",
            f"train loss rose to {_n(peak)} at {_x(lx, shape.x[peak_i])}, {peak / shape.start:.1f}x its initial {_n(shape.start)} "
            f"(limit {DIVERGE_FACTOR:g}x)",
            advice,
            at=float(shape.x[peak_i]),
            x=lx,
            peak=peak,
            initial=shape.start,
        )
        return True
    if (
        shape.start > 0
        and shape.drop >= BLOWUP_MIN_DROP * shape.start
        and shape.end >= shape.best + BLOWUP_RETRACE * shape.drop
        and shape.end >= BLOWUP_RATIO * shape.best
    ):
        verdict.add(
            "diverged",
            "fail",
            f"train loss fell from {_n(shape.start)} to {_n(shape.best)} at {_x(lx, shape.best_x)}, then blew up to {_n(shape.end)} "
            f"by the end ({shape.end / shape.best:.1f}x its best, giving back {(shape.end - shape.best) / shape.drop:.0%} of the drop)",
            advice,
            at=shape.best_x,
            x=lx,
            initial=shape.start,
            best=shape.best,
            end=shape.end,
        )
        return True
    return False


def _lr_schedule(verdict: Verdict, curves: Curves) -> None:
    """lr-schedule-collapses: the logged LR fell to ~0 (below LR_COLLAPSE_FRACTION x its peak) by LR_COLLAPSE_BY of the
    run and stayed there (a schedule sized in epochs stepped every batch)."""
    lr = curves.lr
    if lr is None:
        return
    lr = lr[np.isfinite(lr.to_numpy(float))]
    if len(lr) < LR_COLLAPSE_MIN_POINTS:
        return
    x, y = lr.index.to_numpy(float), lr.to_numpy(float)
    peak_i = int(np.argmax(y))
    peak = float(y[peak_i])
    if peak <= 0 or x[-1] <= x[0]:
        return
    high = np.nonzero(y >= LR_COLLAPSE_FRACTION * peak)[0]
    c = int(high[-1]) + 1  # the first point of the run of ~0 LRs that lasts to the end
    if c >= len(y):
        return
    u = (x[c] - x[0]) / (x[-1] - x[0])
    if u > LR_COLLAPSE_BY:
        return
    name = curves.lr_x
    verdict.add(
        "lr-schedule-collapses",
        "warn",
        f"the learning rate fell from its peak {peak:.3g} to {y[c]:.3g} ({y[c] / peak:.1e} of it) by {_x(name, x[c])}, {u:.0%} of "
        f"the way through, and stayed below {LR_COLLAPSE_FRACTION:g}x the peak to the end (last {y[-1]:.3g}): the last "
        f"{1 - u:.0%} of the run trained at ~0 LR",
        "A schedule sized in epochs but stepped every batch (scheduler.step() inside the batch loop) does this: step it once per "
        "epoch, or size it in optimizer steps (T_max, step_size or milestones counted in steps, a gamma closer to 1).",
        peak_lr=peak,
        peak_at=float(x[peak_i]),
        collapsed_at=float(x[c]),
        collapsed_u=float(u),
        final_lr=float(y[-1]),
        points=int(len(y)),
        threshold=LR_COLLAPSE_FRACTION,
    )


def _shape_rules(verdict: Verdict, sh: Shape, lx: str, chance_loss: float | None = None) -> None:
    S, E, D = sh.start, sh.end, sh.drop
    # what the run has learned in all: its own drop, or (the chance-level loss known) the way from an untrained model to
    # its end, the larger. The same for a run from scratch (S is near chance); for fine-tuning, whose small drop from
    # trained weights is no scale for its minibatch noise, the task's scale
    learned = max(D, (chance_loss or 0.0) - E)
    # "high" is high for the task: a level is judged against the larger of the start and the chance-level loss, and a run
    # that starts far below chance (trained weights) and does not move has converged, not stalled
    level = max(S, chance_loss or 0.0)
    trained_start = chance_loss is not None and S < PLATEAU_LEVEL * chance_loss
    if S <= 0:
        return
    length = f"{sh.n} {lx}s" if lx in ("step", "epoch") else f"{sh.n} points"
    second_half = sh.mid - E
    flat = second_half < PLATEAU_FLAT * S + 3 * sh.se  # fell less than 2% of the start, or not beyond the noise
    t10, t90 = sh.t(0.1), sh.t(0.9)
    evidence = {"initial": S, "best": sh.best, "final": E, "points": sh.n, "noise": sh.noise, "x": lx}
    # plateau: never moved, or stalled high
    if D < PLATEAU_MOVE * S and not trained_start:
        verdict.add(
            "plateau",
            "warn",
            f"train loss never moved: {_n(S)} at the start, best {_n(sh.best)} ({D / S:.1%} lower) over {length}",
            "Nothing is being learned: raise the learning rate (`nndiag lr-find` measures how far), check that the optimizer "
            "gets the model's parameters and that gradients flow (`nndiag probe`: dead ReLUs, vanishing gradients).",
            **evidence,
        )
        return
    noisy = sh.n >= NOISY_MIN_POINTS and sh.wiggle >= NOISY_RATIO * learned
    high = t90 <= HIGH_FAST and E >= HIGH_FLOOR * level and sh.noise >= HIGH_NOISE * E and flat and sh.n >= NOISY_MIN_POINTS
    if high:
        verdict.add(
            "lr-too-high",
            "warn",
            f"train loss dropped fast ({t90:.0%} of the run for 90% of its fall) to a high, noisy floor: it ends at {_n(E)}, "
            f"{E / S:.0%} of its initial {_n(S)}, with step-to-step noise {sh.noise / E:.0%} of that level",
            "Lower the learning rate (`nndiag lr-find` measures how far) or decay it (schedule: cosine or step).",
            t90=t90,
            **evidence,
        )
    elif E >= PLATEAU_LEVEL * level and flat:
        verdict.add(
            "plateau",
            "warn",
            f"train loss stalled at {_n(E)}, {E / S:.0%} of its initial {_n(S)}: the second half of the run fell only "
            f"{max(second_half, 0) / S:.1%} of the initial value",
            "Training is stuck: try a higher or decaying learning rate, a different optimizer (adam), a bigger model, "
            "or check the data and labels; a plateau that breaks later can be a saddle (train longer).",
            second_half_drop=second_half,
            **evidence,
        )
    # bad-init: flat start, then a sudden drop
    flat_points = int(np.sum(sh.u < t10))
    if D >= BAD_INIT_DROP * S and t10 >= BAD_INIT_FLAT and flat_points >= 2 and (t90 - t10) <= BAD_INIT_SUDDEN * t10:
        verdict.add(
            "bad-init",
            "warn",
            f"train loss stayed flat near {_n(S)} for the first {t10:.0%} of the run (until {_x(lx, sh.x_at(t10))}), "
            f"then dropped 80% of its fall within {t90 - t10:.0%} of the run",
            "The start is wasted: check the weight initialisation (Kaiming for ReLU, Xavier for tanh; `nndiag probe`), "
            "the input scale, and a warmup that is too long.",
            t10=t10,
            t90=t90,
            at=sh.x_at(t10),
            **evidence,
        )
    # lr-too-low: a slow decline with no fast phase, still clearly falling, far from zero (not after a flat start: bad-init)
    first_half = S - sh.mid
    early = (S - float(np.interp(0.1, sh.u, sh.s))) / (S - E) if S > E else 0.0  # share of the fall done in the first 10%
    long_enough = "epoch" in lx.lower() or sh.x_at(1.0) - sh.x_at(0.0) >= LOW_MIN_STEPS
    if (
        "bad-init" not in verdict.codes
        and E >= LOW_LEVEL * level
        and t90 >= LOW_SLOW
        and early <= LOW_EARLY
        and not flat
        and second_half >= LOW_MIN_DROP * S
        and first_half <= LOW_LINEARITY * second_half
        and long_enough
    ):
        verdict.add(
            "lr-too-low",
            "warn",
            f"train loss fell slowly and steadily: {_n(S)} -> {_n(sh.mid)} -> {_n(E)} ({first_half / S:.0%} then "
            f"{second_half / S:.0%} of the initial value per half; 90% of its fall took {t90:.0%} of the run), "
            f"still {E / S:.0%} of where it started",
            "Raise the learning rate (`nndiag lr-find` measures how far); the loss should fall fast at first and then level off.",
            first_half_drop=first_half,
            second_half_drop=second_half,
            t90=t90,
            early=early,
            **evidence,
        )
    quiet = {"lr-too-high", "lr-too-low"} & set(verdict.codes)  # a high noisy floor, or a drop kept small by the LR, already explains it
    if noisy and not quiet:
        verdict.add(
            "noisy",
            "warn",
            f"train loss is noisy: step-to-step noise {_n(sh.wiggle)} (std around the moving median) is {sh.wiggle / learned:.0%} "
            + (
                f"of its whole drop ({_n(S)} -> {_n(sh.best)})"
                if learned == D
                else f"of what it learned from the chance level ({_n(chance_loss)} -> {_n(E)})"
            ),
            "Read the trend from a moving average; use a larger batch or a lower learning rate to reduce the noise.",
            ratio=sh.wiggle / learned,
            **{**evidence, "noise": sh.wiggle},
        )


def val_swing(val: pd.Series) -> float:
    """Mean |log(val / its centred 3-point median)| over the second half: how far validation jumps around its trend
    (a monotone curve scores 0, whatever its slope)."""
    v = val.to_numpy(dtype=float)
    if len(v) < 3 or not np.all(np.isfinite(v)) or np.any(v <= 0):
        return math.nan
    lv = np.log(v)
    med = pd.Series(lv).rolling(3, center=True, min_periods=1).median().to_numpy()
    return float(np.mean(np.abs(lv - med)[len(lv) // 2 :]))


def _unstable_val(verdict: Verdict, curves: Curves) -> None:
    """lr-too-high from the validation loss: it jumps up and down around its trend from one evaluation to the next."""
    val = curves.fit.get("val_loss")
    if val is None or len(val) < HIGH_VAL_POINTS or {"lr-too-high", "bad-init"} & set(verdict.codes):
        return
    swing = val_swing(val)
    if swing >= HIGH_VAL_SWING:
        verdict.add(
            "lr-too-high",
            "warn",
            f"val loss is unstable: in the second half of the run it jumps {math.expm1(swing):.0%} on average around its "
            f"3-point median (limit {math.expm1(HIGH_VAL_SWING):.0%}), between {_n(float(val.iloc[len(val) // 2 :].min()))} and "
            f"{_n(float(val.iloc[len(val) // 2 :].max()))}",
            "Lower the learning rate (`nndiag lr-find` measures how far) or decay it (schedule: cosine or step); "
            "clipping gradients only hides the instability.",
            swing=swing,
            points=int(len(val)),
            x=curves.fit_x,
        )


def _train_at(curves: Curves, xs: np.ndarray) -> np.ndarray | None:
    """Training loss at the fit points: the fit view's own, else the dense curve's smoothed values."""
    train = curves.fit.get("train_loss")
    if train is not None and len(train) >= 2:
        train = thin(train)
        return np.interp(xs, train.index.to_numpy(float), smooth(train.to_numpy(float)))
    if curves.dense is not None and len(curves.dense) >= 2 and curves.x == curves.fit_x:
        dense = thin(curves.dense)
        return np.interp(xs, dense.index.to_numpy(float), smooth(dense.to_numpy(float)))
    return None


def _med3(y: np.ndarray) -> np.ndarray:
    return pd.Series(y).rolling(3, center=True, min_periods=1).median().to_numpy() if len(y) >= 5 else y


def _fit_rules(verdict: Verdict, curves: Curves, shape: Shape | None) -> None:
    val = curves.fit.get("val_loss")
    fx = curves.fit_x
    vacc = curves.fit.get("val_acc")
    if (val is None or len(val) < 3) and (vacc is None or len(vacc) < 3):
        return
    if _not_generalizing(verdict, curves, shape):
        return  # it says more than overfitting (there is no good epoch to stop at) and rules out underfitting
    if val is None or len(val) < 3:
        return
    xs = val.index.to_numpy(float)
    v = val.to_numpy(float)
    vs = _med3(v)
    train = _train_at(curves, xs)
    k = int(np.argmin(vs))
    tail = max(2, len(v) // 10)
    v_min, v_end = float(vs[k]), float(np.median(v[-tail:]))
    v_noise = robust_std(v - vs) if len(v) >= 5 else 0.0
    overfit = False
    rise = v_end - v_min
    if v_min > 0 and k <= len(v) - 3 and rise >= OVERFIT_RISE * v_min and rise >= OVERFIT_NOISE * v_noise:
        # did training rise too? Window medians, not single noisy points, and against the val rise: a training loss at a
        # noisy floor near zero wobbles by far less than the val loss rose.
        t_k = float(np.median(train[max(0, k - 1) : k + 2])) if train is not None else math.nan
        t_end = float(np.median(train[-tail:])) if train is not None else math.nan
        if train is None or t_end - t_k < OVERFIT_TRAIN_SHARE * rise:
            if train is None or t_k <= 0:
                tail_text = ""
            elif t_end <= t_k:
                tail_text = f" while train loss fell {(t_k - t_end) / t_k:.0%} ({_n(t_k)} -> {_n(t_end)})"
            else:
                tail_text = f" while train loss stayed near {_n(t_end)} ({_n(t_k)} at the val minimum)"
            verdict.add(
                "overfitting",
                "warn",
                f"val loss rose {(v_end - v_min) / v_min:.0%} from its minimum {_n(v_min)} at {_x(fx, xs[k])} to {_n(v_end)} "
                f"(a 3-point median, and the median of the last {tail} points){tail_text}",
                "Stop earlier (train.early_stopping.patience keeps the best weights), add regularization "
                "(optim.weight_decay, dropout, augmentation) or get more training data.",
                val_min=v_min,
                val_min_at=float(xs[k]),
                val_end=v_end,
                train_at_min=t_k,
                train_end=t_end,
                at=float(xs[k]),
                x=fx,
            )
            overfit = True
    tacc = curves.fit.get("train_acc")
    acc_gap = None
    if tacc is not None and vacc is not None and len(tacc) >= 2 and len(vacc) >= 2:
        t_values = tacc.to_numpy(float)
        if len(tacc) > len(vacc):  # step-level (one batch) accuracy is noisy: read its moving median
            t_values = smooth(t_values)
        ta = np.interp(vacc.index.to_numpy(float), tacc.index.to_numpy(float), t_values)
        gaps = ta - vacc.to_numpy(float)
        acc_gap = (float(gaps[0]), float(gaps[-1]), float(ta[-1]), float(vacc.iloc[-1]))
        if not overfit and gaps[-1] >= GAP_ACC and gaps[-1] - gaps[0] >= GAP_ACC_GROWTH:
            verdict.add(
                "overfitting",
                "warn",
                f"a train/val accuracy gap of {gaps[-1]:.1%} opened (train {ta[-1]:.1%}, val {vacc.iloc[-1]:.1%}; it was {gaps[0]:.1%} at the start)",
                "Increase regularization (optim.weight_decay, dropout, augmentation) or get more training data.",
                train_acc=float(ta[-1]),
                val_acc=float(vacc.iloc[-1]),
                gap=float(gaps[-1]),
                gap_start=float(gaps[0]),
                x=fx,
            )
            overfit = True
    elif not overfit and train is not None and v[0] > 0:
        gap_end, gap_start = v_end - float(train[-1]), float(v[0] - train[0])
        if float(train[-1]) <= GAP_LOSS_RATIO * v_end and gap_end >= GAP_LOSS_MIN * v[0] and float(train[0]) >= GAP_LOSS_START * v[0]:
            verdict.add(
                "overfitting",
                "warn",
                f"a train/val loss gap opened: train loss {_n(float(train[-1]))} is {float(train[-1]) / v_end:.0%} of val loss {_n(v_end)} "
                f"at the end (at the start: {_n(float(train[0]))} vs {_n(float(v[0]))})",
                "Increase regularization (optim.weight_decay, dropout, augmentation) or get more training data.",
                train_end=float(train[-1]),
                val_end=v_end,
                gap=gap_end,
                gap_start=gap_start,
                x=fx,
            )
            overfit = True
    if overfit or train is None or "lr-too-low" in verdict.codes:  # a loss still falling slowly is not (yet) a capacity limit
        return
    initial = shape.start if shape is not None else float(train[0])
    t_end = float(train[-1])
    close = abs(v_end - t_end) <= UNDERFIT_CLOSE * max(v_end, t_end)
    if acc_gap is not None:
        close = close and abs(acc_gap[1]) <= UNDERFIT_CLOSE_ACC
    if initial > 0 and close and t_end >= UNDERFIT_LEVEL * initial:
        accs = f"; accuracy train {acc_gap[2]:.1%}, val {acc_gap[3]:.1%}" if acc_gap is not None else ""
        verdict.add(
            "underfitting",
            "warn",
            f"train and val loss are close ({_n(t_end)} vs {_n(v_end)}) and both poor: training loss is still "
            f"{t_end / initial:.0%} of its initial {_n(initial)}{accs}",
            "The model is not fitting the training data: train longer, use a bigger model (wider/deeper), "
            "a higher learning rate, or less regularization.",
            train_end=t_end,
            val_end=v_end,
            initial=initial,
            x=fx,
        )


def _not_generalizing(verdict: Verdict, curves: Curves, shape: Shape | None) -> bool:
    """Training improves while validation stays where an untrained model is (random labels, a train/val mismatch)."""
    val, vacc, tacc = curves.fit.get("val_loss"), curves.fit.get("val_acc"), curves.fit.get("train_acc")
    train = curves.loss()
    if train is None or len(train) < 2:
        return False
    t = train.to_numpy(float)
    initial = shape.start if shape is not None else float(t[0])
    t_end = shape.end if shape is not None else float(np.median(t[-max(2, len(t) // 10) :]))
    if not (initial > 0 and t_end <= NOGEN_TRAIN * initial):
        return False  # training did not learn much either: that is underfitting or a plateau, not this
    said: list[str] = []
    evidence: dict[str, Any] = {"train_initial": initial, "train_end": t_end}
    if val is not None and len(val) >= 3:
        v = _med3(val.to_numpy(float))
        first, best = float(val.iloc[0]), float(np.min(v))
        if curves.chance_loss is not None:
            ref, ref_name = curves.chance_loss, f"the chance level {_n(curves.chance_loss)}"
        else:
            if first < NOGEN_START * initial:
                return False  # validation was already better than an untrained model at its first record: it learned
            ref, ref_name = first, f"its first value {_n(first)}"
        if not (ref > 0 and best >= (1 - NOGEN_VAL_DROP) * ref):
            return False
        said.append(
            f"val loss never went more than {(ref - best) / ref:.0%} below {ref_name} (best {_n(best)}, last {_n(float(val.iloc[-1]))})"
        )
        evidence.update(val_first=first, val_best=best, val_reference=ref)
    if vacc is not None and len(vacc) >= 3:
        a = _med3(vacc.to_numpy(float))
        first_acc, best_acc = float(vacc.iloc[0]), float(np.max(a))
        ref_acc = curves.chance_acc if curves.chance_acc is not None else first_acc
        if best_acc > ref_acc + NOGEN_VAL_ACC:
            return False
        what = f"chance ({ref_acc:.1%})" if curves.chance_acc is not None else f"its first value {first_acc:.1%}"
        said.append(f"val accuracy never rose more than {100 * max(best_acc - ref_acc, 0):.1f} points above {what}")
        evidence.update(val_acc_best=best_acc, val_acc_reference=ref_acc)
        if tacc is not None and len(tacc):
            train_acc = float(tacc.iloc[-1])
            if train_acc < best_acc + NOGEN_GAP:
                return False
            evidence["train_acc_end"] = train_acc
    if not said:
        return False
    accs = f", train accuracy {evidence['train_acc_end']:.1%}" if "train_acc_end" in evidence else ""
    verdict.add(
        "not-generalizing",
        "fail",
        f"the model learns nothing that generalises: train loss fell to {t_end / initial:.0%} of its initial {_n(initial)}{accs}, "
        f"but " + "; ".join(said),
        "Validation is at chance while training improves: check the labels (shuffled or misaligned with the inputs?), "
        "that train and validation come from the same distribution and preprocessing, and for a leak of the "
        "example's index into the input; more regularization will not fix this.",
        x=curves.fit_x,
        **evidence,
    )
    return True


def _still_improving(verdict: Verdict, curves: Curves, lx: str) -> None:
    if "lr-too-low" in verdict.codes or "plateau" in verdict.codes:
        return
    val = curves.fit.get("val_loss")
    series, name, xname = (val, "val loss", curves.fit_x) if val is not None and len(val) >= 4 else (curves.loss(), "train loss", lx)
    if series is None or len(series) < 4:
        return
    series = thin(series)
    x = series.index.to_numpy(float)
    y = series.to_numpy(float)
    u = (x - x[0]) / (x[-1] - x[0] or 1.0)
    drop, t, m = last_quarter_slope(u, y)
    if m < 3:
        return
    end = float(np.median(y[-max(2, len(y) // 10) :]))
    total = float(np.median(y[: head(len(y))])) - end
    if m < 5:
        tail = y[-m:]
        clear = bool(np.all(np.diff(tail) < 0))
    else:
        clear = t >= STILL_T
    if total > 0 and drop >= STILL_FRACTION * total and drop >= STILL_LEVEL * abs(end) and clear:
        verdict.add(
            "still-improving",
            "info",
            f"{name} is still falling at the end: {drop / total:.0%} of its improvement came in the last quarter of the run "
            f"({_n(drop)}, {drop / abs(end):.1%} of its final {_n(end)}){'' if m < 5 else f', t = {t:.1f}'}",
            "Train longer (more epochs) before judging the model; the curve has not levelled off.",
            series=name,
            last_quarter_drop=drop,
            fraction=drop / total,
            t=t,
            x=xname,
        )


# ------------------------------------------------------------------------------------------------
# Measuring and running
# ------------------------------------------------------------------------------------------------


def measure(runs: list[Curves]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """One long table of every series (run, series, x_name, x, value, smooth) and the key numbers."""
    rows = []
    for c in runs:
        parts = [("train_loss_dense", c.x, c.dense)] if c.dense is not None else []
        parts += [(k, c.fit_x, s) for k, s in c.fit.items() if not (k == "train_loss" and s is c.dense)]
        for name, xname, s in parts:
            if s is None or not len(s):
                continue
            s = thin(s)  # a long log's table holds the points the rules read, not all ten million
            values = s.to_numpy(float)
            rows.append(
                pd.DataFrame(
                    {
                        "run": c.label,
                        "series": name,
                        "x_name": xname,
                        "x": s.index.to_numpy(float),
                        "value": values,
                        "smooth": smooth(values),
                    }
                )
            )
    frame = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=["run", "series", "x_name", "x", "value", "smooth"])
    facts: dict[str, Any] = {}
    for c in runs:
        prefix = "" if len(runs) == 1 else f"{c.label}."
        facts.update({prefix + k: v for k, v in summarize(c).items()})
    return frame, facts


def describe_columns(c: Curves) -> str:
    """Which column or tag each series came from, e.g. 'train loss <- train/loss, val loss <- val/loss, x <- step'."""
    names = {
        "dense": "dense train loss",
        "train_loss": "train loss",
        "val_loss": "val loss",
        "train_acc": "train acc",
        "val_acc": "val acc",
        "x": "x",
    }
    return ", ".join(f"{names.get(k, k)} <- {v}" for k, v in c.columns.items())


def summarize(c: Curves) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if c.columns:
        out["columns"] = describe_columns(c)
    loss = c.loss()
    if loss is not None and len(loss):
        finite = loss[np.isfinite(loss.to_numpy(float))]
        out["points"] = int(len(loss))
        if len(loss) > MAX_JUDGED:
            out["points_judged"] = int(len(thin(loss)))
        out["initial_train_loss"] = float(finite.iloc[0]) if len(finite) else math.nan
        out["final_train_loss"] = float(finite.iloc[-1]) if len(finite) else math.nan
        if len(finite) >= MIN_POINTS:
            sh = Shape.of(finite)
            out["noise_to_drop"] = sh.wiggle / sh.drop if sh.drop > 0 else math.nan  # what the noisy rule reads
    for key in ("val_loss", "val_acc", "train_acc"):
        s = c.fit.get(key)
        if s is not None and len(s):
            finite = s[np.isfinite(s.to_numpy(float))]
            if len(finite):
                best = finite.idxmin() if key == "val_loss" else finite.idxmax()
                out[f"final_{key}"] = float(finite.iloc[-1])
                if key != "train_acc":
                    out[f"best_{key}"] = float(finite[best])
                    out[f"best_{key}_at_{c.fit_x}"] = float(best)
    return out


def verdict_for(runs: list[Curves]) -> Verdict:
    """Decide each run; with several runs, each message names its run."""
    verdict = Verdict()
    for c in runs:
        own = decide(c)
        for f in own.findings:
            if len(runs) > 1:
                f.message = f"[{c.label}] {f.message}"
                f.evidence["run"] = c.label
        verdict.extend(own)
    return verdict


def run(paths: list[Path], lr_chosen: str | None = None, **columns: str | None) -> Result:
    """`lr_chosen`: what chose the LR the logged run trained at (babysit: "the search"), for the LR rules."""
    runs = load(paths, **columns)
    for c in runs:
        c.lr_chosen = lr_chosen
    return result_for(runs)


def run_frame(table: pd.DataFrame, **columns: str | None) -> Result:
    """The curves verdict on a pandas DataFrame (the Python API)."""
    return result_for([from_frame(table, **columns)])


def result_for(runs: list[Curves]) -> Result:
    frame, facts = measure(runs)
    verdict = verdict_for(runs)
    context = {"files": ", ".join(s for c in runs for s in c.sources)}
    if len(runs) > 1:
        context["runs"] = ", ".join(c.label for c in runs)
    context["read"] = "; ".join((f"{c.label}: " if len(runs) > 1 else "") + describe_columns(c) for c in runs)
    return Result("curves", verdict, {"curves": frame}, facts, context=context)
