"""Quality of `nndiag lr-find`'s suggestion against a grid search, beside fastai and torch-lr-finder.

    python -m benchmarks.lr_find_quality            # all problems
    python -m benchmarks.lr_find_quality --steps 300 --problems spiral-mlp-sgd

For each problem in benchmarks/problems.py:
  1. grid-best: train TRAIN_STEPS optimizer steps at each LR of a quarter-decade grid (1e-5 ... 10,
     25 LRs) from the same initial weights and the same batch order; score = loss on the whole
     training set afterwards (non-finite = inf). The grid-best LR has the lowest score.
  2. suggestions: nndiag's `suggested_lr` (default range test 1e-7 -> 10, 100 steps); fastai's `valley`
     (its own `Learner.lr_find` on the same model, data and optimizer); torch-lr-finder's steepest
     gradient (its `range_test` + the suggestion `plot(suggest_lr=True)` prints, skip 10 start / 5 end).
     The anchors need `fastai` / `torch-lr-finder` installed (a separate venv; see the README section);
     when missing they are skipped and the report says so.
  3. each suggestion is trained exactly like a grid point. It is GOOD when it achieves at least
     GOOD_SHARE (90%) of the loss reduction that the grid-best achieves:
         L0 - L(suggestion) >= 0.9 x (L0 - L(grid-best))      (L0: the loss at initialisation)
     A share of the improvement is invariant to the loss's scale and offset, and does not reward an
     LR for merely "not diverging" on problems where every LR barely trains.

Writes benchmarks/results/lr_find_quality.md and .csv.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from benchmarks.problems import PROBLEMS, build
from nndiag import engine
from nndiag.diagnostics import lr_find

TRAIN_STEPS = 300  # optimizer steps per grid point and per suggestion (3x the range test)
GRID = [10 ** (e / 4) for e in range(-20, 5)]  # quarter-decade grid, 1e-5 ... 10
GOOD_SHARE = 0.9  # a suggestion is good when it achieves this share of the grid-best's loss reduction
RESULTS = Path(__file__).resolve().parent / "results"


def train_score(exp: Any, init: engine.Snapshot, lr: float, steps: int) -> float:
    """Loss on the whole training set after `steps` steps at `lr` from `init` (same batches each time)."""
    init.restore(exp.model)
    exp.model.train()
    optimizer = exp.optimizer(lr=lr)
    batches = lr_find._endless_batches(exp, torch.Generator().manual_seed(exp.recipe.seed))
    for _ in range(steps):
        x, y = next(batches)
        exp.step(optimizer, x, y)
    loss = exp.evaluate(split=exp.data.train)["loss"]
    init.restore(exp.model)
    return loss if math.isfinite(loss) else math.inf


def torch_optimizer_factory(exp: Any) -> tuple[type, dict[str, Any]]:
    cfg = exp.recipe.optim
    if cfg.name == "sgd":
        return torch.optim.SGD, {"momentum": cfg.momentum}
    if cfg.name == "adam":
        return torch.optim.Adam, {"betas": tuple(cfg.betas), "eps": cfg.eps}
    if cfg.name == "rmsprop":
        return torch.optim.RMSprop, {"momentum": cfg.momentum, "eps": cfg.eps}
    raise ValueError(cfg.name)


def _loader(exp: Any) -> torch.utils.data.DataLoader:
    data = torch.utils.data.TensorDataset(exp.data.train.x, exp.data.train.y)
    return torch.utils.data.DataLoader(data, batch_size=exp.recipe.train.batch_size, shuffle=True,
                                       generator=torch.Generator().manual_seed(exp.recipe.seed))


def fastai_valley(exp: Any, init: engine.Snapshot) -> float | None:
    """fastai's own Learner.lr_find (1e-7 -> 10, 100 iterations) and its `valley` suggestion."""
    try:
        import fastai.callback.schedule  # noqa: F401 - patches Learner.lr_find
        from fastai.data.core import DataLoaders
        from fastai.learner import Learner
        from fastai.optimizer import OptimWrapper
    except ImportError:
        return None
    from functools import partial

    init.restore(exp.model)
    model = copy.deepcopy(exp.model)
    opt_cls, kwargs = torch_optimizer_factory(exp)
    val = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(exp.data.val.x, exp.data.val.y), batch_size=256)
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        dls = DataLoaders(_loader(exp), val, device=torch.device("cpu"))
        learn = Learner(dls, model, loss_func=torch.nn.functional.cross_entropy,
                        opt_func=partial(OptimWrapper, opt=partial(opt_cls, **kwargs)), path=tmp)
        suggestion = learn.lr_find(show_plot=False)
    return float(suggestion.valley)


def torch_lr_finder_steepest(exp: Any, init: engine.Snapshot) -> float | None:
    """torch-lr-finder's range_test (1e-7 -> 10, 100 iterations) and its steepest-gradient suggestion."""
    try:
        from torch_lr_finder import LRFinder
    except ImportError:
        return None
    from nndiag.plots import pyplot

    init.restore(exp.model)
    model = copy.deepcopy(exp.model)
    opt_cls, kwargs = torch_optimizer_factory(exp)
    optimizer = opt_cls(model.parameters(), lr=1e-7, **kwargs)
    finder = LRFinder(model, optimizer, torch.nn.CrossEntropyLoss(), device="cpu")
    plt = pyplot()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        finder.range_test(_loader(exp), start_lr=1e-7, end_lr=10, num_iter=100)
        fig, ax = plt.subplots()
        _, lr = finder.plot(suggest_lr=True, ax=ax)
        plt.close(fig)
    finder.reset()
    return float(lr) if lr is not None else None


def _missing(tool: str) -> bool:
    module = {"fastai_valley": "fastai", "torch_lr_finder_steepest": "torch_lr_finder"}[tool]
    try:
        __import__(module)
        return False
    except ImportError:
        return True


def is_good(score: float, initial: float, best: float) -> bool:
    return math.isfinite(score) and initial - score >= GOOD_SHARE * (initial - best)


def run_problem(name: str, steps: int) -> dict[str, Any]:
    exp = build(name)
    torch.manual_seed(0)
    init = engine.Snapshot.take(exp.model)
    started = time.perf_counter()
    initial = exp.evaluate(split=exp.data.train)["loss"]
    grid = {lr: train_score(exp, init, lr, steps) for lr in GRID}
    best_lr = min(grid, key=grid.get)
    best = grid[best_lr]
    row: dict[str, Any] = {"problem": name, "initial_loss": initial, "grid_best_lr": best_lr, "grid_best_loss": best}
    init.restore(exp.model)
    result = lr_find.run(exp)
    suggestions = {"nndiag": result.metrics["suggested_lr"], "fastai_valley": fastai_valley(exp, init),
                   "torch_lr_finder_steepest": torch_lr_finder_steepest(exp, init)}
    row["nndiag_range"] = f"{result.metrics['lr_min']:.3g} - {result.metrics['lr_max']:.3g}" if result.metrics["lr_min"] else ""
    row["nndiag_findings"] = ",".join(result.verdict.codes)
    for tool, lr in suggestions.items():
        score = train_score(exp, init, lr, steps) if lr else math.nan
        row[f"{tool}_lr"] = lr
        row[f"{tool}_loss"] = score
        row[f"{tool}_share"] = (initial - score) / (initial - best) if lr and initial != best else math.nan
        row[f"{tool}_good"] = is_good(score, initial, best) if lr else (None if tool != "nndiag" and lr is None and _missing(tool) else False)
    row["seconds"] = time.perf_counter() - started
    return row


def markdown(frame: pd.DataFrame, steps: int, skipped: list[str]) -> str:
    lines = ["# lr-find quality benchmark", "",
             f"Command: `python -m benchmarks.lr_find_quality --steps {steps}`. Each LR (grid point or suggestion) is trained "
             f"{steps} steps from the same initial weights and batch order; score = training-set loss afterwards. "
             f"GOOD = the suggestion achieves >= {GOOD_SHARE:.0%} of the grid-best's loss reduction "
             "(share = (L0 - L) / (L0 - L_best)). Grid: quarter decades 1e-5 ... 10.", ""]
    if skipped:
        lines += [f"Anchors skipped (not installed): {', '.join(skipped)}.", ""]
    lines += ["| problem | grid-best LR (loss) | nndiag LR (loss, share) | fastai valley | torch-lr-finder steepest |", "|---|---|---|---|---|"]

    def cell(r: Any, tool: str) -> str:
        lr = r[f"{tool}_lr"]
        if tool != "nndiag" and tool.split("_")[0] in " ".join(skipped).replace("-", "_"):
            return "skipped"
        if lr is None or (isinstance(lr, float) and math.isnan(lr)):
            return f"no suggestion ({r['nndiag_findings']}) bad" if tool == "nndiag" else "no suggestion, bad"
        mark = "GOOD" if r[f"{tool}_good"] else "bad"
        return f"{lr:.3g} ({r[f'{tool}_loss']:.3g}, {r[f'{tool}_share']:.0%}) {mark}"

    for _, r in frame.iterrows():
        lines.append(f"| {r['problem']} | {r['grid_best_lr']:.3g} ({r['grid_best_loss']:.3g}) | {cell(r, 'nndiag')} | "
                     f"{cell(r, 'fastai_valley')} | {cell(r, 'torch_lr_finder_steepest')} |")
    lines.append("")
    for tool in ("nndiag", "fastai_valley", "torch_lr_finder_steepest"):
        good = frame[f"{tool}_good"].dropna()
        lines.append(f"- {tool}: good on {int(good.sum())} of {len(good)} problems" if len(good) else f"- {tool}: skipped")
    lines += ["", f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), CPU."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=TRAIN_STEPS, help="training steps per grid point / suggestion")
    parser.add_argument("--problems", nargs="*", default=list(PROBLEMS), help="problems to run")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 = least timing noise)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    skipped = []
    for module, label in (("fastai", "fastai"), ("torch_lr_finder", "torch-lr-finder")):
        try:
            __import__(module)
        except ImportError:
            skipped.append(label)
    rows = []
    for name in args.problems:
        row = run_problem(name, args.steps)
        rows.append(row)
        print(f"{name}: grid-best {row['grid_best_lr']:.3g} ({row['grid_best_loss']:.3g}); nndiag {row['nndiag_lr']} "
              f"good={row['nndiag_good']}; fastai {row['fastai_valley_lr']} good={row['fastai_valley_good']}; "
              f"torch-lr-finder {row['torch_lr_finder_steepest_lr']} good={row['torch_lr_finder_steepest_good']} "
              f"({row['seconds']:.0f}s)", flush=True)
    frame = pd.DataFrame(rows)
    RESULTS.mkdir(parents=True, exist_ok=True)
    frame.to_csv(RESULTS / "lr_find_quality.csv", index=False)
    text = markdown(frame, args.steps, skipped)
    (RESULTS / "lr_find_quality.md").write_text(text)
    sys.stdout.write("\n" + text)


if __name__ == "__main__":
    main()
