"""Screen for a refine stage after the range test: short trial runs around the suggestion.

    nice -n 10 python -m benchmarks.lr_find_refine_screen measure OUT.csv [--problems ...]
    python -m benchmarks.lr_find_refine_screen score OUT.csv

`measure`: for every problem and seed, the range test's suggestion s (nndiag's defaults), then short
runs from the same initial weights at s x 10^(k/2), k = -1 ... 3, each scored on the fixed training
subset of candidates mode after 50, 100 and 200 steps. `score`: selection rules over those short runs,
scored against the cached grid (lr_find_quality_scores.csv) by interpolation in log LR and log loss.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from benchmarks.lr_find_quality import SCORES_CSV, SEEDS, STEPS, is_good
from benchmarks.lr_find_screen import _interpolate
from benchmarks.problems import PROBLEMS, build
from nndiag import engine
from nndiag.diagnostics import lr_find

FACTORS = [10 ** (k / 2) for k in (-1, 0, 1, 2, 3)]
CHECKPOINTS = (50, 100, 200)


def measure_one(name: str, seed: int) -> list[dict[str, Any]]:
    exp = build(name, seed)
    rows = []
    with engine.preserved(exp.model) as init:
        res = lr_find.run(exp)
        init.restore(exp.model)
        s = res.metrics["suggested_lr"]
        if s is None:
            return [{"problem": name, "seed": seed, "s": math.nan}]
        own = max((g.get("weight_decay", 0.0) for g in exp.optimizer().param_groups), default=0.0)
        subset = exp.data.train.take(lr_find.EVAL_EXAMPLES, generator=torch.Generator().manual_seed(exp.recipe.seed))
        for f in FACTORS:
            init.restore(exp.model)
            exp.model.train()
            opt = exp.optimizer(lr=s * f, weight_decay=own)
            batches = lr_find._endless_batches(exp, torch.Generator().manual_seed(exp.recipe.seed))
            row = {"problem": name, "seed": seed, "s": s, "lr_diverged": res.metrics["lr_diverged"],
                   "lr_at_min": res.metrics["lr_at_min_loss"], "factor": f, "lr": s * f,
                   "unreliable": ",".join(x.evidence.get("reason", "") for x in res.verdict.findings if x.code == "unreliable-suggestion")}
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


def cmd_score(path: Path) -> None:
    data = pd.read_csv(path)
    quality = pd.read_csv(Path(SCORES_CSV).parent / "lr_find_quality.csv")
    initial = quality.groupby(["problem", "seed"])["initial_loss"].first()
    data["initial"] = [initial[(p, s)] for p, s in zip(data.problem, data.seed)]
    scores = pd.read_csv(SCORES_CSV)
    rules = {}
    for steps in CHECKPOINTS:
        for facs_name, facs in {"1,3,10": FACTORS[1:4], "1/3..10": FACTORS[0:4], "1..30": FACTORS[1:], "1,3": FACTORS[1:3]}.items():
            for bd in (None, 1, 2, 3):
                for tol in (0.0, 0.05, 0.1):
                    rules[f"{steps} steps, x{facs_name}, div/{bd}, tol {tol}"] = {"factors": facs, "steps": steps, "below_div": bd, "tol": tol}
                for tol in (0.005, 0.01, 0.02, 0.05):
                    rules[f"{steps} steps, x{facs_name}, div/{bd}, droptol {tol}"] = {"factors": facs, "steps": steps, "below_div": bd,
                                                                                    "tol": tol, "relative_to_drop": True}
    rules = {"baseline (s)": {"factors": FACTORS[1:2], "steps": 50}, **rules}
    out = []
    for rname, rule in rules.items():
        good = {k: {} for k in STEPS}
        for (name, seed), group in data.groupby(["problem", "seed"]):
            if group["s"].isna().all():
                for k in STEPS:
                    good[k].setdefault(name, []).append(False)
                continue
            lr = rule_pick(group, rule)
            for k in STEPS:
                loss, best = grid_loss(scores, name, seed, lr, k)
                good[k].setdefault(name, []).append(is_good(loss, best))
        counts = {k: sum(sum(v) * 2 > len(v) for v in good[k].values()) for k in STEPS}
        runs = {k: sum(sum(v) for v in good[k].values()) for k in STEPS}
        hold = {k: sum(sum(v) * 2 > len(v) for n, v in good[k].items() if PROBLEMS[n]["split"] == "holdout") for k in STEPS}
        out.append((rname, counts[300], counts[1000], hold[300], hold[1000], runs[300], runs[1000], len(good[300])))
    frame = pd.DataFrame(out, columns=["rule", "good300", "good1000", "hold300", "hold1000", "runs300", "runs1000", "problems"])
    frame["total"] = frame.good300 + frame.good1000
    pd.set_option("display.width", 200, "display.max_rows", 500, "display.max_colwidth", 60)
    print(frame.sort_values("total", ascending=False).head(40).to_string(index=False))
    rest = frame[frame.rule != "baseline (s)"]
    print("all variants: good at 300", rest.good300.min(), "-", rest.good300.max(), "; at 1000", rest.good1000.min(), "-", rest.good1000.max())
    print(frame[frame.rule == "baseline (s)"].to_string(index=False))
    print(frame[frame.rule.str.contains("x1/3..10, div/1,")].to_string(index=False))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.lr_find_refine_screen")
    parser.add_argument("cmd", choices=["measure", "score"])
    parser.add_argument("out", type=Path)
    parser.add_argument("--problems", nargs="*", default=list(PROBLEMS))
    parser.add_argument("--seeds", type=int, nargs="*", default=list(SEEDS))
    args = parser.parse_args(argv)
    if args.cmd == "measure":
        cmd_measure(args.out, args.problems, args.seeds)
    else:
        cmd_score(args.out)


if __name__ == "__main__":
    sys.exit(main())
