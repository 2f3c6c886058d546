"""What probing during training costs: a step with `ProbeCallback(every=N)` against a plain step.

    python -m benchmarks.probe_overhead            # prints a table, writes benchmarks/results/probe_overhead.md

Two estimates, both against a plain baseline measured in the same run:
  ratio        whole runs: the same Trainer, recipe and seed with no callback and with
               ProbeCallback(every=N); runs interleaved and repeated, fastest repeat kept, the
               validation pass timed on its own and subtracted. Honest but noisy on a shared machine.
  step_ratio   per-step clock: the median plain step, and the median extra time a probe adds (the
               probed step plus the next one, where the hooks come off), amortised over N steps:
               1 + extra / (N x plain). Robust to other processes stealing the CPU now and then.
Target (issue 4): at the interval you leave on, a step costs at most 1.25x a plain step.
"""

from __future__ import annotations

import argparse
import copy
import os
import time
from pathlib import Path

import pandas as pd

from nndiag.config.recipe import parse_recipe
from nndiag.diagnostics.probe import ProbeCallback
from nndiag.training.experiment import Experiment
from nndiag.training.trainer import Trainer

RESULTS = Path(__file__).parent / "results"
TARGET = 1.25  # issue 4: at most this many plain steps per probed-training step

MODELS = {  # name -> model section; digits (1,437 training images), batch 8, SGD with momentum
    "mlp 6x256 relu": {"name": "mlp", "args": {"hidden": [256] * 6, "activation": "relu", "init": "kaiming"}},
    "cnn 32-64": {"name": "cnn", "args": {"channels": [32, 64]}},
}
BASE = {
    "name": "bench",
    "seed": 0,
    "device": "cpu",
    "data": {"name": "digits", "normalize": True},
    "loss": "cross_entropy",
    "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
    "train": {"batch_size": 8, "epochs": 1},
}  # 180 steps per epoch


def timed_fit(exp: Experiment, steps: int, every: int | None) -> float:
    """Seconds per step of a Trainer run (the model is restored afterwards so every run starts alike)."""
    state = copy.deepcopy(exp.model.state_dict())
    callbacks = [ProbeCallback(every)] if every else []
    started = time.perf_counter()
    done = len(Trainer(exp, epochs=1, max_steps=steps, callbacks=callbacks).fit().steps)
    seconds = time.perf_counter() - started
    exp.model.load_state_dict(state)
    started = time.perf_counter()
    exp.evaluate()  # the trainer's one validation pass, subtracted below
    return (seconds - (time.perf_counter() - started)) / done


class StepClock:
    """A callback that records the wall time between consecutive on_step calls (put it first)."""

    def __init__(self) -> None:
        self.last = time.perf_counter()
        self.times: dict[int, float] = {}

    def on_step(self, trainer: object, step: int, loss: float) -> None:
        now = time.perf_counter()
        self.times[step], self.last = now - self.last, now

    def on_epoch(self, trainer: object, row: dict) -> None:
        self.last = time.perf_counter()


def probe_extra(exp: Experiment, steps: int, every: int = 10) -> tuple[float, float]:
    """(median plain step, median extra seconds per probe) from one clocked run probing every `every` steps."""
    state = copy.deepcopy(exp.model.state_dict())
    clock = StepClock()
    Trainer(exp, epochs=1, max_steps=steps, callbacks=[clock, ProbeCallback(every)]).fit()
    exp.model.load_state_dict(state)
    probed = {s for s in clock.times if s % every == 0 and s + 1 in clock.times}
    plain = sorted(t for s, t in clock.times.items() if s > 1 and s not in probed and s - 1 not in probed)
    base = plain[len(plain) // 2]
    extras = sorted(clock.times[s] + clock.times[s + 1] - 2 * base for s in probed)
    return base, extras[len(extras) // 2]


def measure(steps: int, repeats: int, everies: list[int]) -> pd.DataFrame:
    rows = []
    for name, model in MODELS.items():
        exp = Experiment.build(parse_recipe({**copy.deepcopy(BASE), "model": model}))
        timed_fit(exp, 10, None)  # warm up
        best: dict[int | None, float] = {}
        for _ in range(repeats):
            for every in [None, *everies]:
                best[every] = min(best.get(every, float("inf")), timed_fit(exp, steps, every))
        base, extra = probe_extra(exp, steps)
        for every in everies:
            rows.append(
                {
                    "model": name,
                    "every": every,
                    "plain_ms_per_step": 1e3 * best[None],
                    "probed_ms_per_step": 1e3 * best[every],
                    "ratio": best[every] / best[None],
                    "probe_extra_ms": 1e3 * extra,
                    "step_ratio": 1 + extra / (every * base),
                }
            )
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=180, help="optimizer steps per timed run (one epoch of digits at batch 8 is 180)")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repeats; the fastest of each is kept")
    parser.add_argument("--every", type=int, nargs="+", default=[1, 10, 50, 100], help="probe every N steps")
    args = parser.parse_args()
    frame = measure(args.steps, args.repeats, args.every)
    text = frame.to_string(index=False, float_format=lambda v: f"{v:.3f}")
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    lines = [
        "# probe overhead: a training step with ProbeCallback(every=N) vs a plain step",
        "",
        f"`python -m benchmarks.probe_overhead --steps {args.steps} --repeats {args.repeats} --every {' '.join(map(str, args.every))}`",
        f"(digits, batch 8, SGD; CPU; fastest of {args.repeats} interleaved repeats; the validation pass subtracted). "
        f"Target: ratio <= {TARGET} at the probing interval you leave on.",
        "",
        "`ratio`: whole runs, fastest repeat; `step_ratio`: per-step clock, 1 + (median extra ms per probe) / (N x median plain step).",
        f"Load average when the run ended: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores. When other processes share the CPU the",
        "whole-run `ratio` is dominated by them (it can even fall below 1); trust `step_ratio` then.",
        "",
        "| model | every N | plain ms/step | probed ms/step | ratio | extra ms per probe | step_ratio |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in frame.itertuples():
        mark = "" if r.step_ratio <= TARGET else " (over target)"
        lines.append(
            f"| {r.model} | {r.every} | {r.plain_ms_per_step:.2f} | {r.probed_ms_per_step:.2f} | {r.ratio:.3f} | "
            f"{r.probe_extra_ms:.1f} | {r.step_ratio:.3f}{mark} |"
        )
    (RESULTS / "probe_overhead.md").write_text("\n".join(lines) + "\n")
    frame.to_csv(RESULTS / "probe_overhead.csv", index=False)


if __name__ == "__main__":
    main()
