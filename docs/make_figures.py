"""Make the figures of docs/reading-a-diagnosis.md: run each command below on a bundled recipe, in a
temporary folder, and copy the plot it wrote to docs/img/. The page says which command made each figure.

    make figures                      # or: python docs/make_figures.py [NAME ...]

Every figure is a real run on the CPU (no GPU is used, so the figures do not depend on the machine).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMG = ROOT / "docs" / "img"
CORPUS = ROOT / "tests" / "data" / "curves"

# figure name -> (the command, as the page shows it; the plot it writes, relative to the working folder)
FIGURES: dict[str, tuple[str, str]] = {
    "overfit-small-healthy.png": ("nndiag overfit-small recipes/spiral-mlp.yaml --out out", "out/overfit_small.png"),
    "overfit-small-diverged.png": ("nndiag overfit-small recipes/spiral-mlp.yaml --set optim.lr=30 --out out", "out/overfit_small.png"),
    "lr-find.png": ("nndiag lr-find recipes/spiral-mlp.yaml --out out", "out/lr_find.png"),
    "search.png": (
        "nndiag search recipes/spiral-mlp.yaml --trials 8 --set search.coarse.epochs=5 --set search.fine.epochs=20 --out out",
        "out/search.png",
    ),
    "curves-healthy.png": ("nndiag train recipes/spiral-mlp.yaml --out out", "out/curves.png"),
    "curves-overfitting.png": ("nndiag curves lightning_logs/version_1/metrics.csv --out out", "out/curves.png"),
    "curves-lr-too-low.png": ("nndiag curves lightning_logs/version_2/metrics.csv --out out", "out/curves.png"),
    "probe-init-experiment.png": ("nndiag probe --init-experiment --width 1024 --out out", "out/probe.png"),
    "probe-small-tanh.png": ("nndiag probe recipes/init-small-tanh.yaml --out out", "out/probe.png"),
}

# Lightning CSVLogger logs from the calibration corpus (tests/data/curves/), as a user's lightning_logs/ holds them
LOGS = {"version_1": "c-overfit-tiny-mnist1d", "version_2": "c-lr-low-sgd-digits"}


def make(name: str) -> None:
    command, plot = FIGURES[name]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "recipes").symlink_to(ROOT / "recipes")
        for version, run in LOGS.items():
            (folder / "lightning_logs" / version).mkdir(parents=True)
            shutil.copy(CORPUS / run / "metrics.csv", folder / "lightning_logs" / version / "metrics.csv")
        env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": "", "NNDIAG_RUNS": str(folder / "runs")}
        argv = [sys.executable, "-m", "nndiag", *shlex.split(command)[1:]]
        done = subprocess.run(argv, cwd=folder, env=env, capture_output=True, text=True)
        if done.returncode not in (0, 1):  # a failing verdict is what some figures show
            raise SystemExit(f"{command}: exit {done.returncode}\n{done.stderr}")
        IMG.mkdir(parents=True, exist_ok=True)
        shutil.copy(folder / plot, IMG / name)
        print(f"{name:28s} <- {command}  (exit {done.returncode})")


def main(names: list[str]) -> None:
    unknown = set(names) - set(FIGURES)
    if unknown:
        raise SystemExit(f"unknown figures {sorted(unknown)}; known: {', '.join(FIGURES)}")
    for name in names or FIGURES:
        make(name)


if __name__ == "__main__":
    main(sys.argv[1:])
