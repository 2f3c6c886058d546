"""`nndiag curves` on a long log: a CSV of 10 million optimizer steps (step, epoch, lr, train_loss, and val_loss every
10,000 steps), read and judged by `nndiag curves LOG --json --no-plots` against reading the same CSV with pandas
alone (`pd.read_csv(LOG)`), each as a whole process, alternating; ratios of the median wall time and of the peak
memory (resident set size).

    python -m benchmarks.curves_long_log                  # 10,000,000 rows, 3 repeats (the CSV: ~250 MB in a temp folder)
    python -m benchmarks.curves_long_log --quick          # 500,000 rows, 1 repeat: checks that it runs (not a measurement)

nndiag reads only the columns a curve needs, as numbers; the rules read at most curves.MAX_JUDGED points (every k-th
logged point, so the noise is kept), and curves.csv keeps those. Writes benchmarks/results/curves_long_log.md (not
with --quick).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
VAL_EVERY = 10_000  # steps between validation rows
CHUNK = 1_000_000  # rows written at a time

# Each child reports its own wall time and peak RSS (ru_maxrss, KiB on Linux) as one JSON line on stderr's last line.
PANDAS = (
    "import resource, sys, time, json; t = time.perf_counter(); import pandas as pd; frame = pd.read_csv(sys.argv[1]); "
    "print(json.dumps({'s': time.perf_counter() - t, 'rss_kb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "
    "'rows': len(frame)}), file=sys.stderr)"
)
NNDIAG = (
    "import resource, sys, time, json; t = time.perf_counter(); from nndiag.cli import main; "
    "sys.argv = ['nndiag', 'curves', sys.argv[1], '--json', '--no-plots', '--out', sys.argv[2]]\n"
    "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\n"
    "print(json.dumps({'s': time.perf_counter() - t, 'rss_kb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "
    "'exit': code}), file=sys.stderr)"
)


def write_log(path: Path, rows: int, seed: int = 0) -> None:
    """A healthy-looking long log: an exponential fall to a floor with minibatch noise, validation every VAL_EVERY steps."""
    rng = np.random.default_rng(seed)
    with path.open("w") as handle:
        handle.write("step,epoch,lr,train_loss,val_loss\n")
        for start in range(0, rows, CHUNK):
            step = np.arange(start, min(rows, start + CHUNK))
            clean = 2.3 * np.exp(-step / (rows / 8)) + 0.1
            loss = clean * (1 + 0.1 * rng.standard_normal(len(step)))
            val = np.where(step % VAL_EVERY == VAL_EVERY - 1, clean + 0.05, np.nan)
            frame = pd.DataFrame({"step": step, "epoch": step // VAL_EVERY, "lr": 0.01, "train_loss": loss, "val_loss": val})
            frame.to_csv(handle, index=False, header=False, float_format="%.6g", na_rep="")


def child(code: str, *args: str) -> dict:
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, check=False)
    report = json.loads(done.stderr.strip().splitlines()[-1])
    report["stdout"] = done.stdout
    return report


def measure(rows: int, repeats: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "long.csv"
        started = time.perf_counter()
        write_log(log, rows)
        written = time.perf_counter() - started
        runs: dict[str, list[dict]] = {"pandas": [], "nndiag": []}
        for i in range(repeats):
            runs["pandas"].append(child(PANDAS, str(log)))
            runs["nndiag"].append(child(NNDIAG, str(log), f"{tmp}/out{i}"))
        verdict = json.loads(runs["nndiag"][-1]["stdout"])
        size = log.stat().st_size
    median = {k: statistics.median(r["s"] for r in v) for k, v in runs.items()}
    peak = {k: max(r["rss_kb"] for r in v) / 1024 for k, v in runs.items()}
    return {
        "rows": rows,
        "csv_mb": size / 2**20,
        "write_s": written,
        "pandas_s": median["pandas"],
        "nndiag_s": median["nndiag"],
        "time_ratio": median["nndiag"] / median["pandas"],
        "pandas_peak_mb": peak["pandas"],
        "nndiag_peak_mb": peak["nndiag"],
        "memory_ratio": peak["nndiag"] / peak["pandas"],
        "status": verdict["status"],
        "codes": ", ".join(f["code"] for f in verdict["findings"]) or "none",
        "points": verdict["metrics"].get("points"),
        "points_judged": verdict["metrics"].get("points_judged"),
        "repeats": repeats,
    }


def report(result: dict, command: str) -> str:
    return "\n".join(
        [
            "# curves on a long log: `nndiag curves` vs reading the CSV with pandas alone",
            "",
            f"Command: `{command}`. Whole processes, alternating, median wall time over {result['repeats']} repeats and the "
            "largest peak RSS; each child times itself from its first import.",
            "",
            "| rows | CSV (MB) | pandas.read_csv (s) | nndiag curves (s) | time ratio | pandas peak (MB) | nndiag peak (MB) | memory ratio | verdict |",
            "|---|---|---|---|---|---|---|---|---|",
            f"| {result['rows']:,} | {result['csv_mb']:.0f} | {result['pandas_s']:.2f} | {result['nndiag_s']:.2f} | "
            f"**{result['time_ratio']:.2f}** | {result['pandas_peak_mb']:.0f} | {result['nndiag_peak_mb']:.0f} | "
            f"**{result['memory_ratio']:.2f}** | {result['status']} ({result['codes']}; {result['points']:,} points, "
            f"{result['points_judged']:,} judged) |",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="500,000 rows, 1 repeat, no report file: checks that it runs")
    args = parser.parse_args(argv)
    rows, repeats = (500_000, 1) if args.quick else (args.rows, args.repeats)
    result = measure(rows, repeats)
    text = report(result, "python -m benchmarks.curves_long_log" + (" --quick" if args.quick else ""))
    print(text)
    if not args.quick:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "curves_long_log.md").write_text(text)


if __name__ == "__main__":
    main()
