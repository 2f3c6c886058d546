"""Screen lr-find suggestion rules offline, on the tuning problems' cached curves and grids.

    python -m benchmarks.lr_find_screen                                      # the rule families on the cached curves
    python -m benchmarks.lr_find_screen --curves /tmp/b1.csv                 # ... on curves measured otherwise
    nice -n 10 python -m benchmarks.lr_find_screen --measure 1 /tmp/b1.csv   # measure the tuning curves with 1 batch per LR

No training: a rule is a function of a range-test curve (benchmarks/results/lr_find_quality_curves.csv,
or --curves), and its suggestion is scored on the cached grid (lr_find_quality_scores.csv) by
interpolating the loss linearly in log LR and log loss between the two grid points around it (an
exactly trained score is used when there is one; next to a non-finite grid point, the nearer neighbour
decides; below the pruned part of the grid: bad). GOOD as in lr_find_quality (issue 12). Only the
tuning problems (splits derive and report) are read: the holdout is never screened.

For each rule family it prints: problems good on a majority of seeds at 300 and at 1,000 steps (in
sample, best parameters), the leave-one-problem-out total (parameters chosen on the other 16
problems, scored on the one left out: how much of the in-sample count survives), and how many
(run, step count) pairs were bad because the suggestion was too high or too low. Finalists must
then be confirmed by `python -m benchmarks.lr_find_quality`, which trains the exact suggestions.
Results: benchmarks/results/lr_find_rule_search.md.
"""

from __future__ import annotations

import argparse
import itertools
import math
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from benchmarks.lr_find_quality import CURVES_CSV, SCORES_CSV, is_good
from benchmarks.problems import PROBLEMS
from nndiag.diagnostics import defaults
from nndiag.diagnostics import lr_find as lf

TUNING = [n for n, p in PROBLEMS.items() if p["split"] != "holdout"]
SEEDS = (0, 1, 2)
STEPS = (300, 1000)
LATTICE = np.arange(-8, 1.5, 1 / 40)  # log10 LRs at which the interpolated verdicts are precomputed (1/40 decade)
OFFSETS = np.arange(-1.5, 1.01, 0.125)  # log10 offsets searched for every family
Rule = Callable[[str, int], "float | None"]


class Bench:
    """The tuning runs: landmarks of each curve and the good/bad verdict along the LR lattice."""

    def __init__(self, curves: Path):
        scores = pd.read_csv(SCORES_CSV)
        on_grid = np.isclose(np.log10(scores["lr"]) * 4, (np.log10(scores["lr"]) * 4).round())
        curve_table = pd.read_csv(curves)
        self.marks: dict[tuple[str, int], dict[str, Any]] = {}
        self.good: dict[tuple[str, int, int], np.ndarray] = {}
        for name in TUNING:
            for seed in SEEDS:
                c = curve_table[(curve_table["problem"] == name) & (curve_table["seed"] == seed)].sort_values("step")
                self.marks[(name, seed)] = landmarks(c["lr"].to_numpy(), c["loss"].to_numpy(), c["stopped"].iloc[0])
                for k in STEPS:
                    part = scores[(scores["problem"] == name) & (scores["seed"] == seed) & (scores["steps"] == k)]
                    grid = part[on_grid[part.index]].sort_values("lr")
                    x, y = grid["lr"].to_numpy(), grid["loss"].to_numpy()
                    best = float(y.min())
                    self.good[(name, seed, k)] = np.array([is_good(_interpolate(x, y, 10**q), best) for q in LATTICE])

    def is_good(self, name: str, seed: int, k: int, lr: float | None) -> bool:
        if lr is None or not lr > 0:
            return False
        j = int(round((math.log10(lr) - LATTICE[0]) * 40))
        return bool(self.good[(name, seed, k)][min(max(j, 0), len(LATTICE) - 1)])

    def score(self, rule: Rule, names: list[str] = TUNING) -> dict[str, dict[int, bool]]:
        """{problem: {steps: good on a majority of seeds}}."""
        return {n: {k: sum(self.is_good(n, s, k, rule(n, s)) for s in SEEDS) * 2 > len(SEEDS) for k in STEPS} for n in names}

    def sides(self, rule: Rule) -> tuple[int, int]:
        """(too high, too low): bad (run, step count) pairs above / below every good LR."""
        high = low = 0
        for (name, seed, k), good in self.good.items():
            lr = rule(name, seed)
            if self.is_good(name, seed, k, lr):
                continue
            top = LATTICE[np.flatnonzero(good)[-1]] if good.any() else math.inf
            high, low = (high + 1, low) if lr and math.log10(lr) > top else (high, low + 1)
        return high, low


def _interpolate(x: np.ndarray, y: np.ndarray, lr: float) -> float:
    if lr < x[0] or lr > x[-1]:
        return math.inf
    j = int(np.searchsorted(x, lr))
    if j < len(x) and math.isclose(x[j], lr, rel_tol=1e-9):
        return float(y[j])
    a, b = j - 1, j
    t = (math.log(lr) - math.log(x[a])) / (math.log(x[b]) - math.log(x[a]))
    if not (math.isfinite(y[a]) and math.isfinite(y[b])):
        near = y[a] if t < 0.5 else y[b]
        return float(near) if math.isfinite(near) else math.inf
    return float(math.exp((1 - t) * math.log(max(y[a], 1e-12)) + t * math.log(max(y[b], 1e-12))))


def landmarks(lrs: np.ndarray, losses: np.ndarray, stopped: str) -> dict[str, Any]:
    """The LRs a rule may use: where the smoothed curve covers 50/80/90/95% of its drop, its minimum, the
    divergence point, the round-1 and the current suggestion, and whether the curve is flat-then-rising."""
    sug = lf.suggest(lrs, losses, stopped in ("diverged", "non-finite"))
    marks: dict[str, Any] = {
        "current": sug.suggested_lr,
        "div": sug.lr_diverged,
        "flat": sug.unreliable == "flat",
        "min": sug.lr_at_min_loss,
    }
    if sug.index_min is None or sug.problem:
        return marks
    n = sug.points
    s = lf.robust_smooth(losses[:n], lf._window(n))
    start = float(np.median(losses[: max(3, int(lf.START_POINTS * n))]))
    drop = start - s[sug.index_min]
    if drop > 0:
        for fraction in (0.5, 0.8, 0.9, 0.95):
            marks[fraction] = float(lrs[np.flatnonzero(s[: sug.index_min + 1] <= start - fraction * drop)[0]])
        near = np.flatnonzero(s <= s[sug.index_min] + 0.03 * drop)  # round 1: the bottom (3% of the drop), its centre
        run = near[(near >= _run_start(near, sug.index_min)) & (near <= _run_end(near, sug.index_min, sug.index_diverged))]
        bottom = float(np.exp(np.log(lrs[run]).mean()))
        marks["round1"] = min(max(math.sqrt(marks[0.8] * bottom), marks[0.5]), min(sug.lr_at_min_loss, sug.lr_diverged or math.inf))
    if sug.unreliable == "flat":
        marks["round1"] = sug.lr_diverged / 50
    return marks


def _run_start(idx: np.ndarray, i: int) -> int:
    members = set(idx.tolist())
    while i - 1 in members:
        i -= 1
    return i


def _run_end(idx: np.ndarray, i: int, stop: int | None) -> int:
    members = set(idx.tolist())
    while i + 1 in members and (stop is None or i + 1 < stop):
        i += 1
    return i


def family(name: str) -> str:
    return "sgd" if PROBLEMS[name]["optim"]["name"] == "sgd" else "adaptive"


# -- rule families (each: parameters -> rule) --------------------------------------------------


def landmark_times(bench: Bench, mark: Any) -> Callable[..., Rule]:
    """landmark x 10^c (flat curves: the divergence point / 20)."""

    def make(c: float) -> Rule:
        return lambda n, s: _flat(bench, n, s) or _times(bench.marks[(n, s)].get(mark), c)

    return make


def landmark_times_by_family(bench: Bench, mark: Any) -> Callable[..., Rule]:
    """landmark x 10^c_sgd or x 10^c_adaptive, by the optimizer family."""

    def make(c_sgd: float, c_adaptive: float) -> Rule:
        return lambda n, s: _flat(bench, n, s) or _times(bench.marks[(n, s)].get(mark), c_sgd if family(n) == "sgd" else c_adaptive)

    return make


def capped(bench: Bench, mark: Any, by_family: bool = False) -> Callable[..., Rule]:
    """min(landmark x 10^c, divergence / margin); by_family: the margin depends on the optimizer family."""

    def make(c: float, margin: float, margin_sgd: float | None = None) -> Rule:
        def rule(n: str, s: int) -> float | None:
            m = bench.marks[(n, s)]
            limit = margin_sgd if by_family and family(n) == "sgd" else margin
            if m["flat"]:
                return m["div"] / 20
            base = _times(m.get(mark), c)
            return base if base is None or m["div"] is None else min(base, m["div"] / limit)

        return rule

    return make


def _flat(bench: Bench, n: str, s: int) -> float | None:
    m = bench.marks[(n, s)]
    return m["div"] / 20 if m["flat"] else None


def _times(lr: float | None, c: float) -> float | None:
    return None if lr is None else lr * 10**c


def leave_one_out(bench: Bench, make: Callable[..., Rule], grid: list[tuple]) -> tuple[int, int, tuple, int]:
    """(in-sample best total, leave-one-problem-out total, best parameters, how many tie) over (problem, steps) pairs."""
    table = {p: bench.score(make(*p)) for p in grid}
    counts = {p: {n: sum(v.values()) for n, v in t.items()} for p, t in table.items()}
    best = max(sum(c.values()) for c in counts.values())
    tied = [p for p in grid if sum(counts[p].values()) == best]
    held_total = 0
    for held in TUNING:
        others = {p: sum(v for n, v in c.items() if n != held) for p, c in counts.items()}
        top = max(others.values())
        chosen = [p for p in grid if others[p] == top]
        held_total += counts[chosen[len(chosen) // 2]][held]
    return best, held_total, tied[len(tied) // 2], len(tied)


def report(bench: Bench) -> list[str]:
    lines = [
        "| rule | parameters (best in sample) | good at 300 | good at 1000 | in sample (of 34) | "
        "leave-one-problem-out (of 34) | too high / too low (of 102) |",
        "|---|---|---|---|---|---|---|",
    ]

    def row(label: str, rule: Rule, params: str, loo: str = "-") -> None:
        table = bench.score(rule)
        g3, g10 = (sum(v[k] for v in table.values()) for k in STEPS)
        high, low = bench.sides(rule)
        lines.append(f"| {label} | {params} | {g3}/17 | {g10}/17 | {g3 + g10} | {loo} | {high} / {low} |")

    row("round 1 (sqrt(knee80 x bottom), flat: rise/50)", lambda n, s: bench.marks[(n, s)].get("round1"), "-")
    row("lr_find.suggest as in this checkout", lambda n, s: bench.marks[(n, s)]["current"], "-")
    fixed = [(c,) for c in OFFSETS]
    pairs = list(itertools.product(OFFSETS, OFFSETS))
    for mark in (0.5, 0.9, "min", "div"):
        best, loo, p, _ = leave_one_out(bench, landmark_times(bench, mark), fixed)
        row(f"{mark} x 10^c", landmark_times(bench, mark)(*p), f"c={p[0]:+.3g}", str(loo))
        best, loo, p, _ = leave_one_out(bench, landmark_times_by_family(bench, mark), pairs)
        row(f"{mark} x 10^c by family", landmark_times_by_family(bench, mark)(*p), f"c_sgd={p[0]:+.3g}, c_adaptive={p[1]:+.3g}", str(loo))
    margins = [(c, m) for c in (-0.25, -0.125, 0.0, 0.125) for m in (5, 8, 10, 13, 15, 20, 25, 30)]
    for mark in (0.8, 0.9, 0.95, "min"):
        best, loo, p, _ = leave_one_out(bench, capped(bench, mark), margins)
        row(f"min({mark} x 10^c, divergence / margin)", capped(bench, mark)(*p), f"c={p[0]:+.3g}, margin={p[1]:g}", str(loo))
    by_family = [(0.0, m, ms) for m in (10, 13, 20, 30) for ms in (2, 3, 5, 8, 13, 20)]
    best, loo, p, _ = leave_one_out(bench, capped(bench, 0.9, by_family=True), by_family)
    row("min(0.9, divergence / margin by family)", capped(bench, 0.9, True)(*p), f"margin={p[1]:g}, SGD {p[2]:g}", str(loo))
    return lines


def measure(batches_per_lr: int, steps: int, out: Path) -> None:
    """The tuning problems' range-test curves with other measurement settings (a few minutes on one thread)."""
    import torch

    from benchmarks.problems import build

    torch.set_num_threads(1)
    frames = []
    for name in TUNING:
        for seed in SEEDS:
            frame, facts = lf.measure(build(name, seed), steps=steps, batches_per_lr=batches_per_lr)
            frames.append(frame.assign(problem=name, seed=seed, stopped=facts["stopped"]))
            print(name, seed, len(frame), facts["stopped"], flush=True)
    pd.concat(frames).to_csv(out, index=False)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--curves", type=Path, default=CURVES_CSV, help="range-test curves (columns of lr_find_quality_curves.csv)")
    parser.add_argument("--measure", nargs=2, metavar=("BATCHES_PER_LR", "OUT"), help="measure the tuning curves instead")
    parser.add_argument("--steps", type=int, default=defaults.LR_FIND_STEPS, help="LR points, with --measure")
    args = parser.parse_args(argv)
    if args.measure:
        measure(int(args.measure[0]), args.steps, Path(args.measure[1]))
        return
    print(f"curves: {args.curves}\n")
    print("\n".join(report(Bench(args.curves))))


if __name__ == "__main__":
    main()
