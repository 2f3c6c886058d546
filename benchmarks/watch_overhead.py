"""What nndiag.watch costs a hand-written training loop: the same loop with and without it, in one run.

    python -m benchmarks.watch_overhead             # both models, in-process and whole processes; writes benchmarks/results/watch_overhead.md
    python -m benchmarks.watch_overhead --quick     # about a minute: 1 epoch, 1 repeat, nothing written (checks that it runs)

The loop is plain PyTorch, as a user writes it: scikit-learn's digits (1,400 training images), a shuffling
DataLoader with batch 32 (44 steps per epoch), Adam, `optimizer.zero_grad(); loss.backward(); optimizer.step()`,
`w.log(loss=loss)` every step and a validation pass every epoch (`w.log(val_loss=..., val_acc=...)`); one torch
thread. Two models: an MLP (3 x 256, ReLU) and a small CNN (two 3x3 convolutions with BatchNorm, 1x8x8 images).
Variants:
  plain          no watch at all (the whole-process run does not even import nndiag)
  watch          nndiag.watch(model, optimizer, probe_every=50, plots=False): check-loss on the first batch, the
                 probe every 50 steps, the loop checks, the curves, the run folder (CSVs, summary.json, report.md
                 and report.html). The issue's target: ratio <= 1.05.
  watch-plots    the same with plots=True (the defaults): what drawing the PNG figures adds
  watch-noprobe  probe_every=None, plots=False: the loop checks' hooks on every step, alone
Two ways of timing it:
  in-process     each variant's fit timed inside one Python process, interleaved (the order rotated every repeat),
                 the fastest of --repeats kept; a warm-up fit imports what the watch needs first (pandas,
                 matplotlib: once per process, not counted). `end s` is the time the watch spends when the block
                 ends (the stages and the files); the rest of the difference, over the steps, is `per-step ms`.
  whole process  `python -m benchmarks.watch_overhead --one MODEL VARIANT --epochs N` as a subprocess: start-up,
                 imports (nndiag's included), data, training and the run folder; the median of --repeats.
`ratio` = the variant's seconds / plain's, measured in the same run. Timings on a busy machine are noise: read
them from an idle one (the load average is printed with the table).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
TARGET = 1.05  # issue 19: a loop under nndiag.watch(probe_every=50, plots=False) takes at most this multiple of the plain loop
PROBE_EVERY = 50
VARIANTS = ("plain", "watch", "watch-plots", "watch-noprobe")
MODELS = ("mlp", "cnn")


def digits() -> tuple[Any, Any, Any, Any]:
    import torch
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x, dtype=torch.float32)
    x = (x - x[:1400].mean(0)) / (x[:1400].std(0) + 1e-6)
    y = torch.tensor(y)
    return x[:1400], y[:1400], x[1400:], y[1400:]


def build(name: str) -> Any:
    import torch
    from torch import nn

    torch.manual_seed(0)
    if name == "mlp":
        return nn.Sequential(
            nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)
        )
    return nn.Sequential(
        nn.Unflatten(1, (1, 8, 8)),
        nn.Conv2d(1, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(32 * 64, 10),
    )


class _NoWatch:
    """What the plain loop calls instead of a watch: nothing."""

    def log(self, loss: Any = None, **values: Any) -> None:
        return None


def fit(model_name: str, variant: str, epochs: int, out: Path) -> tuple[float, float, int, str]:
    """(seconds, seconds the watch spent when the block ended, optimizer steps, status) of one fit."""
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, TensorDataset

    x, y, xv, yv = digits()
    model = build(model_name)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0))
    watch: Any = None
    if variant != "plain":
        import nndiag

        every = None if variant == "watch-noprobe" else PROBE_EVERY
        watch = nndiag.watch(model, optimizer, probe_every=every, plots=variant == "watch-plots", out=out)
    started = time.perf_counter()
    w = watch.start() if watch is not None else _NoWatch()
    steps = 0
    try:
        for _ in range(epochs):
            model.train()
            for xb, yb in loader:
                loss = F.cross_entropy(model(xb), yb)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                w.log(loss=loss)
                steps += 1
            model.eval()
            with torch.no_grad():
                logits = model(xv)
                w.log(val_loss=F.cross_entropy(logits, yv), val_acc=(logits.argmax(1) == yv).float().mean())
    finally:
        ended = time.perf_counter()
        if watch is not None:
            watch.stop()
    seconds = time.perf_counter() - started
    return seconds, seconds - (ended - started), steps, watch.status if watch is not None else "-"


def in_process(models: tuple[str, ...], epochs: int, repeats: int, tmp: Path) -> list[dict[str, Any]]:
    import torch

    torch.set_num_threads(1)
    fit(models[0], "watch-plots", 1, tmp / "warmup")  # imports (pandas, matplotlib) and first calls, not timed
    rows = []
    for model_name in models:
        best: dict[str, tuple[float, float, int, str]] = {}
        for repeat in range(repeats):
            shift = repeat % len(VARIANTS)
            for variant in VARIANTS[shift:] + VARIANTS[:shift]:  # rotated: no variant always runs first
                gc.collect()
                run = fit(model_name, variant, epochs, tmp / f"{model_name}-{variant}-{repeat}")
                if variant not in best or run[0] < best[variant][0]:
                    best[variant] = run
        plain = best["plain"][0]
        for variant in VARIANTS:
            seconds, end, steps, status = best[variant]
            per_step = (seconds - plain - end) / steps * 1000 if variant != "plain" else 0.0
            rows.append(
                dict(
                    model=model_name,
                    mode="in-process",
                    variant=variant,
                    seconds=seconds,
                    ratio=seconds / plain,
                    end=end,
                    per_step=per_step,
                    steps=steps,
                    status=status,
                )
            )
    return rows


def whole_process(models: tuple[str, ...], epochs: int, repeats: int, tmp: Path) -> list[dict[str, Any]]:
    rows = []
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    for model_name in models:
        times: dict[str, list[float]] = {v: [] for v in VARIANTS}
        for repeat in range(repeats):
            shift = repeat % len(VARIANTS)
            for variant in VARIANTS[shift:] + VARIANTS[:shift]:
                command = [sys.executable, "-m", "benchmarks.watch_overhead", "--one", model_name, variant, "--epochs", str(epochs)]
                command += ["--out", str(tmp / f"process-{model_name}-{variant}-{repeat}")]
                started = time.perf_counter()
                subprocess.run(command, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
                times[variant].append(time.perf_counter() - started)
        plain = statistics.median(times["plain"])
        for variant in VARIANTS:
            seconds = statistics.median(times[variant])
            rows.append(
                dict(
                    model=model_name,
                    mode="whole process",
                    variant=variant,
                    seconds=seconds,
                    ratio=seconds / plain,
                    end=None,
                    per_step=None,
                    steps=None,
                    status="",
                )
            )
    return rows


def report(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        "# watch overhead: a hand-written loop under nndiag.watch vs the same loop without it",
        "",
        f"`nice -n 10 python -m benchmarks.watch_overhead --epochs {args.epochs} --repeats {args.repeats}` (digits, batch 32, "
        f"Adam, 44 steps and a validation pass per epoch; CPU, one torch thread; in-process: fastest of {args.repeats} interleaved "
        f"repeats; whole process: median of {args.repeats}). Target: watch (probe_every={PROBE_EVERY}, plots=False) <= {TARGET}x.",
        "",
        "| model | timing | variant | seconds | ratio | end s | per-step extra ms | status |",
        "|---|---|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        flag = " (over target)" if r["variant"] == "watch" and r["ratio"] > TARGET else ""
        end = f"{r['end']:.3f}" if r["end"] is not None and r["variant"] != "plain" else "-"
        per_step = f"{r['per_step']:.3f}" if r["per_step"] is not None and r["variant"] != "plain" else "-"
        lines.append(
            f"| {r['model']} | {r['mode']} | {r['variant']} | {r['seconds']:.3f} | {r['ratio']:.3f}{flag} | {end} | {per_step} | {r['status'] or '-'} |"
        )
    lines += [
        "",
        "What plots add: `watch-plots` against `watch` (the PNG figures of the probe and the curves, drawn once at the end). "
        "`watch-noprobe` shows the loop checks' own hooks on every step; `watch` adds the probe's armed step every 50.",
        "",
        f"Load average when the run ended: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (a fit uses one).",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--quick", action="store_true", help="1 epoch, 1 repeat, nothing written: checks that the benchmark runs")
    parser.add_argument("--no-process", action="store_true", help="skip the whole-process timing")
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "VARIANT"), help="(internal) one fit, as the whole-process timing runs it")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.one:
        import torch

        torch.set_num_threads(1)
        model_name, variant = args.one
        with tempfile.TemporaryDirectory() as tmp:
            fit(model_name, variant, args.epochs, args.out or Path(tmp) / "run")
        return 0
    if args.quick:
        args.epochs, args.repeats = 1, 1
    models = tuple(args.models)
    with tempfile.TemporaryDirectory() as tmp:
        rows = in_process(models, args.epochs, args.repeats, Path(tmp))
        if not args.no_process:
            rows += whole_process(models, args.epochs, args.repeats, Path(tmp))
    text = report(rows, args)
    print(text)
    if not args.quick:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "watch_overhead.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
