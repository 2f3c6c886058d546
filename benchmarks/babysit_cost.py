"""What issue 18's new checks cost `nndiag babysit quickstart --budget quick`: this checkout against the version before
them (a checkout of d0bb332), each a whole process, alternating, as a ratio of medians measured in the same run.

    git worktree add /tmp/nndiag-old d0bb332
    python -m benchmarks.babysit_cost --old /tmp/nndiag-old            # 5 repeats; writes benchmarks/results/babysit_cost.md
    python -m benchmarks.babysit_cost --old /tmp/nndiag-old --quick    # 1 repeat, prints only (checks that it runs)

Both sides run the same command line (`nndiag babysit quickstart --budget quick --json`, figures drawn as by default)
with one torch thread (OMP_NUM_THREADS=1; this checkout would choose one thread for this model anyway, and the old
version cannot choose), so the ratio is the checks' cost, not the thread choice's. The table also gives each step's
median seconds from the verdict's JSON, where the time went. Run it on an idle machine.
"""

from __future__ import annotations

import argparse
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
COMMAND = ["babysit", "quickstart", "--budget", "quick", "--json"]


def once(source: Path, folder: Path) -> tuple[float, dict]:
    """(wall seconds, the verdict) of one babysit with `source`'s nndiag first on the path."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(source), "NNDIAG_RUNS": str(folder / "runs"), "COLUMNS": "100"}
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "nndiag", *COMMAND], cwd=folder, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode not in (0, 1):
        raise SystemExit(f"{source}: exit {done.returncode}\n{done.stderr[-2000:]}")
    return seconds, json.loads(done.stdout)


def step_seconds(verdict: dict) -> dict[str, float]:
    return {s["name"]: float(s.get("seconds") or 0.0) for s in verdict.get("steps", []) if s.get("seconds") is not None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", type=Path, required=True, help="a checkout of the version before issue 18 (d0bb332)")
    parser.add_argument("--repeats", type=int, default=None, help="runs of each side (default 5; quick 1)")
    parser.add_argument("--quick", action="store_true", help="one repeat, print only")
    args = parser.parse_args()
    repeats = args.repeats or (1 if args.quick else 5)
    sides = {"before": args.old.resolve(), "now": ROOT}
    walls: dict[str, list[float]] = {side: [] for side in sides}
    steps: dict[str, dict[str, list[float]]] = {side: {} for side in sides}
    status: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeats):
            order = list(sides) if i % 2 == 0 else list(reversed(sides))
            for side in order:
                seconds, verdict = once(sides[side], Path(tmp) / f"{side}{i}")
                walls[side].append(seconds)
                status[side] = verdict.get("status", "?")
                for name, s in step_seconds(verdict).items():
                    steps[side].setdefault(name, []).append(s)
                print(f"{side:6s} run {i + 1}: {seconds:.1f} s ({status[side]})", flush=True)
    median = {side: statistics.median(values) for side, values in walls.items()}
    load = os.getloadavg()[0]
    lines = [
        "# What the new checks cost babysit: quickstart, now against the version before issue 18",
        "",
        f"Command: `python -m benchmarks.babysit_cost --old <checkout of d0bb332>`; `nndiag {' '.join(COMMAND)}` as a whole "
        f"process, one torch thread, medians of {repeats} alternating runs; {os.cpu_count()} CPUs, load average "
        f"{load:.2f} when it ended.",
        "",
        "| version | status | median wall (s) | runs (s) |",
        "|---|---|---|---|",
        *(f"| {side} | {status[side]} | {median[side]:.2f} | {', '.join(f'{s:.1f}' for s in walls[side])} |" for side in sides),
        "",
        f"Ratio now / before: **{median['now'] / median['before']:.3f}** (issue 18's target: within 10%, <= 1.10).",
        "",
        "Where the time went (median seconds per step, from the verdict's `steps`; start-up and imports are the rest):",
        "",
        "| step | before (s) | now (s) |",
        "|---|---|---|",
    ]
    names = list(dict.fromkeys([*steps["now"], *steps["before"]]))
    for name in names:
        cells = [f"{statistics.median(steps[side][name]):.2f}" if name in steps[side] else "-" for side in sides]
        lines.append(f"| {name} | {cells[0]} | {cells[1]} |")
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    if not args.quick:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "babysit_cost.md").write_text(text)
        print(f"wrote {RESULTS / 'babysit_cost.md'}")


if __name__ == "__main__":
    main()
