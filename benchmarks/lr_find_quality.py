"""Quality of `nndiag lr-find`'s suggestion against a grid search, beside fastai, torch-lr-finder and Lightning.

    nice -n 10 python -m benchmarks.lr_find_quality                       # every problem, seeds 0 1 2, 300 and 1000 steps
    python -m benchmarks.lr_find_quality --problems spiral-mlp-sgd --seeds 0 --steps 300
    python -m benchmarks.lr_find_anchors                                  # the anchors' suggestions (see its docstring)

For each problem of benchmarks/problems.py and each seed (the seed sets the initial weights and the
batch order; a fine-tuning problem is pretrained first, from the same seed):
  1. the grid: train max(--steps) optimizer steps at each LR of a quarter-decade grid (GRID: 1e-6 ... 10,
     29 LRs) from the same initial weights and the same batch order, recording the loss on the whole
     training split after each of --steps (default 300 and 1,000; a constant LR, so the 300-step score
     is the first 300 steps of the 1,000-step run). Non-finite = inf. Grid-best = the lowest loss.
     The grid is walked from 10 down; once two consecutive LRs below the best so far each score worse
     than the LR above them (and not good), the smaller LRs are not trained: they only train less.
     A run whose batch loss exceeds 100x its first is scored inf at once.
  2. the suggestions: nndiag's `lr_find.run` (defaults: 1e-7 -> 10, 100 points, 4 batches per point) on the same weights;
     and the anchors read from ANCHORS_CSV (written by benchmarks/lr_find_anchors.py, which runs the
     tools themselves in the venv that has them): fastai's `valley`, torch-lr-finder's steepest
     point, Lightning's `Tuner.lr_find` suggestion. None = the tool gave no suggestion (bad).
  3. each suggestion is trained exactly like a grid point. GOOD (issue 12's definition) when its loss
     is within max(GOOD_RATIO x, + GOOD_MARGIN) of the grid-best loss at the same number of steps:
         L(suggestion) <= max(1.25 L(best), L(best) + 0.05)
     The share of the grid-best's improvement, (L0 - L) / (L0 - L(best)), is reported beside it.
  4. per problem, a tool is GOOD when it is good on a majority of the seeds; the headline counts
     problems at each step count, on the tuning set (problems.py splits derive + report: the rule was
     derived there), on the holdout (split holdout: never used to choose the range test's rule) and on
     holdout2 (added after the refine stage was adopted, before anything was measured on them).

Every trained score is cached in SCORES_CSV keyed by (problem, seed, lr), so a re-run after a change
to the suggestion rule trains only the new suggestions (--fresh ignores the cache). The range-test
curves go to CURVES_CSV (the suggestion rule can be studied offline on them). Writes
benchmarks/results/lr_find_quality.md and .csv (one row per problem, seed and step count).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import pandas as pd
import torch

from benchmarks.problems import PROBLEMS, build, train, train_loss
from nndiag.diagnostics import lr_find
from nndiag.training import engine

GRID = [10 ** (e / 4) for e in range(-24, 5)]  # quarter-decade grid, 1e-6 ... 10 (29 LRs)
STEPS = (300, 1000)  # optimizer steps at which every LR is scored (issue 12: 300 and 1,000)
SEEDS = (0, 1, 2)  # initial weights and batch order
GOOD_RATIO = 1.25  # GOOD: loss <= max(GOOD_RATIO x best, best + GOOD_MARGIN) (issue 12)
GOOD_MARGIN = 0.05  # (absolute, in loss units: cross-entropy nats on every problem here)
HOPELESS_FACTOR = 100.0  # a training run whose batch loss exceeds this x its first batch loss is scored inf
SKIP_AFTER = 2  # this many consecutive ever-worse grid LRs below the best end the grid (train_grid)
SPLITS = {
    "tuning (derive + report)": ("derive", "report"),
    "holdout": ("holdout",),
    "holdout2": ("holdout2",),
    "all": None,
}  # the summary lines
TOOLS = ("nndiag", "nndiag_range_test", "fastai_valley", "torch_lr_finder_steepest", "lightning_tuner")
ANCHORS = TOOLS[2:]  # the other tools; nndiag_range_test is nndiag's range-test suggestion before its refine stage
LABELS = {
    "nndiag": "nndiag",
    "nndiag_range_test": "nndiag range test only",
    "fastai_valley": "fastai valley",
    "torch_lr_finder_steepest": "torch-lr-finder steepest",
    "lightning_tuner": "Lightning tuner",
}
RESULTS = Path(__file__).resolve().parent / "results"
ANCHORS_CSV = RESULTS / "lr_find_anchors.csv"
SCORES_CSV = RESULTS / "lr_find_quality_scores.csv"
CURVES_CSV = RESULTS / "lr_find_quality_curves.csv"


def is_good(loss: float, best: float) -> bool:
    """Issue 12's "good": within max(1.25x, +0.05) of the grid-best loss."""
    return math.isfinite(loss) and loss <= max(GOOD_RATIO * best, best + GOOD_MARGIN)


class Scores:
    """Trained scores, cached by (problem, seed, lr): {steps: loss}."""

    def __init__(self, path: Path | None):
        self.path, self.rows = path, {}
        if path is not None and path.is_file():
            for r in pd.read_csv(path).itertuples():
                self.rows.setdefault((r.problem, int(r.seed), float(r.lr)), {})[int(r.steps)] = float(r.loss)

    def get(self, problem: str, seed: int, lr: float, steps: tuple[int, ...]) -> dict[int, float] | None:
        known = self.rows.get((problem, seed, float(lr)), {})
        return known if all(s in known for s in steps) else None

    def put(self, problem: str, seed: int, lr: float, scores: dict[int, float]) -> None:
        self.rows.setdefault((problem, seed, float(lr)), {}).update(scores)

    def save(self) -> None:
        """Merge into the file (several benchmark processes may share it), under a lock."""
        if self.path is None:
            return
        with _locked():
            mine, self.rows = self.rows, {}
            if self.path.is_file():
                self.__init__(self.path)  # type: ignore[misc]
            for key, scores in mine.items():
                self.rows.setdefault(key, {}).update(scores)
            self._write()

    def _write(self) -> None:
        rows = [
            {"problem": p, "seed": s, "lr": lr, "steps": k, "loss": v}
            for (p, s, lr), scores in sorted(self.rows.items())
            for k, v in sorted(scores.items())
        ]
        tmp = self.path.with_suffix(".tmp")
        pd.DataFrame(rows, columns=["problem", "seed", "lr", "steps", "loss"]).to_csv(tmp, index=False)
        tmp.replace(self.path)


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    """An exclusive lock shared by the benchmark processes that write the cached CSVs."""
    import fcntl

    with open(Path(tempfile.gettempdir()) / "nndiag-lr-find-quality.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def score(exp: Any, init: engine.Snapshot, lr: float, steps: tuple[int, ...], seed: int) -> dict[int, float]:
    """Losses on the training split after each of `steps` steps at `lr` from `init`."""
    init.restore(exp.model)
    first: list[float] = []

    def hopeless(step: int, loss: float) -> bool:
        if not first:
            first.append(loss)
        return loss > HOPELESS_FACTOR * max(first[0], 1e-12)

    result = train(exp, lr, max(steps), seed, checkpoints=steps, give_up=hopeless)
    init.restore(exp.model)
    return result


def train_grid(scored: Any, steps: tuple[int, ...]) -> dict[float, dict[int, float]]:
    """The grid, from the largest LR down. Pruned (never the best, so not trained): below the best so
    far, once SKIP_AFTER consecutive LRs each scored worse than the LR above them and not good against
    the best so far: with a constant LR and a fixed budget, a smaller LR below the best only trains
    less. Above the best, hopeless runs end early (`score`)."""
    grid: dict[float, dict[int, float]] = {}
    worse_run, previous = 0, None
    for lr in sorted(GRID, reverse=True):
        if worse_run >= SKIP_AFTER:
            break
        grid[lr] = scored(lr)
        first = grid[lr][steps[0]]
        best = min(v[steps[0]] for v in grid.values())
        declining = previous is not None and first > previous and not is_good(first, best)
        worse_run = worse_run + 1 if declining else 0
        previous = first
    return grid


def run_seed(
    name: str, seed: int, steps: tuple[int, ...], anchors: pd.DataFrame, cache: Scores
) -> tuple[list[dict[str, Any]], pd.DataFrame]:
    started = time.perf_counter()
    exp = build(name, seed)
    init = engine.Snapshot.take(exp.model)
    initial = train_loss(exp)

    def scored(lr: float) -> dict[int, float]:
        known = cache.get(name, seed, lr, steps)
        if known is None:
            known = score(exp, init, lr, steps, seed)
            cache.put(name, seed, lr, known)
        return known

    grid = train_grid(scored, steps)
    init.restore(exp.model)
    result = lr_find.run(exp)
    init.restore(exp.model)
    curve = result.tables["lr_find"].assign(problem=name, seed=seed, stopped=result.metrics["stopped"])
    suggestions = {
        "nndiag": result.metrics["suggested_lr"],
        "nndiag_range_test": result.metrics.get("range_test_lr", result.metrics["suggested_lr"]),
    }
    for tool in ANCHORS:
        row = anchors[(anchors["problem"] == name) & (anchors["seed"] == seed) & (anchors["tool"] == tool)] if len(anchors) else anchors
        suggestions[tool] = (None if pd.isna(row["lr"].iloc[0]) else float(row["lr"].iloc[0])) if len(row) else "missing"
    rows = []
    trained = {tool: scored(lr) for tool, lr in suggestions.items() if isinstance(lr, float)}
    for k in steps:
        best_lr = min(grid, key=lambda lr: grid[lr][k])
        best = grid[best_lr][k]
        row: dict[str, Any] = {
            "problem": name,
            "split": PROBLEMS[name]["split"],
            "seed": seed,
            "steps": k,
            "initial_loss": initial,
            "grid_best_lr": best_lr,
            "grid_best_loss": best,
            "nndiag_findings": ",".join(result.verdict.codes),
            "nndiag_unreliable": _unreliable(result),
        }
        for tool, lr in suggestions.items():
            loss = trained[tool][k] if tool in trained else math.nan
            row[f"{tool}_lr"] = lr if isinstance(lr, float) else (math.nan if lr is None else "missing")
            row[f"{tool}_loss"] = loss
            row[f"{tool}_share"] = (initial - loss) / (initial - best) if tool in trained and initial != best else math.nan
            row[f"{tool}_good"] = is_good(loss, best) if lr != "missing" else math.nan
        row["seconds"] = time.perf_counter() - started
        rows.append(row)
    return rows, curve


def _unreliable(result: Any) -> str:
    """The reason of lr-find's unreliable-suggestion finding, or ""."""
    found = [f for f in result.verdict.findings if f.code == "unreliable-suggestion"]
    return found[0].evidence.get("reason", "") if found else ""


# -- report -----------------------------------------------------------------------------------


def per_problem(frame: pd.DataFrame, steps: int) -> pd.DataFrame:
    """One row per problem: medians over seeds, and per tool the number of good seeds."""
    part = frame[frame["steps"] == steps]
    out = []
    for name, g in part.groupby("problem", sort=False):
        row = {
            "problem": name,
            "split": g["split"].iloc[0],
            "seeds": len(g),
            "grid_best_lr": _gmean(g["grid_best_lr"]),
            "grid_best_loss": g["grid_best_loss"].median(),
        }
        for tool in TOOLS:
            good = pd.to_numeric(g[f"{tool}_good"], errors="coerce")
            lrs = pd.to_numeric(g[f"{tool}_lr"], errors="coerce")
            row[f"{tool}_lr"] = _gmean(lrs.dropna()) if lrs.notna().any() else math.nan
            row[f"{tool}_none"] = int((lrs.isna() & good.notna()).sum())
            row[f"{tool}_loss"] = pd.to_numeric(g[f"{tool}_loss"], errors="coerce").median()
            row[f"{tool}_good_seeds"] = int(good.sum()) if good.notna().any() else -1
        out.append(row)
    return pd.DataFrame(out)


def _gmean(values: pd.Series) -> float:
    values = pd.to_numeric(values, errors="coerce").dropna()
    return float(math.exp(sum(math.log(v) for v in values) / len(values))) if len(values) else math.nan


def _cell(r: pd.Series, tool: str) -> str:
    good = r[f"{tool}_good_seeds"]
    if good < 0:
        return "not run"
    lr = f"{r[f'{tool}_lr']:.3g}" if math.isfinite(r[f"{tool}_lr"]) else "none"
    none = f", None x{r[f'{tool}_none']}" if r[f"{tool}_none"] else ""
    mark = "**GOOD**" if 2 * good > r["seeds"] else "bad"
    return f"{lr} ({r[f'{tool}_loss']:.3g}{none}) {good}/{r['seeds']} {mark}"


def markdown(frame: pd.DataFrame, args: argparse.Namespace, steps: tuple[int, ...]) -> str:
    lines = [
        "# lr-find quality benchmark",
        "",
        f"Command: `nice -n 10 python -m benchmarks.lr_find_quality{args.command_tail}` "
        "(after `python -m benchmarks.lr_find_anchors`, run in a venv with fastai and torch-lr-finder; see docs/commands/lr-find.md and "
        "docs/benchmarks.md). Every LR (grid point or suggestion) is trained from the same initial weights and batch order; "
        "score = loss on the whole training split afterwards. GOOD (issue 12): within max(1.25x, +0.05) of the grid-best loss "
        "at the same step count; grid: quarter decades 1e-6 ... 10. A problem is GOOD for a tool when the tool is good on a "
        "majority of the seeds. Cells: geometric-mean suggested LR over seeds (median loss; seeds with no suggestion) "
        "good seeds / seeds. nndiag = its defaults: the range test (4 batches per LR point, 400 optimizer steps), then the "
        "refine stage (trial runs of 100 iterations at 0.316, 1, 3.16 and 10x the range test's suggestion, none above its "
        "divergence point: up to 400 more steps); 'nndiag range test only' = the range test's own suggestion "
        "(refine_steps=0). The anchors: their defaults (100 steps). Batch orders: the grid and every scored run use the "
        "order of the problem's seed, which nndiag's range test also starts with (at LRs too small to matter); the refine "
        "stage's trials use an order of their own (seed + 7919), so no trial replays the first steps of a scored run.",
        "",
    ]
    for k in steps:
        table = per_problem(frame, k)
        lines += [
            f"## {k} steps",
            "",
            "| problem | split | grid-best LR (loss) | " + " | ".join(LABELS[t] for t in TOOLS) + " |",
            "|---|---|---|" + "---|" * len(TOOLS),
        ]
        for _, r in table.iterrows():
            lines.append(
                f"| {r['problem']} | {r['split']} | {r['grid_best_lr']:.3g} ({r['grid_best_loss']:.3g}) | "
                + " | ".join(_cell(r, t) for t in TOOLS)
                + " |"
            )
        lines.append("")
        for split, splits in SPLITS.items():
            part = table if splits is None else table[table["split"].isin(splits)]
            counts = []
            for tool in TOOLS:
                ran = part[part[f"{tool}_good_seeds"] >= 0]
                good = int((2 * ran[f"{tool}_good_seeds"] > ran["seeds"]).sum())
                seeds_good = int(ran[f"{tool}_good_seeds"].sum())
                counts.append(
                    f"{LABELS[tool]} {good}/{len(ran)} ({seeds_good}/{int(ran['seeds'].sum())} runs)"
                    if len(ran)
                    else f"{LABELS[tool]} not run"
                )
            lines.append(f"- {split} problems, good at {k} steps: " + "; ".join(counts))
        lines.append("")
    lines += _target(frame, steps) + _fine_tuning(frame, steps[0]) + _reliability(frame, steps) + _split()
    lines += [f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), CPU."]
    return "\n".join(lines) + "\n"


TARGET_SHARE = 0.9  # issue 12: good on >= 90% of the problems, and on more problems than any anchor


def _target(frame: pd.DataFrame, steps: tuple[int, ...]) -> list[str]:
    """Issue 12's target, per split and step count: met or not, and by how much."""
    lines = [f"## Target (issue 12): nndiag good on >= {TARGET_SHARE:.0%} of the problems, and on more than every anchor", ""]
    for k in steps:
        table = per_problem(frame, k)
        for split, splits in SPLITS.items():
            part = table if splits is None else table[table["split"].isin(splits)]
            if part.empty:
                continue
            good = {t: int((2 * part[f"{t}_good_seeds"] > part["seeds"]).sum()) for t in TOOLS}
            best_anchor = max(ANCHORS, key=lambda t: good[t])
            share = good["nndiag"] / len(part)
            met = share >= TARGET_SHARE and all(good["nndiag"] > good[t] for t in ANCHORS)
            lines.append(
                f"- {split}, {k} steps: nndiag {good['nndiag']}/{len(part)} ({share:.0%}); best anchor "
                f"{LABELS[best_anchor]} {good[best_anchor]}/{len(part)}: target {'MET' if met else 'NOT met'}"
            )
    return lines + [""]


def _fine_tuning(frame: pd.DataFrame, steps: int) -> list[str]:
    """Does a tool overshoot on fine-tuning problems? suggested / grid-best LR, per seed."""
    part = frame[(frame["steps"] == steps) & frame["problem"].map(lambda p: bool(PROBLEMS[p].get("pretrain")))]
    if part.empty:
        return []
    lines = [
        f"## Fine-tuning: suggested LR / grid-best LR ({steps} steps; > 1 overshoots)",
        "",
        "| problem | " + " | ".join(LABELS[t] for t in TOOLS) + " |",
        "|---|" + "---|" * len(TOOLS),
    ]
    for name, g in part.groupby("problem", sort=False):
        cells = []
        for tool in TOOLS:
            ratios = pd.to_numeric(g[f"{tool}_lr"], errors="coerce") / g["grid_best_lr"]
            cells.append(", ".join("none" if pd.isna(r) else f"{r:.2g}" for r in ratios))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines + [""]


def _reliability(frame: pd.DataFrame, steps: tuple[int, ...]) -> list[str]:
    """How nndiag's unreliable-suggestion finding relates to bad suggestions."""
    lines = ["## nndiag's `unreliable-suggestion` against the outcome", ""]
    for k in steps:
        part = frame[frame["steps"] == k]
        for reason, label in (
            ("flat", "flagged flat (fine-tuning shape)"),
            ("noisy|unstable", "flagged noisy/unstable"),
            ("^$", "not flagged"),
        ):
            sel = part[part["nndiag_unreliable"].fillna("").str.contains(reason)]
            bad = int((sel["nndiag_good"] == False).sum())  # noqa: E712 - a column of booleans
            lines.append(f"- {k} steps, {label}: {len(sel)} runs, {bad} of them bad")
    return lines + [""]


def _split() -> list[str]:
    lines = [
        "## Splits (benchmarks/problems.py `split`)",
        "",
        "Tuning set = derive + report (the first round derived its rule on derive and reported on report; both have "
        "been seen since). Holdout = 8 problems frozen before any second-round rule variant was scored on them (the "
        "refine stage's screen later ran on them). Holdout2 = 8 problems frozen after the refine stage was adopted, "
        "before anything was measured on them. How the rule was chosen on the tuning set: lr_find_rule_search.md; "
        "the refine stage: lr_find_refine_screen.md.",
        "",
    ]
    lines += [
        f"- {split}: " + ", ".join(n for n, p in PROBLEMS.items() if p["split"] == split)
        for split in ("derive", "report", "holdout", "holdout2")
    ]
    return lines + [""]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", nargs="*", default=list(PROBLEMS), help="problems to run (default: all)")
    parser.add_argument("--split", choices=["derive", "report", "holdout", "holdout2"], help="only the problems of this split")
    parser.add_argument("--seeds", type=int, nargs="*", default=list(SEEDS), help="seeds (initial weights and batch order)")
    parser.add_argument("--steps", type=int, nargs="*", default=list(STEPS), help="step counts to score at")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 = least timing noise)")
    parser.add_argument("--fresh", action="store_true", help="ignore the cached scores (SCORES_CSV)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the .md and .csv")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    argv = sys.argv[1:] if argv is None else argv
    args.command_tail = (" " + " ".join(argv)) if argv else ""
    names = [n for n in args.problems if args.split is None or PROBLEMS[n]["split"] == args.split]
    steps = tuple(sorted(args.steps))
    anchors = pd.read_csv(ANCHORS_CSV) if ANCHORS_CSV.is_file() else pd.DataFrame(columns=["problem", "seed", "tool", "lr"])
    cache = Scores(None if args.fresh else SCORES_CSV)
    rows, curves = [], []
    for name in names:
        for seed in args.seeds:
            new, curve = run_seed(name, seed, steps, anchors, cache)
            rows += new
            curves.append(curve)
            cache.save()
            r = new[0]
            print(
                f"{name} seed {seed}: grid-best {r['grid_best_lr']:.3g} ({r['grid_best_loss']:.3g}) at {r['steps']} steps; "
                + "; ".join(f"{t} {r[f'{t}_lr']} good={r[f'{t}_good']}" for t in TOOLS)
                + f" ({r['seconds']:.0f}s)",
                flush=True,
            )
    frame = pd.DataFrame(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(args.out / "lr_find_quality.csv", index=False)
    _merge_curves(pd.concat(curves, ignore_index=True))
    text = markdown(frame, args, steps)
    (args.out / "lr_find_quality.md").write_text(text)
    sys.stdout.write("\n" + text)


def _merge_curves(new: pd.DataFrame) -> None:
    """Keep the range-test curves of every (problem, seed) ever run, the newest replacing the old."""
    with _locked():
        if CURVES_CSV.is_file():
            old = pd.read_csv(CURVES_CSV)
            keys = set(zip(new["problem"], new["seed"]))
            old = old[[k not in keys for k in zip(old["problem"], old["seed"])]]
            new = pd.concat([old, new], ignore_index=True)
        new[["problem", "seed", "step", "lr", "loss", "smoothed_loss", "stopped"]].to_csv(CURVES_CSV, index=False)


if __name__ == "__main__":
    main()
