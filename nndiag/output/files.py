"""Files of a run: the run folder, atomic writes (a CSV is never half written), summary.json, and the
plain JSON and YAML forms of numbers and recipes.

`write_run(result, folder)` writes everything one Result holds: its CSV tables, the resolved recipe,
extra files, PNG figures (nndiag.output.plots) and summary.json (the `--json` object, `result.to_dict()`).
Results are read by duck typing: this module sits below nndiag.result and never imports it.

Logs written as training goes: `CsvStream` appends whole rows to a CSV (a kill never leaves half a row),
flushed at least every FLUSH_S seconds and whenever asked; `TrainLog`, a Trainer callback, keeps a training
run's folder that way from its first step (train_steps.csv, train_epochs.csv, recipe.yaml, and a summary.json
whose status says `running`, then `interrupted` on Ctrl-C), so `nndiag curves` can read a run that is still
going, or was killed; `write_run` at the end replaces each file whole.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from nndiag import processes
from nndiag.errors import BadInput
from nndiag.formatting import recipe_yaml, safe_name

FLUSH_S = 2.0  # a streamed log reaches the disk at least this often (seconds), and at every epoch
STEP_COLUMNS = ("step", "epoch", "lr", "loss")  # train_steps.csv, as the Trainer's History has it
EPOCH_COLUMNS = ("epoch", "step", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "seconds")  # train_epochs.csv

_UMASK = os.umask(0)
os.umask(_UMASK)


def run_folder(recipe_name: str, command: str, out: Path | None = None, root: Path | None = None) -> Path:
    """`--out DIR` if given, else runs/<recipe name>/<command>-<timestamp>/ (never reused).

    The `runs` root can be moved with the NNDIAG_RUNS environment variable.
    """
    if out is not None:
        if out.exists() and not out.is_dir():
            raise BadInput(f"{out} exists and is not a folder", where="--out")
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BadInput(f"cannot create the folder {out}: {exc.strerror}", where="--out") from None
        return out
    root = root or Path(os.environ.get("NNDIAG_RUNS", "runs"))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = root / safe_name(recipe_name) / f"{command}-{stamp}"
    folder, n = base, 1
    while True:
        try:
            folder.mkdir(parents=True, exist_ok=False)
            return folder
        except FileExistsError:
            n += 1
            folder = base.with_name(f"{base.name}-{n}")
        except OSError as exc:
            raise BadInput(f"cannot create the run folder {folder}: {exc.strerror}") from None


def atomic_write_text(path: Path, text: str | bytes) -> None:
    """Write `text` (or bytes) to `path` so that readers see the old file or the new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp creates 0600; give results the usual permissions
    try:
        with os.fdopen(fd, "wb" if isinstance(text, bytes) else "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_csv(frame: Any, path: Path) -> Path:
    atomic_write_text(path, frame.to_csv(index=False))
    return path


def write_run(result: Any, folder: Path, plots: bool = True) -> dict[str, Any]:
    """Write every file of a run into `folder`; record them in `result.outputs`; return the JSON verdict."""
    outputs: dict[str, Any] = {"folder": str(folder), "csv": {}}
    for name, frame in result.tables.items():
        outputs["csv"][name] = str(write_csv(frame, folder / f"{name}.csv"))
    if result.recipe is not None:
        path = folder / "recipe.yaml"
        atomic_write_text(path, f"# resolved recipe of this run (from {result.source})\n" + recipe_yaml(result.recipe))
        outputs["recipe"] = str(path)
    for name, text in result.extra_files.items():
        path = folder / name
        atomic_write_text(path, text)
        outputs[name] = str(path)
    if plots:
        from nndiag.output import plots as plotting

        drawn = plotting.draw(result, folder)
        if drawn:
            outputs["plots"] = [str(p) for p in drawn]
    outputs["summary"] = str(folder / "summary.json")
    result.outputs = outputs
    verdict = result.to_dict()
    write_summary(folder, verdict)
    return verdict


def write_summary(folder: Path, verdict: dict[str, Any]) -> Path:
    """summary.json in `folder`: the verdict object, as `--json` prints it (indented)."""
    path = folder / "summary.json"
    atomic_write_text(path, json.dumps(verdict, indent=2) + "\n")
    return path


# --------------------------------------------------------------------------------------------
# Logs written as training goes
# --------------------------------------------------------------------------------------------


def _cell(value: Any) -> Any:
    """A CSV cell as pandas writes it: blank for None/NaN, repr for floats."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return repr(value)
    return value


class CsvStream:
    """A CSV that grows as rows come: whole rows only. Rows wait in memory and reach the file in one `os.write`
    of whole lines (a kill, even SIGKILL, cannot leave half a row on disk), at least every `every_s` seconds
    and at every `flush()`. A write that fails part-way (a full disk) raises; the next flush writes only what
    did not reach the file, so no row is ever written twice."""

    def __init__(self, path: Path, columns: Iterable[str], every_s: float = FLUSH_S):
        self.path, self.columns, self.every_s = Path(path), list(columns), every_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd: int | None = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        self.pending: list[str] = []
        self._unwritten = b""  # the bytes a failed write left (written first at the next flush)
        self.rows = 0  # rows written or waiting
        self._line(self.columns)
        self.flush()

    def _line(self, cells: list[Any]) -> None:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerow(cells)
        self.pending.append(buffer.getvalue())

    def add(self, row: Mapping[str, Any]) -> None:
        self._line([_cell(row.get(c)) for c in self.columns])
        self.rows += 1
        if time.monotonic() - self.last >= self.every_s:
            self.flush()

    def flush(self) -> None:
        if self.fd is not None and (self.pending or self._unwritten):
            data = self._unwritten + "".join(self.pending).encode("utf-8")
            self.pending.clear()
            try:
                while data:
                    data = data[os.write(self.fd, data) :]
            finally:  # a write that failed part-way (a full disk) keeps only what did not reach the file: never twice
                self._unwritten = data
        self.last = time.monotonic()

    def close(self) -> None:
        self.flush()
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class TrainLog:
    """A training run's folder, written as it goes: a Trainer callback (duck-typed; this layer does not import the
    Trainer). `make_folder(name)` creates the folder when training begins (the recipe's name; nothing is written
    for a run that never starts), which then holds at once recipe.yaml and summary.json with status `running` and
    the process on record (`run`: host, PID, start time), then train_steps.csv and train_epochs.csv row by row,
    on disk at every epoch and at least every FLUSH_S seconds. When training ends early, summary.json says
    `interrupted` (Ctrl-C) or `crashed`; a run that ends normally stays `running` until its verdict is written
    (`write_run`, which replaces every file whole). A SIGKILL leaves `running` with a process that is gone, which
    `nndiag curves` reports."""

    every_loss = False  # it reads the Trainer's rows; losses need not be read back every step for it

    def __init__(self, make_folder: Callable[[str], Path], command: str = "train", source: str = "python"):
        self.make_folder, self.command, self.source = make_folder, command, source
        self.folder: Path | None = None
        self.steps: CsvStream | None = None
        self.epochs: CsvStream | None = None
        self.since = ""

    def on_train_begin(self, trainer: Any) -> None:
        recipe = trainer.exp.recipe
        self.folder = self.make_folder(recipe.name)
        self.since = time.strftime("%Y-%m-%dT%H:%M:%S")
        source = str(recipe.source) if recipe.source else self.source
        atomic_write_text(self.folder / "recipe.yaml", f"# resolved recipe of this run (from {source})\n" + recipe_yaml(recipe.to_dict()))
        self.steps = CsvStream(self.folder / "train_steps.csv", STEP_COLUMNS)
        self.epochs = CsvStream(self.folder / "train_epochs.csv", EPOCH_COLUMNS)
        self.write_state(trainer, "running")

    def on_step(self, trainer: Any, step: int, loss: float) -> None:
        if self.steps is not None:
            self._catch_up(trainer)

    def on_epoch(self, trainer: Any, row: dict[str, Any]) -> None:
        if self.steps is None or self.epochs is None:
            return
        self._catch_up(trainer)
        self.epochs.add(row)
        self.steps.flush()
        self.epochs.flush()
        self.write_state(trainer, "running")

    def _catch_up(self, trainer: Any) -> None:
        assert self.steps is not None
        for row in trainer.step_rows[self.steps.rows :]:
            self.steps.add(row)

    def on_train_end(self, trainer: Any) -> None:
        if self.steps is None or self.epochs is None:
            return
        self._catch_up(trainer)
        self.steps.close()
        self.epochs.close()
        ended = getattr(trainer, "ended_by", None)
        if ended is not None:
            self.write_state(trainer, "interrupted" if isinstance(ended, KeyboardInterrupt) else "crashed", type(ended).__name__)

    def write_state(self, trainer: Any, status: str, error: str | None = None) -> None:
        """summary.json of a run that has not finished: the contract's keys, status running | interrupted | crashed."""
        assert self.folder is not None and self.steps is not None and self.epochs is not None
        metrics: dict[str, Any] = {"steps_run": len(trainer.step_rows), "epochs_run": len(trainer.epoch_rows)}
        if error:
            metrics["error"] = error
        outputs = {"folder": str(self.folder), "csv": {"train_steps": str(self.steps.path), "train_epochs": str(self.epochs.path)}}
        source = str(trainer.exp.recipe.source) if trainer.exp.recipe.source else self.source
        run = {**processes.record(), "state": status, "since": self.since, "updated": time.strftime("%Y-%m-%dT%H:%M:%S")}
        summary = {"command": self.command, "recipe": source, "status": status, "findings": [], "metrics": metrics, "outputs": outputs}
        write_summary(self.folder, {**summary, "run": run})
