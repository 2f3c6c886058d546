"""Speed of `nndiag lr-find`'s range test against a bare PyTorch loop and torch-lr-finder.

    python -m benchmarks.lr_find_speed
    python -m benchmarks.lr_find_speed --problem digits-mlp-adam-tanh --repeats 7

Same process, same model object, same 100 batches (the range test's own seeded order), the same
LR ramp (1e-6 -> 1e-2, low enough that nothing diverges, so every contender runs all 100 steps):
  bare            a hand-written loop: set the LR, zero_grad, forward, loss, backward, step, keep the
                  loss tensor; one read-back at the end. No snapshot, no restore, no stop rule.
  nndiag          `lr_find.measure` (snapshot + restore of model, optimizer and RNGs, stop rule).
  torch-lr-finder `LRFinder.range_test` over a DataLoader of the same tensors, plus `reset()` (its
                  restore), when installed.
Each contender runs `repeats` times, interleaved; the median wall time is reported. Targets:
nndiag / bare <= 1.1, nndiag / torch-lr-finder < 1. Writes benchmarks/results/lr_find_speed.md (other problems:
lr_find_speed-<problem>.md).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

from benchmarks.problems import PROBLEMS, build
from nndiag.diagnostics import lr_find
from nndiag.training import engine

START, END, STEPS = 1e-6, 1e-2, 100
DEFAULT_PROBLEM = "digits-cnn-bn-sgdm"
RESULTS = Path(__file__).resolve().parent / "results"


def bare_loop(exp: Any, batches: list[tuple[torch.Tensor, torch.Tensor]], lrs: list[float]) -> list[float]:
    model, optimizer = exp.model, exp.optimizer()
    model.train()
    losses = []
    for (x, y), lr in zip(batches, lrs):
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
    return torch.stack(losses).tolist()


def nndiag_measure(exp: Any) -> Any:
    return lr_find.measure(exp, start=START, end=END, steps=STEPS, batches_per_lr=1)  # one batch per point, as the bare loop


def torch_lr_finder_run(exp: Any) -> Callable[[], Any] | None:
    try:
        from torch_lr_finder import LRFinder
    except ImportError:
        return None
    data = torch.utils.data.TensorDataset(exp.data.train.x, exp.data.train.y)

    def run() -> None:
        loader = torch.utils.data.DataLoader(
            data, batch_size=exp.recipe.train.batch_size, shuffle=True, generator=torch.Generator().manual_seed(exp.recipe.seed)
        )
        optimizer = exp.optimizer(lr=START)
        finder = LRFinder(exp.model, optimizer, torch.nn.CrossEntropyLoss(), device=exp.device)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            finder.range_test(loader, start_lr=START, end_lr=END, num_iter=STEPS, diverge_th=1e9)
        finder.reset()

    return run


def timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problem", default=DEFAULT_PROBLEM, choices=list(PROBLEMS))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 = least timing noise)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    exp = build(args.problem)
    init = engine.Snapshot.take(exp.model)
    generator = torch.Generator().manual_seed(exp.recipe.seed)
    stream = lr_find._endless_batches(exp, generator)
    batches = [next(stream) for _ in range(STEPS)]  # exactly the batches measure() draws
    lrs = lr_find.lr_schedule(START, END, STEPS)
    contenders: dict[str, Callable[[], Any]] = {
        "bare": lambda: bare_loop(exp, batches, lrs),
        "nndiag": lambda: nndiag_measure(exp),
    }
    tlf = torch_lr_finder_run(exp)
    if tlf is not None:
        contenders["torch-lr-finder"] = tlf
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for name, fn in contenders.items():  # warm-up
        init.restore(exp.model)
        fn()
    for _ in range(args.repeats):
        for name, fn in contenders.items():
            init.restore(exp.model)
            times[name].append(timed(fn))
    init.restore(exp.model)
    median = {name: statistics.median(values) for name, values in times.items()}
    lines = [
        "# lr-find speed benchmark",
        "",
        f"Command: `python -m benchmarks.lr_find_speed --problem {args.problem} --repeats {args.repeats}`. "
        f"{STEPS}-step range test {START:g} -> {END:g} (no divergence), same model, same batches; median of "
        f"{args.repeats} interleaved runs; torch {torch.__version__}, {args.threads} thread(s), {exp.device}.",
        "",
        "| contender | median seconds | ratio to bare loop |",
        "|---|---|---|",
    ]
    for name, value in median.items():
        lines.append(f"| {name} | {value:.3f} | {value / median['bare']:.3f} |")
    lines.append("")
    lines.append(f"- nndiag / bare = {median['nndiag'] / median['bare']:.3f} (target <= 1.1)")
    if "torch-lr-finder" in median:
        lines.append(f"- nndiag / torch-lr-finder = {median['nndiag'] / median['torch-lr-finder']:.3f} (target < 1)")
    else:
        lines.append("- torch-lr-finder not installed: skipped")
    text = "\n".join(lines) + "\n"
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "lr_find_speed.md" if args.problem == DEFAULT_PROBLEM else f"lr_find_speed-{args.problem}.md"
    (RESULTS / name).write_text(text)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
