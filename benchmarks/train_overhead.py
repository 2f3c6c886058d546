"""What nndiag's general step costs: `nndiag train RECIPE` against a bare PyTorch loop doing the same
work (benchmarks/bare_train.py), each as a whole process (start-up, imports, data, training, one
validation pass per epoch), alternating, several repeats; the ratio of the medians.

    python -m benchmarks.train_overhead                       # both recipes, 3 repeats
    python -m benchmarks.train_overhead --recipes recipes/mnist1d-mlp.yaml --repeats 5

Targets (issue 10): mnist1d-mlp <= 1.2x; the tiny-BERT recipe <= 1.3x. nndiag also writes its run
folder (CSVs, best.pt, summary.json); `--no-plots` leaves out the PNG, which the bare loop does not
draw either (the "with plots" column shows what drawing costs). Writes benchmarks/results/train_overhead.md.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
RECIPES = ("recipes/mnist1d-mlp.yaml", "recipes/tiny-bert.yaml")
TARGETS = {"recipes/mnist1d-mlp.yaml": 1.2, "recipes/tiny-bert.yaml": 1.3}


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def measure(recipe: str, repeats: int) -> dict[str, float]:
    runs: dict[str, list[float]] = {"bare": [], "nndiag": [], "nndiag_plots": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeats):
            runs["bare"].append(timed([sys.executable, "-m", "benchmarks.bare_train", recipe]))
            runs["nndiag"].append(
                timed([sys.executable, "-m", "nndiag", "train", recipe, "--no-progress", "--no-plots", "--json", "--out", f"{tmp}/a{i}"])
            )
            runs["nndiag_plots"].append(
                timed([sys.executable, "-m", "nndiag", "train", recipe, "--no-progress", "--json", "--out", f"{tmp}/b{i}"])
            )
    medians = {k: statistics.median(v) for k, v in runs.items()}
    return {
        "recipe": recipe,
        "bare_s": medians["bare"],
        "nndiag_s": medians["nndiag"],
        "nndiag_with_plots_s": medians["nndiag_plots"],
        "ratio": medians["nndiag"] / medians["bare"],
        "ratio_with_plots": medians["nndiag_plots"] / medians["bare"],
        "target": TARGETS.get(recipe, float("nan")),
        "repeats": repeats,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = [measure(r, args.repeats) for r in args.recipes]
    frame = pd.DataFrame(rows)
    RESULTS.mkdir(exist_ok=True)
    frame.to_csv(RESULTS / "train_overhead.csv", index=False)
    import torch

    lines = [
        "# train overhead: `nndiag train` vs a bare PyTorch loop, whole process",
        "",
        f"Command: `python -m benchmarks.train_overhead --repeats {args.repeats}`. Medians of alternating runs; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU.",
        "",
        "| recipe | bare loop (s) | nndiag train --no-plots (s) | ratio | target | with plots (s) | ratio with plots |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['recipe']} | {r['bare_s']:.2f} | {r['nndiag_s']:.2f} | **{r['ratio']:.3f}** | <= {r['target']:g} | "
            f"{r['nndiag_with_plots_s']:.2f} | {r['ratio_with_plots']:.3f} |"
        )
    (RESULTS / "train_overhead.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
