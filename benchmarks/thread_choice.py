"""Where one torch thread stops being the fastest: a training step of MLPs and CNNs of growing size, at one
thread and at PyTorch's default (a thread per core), on a free machine and with another process spinning on
one core, as ratios measured in the same run. The measurement behind nndiag.training.threads.SMALL_WORK_MACS.

    python -m benchmarks.thread_choice            # every size, 2 s per timing; writes benchmarks/results/thread_choice.md
    python -m benchmarks.thread_choice --quick    # a few sizes, 0.3 s per timing, prints only (checks the script)

Each model trains on random data (SGD, cross-entropy) in a fresh process per thread count (a process cannot go
back to one thread cleanly once it has used more); the multiply-adds per batch are nndiag's own count
(`threads.forward_macs`). The ratio is (default-thread step time) / (one-thread step time): above 1, one thread
is faster. Run it on an otherwise idle machine; the "busy" columns add one spinning process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"

SIZES = {  # name -> (kind, width); mlp: 64 -> w -> w -> 10 on batch 64; cnn: 3 -> w -> w channels, 32x32, batch 32
    "mlp-32": ("mlp", 32),
    "mlp-128": ("mlp", 128),
    "mlp-512": ("mlp", 512),
    "mlp-1024": ("mlp", 1024),
    "mlp-2048": ("mlp", 2048),
    "mlp-4096": ("mlp", 4096),
    "cnn-4": ("cnn", 4),
    "cnn-8": ("cnn", 8),
    "cnn-16": ("cnn", 16),
    "cnn-32": ("cnn", 32),
    "cnn-64": ("cnn", 64),
}
QUICK = ("mlp-32", "mlp-1024", "cnn-8")

CHILD = r"""
import json, sys, time, torch
from torch import nn
kind, width, threads, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
if threads:
    torch.set_num_threads(threads)
torch.manual_seed(0)
if kind == "mlp":
    model = nn.Sequential(nn.Linear(64, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 10))
    x = torch.randn(64, 64)
else:
    model = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10))
    x = torch.randn(32, 3, 32, 32)
y = torch.randint(0, 10, (x.shape[0],))
import nndiag
from nndiag.training import threads as T
exp = nndiag.api.experiment(model, (x, y), batch_size=x.shape[0])
macs = T.forward_macs(exp)
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
def step():
    optimizer.zero_grad(); nn.functional.cross_entropy(model(x), y).backward(); optimizer.step()
for _ in range(3):
    step()
done, started = 0, time.perf_counter()
while time.perf_counter() - started < seconds or done < 3:
    step(); done += 1
print(json.dumps({"ms": (time.perf_counter() - started) / done * 1e3, "threads": torch.get_num_threads(), "macs": macs}))
"""


def child_env() -> dict[str, str]:
    """The environment of a measured process: PyTorch's own default thread count (no OMP_NUM_THREADS and the like)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return env


def measure(kind: str, width: int, threads: int, seconds: float) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, kind, str(width), str(threads), str(seconds)],
        capture_output=True,
        text=True,
        env=child_env(),
        check=True,
        cwd=ROOT,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


class Spinner:
    """Another process keeping one core busy, for the "busy" measurements (stopped, by its own pid, on exit)."""

    def __enter__(self) -> "Spinner":
        self.process = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        time.sleep(0.5)
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="three sizes, 0.3 s per timing, print only")
    parser.add_argument("--seconds", type=float, default=None, help="seconds of steps per timing (default 2; quick 0.3)")
    args = parser.parse_args()
    seconds = args.seconds or (0.3 if args.quick else 2.0)
    names = QUICK if args.quick else tuple(SIZES)
    rows = []
    for name in names:
        kind, width = SIZES[name]
        row: dict[str, object] = {"model": name}
        for load in ("free", "busy"):
            if load == "busy":
                with Spinner():
                    one, default = measure(kind, width, 1, seconds), measure(kind, width, 0, seconds)
            else:
                one, default = measure(kind, width, 1, seconds), measure(kind, width, 0, seconds)
            row.update(
                {
                    "macs_per_batch": one["macs"],
                    "default_threads": default["threads"],
                    f"{load}_1_thread_ms": one["ms"],
                    f"{load}_default_ms": default["ms"],
                    f"{load}_ratio": default["ms"] / one["ms"],
                }
            )
        rows.append(row)
        print(
            f"{name:9s} {row['macs_per_batch'] / 1e6:10.1f}M multiply-adds  free: default/1 thread {row['free_ratio']:.2f}x"
            f"  busy: {row['busy_ratio']:.2f}x",
            flush=True,
        )
    from nndiag.training.threads import SMALL_WORK_MACS

    lines = [
        "# Thread choice: one thread against PyTorch's default, per model size",
        "",
        f"Command: `python -m benchmarks.thread_choice{' --quick' if args.quick else ''}`; {os.cpu_count()} CPUs, PyTorch's default "
        f"{rows[0]['default_threads']} threads; {seconds:g} s of training steps per timing, each in its own process. Ratio = "
        "default-thread step time / one-thread step time (above 1: one thread is faster). busy: one other process spinning "
        f"on a core. nndiag's rule: one thread below {SMALL_WORK_MACS:.0e} multiply-adds per batch (nndiag.training.threads).",
        "",
        "| model | multiply-adds per batch | nndiag's choice | free: 1 thread (ms) | free: default (ms) | free ratio | busy: 1 thread (ms) | busy: default (ms) | busy ratio |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        choice = "1" if float(r["macs_per_batch"]) < SMALL_WORK_MACS else "default"
        lines.append(
            f"| {r['model']} | {float(r['macs_per_batch']):.3g} | {choice} | {r['free_1_thread_ms']:.3g} | {r['free_default_ms']:.3g} | "
            f"{r['free_ratio']:.2f} | {r['busy_1_thread_ms']:.3g} | {r['busy_default_ms']:.3g} | {r['busy_ratio']:.2f} |"
        )
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    if not args.quick:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "thread_choice.md").write_text(text)
        print(f"wrote {RESULTS / 'thread_choice.md'}")


if __name__ == "__main__":
    main()
