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

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from nndiag import processes
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
    lr_chosen: str | None = None  # what chose the LR this run trained at (babysit: "the search"): the LR rules then only inform
    damage: dict[str, Any] = field(default_factory=dict)  # what could not be read: records, unreadable, truncated, at (event files)
    state: dict[str, Any] = field(default_factory=dict)  # an unfinished run: its folder's summary.json status and whether it still runs
    short_by_request: bool = False  # the run was asked for this few steps (train --max-steps): too little data is a warning
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


def _column(raw: pd.Series, column: str, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One column as (values, logged): floats for every row, and which rows were logged. A number column (read as
    numbers, blank = NaN) is logged where it is not NaN; a text column is logged where its cell is not blank, and
    'nan'/'inf' there are real non-finite values."""
    if pd.api.types.is_numeric_dtype(raw.dtype) and not pd.api.types.is_bool_dtype(raw.dtype):
        values = raw.to_numpy(dtype=float, na_value=np.nan)
        return values, ~np.isnan(values)
    text = raw.astype(str).str.strip()
    logged = (text != "").to_numpy() & raw.notna().to_numpy()
    values = pd.to_numeric(text.where(logged, "nan"), errors="coerce").to_numpy(dtype=float)
    bad = np.isnan(values) & logged & ~text.str.lower().isin(["nan", "-nan", "na"]).to_numpy()
    if bad.any():
        row = int(np.argmax(bad))
        raise BadInput(
            f"{path}: column {column!r} holds a non-number {_quote(text.iloc[row])} on data row {row + 1}; "
            "a curve needs numbers (blank cells are fine)"
        )
    return values, logged


def _quote(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def _first_rows(path: Path) -> tuple[list[str], list[str] | None]:
    """The header and the first data row of a CSV file, as cells (None: no data row)."""
    import csv

    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = csv.reader(handle, skipinitialspace=True)
            header = next(rows, None)
            first = next(rows, None)
    except (UnicodeDecodeError, OSError, csv.Error) as exc:
        raise BadInput(f"{path}: not a readable CSV file ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    if not header:
        raise BadInput(f"{path}: not a readable CSV file (it is empty: no header row)")
    return header, first


def read_csv(
    path: Path,
    x: str | None = None,
    train: str | None = None,
    val: str | None = None,
    train_acc: str | None = None,
    val_acc: str | None = None,
) -> Curves:
    """One CSV file -> Curves (dense training loss plus the train/val view), or BadInput.

    Only the columns a curve needs are read, as numbers where they are numbers (a 10-million-row log costs
    about what pandas alone spends on it). A first data row with more cells than the header is refused (a column
    without a name; pandas would silently take the first column as the index, shifting every name); empty extra
    cells (a trailing comma on every row) are dropped, and so is an extra cell on a later row."""
    if not path.exists():
        raise BadInput(f"{path}: no such file")
    header, first = _first_rows(path)
    if first is not None and len(first) > len(header) and any(cell.strip() for cell in first[len(header) :]):
        raise BadInput(
            f"{path}: data row 1 has {len(first)} cells but the header names {len(header)} columns ({', '.join(header)}); "
            "every row needs one cell per column (blank cells are fine)"
        )
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", pd.errors.ParserWarning)  # "Length of header ... does not match": empty extra cells only
            warnings.simplefilter("ignore", pd.errors.DtypeWarning)  # a column of numbers and text: read as text (_column)
            names = [str(c) for c in pd.read_csv(path, nrows=0, index_col=False, skipinitialspace=True, encoding="utf-8-sig").columns]
            wanted = _wanted(names, x, train, val, train_acc, val_acc, path)
            frame = pd.read_csv(
                path,
                usecols=wanted,
                index_col=False,
                keep_default_na=False,
                na_values=[""],
                skipinitialspace=True,
                encoding="utf-8-sig",
            )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError, ValueError) as exc:
        raise BadInput(f"{path}: not a readable CSV file ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    if frame.empty:
        raise BadInput(f"{path}: the CSV has a header ({', '.join(names)}) but no rows")
    return _read_frame(frame[[c for c in names if c in wanted]], path, x, train, val, train_acc, val_acc, all_columns=names)


def _wanted(
    names: list[str], x: str | None, train: str | None, val: str | None, train_acc: str | None, val_acc: str | None, path: Path
) -> list[str]:
    """The columns a curve may read: the named or recognised x, loss, accuracy and learning-rate columns (and epoch, for the
    default x)."""
    picked = [
        _pick(names, (), x, path, "--x") if x else None,
        _pick(names, TRAIN_LOSS, train, path, "--train"),
        _pick(names, VAL_LOSS, val, path, "--val"),
        _pick(names, TRAIN_ACC, train_acc, path, "--train-acc"),
        _pick(names, VAL_ACC, val_acc, path, "--val-acc"),
        _pick_lr(names),
    ]
    if not x:
        lower = {c.strip().lower(): c for c in names}
        picked += [lower.get("epoch"), next((lower[n] for n in X_NAMES if n in lower), None)]
    wanted = {c for c in picked if c is not None}
    return [c for c in names if c in wanted] or names[:1]


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
    if frame.empty:
        raise BadInput(f"{label}: the table has columns ({', '.join(str(c) for c in frame.columns)}) but no rows")
    return _read_frame(frame, Path(label), x, train, val, train_acc, val_acc)


def _read_frame(
    frame: pd.DataFrame,
    path: Path,
    x: str | None,
    train: str | None,
    val: str | None,
    train_acc: str | None,
    val_acc: str | None,
    all_columns: list[str] | None = None,
) -> Curves:
    """A table, one column per metric (numbers with NaN = not logged, or text with blank = not logged) -> Curves."""
    columns = [str(c) for c in frame.columns]
    shown = all_columns or columns
    kind = "tag" if is_events(path) else "column"
    xcol = _pick(columns, (), x, path, "--x") if x else _default_x(frame, columns, path)
    cols = {
        "train_loss": _pick(columns, TRAIN_LOSS, train, path, "--train"),
        "val_loss": _pick(columns, VAL_LOSS, val, path, "--val"),
        "train_acc": _pick(columns, TRAIN_ACC, train_acc, path, "--train-acc"),
        "val_acc": _pick(columns, VAL_ACC, val_acc, path, "--val-acc"),
    }
    if cols["train_loss"] is None and cols["val_loss"] is None:
        raise BadInput(
            f"{path}: no loss {kind} recognised among the {kind}s {', '.join(shown)}; name them with "
            f"--train {kind.upper()} and/or --val {kind.upper()} (recognised: train_loss, train/loss, loss, val_loss, "
            "val/loss, valid_loss, eval/loss, ...)"
        )
    if xcol:
        xs, x_logged = _column(frame[xcol], xcol, path)
        x_ok = x_logged & np.isfinite(xs)
    else:
        xs, x_ok = np.arange(len(frame), dtype=float), np.ones(len(frame), dtype=bool)
    series: dict[str, pd.Series] = {}
    for key, col in cols.items():
        if col is None or col == xcol:
            continue
        values, logged = _column(frame[col], col, path)
        keep = logged & x_ok
        if not keep.any():
            continue
        s = pd.Series(values[keep], index=xs[keep], name=key)
        index = s.index.to_numpy()
        if len(index) > 1 and not bool(np.all(index[1:] > index[:-1])):  # not strictly increasing: the last value at an x wins
            s = s[~s.index.duplicated(keep="last")].sort_index()
        series[key] = s
    lr_col = _pick_lr(columns)
    lr = None
    if lr_col is not None and lr_col != xcol:
        values, logged = _column(frame[lr_col], lr_col, path)
        keep = logged & x_ok
        if keep.any():
            lr = pd.Series(values[keep], index=xs[keep], name="lr")
            lr = lr[~lr.index.duplicated(keep="last")].sort_index()
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


def _pick_lr(columns: list[str]) -> str | None:
    """The learning-rate column, when the log has one (LR names first, then Lightning's lr-<Optimizer>)."""
    lower = {c.strip().lower(): c for c in columns}
    named = next((lower[n] for n in LR if n in lower), None)
    return named or next((c for low, c in lower.items() if LR_MONITOR.match(low)), None)


def _default_x(frame: pd.DataFrame, columns: list[str], path: Path) -> str | None:
    """step-like columns first; 'epoch' when the file has one row per epoch (nndiag's train_epochs.csv)."""
    lower = {c.strip().lower(): c for c in columns}
    if "epoch" in lower:
        values, logged = _column(frame[lower["epoch"]], lower["epoch"], path)
        epochs = values[logged]
        if len(epochs) and not (np.diff(epochs[:4096]) == 0).any():  # a step-level log repeats its epoch at once: no need to look further
            steps = np.diff(epochs)
            if bool((steps > 0).all()) or len(np.unique(epochs)) == len(epochs):
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
    """A TensorBoard event file, or a folder of them (one run), -> Curves: the scalar tags become columns, x is the step.
    Records that cannot be read (corrupted bytes, a file cut short) are skipped and counted (Curves.damage); a log
    that lost most of its records is BadInput, not a verdict."""
    frame, damage = _event_frame(path)
    curves = _read_frame(frame, path, x or str(frame.columns[0]), train, val, train_acc, val_acc)  # default x: the logged step
    curves.key = path if path.is_dir() else path.parent
    curves.label = curves.key.name or path.name
    curves.damage = damage
    return curves


def _event_frame(path: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Every scalar of an event file (or a run folder of them) as one row per step, one text column per tag (blank =
    not logged), and what could not be read."""
    try:
        from tensorboard.compat.proto import event_pb2
        from tensorboard.util import tensor_util
    except ImportError:
        raise BadInput(f"{path}: reading TensorBoard event files needs the tensorboard package: {TENSORBOARD_HINT}") from None
    files = sorted(p for p in path.iterdir() if p.is_file() and EVENTS in p.name) if path.is_dir() else [path]
    rows: dict[int, dict[str, float]] = {}
    damage: dict[str, Any] = {"records": 0, "unreadable": 0, "truncated": False, "at": []}
    for file in files:
        try:
            data = file.read_bytes()
        except OSError as exc:
            raise BadInput(f"{file}: cannot be read ({exc.strerror})") from None
        records, bad, truncated = tfrecords(data)
        damage["records"] += len(records) + len(bad)
        damage["unreadable"] += len(bad)
        damage["truncated"] = damage["truncated"] or truncated
        damage["at"] += [f"{file.name} byte {offset}" for offset in bad[:3]]
        for payload in records:
            event = event_pb2.Event()
            try:
                event.ParseFromString(payload)
            except Exception:  # a record whose checksum held but whose bytes are no Event: not ours to read
                damage["unreadable"] += 1
                continue
            for value in event.summary.value:
                kind = value.WhichOneof("value")
                if kind == "simple_value":
                    rows.setdefault(int(event.step), {})[value.tag] = float(value.simple_value)
                elif kind == "tensor":  # scalars written as 0-d tensors (tf.summary v2 style)
                    try:
                        array = tensor_util.make_ndarray(value.tensor)
                    except Exception:
                        continue
                    if array.ndim == 0 and np.issubdtype(array.dtype, np.number):
                        rows.setdefault(int(event.step), {})[value.tag] = float(array)
    if damage["records"] == 0 or (damage["unreadable"] and damage["unreadable"] * 2 >= damage["records"]):
        lost = f"{damage['unreadable']} of its {damage['records']} records are unreadable" if damage["records"] else "no record is readable"
        raise BadInput(
            f"{path}: not a readable TensorBoard event file: {lost} (corrupted or cut short{', at ' + ', '.join(damage['at']) if damage['at'] else ''}); "
            "a log that lost most of itself gets no verdict"
        )
    if not rows:
        raise BadInput(f"{path}: the TensorBoard log holds no scalars (nothing logged with add_scalar / self.log)")
    steps = sorted(rows)
    names = sorted({t for r in rows.values() for t in r})
    step_col = "step" if "step" not in names else "tensorboard_step"
    data = {step_col: [str(s) for s in steps]}
    for name in names:
        data[name] = [repr(rows[s][name]) if name in rows[s] else "" for s in steps]
    return pd.DataFrame(data, dtype=str), damage


# -- TFRecord framing: each record is uint64 length, uint32 masked CRC-32C of the length, the bytes, and their masked CRC


def _crc_table() -> np.ndarray:
    table = np.zeros(256, dtype=np.uint32)
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1  # CRC-32C (Castagnoli), reflected
        table[i] = crc
    return table


CRC_TABLE = _crc_table()
_CRC_LIST = CRC_TABLE.tolist()  # plain ints: a Python loop indexes a list far faster than a numpy array
BATCH_CRC_BYTES = 4096  # records up to this long are checked together (numpy, byte position by byte position); longer ones alone


def _masked(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    table = _CRC_LIST
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _crc32c_many(payloads: list[bytes]) -> list[int]:
    """CRC-32C of many short byte strings at once: one numpy step per byte position instead of one Python step per byte."""
    if not payloads:
        return []
    lengths = np.array([len(p) for p in payloads])
    buffer = np.zeros((len(payloads), int(lengths.max())), dtype=np.uint8)
    for i, p in enumerate(payloads):
        buffer[i, : len(p)] = np.frombuffer(p, dtype=np.uint8)
    crc = np.full(len(payloads), 0xFFFFFFFF, dtype=np.uint32)
    for j in range(buffer.shape[1]):
        stepped = CRC_TABLE[(crc ^ buffer[:, j]) & 0xFF] ^ (crc >> 8)
        crc = np.where(lengths > j, stepped, crc)
    return [int(c) ^ 0xFFFFFFFF for c in crc]


def _header_ok(data: bytes, pos: int) -> bool:
    import struct

    return pos + 12 <= len(data) and _masked(crc32c(data[pos : pos + 8])) == struct.unpack_from("<I", data, pos + 8)[0]


def tfrecords(data: bytes) -> tuple[list[bytes], list[int], bool]:
    """The whole records of a TFRecord file (TensorBoard's event files), the byte offsets where unreadable records
    start, and whether the file ends in the middle of a record. A record with a bad length header is skipped up to
    the next offset where a valid header begins (TensorBoard's own reader stops there and silently loses the rest)."""
    import struct

    spans: list[tuple[int, int, int]] = []  # (start, payload start, payload end) of records whose header holds
    bad: list[int] = []
    pos, size, truncated = 0, len(data), False
    while pos < size:
        if not _header_ok(data, pos):
            if pos + 12 > size:
                bad.append(pos)
                truncated = True
                break
            bad.append(pos)
            pos = next((p for p in range(pos + 1, size - 11) if _header_ok(data, p)), size)
            continue
        (length,) = struct.unpack_from("<Q", data, pos)
        end = pos + 12 + length
        if end + 4 > size:
            bad.append(pos)
            truncated = True
            break
        spans.append((pos, pos + 12, end))
        pos = end + 4
    short = [i for i, (_, a, b) in enumerate(spans) if b - a <= BATCH_CRC_BYTES]
    crcs = dict(zip(short, _crc32c_many([data[spans[i][1] : spans[i][2]] for i in short])))
    records = []
    for i, (start, a, b) in enumerate(spans):
        crc = crcs[i] if i in crcs else crc32c(data[a:b])
        if _masked(crc) == struct.unpack_from("<I", data, b)[0]:
            records.append(data[a:b])
        else:
            bad.append(start)
    return records, sorted(bad), truncated


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
        state, chance = run_state(folder), run_chance(folder)
        for part in group:
            part.state = state
            part.chance_loss = part.chance_loss if part.chance_loss is not None else chance.get("chance_loss")
            part.chance_acc = part.chance_acc if part.chance_acc is not None else chance.get("chance_acc")
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


def run_chance(folder: Path) -> dict[str, float]:
    """The chance levels nndiag train recorded in its folder's summary.json (metrics chance_loss: ln C for cross-entropy,
    chance_acc: 1/C), so that curves on the folder judge the run as train did; {} when there are none."""
    import json

    try:
        metrics = json.loads((folder / "summary.json").read_text()).get("metrics")
    except (OSError, ValueError, AttributeError):
        return {}
    if not isinstance(metrics, dict):
        return {}
    out = {}
    for key in ("chance_loss", "chance_acc"):
        value = metrics.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0:
            out[key] = float(value)
    return out


UNFINISHED = ("running", "interrupted", "crashed")  # states of a run that has not finished (summary.json's status, or its run.state)


def run_state(folder: Path) -> dict[str, Any]:
    """An unfinished run's state from its folder's summary.json: nndiag train writes status "running" when it starts
    (with the process on record under `run`) and "interrupted" on Ctrl-C; a session of the callbacks records its
    state under `run.state`. {status, alive (is its process still running), command}; {} for a finished run."""
    import json

    try:
        summary = json.loads((folder / "summary.json").read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(summary, dict):
        return {}
    owner = summary.get("run") if isinstance(summary.get("run"), dict) else {}
    metrics = summary.get("metrics") if isinstance(summary.get("metrics"), dict) else {}
    status = summary.get("status") if summary.get("status") in UNFINISHED else None
    state = str(owner.get("state") or status or metrics.get("stopped") or "")  # metrics.stopped: a session's final summary
    if state.startswith("exception: "):  # a session's "exception: KeyboardInterrupt"
        state = "interrupted" if state.endswith("KeyboardInterrupt") else "crashed"
    if state not in UNFINISHED:
        return {}
    alive = state == "running" and bool(owner) and not processes.gone(owner)
    return {"status": state, "alive": alive, "command": summary.get("command", "the run")}


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
    steps: pd.DataFrame,
    epochs: pd.DataFrame,
    label: str = "train",
    chance_loss: float | None = None,
    chance_acc: float | None = None,
    lr_chosen: str | None = None,
) -> Curves:
    """nndiag's own logs (Trainer History frames) -> Curves; `train` passes the chance levels it knows (ln C, 1/C)."""
    dense = pd.Series(steps["loss"].to_numpy(float), index=steps["step"].to_numpy(float), name="train_loss") if len(steps) else None
    lr = pd.Series(steps["lr"].to_numpy(float), index=steps["step"].to_numpy(float), name="lr") if len(steps) and "lr" in steps else None
    fit = {}
    for key in ("train_loss", "val_loss", "train_acc", "val_acc"):
        if key in epochs and len(epochs) and epochs[key].notna().any():
            values = epochs[key]
            fit[key] = pd.Series(values.to_numpy(float), index=epochs["epoch"].to_numpy(float), name=key)
    return Curves(
        x="step",
        dense=dense,
        fit=fit,
        fit_x="epoch",
        label=label,
        chance_loss=chance_loss,
        chance_acc=chance_acc,
        lr_chosen=lr_chosen,
        lr=lr,
    )
