"""A corpus of REAL training logs with planted causes, for calibrating and testing `nndiag curves`.

    PYTHONPATH=. python -m benchmarks.curves_corpus              # (re)write tests/data/curves/ and its manifest.csv
    PYTHONPATH=. python -m benchmarks.curves_corpus --only lr-high-adam-digits   # some runs only (keeps the others)
    PYTHONPATH=. python -m benchmarks.curves_corpus --report     # score `curves` on the stored corpus:
                                                                 # benchmarks/results/curves_corpus.md + .csv

Every run is a real training run whose cause is planted by construction, logged by one of three
loggers users have:
  nndiag          `nndiag train RECIPE --out DIR` (the CLI, in a subprocess): train_steps.csv (every step)
                  + train_epochs.csv (every epoch)
  lightning-csv   PyTorch Lightning's CSVLogger: metrics.csv (train rows every `log_every` steps or
                  per epoch, validation rows per epoch, blank cells elsewhere)
  lightning-tb    PyTorch Lightning's TensorBoardLogger: one events.out.tfevents.* file
Planted causes: LR 10-100x too high (Adam on a problem whose good LR is 1e-3), LR 10-100x too low,
a tiny batch (noisy steps), a tiny training set without regularisation (overfitting), too small a
model (underfitting), a bad init (tiny weights in a deep net: a flat start), random labels (train
memorised, validation at chance), a diverging run (SGD far above its stable LR); and healthy controls
at several lengths and logging rates. The manifest gives per run: the folder, the source, the cause,
the codes `curves` must raise (`expected`) and those it must not (`forbidden`), and facts measured
on the log itself that show the cause is really there (`evidence`).

Seeded: the same command writes the same curves on the same CPU (wall-clock columns aside). Values
are rounded to 5 significant digits to keep the stored corpus small (well under 2 MB).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "data" / "curves"
RESULTS = ROOT / "benchmarks" / "results"

CURVE_CODES = (
    "overfitting",
    "underfitting",
    "still-improving",
    "diverged",
    "plateau",
    "noisy",
    "lr-too-low",
    "lr-too-high",
    "bad-init",
    "not-generalizing",
)
ALARMS = tuple(c for c in CURVE_CODES if c != "still-improving")  # warn/fail codes: a false alarm on a healthy run
# cause -> (codes that must appear, codes that must not)
CAUSES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "healthy": ((), ALARMS),
    "lr-too-high": (("lr-too-high",), ("lr-too-low", "bad-init", "not-generalizing", "underfitting")),
    "lr-too-low": (("lr-too-low",), ("lr-too-high", "noisy", "overfitting", "diverged", "not-generalizing")),
    "tiny-batch": (("noisy",), ("diverged", "lr-too-low", "not-generalizing", "overfitting")),
    "overfitting": (("overfitting",), ("underfitting", "not-generalizing", "diverged", "lr-too-low", "plateau")),
    "underfitting": (("underfitting",), ("overfitting", "not-generalizing", "diverged")),
    "bad-init": (("bad-init",), ("lr-too-high", "diverged", "not-generalizing")),
    "random-labels": (("not-generalizing",), ("underfitting", "overfitting", "still-improving", "plateau")),
    "diverged": (("diverged",), tuple(c for c in CURVE_CODES if c != "diverged")),
}


@dataclass
class Run:
    name: str  # folder under tests/data/curves/
    source: str  # nndiag | lightning-csv | lightning-tb
    cause: str  # a key of CAUSES
    data: dict[str, Any]  # recipe `data` section (nndiag) / {"name": ..., **options} (Lightning)
    model: dict[str, Any]  # recipe `model` section
    optim: dict[str, Any]
    batch: int = 64
    epochs: int = 10
    seed: int = 0
    log_every: int = 1  # Lightning: log the training loss every N steps; 0 = once per epoch
    tags: str = "plain"  # Lightning metric names: plain (train_loss, val_loss, ...) or slash (train/loss, val/loss, ...)
    extra: dict[str, Any] = field(default_factory=dict)  # more recipe keys (nndiag): schedule, train.*

    @property
    def expected(self) -> tuple[str, ...]:
        return CAUSES[self.cause][0]

    @property
    def forbidden(self) -> tuple[str, ...]:
        return CAUSES[self.cause][1]


# -- data the built-ins do not give: random labels and a tiny training set (importable targets) -------


def _base(name: str, seed: int) -> tuple[tuple[Any, Any], tuple[Any, Any]]:
    """Built-in data as ((x, y), (x_val, y_val)); data without its own validation split gets a seeded 20%."""
    import torch

    from nndiag.zoo import datasets as nd

    if name == "mnist1d":
        return nd.mnist1d()
    (x, y), _ = nd.digits(flatten=True) if name == "digits" else nd.spiral(points_per_class=200)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    cut = len(y) // 5
    return (x[order[cut:]], y[order[cut:]]), (x[order[:cut]], y[order[:cut]])


def random_labels(dataset: str = "digits", n_train: int | None = None, seed: int = 0) -> tuple[Any, Any]:
    """A built-in data set whose labels (train and validation) are replaced by uniform random classes."""
    import torch

    (x, y), (xv, yv) = _base(dataset, seed)
    if n_train is not None:
        x, y = x[:n_train], y[:n_train]
    g = torch.Generator().manual_seed(seed + 1)
    classes = int(y.max()) + 1
    return (x, torch.randint(classes, y.shape, generator=g)), (xv, torch.randint(classes, yv.shape, generator=g))


def tiny_train(dataset: str = "digits", n_train: int = 100, seed: int = 0) -> tuple[Any, Any]:
    """The first `n_train` training examples of a built-in data set, and its whole validation split."""
    (x, y), val = _base(dataset, seed)
    return (x[:n_train], y[:n_train]), val


# -- the runs ---------------------------------------------------------------------------------------

MLP = {"name": "mlp", "args": {"hidden": [128, 64], "activation": "relu", "init": "kaiming"}}
BIG = {"name": "mlp", "args": {"hidden": [512, 512], "activation": "relu", "init": "kaiming"}}
CNN = {"name": "cnn", "args": {"channels": [32, 64], "kernel_size": 3, "activation": "relu", "init": "kaiming", "batchnorm": True}}
CNN1D = {"name": "cnn", "args": {"channels": [32, 64, 64], "kernel_size": 5, "activation": "relu", "init": "kaiming", "batchnorm": True}}
SPIRAL_MLP = {"name": "mlp", "args": {"hidden": [100], "activation": "relu", "init": "kaiming"}}
DEEP_SMALL_INIT = {"name": "mlp", "args": {"hidden": [64] * 5, "activation": "relu", "init": "normal", "init_std": 0.05}}
SGD = {"name": "sgd", "lr": 0.05, "momentum": 0.9}  # the good LR for the digits MLP (effective LR 0.5)
ADAM = {"name": "adam", "lr": 1.0e-3}  # the good LR for Adam on these problems
DIGITS = {"name": "digits", "normalize": True}
MNIST1D = {"name": "mnist1d"}
MNIST1D_CH = {"name": "mnist1d", "args": {"channels": True}}
SPIRAL = {"name": "spiral", "args": {"points_per_class": 200}}


def _tiny(dataset: str, n: int) -> dict[str, Any]:
    return {"target": "benchmarks.curves_corpus:tiny_train", "args": {"dataset": dataset, "n_train": n}}


def _random(dataset: str, n: int) -> dict[str, Any]:
    return {"target": "benchmarks.curves_corpus:random_labels", "args": {"dataset": dataset, "n_train": n}}


def runs() -> list[Run]:
    """Every run of the corpus. Names: <source letter>-<cause>-<problem>; n = nndiag, c = Lightning CSV, t = Lightning TB."""
    out = [  # nndiag train: every step + every epoch
        Run("n-healthy-digits-mlp", "nndiag", "healthy", DIGITS, MLP, SGD, epochs=15),
        Run("n-healthy-digits-mlp-long", "nndiag", "healthy", DIGITS, MLP, {**SGD, "weight_decay": 1.0e-3}, epochs=40),
        Run("n-healthy-digits-mlp-short", "nndiag", "healthy", DIGITS, MLP, SGD, epochs=3),
        # 32 optimizer steps in all (babysit --budget quick): a healthy run this short has the shape of an LR 100x too low
        Run(
            "n-healthy-spiral-32-steps",
            "nndiag",
            "healthy",
            {"name": "spiral"},
            {"name": "mlp", "args": {"hidden": [64, 64], "init": "kaiming"}},
            {"name": "adam", "lr": 0.046},
            batch=32,
            epochs=4,
        ),
        Run("n-healthy-digits-cnn", "nndiag", "healthy", DIGITS, CNN, {**ADAM, "weight_decay": 1.0e-4}, epochs=10),
        Run(
            "n-healthy-spiral-mlp",
            "nndiag",
            "healthy",
            SPIRAL,
            SPIRAL_MLP,
            {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 1.0e-3},
            batch=32,
            epochs=60,
        ),
        Run(
            "n-healthy-mnist1d-cnn",
            "nndiag",
            "healthy",
            MNIST1D_CH,
            CNN1D,
            {"name": "adam", "lr": 3.0e-3, "weight_decay": 1.0e-4},
            batch=100,
            epochs=10,
        ),
        Run(
            "n-healthy-digits-mlp-stepdecay",
            "nndiag",
            "healthy",
            DIGITS,
            MLP,
            SGD,
            epochs=30,
            extra={"schedule": {"name": "step", "step_size": 10, "gamma": 0.1}},
        ),
        Run(
            "n-lr-high-clipped-sgd-digits",
            "nndiag",
            "lr-too-high",
            DIGITS,
            MLP,
            {"name": "sgd", "lr": 0.5, "momentum": 0.9},
            epochs=15,
            extra={"train": {"grad_clip": 0.5}},
        ),
        Run("n-lr-high-adam-digits", "nndiag", "lr-too-high", DIGITS, MLP, {"name": "adam", "lr": 0.03}, epochs=15),
        Run(
            "n-lr-high-clipped-sgd-spiral",
            "nndiag",
            "lr-too-high",
            SPIRAL,
            SPIRAL_MLP,
            {"name": "sgd", "lr": 1.0, "momentum": 0.9},
            batch=32,
            epochs=40,
            extra={"train": {"grad_clip": 1.0}},
        ),
        Run("n-lr-low-sgd-digits", "nndiag", "lr-too-low", DIGITS, MLP, {"name": "sgd", "lr": 5.0e-4, "momentum": 0.9}, epochs=15),
        Run(
            "n-lr-low-adam-mnist1d",
            "nndiag",
            "lr-too-low",
            MNIST1D,
            {"name": "mlp", "args": {"hidden": [256, 256], "activation": "relu", "init": "kaiming"}},
            {"name": "adam", "lr": 1.0e-5},
            batch=100,
            epochs=12,
        ),
        Run("n-tiny-batch-digits", "nndiag", "tiny-batch", DIGITS, MLP, {"name": "sgd", "lr": 0.02}, batch=2, epochs=1),
        Run("n-tiny-batch-mnist1d", "nndiag", "tiny-batch", MNIST1D, MLP, {"name": "sgd", "lr": 0.01}, batch=4, epochs=1),
        Run("n-tiny-batch-adam-digits", "nndiag", "tiny-batch", DIGITS, MLP, ADAM, batch=2, epochs=1),
        Run(
            "n-tiny-batch-cnn-digits",
            "nndiag",
            "tiny-batch",
            DIGITS,
            {"name": "cnn", "args": {"channels": [32, 64], "kernel_size": 3}},
            {"name": "sgd", "lr": 0.01, "momentum": 0.9},
            batch=4,
            epochs=1,
        ),
        Run("n-overfit-tiny-mnist1d", "nndiag", "overfitting", _tiny("mnist1d", 200), BIG, ADAM, batch=50, epochs=60),
        Run("n-overfit-tiny-digits", "nndiag", "overfitting", _tiny("digits", 60), BIG, ADAM, batch=20, epochs=150),
        Run(
            "n-underfit-linear-spiral",
            "nndiag",
            "underfitting",
            SPIRAL,
            {"name": "linear"},
            {"name": "sgd", "lr": 0.05, "momentum": 0.9},
            batch=32,
            epochs=30,
        ),
        Run("n-underfit-linear-mnist1d", "nndiag", "underfitting", MNIST1D, {"name": "linear"}, ADAM, batch=100, epochs=15),
        Run("n-bad-init-deep-digits", "nndiag", "bad-init", DIGITS, DEEP_SMALL_INIT, SGD, epochs=20),
        Run("n-random-labels-digits", "nndiag", "random-labels", _random("digits", 500), BIG, ADAM, batch=50, epochs=60),
        Run("n-random-labels-mnist1d", "nndiag", "random-labels", _random("mnist1d", 1000), BIG, ADAM, batch=50, epochs=40),
        Run("n-diverged-sgd-digits", "nndiag", "diverged", DIGITS, MLP, {"name": "sgd", "lr": 3.0, "momentum": 0.9}, epochs=5),
        Run("n-diverged-late-sgd-digits", "nndiag", "diverged", DIGITS, MLP, {"name": "sgd", "lr": 0.5, "momentum": 0.9}, epochs=15),
        Run(
            "n-diverged-clipped-sgd-digits",
            "nndiag",
            "diverged",
            DIGITS,
            MLP,
            {"name": "sgd", "lr": 1.0, "momentum": 0.9},
            epochs=15,
            extra={"train": {"grad_clip": 1.0}},
        ),
        Run("n-diverged-sgd-cnn-digits", "nndiag", "diverged", DIGITS, CNN, {"name": "sgd", "lr": 1.0, "momentum": 0.9}, epochs=15),
    ]
    for source, s, seed, every in (("lightning-csv", "c", 1, 1), ("lightning-tb", "t", 2, 10)):
        tags = "plain" if s == "c" else "slash"
        out += [  # Lightning: training rows every step (CSV) or every 10 steps (TB); validation per epoch
            Run(f"{s}-healthy-digits-mlp", source, "healthy", DIGITS, MLP, SGD, epochs=15, seed=seed, log_every=every, tags=tags),
            Run(f"{s}-healthy-digits-mlp-epoch-log", source, "healthy", DIGITS, MLP, SGD, epochs=25, seed=seed, log_every=0, tags=tags),
            Run(
                f"{s}-healthy-spiral-mlp",
                source,
                "healthy",
                SPIRAL,
                SPIRAL_MLP,
                {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 1.0e-3},
                batch=32,
                epochs=40,
                seed=seed,
                log_every=every,
                tags=tags,
            ),
            Run(
                f"{s}-healthy-digits-mlp-every50",
                source,
                "healthy",
                DIGITS,
                MLP,
                {**ADAM, "weight_decay": 1.0e-4},
                batch=32,
                epochs=20,
                seed=seed,
                log_every=50,
                tags=tags,
            ),
            Run(
                f"{s}-lr-high-clipped-sgd-digits",
                source,
                "lr-too-high",
                DIGITS,
                MLP,
                {"name": "sgd", "lr": 0.5, "momentum": 0.9, "clip": 0.5},
                epochs=15,
                seed=seed,
                log_every=every,
                tags=tags,
            ),
            Run(
                f"{s}-lr-low-sgd-digits",
                source,
                "lr-too-low",
                DIGITS,
                MLP,
                {"name": "sgd", "lr": 5.0e-4, "momentum": 0.9},
                epochs=15,
                seed=seed,
                log_every=every,
                tags=tags,
            ),
            Run(
                f"{s}-tiny-batch-digits",
                source,
                "tiny-batch",
                DIGITS,
                MLP,
                {"name": "sgd", "lr": 0.02},
                batch=2,
                epochs=1,
                seed=seed,
                log_every=every,
                tags=tags,
            ),
            Run(
                f"{s}-overfit-tiny-mnist1d",
                source,
                "overfitting",
                _tiny("mnist1d", 200),
                BIG,
                ADAM,
                batch=50,
                epochs=60,
                seed=seed,
                log_every=every,
                tags=tags,
            ),
            Run(
                f"{s}-underfit-linear-mnist1d",
                source,
                "underfitting",
                MNIST1D,
                {"name": "linear"},
                ADAM,
                batch=100,
                epochs=15,
                seed=seed,
                log_every=every,
                tags=tags,
            ),
            Run(
                f"{s}-bad-init-deep-digits",
                source,
                "bad-init",
                DIGITS,
                DEEP_SMALL_INIT,
                SGD,
                epochs=20,
                seed=seed,
                log_every=every,
                tags=tags,
            ),
            Run(
                f"{s}-random-labels-digits",
                source,
                "random-labels",
                _random("digits", 500),
                BIG,
                ADAM,
                batch=50,
                epochs=60,
                seed=seed,
                log_every=every,
                tags=tags,
            ),
            Run(
                f"{s}-diverged-sgd-digits",
                source,
                "diverged",
                DIGITS,
                MLP,
                {"name": "sgd", "lr": 0.5, "momentum": 0.9},
                epochs=10,
                seed=seed,
                log_every=every,
                tags=tags,
            ),
        ]
    return out


# -- writing ----------------------------------------------------------------------------------------


def _round(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    for col in out.columns:
        if pd.api.types.is_float_dtype(out[col]):
            out[col] = out[col].map(lambda v: v if not math.isfinite(v) else float(f"{v:.5g}"))
    return out


def run_nndiag(run: Run, folder: Path) -> None:
    """`nndiag train` through the CLI, in a subprocess; keeps its two CSVs and the resolved recipe."""
    import yaml

    recipe = {
        "name": run.name,
        "seed": run.seed,
        "device": "cpu",
        "data": run.data,
        "model": run.model,
        "loss": "cross_entropy",
        "optim": run.optim,
        "train": {"batch_size": run.batch, "epochs": run.epochs},
    }
    for key, value in run.extra.items():
        recipe[key] = {**recipe.get(key, {}), **value}
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "recipe.yaml"
        path.write_text(yaml.safe_dump(recipe, sort_keys=False))
        out = Path(tmp) / "out"
        cmd = [sys.executable, "-m", "nndiag", "train", str(path), "--out", str(out), "--no-plots", "--no-progress", "--json"]
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        if proc.returncode not in (0, 1):
            raise RuntimeError(f"{run.name}: nndiag train exited {proc.returncode}\n{proc.stderr[-2000:]}")
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("train_steps.csv", "train_epochs.csv"):
            _round(pd.read_csv(out / name)).to_csv(folder / name, index=False)
        shutil.copy(out / "recipe.yaml", folder / "recipe.yaml")


def run_lightning(run: Run, folder: Path) -> None:
    """A LightningModule fit with CSVLogger or TensorBoardLogger; keeps metrics.csv or the event file."""
    import pytorch_lightning as pl
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from nndiag.config.recipe import ModelConfig
    from nndiag.zoo.models import build_model

    torch.set_num_threads(1)
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    pl.seed_everything(run.seed, workers=False, verbose=False)
    if "target" in run.data:
        fn = {"benchmarks.curves_corpus:random_labels": random_labels, "benchmarks.curves_corpus:tiny_train": tiny_train}[
            run.data["target"]
        ]
        (x, y), (xv, yv) = fn(**run.data["args"])
    else:
        (x, y), (xv, yv) = _base(run.data["name"], run.seed)
    if run.data.get("normalize"):
        mean, std = x.mean(), x.std()  # one channel, as nndiag normalises the 8x8 digit images
        x, xv = (x - mean) / std, (xv - mean) / std
    classes = int(max(y.max(), yv.max())) + 1
    model = build_model(ModelConfig(name=run.model["name"], args=dict(run.model.get("args", {}))), tuple(x.shape[1:]), classes)
    names = {"plain": ("train_loss", "train_acc", "val_loss", "val_acc"), "slash": ("train/loss", "train/acc", "val/loss", "val/acc")}[
        run.tags
    ]
    optim = {k: v for k, v in run.optim.items() if k not in ("name", "clip")}
    optimizer = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}[run.optim["name"]]
    per_epoch = run.log_every == 0

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = model

        def training_step(self, batch: Any, _: int) -> torch.Tensor:
            xb, yb = batch
            logits = self.net(xb)
            loss = nn.functional.cross_entropy(logits, yb)
            acc = (logits.argmax(1) == yb).float().mean()
            self.log(names[0], loss, on_step=not per_epoch, on_epoch=per_epoch)
            self.log(names[1], acc, on_step=not per_epoch, on_epoch=per_epoch)
            return loss

        def validation_step(self, batch: Any, _: int) -> None:
            xb, yb = batch
            logits = self.net(xb)
            self.log(names[2], nn.functional.cross_entropy(logits, yb), on_epoch=True)
            self.log(names[3], (logits.argmax(1) == yb).float().mean(), on_epoch=True)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return optimizer(self.parameters(), **optim)

    loader = DataLoader(TensorDataset(x, y), batch_size=run.batch, shuffle=True, generator=torch.Generator().manual_seed(run.seed))
    val_loader = DataLoader(TensorDataset(xv, yv), batch_size=512)
    with tempfile.TemporaryDirectory() as tmp:
        if run.source == "lightning-csv":
            logger = pl.loggers.CSVLogger(tmp, name="logs", version=0)
        else:
            logger = pl.loggers.TensorBoardLogger(tmp, name="logs", version=0, default_hp_metric=False)
        trainer = pl.Trainer(
            max_epochs=run.epochs,
            logger=logger,
            log_every_n_steps=max(run.log_every, 1),
            accelerator="cpu",
            devices=1,
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
            num_sanity_val_steps=0,
            deterministic=True,
            gradient_clip_val=run.optim.get("clip"),
        )
        trainer.fit(Module(), loader, val_loader)
        logdir = Path(tmp) / "logs" / "version_0"
        folder.mkdir(parents=True, exist_ok=True)
        if run.source == "lightning-csv":
            _round(pd.read_csv(logdir / "metrics.csv")).to_csv(folder / "metrics.csv", index=False)
        else:
            [events] = list(logdir.glob("events.out.tfevents.*"))
            shutil.copy(events, folder / "events.out.tfevents.0.corpus")


# -- ground truth measured on the log: the planted cause is really there ------------------------------


def evidence(folder: Path) -> dict[str, float]:
    """Plain facts about a stored run, independent of the `curves` rules (for the manifest)."""
    from nndiag.diagnostics import curves

    [c] = curves.load([folder])
    out: dict[str, float] = {}
    loss = c.loss()
    if loss is not None and len(loss):
        y = loss.to_numpy(float)
        out["points"] = len(y)
        out["train_first"] = float(y[0])
        finite = y[np.isfinite(y)]
        out["train_last10pct"] = float(np.median(finite[-max(1, len(finite) // 10) :])) if len(finite) else math.nan
        out["nonfinite"] = int((~np.isfinite(y)).sum())
    val = c.fit.get("val_loss")
    if val is not None and len(val):
        v = val.to_numpy(float)
        out["val_first"], out["val_min"], out["val_last"] = float(v[0]), float(np.nanmin(v)), float(v[-1])
    for key in ("train_acc", "val_acc"):
        s = c.fit.get(key)
        if s is not None and len(s):
            out[f"{key}_last"] = float(s.iloc[-1])
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="run names (or substrings) to (re)generate; default all")
    parser.add_argument("--out", type=Path, default=CORPUS)
    parser.add_argument(
        "--report", action="store_true", help="score `curves` on the stored corpus and write benchmarks/results/curves_corpus.*"
    )
    args = parser.parse_args(argv)
    if args.report:
        report(args.out)
        return
    rows = []
    for run in runs():
        folder = args.out / run.name
        if not args.only or any(o in run.name for o in args.only):
            if folder.exists():
                shutil.rmtree(folder)
            print(f"{run.name} ...", flush=True)
            (run_nndiag if run.source == "nndiag" else run_lightning)(run, folder)
        if folder.exists():
            facts = evidence(folder)
            rows.append(
                {
                    "run": run.name,
                    "source": run.source,
                    "cause": run.cause,
                    "expected": " ".join(run.expected),
                    "forbidden": " ".join(run.forbidden),
                    "evidence": "; ".join(f"{k}={v:.4g}" for k, v in facts.items()),
                }
            )
    pd.DataFrame(rows).to_csv(args.out / "manifest.csv", index=False)
    print(f"wrote {len(rows)} runs to {args.out}")


def score(corpus: Path = CORPUS) -> pd.DataFrame:
    """Run `curves` on every stored run of the manifest: one row per run with its codes, misses and false alarms."""
    from nndiag.diagnostics import curves

    manifest = pd.read_csv(corpus / "manifest.csv", keep_default_na=False)
    rows = []
    for _, r in manifest.iterrows():
        result = curves.run([corpus / r["run"]])
        codes = result.verdict.codes
        expected, forbidden = r["expected"].split(), r["forbidden"].split()
        missed = [c for c in expected if c not in codes]
        alarms = [c for c in codes if c in forbidden]
        [run] = curves.load([corpus / r["run"]])
        loss = run.loss()
        shape = curves.Shape.of(loss[np.isfinite(loss.to_numpy(float))]) if len(loss) >= curves.MIN_POINTS else None
        val = run.fit.get("val_loss")
        high = [f for f in result.verdict.findings if f.code == "lr-too-high"]
        rows.append(
            {
                "run": r["run"],
                "source": r["source"],
                "cause": r["cause"],
                "expected": " ".join(expected),
                "lr_too_high_by": ("unstable val" if "swing" in high[0].evidence else "noisy floor") if high else "",
                "codes": " ".join(codes),
                "missed": " ".join(missed),
                "false_alarms": " ".join(alarms),
                "ok": not missed and not alarms,
                "points": len(loss),
                "noise_to_drop": shape.wiggle / shape.drop if shape is not None and shape.drop > 0 else math.nan,
                "t90": shape.t(0.9) if shape is not None else math.nan,
                "val_swing": curves.val_swing(val) if val is not None and len(val) >= curves.HIGH_VAL_POINTS else math.nan,
            }
        )
    return pd.DataFrame(rows)


def summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Per code: recall over the runs planted to raise it; false alarms on healthy runs and on planted runs that forbid it."""
    healthy = runs[runs["cause"] == "healthy"]
    planted = runs[runs["cause"] != "healthy"]
    rows = []
    for code in CURVE_CODES:
        should = runs[runs["expected"].str.split().map(lambda e: code in e)]
        found = should["codes"].str.split().map(lambda c: code in c).sum()
        on_healthy = healthy["codes"].str.split().map(lambda c: code in c).sum()
        forbidden_hits = planted["false_alarms"].str.split().map(lambda c: code in c).sum()
        rows.append(
            {
                "code": code,
                "planted_runs": len(should),
                "found": int(found),
                "recall": f"{found / len(should):.0%}" if len(should) else "-",
                "healthy_runs_raising_it": f"{int(on_healthy)}/{len(healthy)}",
                "false_alarms_on_planted_runs": int(forbidden_hits),
            }
        )
    return pd.DataFrame(rows)


def report(corpus: Path = CORPUS) -> None:
    """Score `curves` on the corpus; write benchmarks/results/curves_corpus.md and .csv."""
    runs = score(corpus)
    table = summary(runs)
    RESULTS.mkdir(parents=True, exist_ok=True)
    runs.to_csv(RESULTS / "curves_corpus.csv", index=False, float_format="%.4g")
    healthy = runs[runs["cause"] == "healthy"]
    alarms_on_healthy = healthy["codes"].str.split().map(lambda c: any(x in ALARMS for x in c)).sum()
    sources = runs.groupby("source").size().to_dict()
    lines = [
        "# `nndiag curves` on a corpus of real training logs with planted causes",
        "",
        f"{len(runs)} real runs ({', '.join(f'{n} {s}' for s, n in sources.items())}), each with a cause planted by construction "
        "(benchmarks/curves_corpus.py; the logs are in tests/data/curves/, the manifest gives each run's expected and forbidden codes).",
        "",
        "Regenerate: `PYTHONPATH=. python -m benchmarks.curves_corpus` (the logs, about 5 minutes on 2 CPU cores) then "
        "`PYTHONPATH=. python -m benchmarks.curves_corpus --report` (this file and curves_corpus.csv, seconds).",
        "",
        f"**{int(runs['ok'].sum())}/{len(runs)} runs as expected**: every expected code found, no forbidden code raised. "
        f"Healthy controls with any warn/fail finding: {int(alarms_on_healthy)}/{len(healthy)}.",
        "",
        "## Per code",
        "",
        "recall = planted runs that raised the code / planted runs that must; healthy = healthy controls that raised it; "
        "false alarms = planted runs that raised it although their cause rules it out (the manifest's `forbidden`).",
        "",
        "| code | planted runs | found | recall | healthy runs raising it | false alarms on planted runs |",
        "|---|---|---|---|---|---|",
    ]
    for _, r in table.iterrows():
        lines.append(
            f"| `{r['code']}` | {r['planted_runs']} | {r['found']} | {r['recall']} | {r['healthy_runs_raising_it']} | "
            f"{r['false_alarms_on_planted_runs']} |"
        )
    lines += [
        "",
        "## Margins of the thresholds calibrated here",
        "",
        "| measure (rule) | threshold | lowest on the runs planted to trigger it | highest on the healthy controls |",
        "|---|---|---|---|",
    ]
    for column, cause, constant in (
        ("noise_to_drop", "tiny-batch", "NOISY_RATIO"),
        ("t90", "lr-too-low", "LOW_SLOW"),
        ("val_swing", "lr-too-high", "HIGH_VAL_SWING"),
    ):
        from nndiag.diagnostics import curves

        planted_values = runs[runs["cause"] == cause][column].dropna()
        healthy_values = healthy[column].dropna()
        lines.append(
            f"| {column} ({cause}) | {getattr(curves, constant):g} (`{constant}`) | {planted_values.min():.3g} | "
            f"{healthy_values.max():.3g} |"
        )
    high = runs[runs["cause"] == "lr-too-high"]["lr_too_high_by"].value_counts().to_dict()
    lines += ["", "lr-too-high on its planted runs, by branch: " + ", ".join(f"{k or 'not found'} {v}" for k, v in high.items()) + ".", ""]
    lines += [
        "",
        "## Per run",
        "",
        "noise/drop = the noisy rule's measure (NOISY_RATIO), t90 = share of the run for 90% of the fall (LOW_SLOW), "
        "val swing = the unstable-validation measure (HIGH_VAL_SWING).",
        "",
        "| run | source | cause | codes | ok | points | noise/drop | t90 | val swing |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for _, r in runs.iterrows():
        fmt = lambda v: "" if not isinstance(v, float) or not math.isfinite(v) else f"{v:.3g}"  # noqa: E731
        lines.append(
            f"| {r['run']} | {r['source']} | {r['cause']} | {r['codes'] or '-'} | {'yes' if r['ok'] else 'NO'} | "
            f"{r['points']} | {fmt(r['noise_to_drop'])} | {fmt(r['t90'])} | {fmt(r['val_swing'])} |"
        )
    (RESULTS / "curves_corpus.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:30]))


if __name__ == "__main__":
    main()
