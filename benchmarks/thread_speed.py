"""What the thread choice buys on the work of a new user's first hour (issue 20): nndiag's chosen torch thread
count against PyTorch's default (a thread per core), each on a free machine and with a competing CPU load (a
second process spinning on one core), as ratios measured in the same run.

    python -m benchmarks.thread_speed             # 3 repeats; writes benchmarks/results/thread_speed.md and .csv
    python -m benchmarks.thread_speed --quick     # smaller work, 1 repeat, runs stopped at 120 s, prints only (checks it runs)

Workloads, each a fresh process (start-up, imports and all; the API calls time the call itself):
  babysit-quickstart      nndiag babysit quickstart --budget quick --no-plots --json
  resnet18-lr-find        nndiag.lr_find on torchvision's resnet18 (random weights, built offline) over random 32x32
                          images (512 of them, batch 32; 30 LR points of 2 batches, refine trials of 20 iterations)
  resnet18-overfit-small  nndiag.overfit_small on the same model and data (2 batches of 32, up to 60 steps)
  tiny-bert-babysit       nndiag babysit recipes/tiny-bert.yaml --budget quick --no-plots --json (needs the hf extra)
"chosen" runs without --threads (nndiag.training.threads decides: one thread for the small models, PyTorch's count
for ResNet-18); "default" passes PyTorch's own count (--threads N / threads=N). Repeats alternate the two; the
table gives medians and the ratio default / chosen (above 1: the choice is faster). Run it on an idle machine:
the free columns mean nothing on a machine where other work runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"

RESNET = r"""
import json, sys, time, torch, torchvision, nndiag
call, threads, images, quick = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
torch.manual_seed(0)
model = torchvision.models.resnet18(num_classes=10)  # random weights: nothing downloaded
x, y = torch.randn(images, 3, 32, 32), torch.randint(0, 10, (images,))
given = int(threads) if threads != "auto" else None
started = time.perf_counter()
if call == "lr-find":
    steps, refine = (8, 4) if quick else (30, 20)
    result = nndiag.lr_find(model, data=(x, y), batch_size=32, steps=steps, batches_per_lr=2, refine_steps=refine, threads=given)
else:
    result = nndiag.overfit_small(model, (x, y), batch_size=32, batches=2, steps=10 if quick else 60, threads=given)
print(json.dumps({"seconds": time.perf_counter() - started, "threads": result.metrics["threads"]}))
"""


def child_env() -> dict[str, str]:
    """PyTorch's own default thread count in every measured process (no OMP_NUM_THREADS and the like)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")]))
    env["MPLBACKEND"] = "Agg"
    return env


def default_threads() -> int:
    done = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.get_num_threads())"], capture_output=True, text=True, env=child_env(), check=True
    )
    return int(done.stdout.strip())


QUICK_SETS = {  # --quick: smaller work for each babysit (the search and the data), so that the check takes minutes
    "quickstart": ["--set", "search.coarse.trials=2", "--set", "search.fine.trials=1"],
    "recipes/tiny-bert.yaml": ["--set", "data.args.num_samples=500", "--set", "search.coarse.trials=2", "--set", "search.fine.trials=1"],
}


def babysit(recipe: str, quick: bool) -> list[str]:
    extra = QUICK_SETS[recipe] if quick else []
    return [sys.executable, "-m", "nndiag", "babysit", recipe, "--budget", "quick", "--no-plots", "--json", *extra]


def run(workload: str, threads: int | None, quick: bool, folder: Path, timeout: float | None) -> tuple[float, int | None]:
    """(seconds, the thread count nndiag ran with) of one run of `workload`; a run stopped at `timeout` gives
    (timeout, None): its real time is at least that."""
    given = ["--threads", str(threads)] if threads else []
    try:
        if workload.startswith("resnet18"):
            call = "lr-find" if workload == "resnet18-lr-find" else "overfit"
            argv = [sys.executable, "-c", RESNET, call, str(threads or "auto"), str(128 if quick else 512), str(int(quick))]
            done = subprocess.run(argv, capture_output=True, text=True, env=child_env(), cwd=ROOT, check=True, timeout=timeout)
            out = json.loads(done.stdout.strip().splitlines()[-1])
            return float(out["seconds"]), int(out["threads"])
        recipe = "quickstart" if workload == "babysit-quickstart" else "recipes/tiny-bert.yaml"
        command = [*babysit(recipe, quick), *given, "--out", str(folder / f"{workload}-{threads or 'auto'}-{time.monotonic_ns()}")]
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env=child_env(), cwd=ROOT, timeout=timeout)
        seconds = time.perf_counter() - started
    except subprocess.TimeoutExpired:
        return float(timeout or 0), None
    if done.returncode not in (0, 1):  # pass/warn or fail are both a finished run; anything else is not
        raise RuntimeError(f"{workload} exited {done.returncode}: {done.stderr[-2000:]}")
    return seconds, int(json.loads(done.stdout)["metrics"]["threads"])


class Spinner:
    """A second process keeping one core busy (stopped, by its own pid, on exit)."""

    def __enter__(self) -> "Spinner":
        self.process = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        time.sleep(0.5)
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def _seconds(row: dict[str, object], mode: str) -> str:
    """A median time, '>= ' before it when a run was stopped at the timeout (its real time is longer)."""
    return (">= " if mode in str(row["stopped"]).split(",") else "") + f"{float(row[f'{mode}_s']):.1f}"  # type: ignore[arg-type]


WORKLOADS = ("babysit-quickstart", "resnet18-lr-find", "resnet18-overfit-small", "tiny-bert-babysit")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller work, one repeat, runs stopped at 120 s, print only")
    parser.add_argument("--repeats", type=int, default=None, help="runs of each (default 3; quick 1)")
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=WORKLOADS)
    parser.add_argument("--timeout", type=float, default=None, help="stop a run after this many seconds (default none; quick 120)")
    args = parser.parse_args()
    repeats = args.repeats or (1 if args.quick else 3)
    timeout = args.timeout or (120.0 if args.quick else None)
    default = default_threads()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for workload in args.workloads:
            for load in ("free", "busy"):
                times: dict[str, list[float]] = {"chosen": [], "default": []}
                used: dict[str, int | None] = {"chosen": None, "default": default}
                stopped: set[str] = set()  # modes with a run stopped at the timeout: their time is a lower bound
                for _ in range(repeats):
                    for mode, threads in (("chosen", None), ("default", default)):
                        with Spinner() if load == "busy" else contextlib.nullcontext():
                            seconds, count = run(workload, threads, args.quick, Path(tmp), timeout)
                        times[mode].append(seconds)
                        if count is None:
                            stopped.add(mode)
                        else:
                            used[mode] = count
                chosen, slow = statistics.median(times["chosen"]), statistics.median(times["default"])
                row = {
                    "workload": workload,
                    "load": load,
                    "chosen_threads": used["chosen"] if used["chosen"] is not None else "?",  # "?": every run of it was stopped
                    "default_threads": used["default"],
                    "chosen_s": chosen,
                    "default_s": slow,
                    "ratio": slow / chosen,
                    "stopped": ",".join(sorted(stopped)),
                    "repeats": repeats,
                }
                rows.append(row)
                print(
                    f"{workload:24s} {load}: chosen {used['chosen']} thread(s) {_seconds(row, 'chosen')} s, default {used['default']} "
                    f"{_seconds(row, 'default')} s, default/chosen {slow / chosen:.2f}x",
                    flush=True,
                )
    import torch

    lines = [
        "# Thread choice on the first hour's work: nndiag's thread count against PyTorch's default",
        "",
        f"Command: `python -m benchmarks.thread_speed{' --quick' if args.quick else ''}"
        f"{f' --repeats {args.repeats}' if args.repeats else ''}{f' --timeout {args.timeout:g}' if args.timeout else ''}`; "
        f"{os.cpu_count()} CPUs, PyTorch "
        f"{torch.__version__} (default {default} threads); medians of {repeats} alternating run(s); busy: a second process "
        "spinning on one core. Ratio = default / chosen (above 1: nndiag's choice is faster).",
        "",
        "| workload | load | chosen threads | chosen (s) | default threads | default (s) | ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['workload']} | {r['load']} | {r['chosen_threads']} | {_seconds(r, 'chosen')} | {r['default_threads']} | "
        f"{_seconds(r, 'default')} | {r['ratio']:.2f}{' (a bound: a run was stopped)' if r['stopped'] else ''} |"
        for r in rows
    ]
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    if not args.quick:
        import pandas as pd

        RESULTS.mkdir(exist_ok=True)
        pd.DataFrame(rows).to_csv(RESULTS / "thread_speed.csv", index=False)
        (RESULTS / "thread_speed.md").write_text(text)
        print(f"wrote {RESULTS / 'thread_speed.md'}")


if __name__ == "__main__":
    main()
