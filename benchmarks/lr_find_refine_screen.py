"""Screen for a refine stage after the range test: short trial runs around the suggestion.

    nice -n 10 python -m benchmarks.lr_find_refine_screen measure [CSV] [--problems ...]
    python -m benchmarks.lr_find_refine_screen score [CSV]      # writes benchmarks/results/lr_find_refine_screen.md

CSV defaults to benchmarks/results/lr_find_refine_screen.csv.

`measure`: for every problem and seed, the range test's pick s (nndiag's defaults, refine stage off),
then short runs from the same initial weights at s x 10^(k/2), k = -1 ... 3, as lr-find's trials run
them (the optimizer as configured, only its LR changed; the trials' own batch order, seed +
lr_find.TRIAL_ORDER_OFFSET), each scored on the fixed training subset after 50, 100 and 200 steps. `score`: selection rules over those short runs,
scored against the cached grid (lr_find_quality_scores.csv) by interpolation in log LR and log loss.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from benchmarks.lr_find_quality import RESULTS, SCORES_CSV, SEEDS, STEPS, is_good
from benchmarks.lr_find_screen import _interpolate
from benchmarks.problems import PROBLEMS, build
from nndiag.diagnostics import lr_find
from nndiag.training import engine

FACTORS = [10 ** (k / 2) for k in (-1, 0, 1, 2, 3)]
CHECKPOINTS = (50, 100, 200)


def measure_one(name: str, seed: int) -> list[dict[str, Any]]:
    exp = build(name, seed)
    rows = []
    with engine.preserved(exp.model) as init:
        res = lr_find.run(exp, refine_steps=0)
        init.restore(exp.model)
        s = res.metrics["suggested_lr"]
        if s is None:
            return [{"problem": name, "seed": seed, "s": math.nan}]
        subset = lr_find._eval_subset(exp)
        for f in FACTORS:
            init.restore(exp.model)
            exp.model.train()
            opt = exp.optimizer()
            engine.lr_setter(opt)(s * f)
            batches = lr_find._endless_batches(exp, torch.Generator().manual_seed(exp.recipe.seed + lr_find.TRIAL_ORDER_OFFSET))
            row = {
                "problem": name,
                "seed": seed,
                "s": s,
                "lr_diverged": res.metrics["lr_diverged"],
                "lr_at_min": res.metrics["lr_at_min_loss"],
                "factor": f,
                "lr": s * f,
                "unreliable": ",".join(x.evidence.get("reason", "") for x in res.verdict.findings if x.code == "unreliable-suggestion"),
            }
            dead = False
            for i in range(1, max(CHECKPOINTS) + 1):
                loss = float(exp.step(opt, next(batches), model=exp.model).loss)
                if not math.isfinite(loss) or loss > 100:
                    dead = True
                    break
                if i in CHECKPOINTS:
                    v = exp.evaluate(split=subset)["loss"]
                    row[f"loss{i}"] = v if math.isfinite(v) else math.inf
                    exp.model.train()
            if dead:
                for c in CHECKPOINTS:
                    row.setdefault(f"loss{c}", math.inf)
            rows.append(row)
        init.restore(exp.model)
    return rows


def cmd_measure(out: Path, problems: list[str], seeds: list[int]) -> None:
    torch.set_num_threads(1)
    done = pd.read_csv(out) if out.exists() else pd.DataFrame(columns=["problem", "seed"])
    for name in problems:
        for seed in seeds:
            if ((done["problem"] == name) & (done["seed"] == seed)).any():
                continue
            rows = measure_one(name, seed)
            frame = pd.DataFrame(rows)
            frame.to_csv(out, mode="a", header=not out.exists(), index=False)
            print(name, seed, flush=True)


def grid_loss(scores: pd.DataFrame, name: str, seed: int, lr: float, k: int) -> tuple[float, float]:
    g = scores[(scores.problem == name) & (scores.seed == seed) & (scores.steps == k)].sort_values("lr")
    x, y = g["lr"].to_numpy(), g["loss"].to_numpy()
    grid = g[[abs(math.log10(v) * 4 - round(math.log10(v) * 4)) < 1e-6 for v in g["lr"]]]
    best = float(grid["loss"].min())
    return _interpolate(x, y, lr), best


def rule_pick(group: pd.DataFrame, rule: dict[str, Any]) -> float:
    """The LR a selection rule picks among the short runs of one (problem, seed)."""
    s = float(group["s"].iloc[0])
    div = group["lr_diverged"].iloc[0]
    cands = group[group["factor"].round(6).isin([round(f, 6) for f in rule["factors"]])]
    if rule.get("below_div") and pd.notna(div):
        cands = cands[cands["lr"] <= float(div) / rule["below_div"]]
    if cands.empty:
        return s
    col = f"loss{rule['steps']}"
    best = cands.loc[cands[col].idxmin()]
    if not math.isfinite(best[col]):
        return s
    # prefer the smaller LR when within tol of the best (rule["tol"])
    tol = rule.get("tol", 0.0)
    if rule.get("relative_to_drop"):
        initial = float(group["initial"].iloc[0])
        ok = cands[cands[col] <= best[col] + tol * max(initial - best[col], 0.0)]
    else:
        ok = cands[cands[col] <= best[col] * (1 + tol)]
    return float(ok["lr"].min())


ADOPTED = "100 steps, x1/3..10, div/1, droptol 0.05"  # what lr_find does (REFINE_FACTORS, DEFAULT_REFINE_STEPS, REFINE_TOLERANCE)
FACTOR_SETS = {"1/3..10": FACTORS[0:4], "1,3,10": FACTORS[1:4], "1..30": FACTORS[1:], "1,3": FACTORS[1:3]}


def variants() -> dict[str, dict[str, Any]]:
    """Selection rules: trial length, factor set, a cap at the divergence point / 1, 2 or 3, and a
    tolerance (relative to the best trial's loss, or to its drop: droptol, what lr_find uses)."""
    rules: dict[str, dict[str, Any]] = {"range test alone": {"factors": FACTORS[1:2], "steps": 50}}
    for steps in CHECKPOINTS:
        for facs_name, facs in FACTOR_SETS.items():
            for bd in (1, 2, 3):
                for tol in (0.0, 0.05, 0.1):
                    rules[f"{steps} steps, x{facs_name}, div/{bd}, tol {tol}"] = {
                        "factors": facs,
                        "steps": steps,
                        "below_div": bd,
                        "tol": tol,
                    }
                for tol in (0.005, 0.01, 0.02, 0.05):
                    rules[f"{steps} steps, x{facs_name}, div/{bd}, droptol {tol}"] = {
                        "factors": facs,
                        "steps": steps,
                        "below_div": bd,
                        "tol": tol,
                        "relative_to_drop": True,
                    }
    return rules


def cmd_score(path: Path, out: Path) -> None:
    data = pd.read_csv(path)
    quality = pd.read_csv(Path(SCORES_CSV).parent / "lr_find_quality.csv")
    initial = quality.groupby(["problem", "seed"])["initial_loss"].first()
    data["initial"] = [initial[(p, s)] for p, s in zip(data.problem, data.seed)]
    scores = pd.read_csv(SCORES_CSV)
    rows = []
    for rname, rule in variants().items():
        good: dict[int, dict[str, list[bool]]] = {k: {} for k in STEPS}
        for (name, seed), group in data.groupby(["problem", "seed"]):
            lr = None if group["s"].isna().all() else rule_pick(group, rule)
            for k in STEPS:
                ok = lr is not None and is_good(*grid_loss(scores, name, seed, lr, k))
                good[k].setdefault(name, []).append(ok)
        counts = {k: sum(sum(v) * 2 > len(v) for v in good[k].values()) for k in STEPS}
        hold = {k: sum(sum(v) * 2 > len(v) for n, v in good[k].items() if PROBLEMS[n]["split"] == "holdout") for k in STEPS}
        rows.append(
            {
                "rule": rname,
                "steps": rule["steps"],
                "factors": next((n for n, f in FACTOR_SETS.items() if f == rule["factors"]), "1"),
                "good300": counts[300],
                "good1000": counts[1000],
                "holdout300": hold[300],
                "holdout1000": hold[1000],
                "problems": len(good[300]),
            }
        )
    frame = pd.DataFrame(rows)
    rest = frame[frame["rule"] != "range test alone"]
    n = int(frame["problems"].iloc[0])
    lines = [
        "# lr-find refine stage: the screen",
        "",
        "Commands: `nice -n 10 python -m benchmarks.lr_find_refine_screen measure` (the trials' short runs: "
        "every problem and seed, the range test's pick x 10^(k/2), k = -1 ... 3, 200 steps each, scored on the training "
        "subset after 50, 100 and 200) then `python -m benchmarks.lr_find_refine_screen score`. Each selection rule's LR is "
        "scored on the cached grid of lr_find_quality_scores.csv (interpolated in log LR and log loss): good = within "
        "max(1.25x, +0.05) of the grid-best loss after 300 / 1,000 steps, on a majority of the 3 seeds. The screen is a "
        "guide; lr_find_quality.md trains the exact suggestions.",
        "",
        f"- range test alone: {int(frame.iloc[0].good300)} / {int(frame.iloc[0].good1000)} of {n} problems good at 300 / 1,000 steps",
        f"- adopted ({ADOPTED}): " + " / ".join(str(int(frame.loc[frame.rule == ADOPTED, c].iloc[0])) for c in ("good300", "good1000")),
        f"- all {len(rest)} variants: {rest.good300.min()}-{rest.good300.max()} at 300 steps, "
        f"{rest.good1000.min()}-{rest.good1000.max()} at 1,000",
        "",
        "## By trial length and factor set (range over the caps and tolerances)",
        "",
        "| trial steps | factors (x the pick) | variants | good at 300 | good at 1,000 | holdout at 300 | holdout at 1,000 |",
        "|---:|---|---:|---|---|---|---|",
    ]
    for (steps, facs), g in rest.groupby(["steps", "factors"], sort=True):
        span = lambda c: f"{g[c].min()}-{g[c].max()}" if g[c].min() != g[c].max() else f"{g[c].min()}"  # noqa: E731
        lines.append(
            f"| {steps} | {facs} | {len(g)} | {span('good300')} | {span('good1000')} | {span('holdout300')} | {span('holdout1000')} |"
        )
    lines += [
        "",
        "## Every variant",
        "",
        "| rule | good at 300 | good at 1,000 | holdout at 300 | holdout at 1,000 |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in frame.itertuples():
        lines.append(
            f"| {r.rule}{' (adopted)' if r.rule == ADOPTED else ''} | {r.good300} | {r.good1000} | {r.holdout300} | {r.holdout1000} |"
        )
    text = "\n".join(lines) + "\n"
    out.write_text(text)
    print("\n".join(lines[:12]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.lr_find_refine_screen")
    parser.add_argument("cmd", choices=["measure", "score"])
    parser.add_argument("out", type=Path, nargs="?", default=RESULTS / "lr_find_refine_screen.csv", help="the short runs' CSV")
    parser.add_argument("--problems", nargs="*", default=list(PROBLEMS))
    parser.add_argument("--seeds", type=int, nargs="*", default=list(SEEDS))
    args = parser.parse_args(argv)
    if args.cmd == "measure":
        cmd_measure(args.out, args.problems, args.seeds)
    else:
        cmd_score(args.out, RESULTS / "lr_find_refine_screen.md")


if __name__ == "__main__":
    sys.exit(main())
