"""Reading training logs for `curves`: nndiag's own CSVs, PyTorch Lightning `CSVLogger` files, any CSV
with a step/epoch column and loss/accuracy columns, TensorBoard event files (Lightning's
TensorBoardLogger, `torch.utils.tensorboard.SummaryWriter`, the Hugging Face Trainer; through the
optional `tensorboard` package, imported only then), folders of runs, and a Trainer's History.

Every source becomes a `Curves`: up to two views of one run,
  dense  the densest training loss (every step when known): shape rules read it
  fit    train/val loss and accuracy at comparable points (every epoch, or Lightning's val rows):
         the rules that compare training with validation read it
Every series keeps only the points that were logged (a blank CSV cell is "not logged"; a NaN/Inf
that was logged is a real non-finite value). A folder path stands for the runs at or below it
(each run folder: its CSVs, else its event files); every run gets a unique name (the shortest
tail of its path that no other run shares). Bad files are BadInput naming the file.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from nndiag.errors import BadInput


@dataclass
class Curves:
    """One run's curves. Series are indexed by x (sorted, unique) and hold only logged points."""

    x: str = "step"  # name of the dense x axis
    dense: pd.Series | None = None  # densest training loss
    fit: dict[str, pd.Series] = field(default_factory=dict)  # train_loss, val_loss, train_acc, val_acc (any subset)
    fit_x: str = "epoch"  # name of the fit x axis
    label: str = "run"  # names the run in messages when several are analysed
    sources: list[str] = field(default_factory=list)  # the files it came from
    columns: dict[str, str] = field(default_factory=dict)  # which column/tag each series was read from ("x", "train_loss", ...)
    key: Path | None = None  # the path that names the run (a run folder); None: its first source file
    chance_loss: float | None = None  # the loss of a model that knows nothing (ln C), when the caller knows it
    chance_acc: float | None = None  # the accuracy of chance (1/C), when the caller knows it
    lr: pd.Series | None = None  # the learning rate the log recorded (nndiag train's lr, HF's learning_rate, Lightning's lr-Adam)
    lr_x: str = "step"  # the name of the lr series' x axis

    def loss(self) -> pd.Series | None:
        """The training loss the shape rules read: dense, else the fit view's."""
        if self.dense is not None and len(self.dense):
            return self.dense
        return self.fit.get("train_loss")

    def loss_x(self) -> str:
        return self.x if self.dense is not None and len(self.dense) else self.fit_x


# ------------------------------------------------------------------------------------------------
# Reading logs: CSV files and TensorBoard event files
# ------------------------------------------------------------------------------------------------

X_NAMES = ("step", "global_step", "trainer/global_step", "iteration", "iter", "it", "batch", "epoch")
TRAIN_LOSS = (
    "train_loss",
    "train/loss",
    "training_loss",
    "train_loss_step",
    "train/loss_step",
    "loss/train",
    "trn_loss",
    "loss",
    "train_loss_epoch",
    "train/loss_epoch",
    "training/loss",
    "train/train_loss",
)
VAL_LOSS = (
    "val_loss",
    "val/loss",
    "valid_loss",
    "valid/loss",
    "validation_loss",
    "validation/loss",
    "eval_loss",
    "eval/loss",
    "loss/val",
    "loss/valid",
    "loss/validation",
    "val_loss_epoch",
    "val/loss_epoch",
    "test_loss",
    "test/loss",
    "loss/test",
)
TRAIN_ACC = (
    "train_acc",
    "train/acc",
    "train_accuracy",
    "train/accuracy",
    "training_accuracy",
    "acc",
    "accuracy",
    "acc/train",
    "accuracy/train",
    "train_acc_step",
    "train/acc_step",
    "train_acc_epoch",
    "train/acc_epoch",
)
VAL_ACC = (
    "val_acc",
    "val/acc",
    "val_accuracy",
    "val/accuracy",
    "valid_acc",
    "valid/acc",
    "valid_accuracy",
    "validation_accuracy",
    "validation/accuracy",
    "eval_acc",
    "eval/acc",
    "eval_accuracy",
    "eval/accuracy",
    "acc/val",
    "accuracy/val",
    "val_acc_epoch",
    "val/acc_epoch",
    "test_acc",
    "test/acc",
    "test/accuracy",
)
LR = ("lr", "learning_rate", "learning-rate", "train/lr", "train/learning_rate", "lr/train", "optim/lr")
LR_MONITOR = re.compile(r"^lr-[a-z0-9_]+$")  # Lightning's LearningRateMonitor: lr-SGD, lr-Adam, ... (one optimizer, one group)
RUN_FILES = ("train_steps.csv", "train_epochs.csv", "metrics.csv")  # what a run folder path stands for
EVENTS = "tfevents"  # TensorBoard event files are named events.out.tfevents.<time>.<host>...
SEARCH_DEPTH = 4  # folder levels searched below a path given on the command line for runs (lightning_logs/version_N, runs/<name>)
TENSORBOARD_HINT = "pip install 'nndiag[tensorboard]'"


def _pick(columns: list[str], names: Iterable[str], given: str | None, path: Path, what: str) -> str | None:
    if given is not None:
        if given not in columns:
            kind = "tag" if is_events(path) else "column"
            raise BadInput(f"{path}: no {kind} {given!r} for {what}; the {kind}s are {', '.join(columns)}")
        return given
    lower = {c.strip().lower(): c for c in columns}
    return next((lower[n] for n in names if n in lower), None)


def _numeric(raw: pd.Series, column: str, path: Path) -> pd.Series:
    """Logged cells only (blanks dropped) as floats; 'nan'/'inf' are kept as real non-finite values."""
    text = raw.astype(str).str.strip()
    text = text[text != ""]
    values = pd.to_numeric(text, errors="coerce")
    bad = values.isna() & ~text.str.lower().isin(["nan", "-nan", "na"])
    if bad.any():
        row = int(bad.idxmax())
        raise BadInput(
            f"{path}: column {column!r} holds a non-number {text[row]!r} on data row {row + 1}; "
            "a curve needs numbers (blank cells are fine)"
        )
    return values.astype(float)


def read_csv(
    path: Path,
    x: str | None = None,
    train: str | None = None,
    val: str | None = None,
    train_acc: str | None = None,
    val_acc: str | None = None,
) -> Curves:
    """One CSV file -> Curves (dense training loss plus the train/val view), or BadInput."""
    if not path.exists():
        raise BadInput(f"{path}: no such file")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as exc:
        raise BadInput(f"{path}: not a readable CSV file ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    return _from_text(frame, path, x, train, val, train_acc, val_acc)


def from_frame(
    table: pd.DataFrame,
    label: str = "DataFrame",
    x: str | None = None,
    train: str | None = None,
    val: str | None = None,
    train_acc: str | None = None,
    val_acc: str | None = None,
) -> Curves:
    """A pandas DataFrame (e.g. a logger's metrics) -> Curves, read exactly as its CSV would be (NaN = not logged)."""
    import io

    frame = pd.read_csv(io.StringIO(table.to_csv(index=False)), dtype=str, keep_default_na=False, skipinitialspace=True)
    return _from_text(frame, Path(label), x, train, val, train_acc, val_acc)


def _from_text(
    frame: pd.DataFrame, path: Path, x: str | None, train: str | None, val: str | None, train_acc: str | None, val_acc: str | None
) -> Curves:
    """A CSV read as text (blank = not logged) -> Curves."""
    columns = [str(c) for c in frame.columns]
    if frame.empty:
        raise BadInput(f"{path}: the CSV has a header ({', '.join(columns)}) but no rows")
    return _read_frame(frame, path, x, train, val, train_acc, val_acc)


def _read_frame(
    frame: pd.DataFrame, path: Path, x: str | None, train: str | None, val: str | None, train_acc: str | None, val_acc: str | None
) -> Curves:
    """A table of text cells (blank = not logged), one column per metric -> Curves."""
    columns = [str(c) for c in frame.columns]
    kind = "tag" if is_events(path) else "column"
    xcol = _pick(columns, (), x, path, "--x") if x else _default_x(frame, columns)
    cols = {
        "train_loss": _pick(columns, TRAIN_LOSS, train, path, "--train"),
        "val_loss": _pick(columns, VAL_LOSS, val, path, "--val"),
        "train_acc": _pick(columns, TRAIN_ACC, train_acc, path, "--train-acc"),
        "val_acc": _pick(columns, VAL_ACC, val_acc, path, "--val-acc"),
    }
    if cols["train_loss"] is None and cols["val_loss"] is None:
        raise BadInput(
            f"{path}: no loss {kind} recognised among the {kind}s {', '.join(columns)}; name them with "
            f"--train {kind.upper()} and/or --val {kind.upper()} (recognised: train_loss, train/loss, loss, val_loss, "
            "val/loss, valid_loss, eval/loss, ...)"
        )
    xs = _numeric(frame[xcol], xcol, path) if xcol else pd.Series(np.arange(len(frame), dtype=float), index=frame.index)
    series: dict[str, pd.Series] = {}
    for key, col in cols.items():
        if col is None or col == xcol:
            continue
        found = _logged(frame, col, xs, path, key)
        if found is not None:
            series[key] = found
    lr_col = _pick_lr(columns)
    lr = _logged(frame, lr_col, xs, path, "lr") if lr_col is not None and lr_col != xcol else None
    if "train_loss" not in series and "val_loss" not in series:
        raise BadInput(f"{path}: the loss {kind}s ({', '.join(c for c in (cols['train_loss'], cols['val_loss']) if c)}) hold no numbers")
    xname = xcol or "row"
    used = {"x": xname, **{k: c for k, c in cols.items() if k in series}, **({"lr": lr_col} if lr is not None else {})}
    key = path.parent if path.name in RUN_FILES else path.with_suffix("")  # a run file is named by its folder
    return Curves(
        x=xname,
        dense=series.get("train_loss"),
        fit=series,
        fit_x=xname,
        label=key.name or path.stem,
        sources=[str(path)],
        columns=used,
        key=key,
        lr=lr,
        lr_x=xname,
    )


def _logged(frame: pd.DataFrame, col: str, xs: pd.Series, path: Path, name: str) -> pd.Series | None:
    """The logged cells of column `col` as a series indexed by x (sorted, the last value of a repeated x kept), or None."""
    values = _numeric(frame[col], col, path)
    values = values[values.index.isin(xs.index[np.isfinite(xs.to_numpy())])]
    if not len(values):
        return None
    s = pd.Series(values.to_numpy(), index=xs[values.index].to_numpy(), name=name)
    return s[~s.index.duplicated(keep="last")].sort_index()


def _pick_lr(columns: list[str]) -> str | None:
    """The learning-rate column, when the log has one (LR names first, then Lightning's lr-<Optimizer>)."""
    lower = {c.strip().lower(): c for c in columns}
    named = next((lower[n] for n in LR if n in lower), None)
    return named or next((c for low, c in lower.items() if LR_MONITOR.match(low)), None)


def _default_x(frame: pd.DataFrame, columns: list[str]) -> str | None:
    """step-like columns first; 'epoch' when the file has one row per epoch (nndiag's train_epochs.csv)."""
    lower = {c.strip().lower(): c for c in columns}
    if "epoch" in lower:
        epochs = frame[lower["epoch"]].astype(str).str.strip()
        epochs = epochs[epochs != ""]
        if len(epochs) and epochs.is_unique:
            return lower["epoch"]
    return next((lower[n] for n in X_NAMES if n in lower), None)


def is_events(path: Path) -> bool:
    """A TensorBoard event file, or a folder holding some (one run)."""
    if path.is_dir():
        return any(EVENTS in p.name for p in path.iterdir() if p.is_file())
    return EVENTS in path.name


def read_events(
    path: Path,
    x: str | None = None,
    train: str | None = None,
    val: str | None = None,
    train_acc: str | None = None,
    val_acc: str | None = None,
) -> Curves:
    """A TensorBoard event file, or a folder of them (one run), -> Curves: the scalar tags become columns, x is the step."""
    frame = _event_frame(path)
    curves = _read_frame(frame, path, x or str(frame.columns[0]), train, val, train_acc, val_acc)  # default x: the logged step
    curves.key = path if path.is_dir() else path.parent
    curves.label = curves.key.name or path.name
    return curves


def _event_frame(path: Path) -> pd.DataFrame:
    """Every scalar of an event file (or a run folder of them) as one row per step, one text column per tag (blank = not logged)."""
    try:
        from tensorboard.backend.event_processing import event_accumulator
        from tensorboard.util import tensor_util
    except ImportError:
        raise BadInput(f"{path}: reading TensorBoard event files needs the tensorboard package: {TENSORBOARD_HINT}") from None
    guidance = {event_accumulator.SCALARS: 0, event_accumulator.TENSORS: 0}  # 0 = keep every point
    try:
        acc = event_accumulator.EventAccumulator(str(path), size_guidance=guidance)
        acc.Reload()
        rows: dict[int, dict[str, float]] = {}
        tags = acc.Tags()
        for tag in tags.get("scalars", []):
            for ev in acc.Scalars(tag):
                rows.setdefault(int(ev.step), {})[tag] = float(ev.value)
        for tag in tags.get("tensors", []):  # scalars written as 0-d tensors (tf.summary v2 style)
            for ev in acc.Tensors(tag):
                value = tensor_util.make_ndarray(ev.tensor_proto)
                if value.ndim == 0 and np.issubdtype(value.dtype, np.number):
                    rows.setdefault(int(ev.step), {})[tag] = float(value)
    except Exception as exc:  # a corrupt or foreign file: tensorboard raises many kinds
        raise BadInput(f"{path}: not a readable TensorBoard event file ({type(exc).__name__}: {exc})") from None
    if not rows:
        raise BadInput(f"{path}: the TensorBoard log holds no scalars (nothing logged with add_scalar / self.log)")
    steps = sorted(rows)
    names = sorted({t for r in rows.values() for t in r})
    step_col = "step" if "step" not in names else "tensorboard_step"
    data = {step_col: [str(s) for s in steps]}
    for name in names:
        data[name] = [repr(rows[s][name]) if name in rows[s] else "" for s in steps]
    return pd.DataFrame(data, dtype=str)


def _runs_in(folder: Path) -> list[Path]:
    """Run folders at or below `folder` (SEARCH_DEPTH levels): those holding run CSVs or event files, in name order."""
    found: list[Path] = []
    for root, dirs, files in os.walk(folder):
        here = Path(root)
        dirs.sort()
        if any(name in files for name in RUN_FILES) or any(EVENTS in f for f in files):
            found.append(here)
            dirs.clear()  # a run's own sub-folders (checkpoints, hparams) are not runs
        elif len(here.relative_to(folder).parts) >= SEARCH_DEPTH:
            dirs.clear()
    return found


def expand(paths: list[Path]) -> list[Path]:
    """Files to read. A run folder stands for its CSVs (nndiag's train_*.csv, or Lightning's metrics.csv) or, without
    them, for its TensorBoard event files (read together as one run); a folder of runs (lightning_logs/, runs/) for
    every run folder below it."""
    files: list[Path] = []
    for path in paths:
        if not path.exists():
            raise BadInput(f"{path}: no such file or folder")
        if not path.is_dir():
            files.append(path)
            continue
        runs = _runs_in(path)
        if not runs:
            listing = ", ".join(sorted(p.name for p in path.iterdir())[:20]) or "nothing"
            raise BadInput(
                f"{path}: a folder, but neither it nor its sub-folders hold a log ({', '.join(RUN_FILES)} or a "
                f"TensorBoard events.out.tfevents.* file); it holds {listing}"
            )
        for run in runs:
            csvs = [run / name for name in RUN_FILES if (run / name).exists()]
            files.extend(csvs or [run])
    return files


def _read(path: Path, **columns: str | None) -> Curves:
    return read_events(path, **columns) if is_events(path) else read_csv(path, **columns)


def load(paths: list[Path], **columns: str | None) -> list[Curves]:
    """Read every file; files in one folder with one validation curve among them are one run
    (nndiag's train_steps.csv gives the dense loss, train_epochs.csv the train/val view). Each run gets a unique label."""
    parts = [_read(p, **columns) for p in expand(paths)]
    runs: list[Curves] = []
    by_folder: dict[Path, list[Curves]] = {}
    for part in parts:
        by_folder.setdefault(_home(Path(part.sources[0])), []).append(part)
    for folder, group in by_folder.items():
        with_val = [c for c in group if "val_loss" in c.fit]
        if len(group) > 1 and len(with_val) == 1:
            main = with_val[0]
            densest = max((c for c in group if c.dense is not None), key=lambda c: len(c.dense), default=None)
            if densest is not None and len(densest.dense) > len(main.fit.get("train_loss", [])):
                main.dense, main.x = densest.dense, densest.x
                main.columns = {**main.columns, "dense": f"{Path(densest.sources[0]).name}:{densest.columns.get('train_loss')}"}
            lrs = [c for c in group if c.lr is not None]
            if lrs:  # the densest LR log (nndiag train's train_steps.csv has one per step, train_epochs.csv one per epoch)
                densest_lr = max(lrs, key=lambda c: len(c.lr))
                main.lr, main.lr_x = densest_lr.lr, densest_lr.lr_x
            main.label = folder.name or main.label
            main.sources = [s for c in group for s in c.sources]
            main.key = folder
            runs.append(main)
        else:
            runs.extend(group)
    unique_labels(runs)
    return runs


def _home(source: Path) -> Path:
    """The folder a log file belongs to (a TensorBoard run folder is its own home)."""
    return source if source.is_dir() else source.parent


def unique_labels(runs: list[Curves]) -> None:
    """Name each run by the shortest tail of its path that no other run shares (a/metrics, b/metrics; version_0, version_1)."""
    keys = [c.key.parts if c.key is not None else (c.label,) for c in runs]
    for i, c in enumerate(runs):
        parts = keys[i]
        others = [other for other in keys if other != parts]  # the same path twice is told apart below
        for k in range(1, len(parts) + 1):
            tail = parts[-k:]
            if all(other[-k:] != tail for other in others):
                c.label = "/".join(tail)
                break
        else:
            c.label = "/".join(parts)
    seen: dict[str, int] = {}
    for c in runs:  # the same file given twice
        seen[c.label] = seen.get(c.label, 0) + 1
        if seen[c.label] > 1:
            c.label = f"{c.label} ({seen[c.label]})"


def from_history(
    steps: pd.DataFrame, epochs: pd.DataFrame, label: str = "train", chance_loss: float | None = None, chance_acc: float | None = None
) -> Curves:
    """nndiag's own logs (Trainer History frames) -> Curves; `train` passes the chance levels it knows (ln C, 1/C)."""
    dense = pd.Series(steps["loss"].to_numpy(float), index=steps["step"].to_numpy(float), name="train_loss") if len(steps) else None
    lr = pd.Series(steps["lr"].to_numpy(float), index=steps["step"].to_numpy(float), name="lr") if len(steps) and "lr" in steps else None
    fit = {}
    for key in ("train_loss", "val_loss", "train_acc", "val_acc"):
        if key in epochs and len(epochs) and epochs[key].notna().any():
            values = epochs[key]
            fit[key] = pd.Series(values.to_numpy(float), index=epochs["epoch"].to_numpy(float), name=key)
    return Curves(x="step", dense=dense, fit=fit, fit_x="epoch", label=label, chance_loss=chance_loss, chance_acc=chance_acc, lr=lr)
