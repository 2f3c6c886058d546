"""What the Lightning and Hugging Face callbacks share: their options, the stages they run, the run
folder they write and the combined verdict (framework-free; the callbacks only translate hooks).

A callback's run folder is the CLI's: `runs/<model class>/<command>-<timestamp>/` (or `out=`), with one
sub-folder per stage in the order they ran, as babysit writes them (`01-check-loss/`, `02-probe/`,
`03-curves/`: each with its CSVs, PNGs and summary.json), and a combined `summary.json` with the
contract's keys (command, recipe, status, findings, metrics, outputs) plus `stages`. Each finding
carries the `stage` it came from. The folder is created when the first stage ends, so a callback
that never runs writes nothing.

Stages (each may be turned off):
  check-loss  nndiag's check-loss on the first `batches` training batches, drawn in a private seeded
              order from the trainer's own dataset and collate function (the trainer's DataLoader, its
              sampler and its workers are not touched), scored the way the trainer scores them. The
              model, its gradients, train/eval flags, torchmetrics states and every RNG are handed
              back as found, so training goes on exactly as it would have without it.
  probe       `ProbeCallback`'s arm / collect logic every `probe_every` optimizer steps (hooks only on
              the probed step), decided by probe.decide.
  curves      curves.run_frame on the metrics the trainer logged (x = optimizer step); the frame is
              saved as metrics.csv beside the verdict, so `nndiag curves 03-curves/` reproduces it.

A stage that cannot run (no DataLoader, nothing logged, an error in the user's step) is recorded as
`skipped` or `error` with a note, logged, and never stops training, unless `fail_on` is set: then an
error is raised as it is, so a CI job sees it.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from nndiag.errors import BadInput
from nndiag.integrations import DiagnosisFailed

FAIL_ON = (None, "fail", "warn")  # fail_on values: never stop; stop on a failing stage; stop on a warning too
STATUS_CODE = {"pass": 0, "warn": 1, "fail": 2}  # the number a trainer's logger records as nndiag/status
DEFAULT_BATCHES = 10  # training batches check-loss scores (the check-loss command's default)
DEFAULT_SEED = 0  # seeds check-loss's private batch order


class SessionResults:
    """What a user reads from a callback after fit: its run folder, its status and each stage's Result."""

    session: "Session"

    @property
    def folder(self) -> Any:
        return self.session.folder

    @property
    def status(self) -> str:
        return self.session.status

    @property
    def results(self) -> dict[str, Any]:
        return {s.name: s.result for s in self.session.stages if s.result is not None}


@dataclass
class Options:
    """A callback's keyword options, validated (bad values raise BadInput naming the argument)."""

    check_loss: bool = True  # run check-loss before the first training step
    batches: int = DEFAULT_BATCHES  # training batches check-loss scores
    num_classes: int | None = None  # C, when the step exposes no logits: check-loss then expects ln C
    probe_every: int | None = None  # probe every N optimizer steps (None: never)
    curves: bool = True  # the curves verdict on the logged metrics at the end
    names: dict[str, str | None] = field(default_factory=dict)  # train_loss / val_loss / train_acc / val_acc -> the logged name
    fail_on: str | None = None  # None | "fail" | "warn"
    out: str | Path | None = None  # the run folder (default runs/<model class>/<command>-<timestamp>/)
    name: str | None = None  # names the default run folder (default: the model's class)
    plots: bool = True  # write the PNG figures beside the CSVs
    seed: int = DEFAULT_SEED  # check-loss's private batch order

    def __post_init__(self) -> None:
        if not isinstance(self.batches, int) or isinstance(self.batches, bool) or self.batches < 1:
            raise BadInput(f"expected a whole number of batches >= 1, got {self.batches!r}", where="batches")
        if self.num_classes is not None and (not isinstance(self.num_classes, int) or isinstance(self.num_classes, bool) or self.num_classes < 2):
            raise BadInput(f"expected num_classes to be a whole number >= 2 (or None), got {self.num_classes!r}", where="num_classes")
        if self.probe_every is not None and (not isinstance(self.probe_every, int) or isinstance(self.probe_every, bool) or self.probe_every < 1):
            raise BadInput(f"expected probe_every to be a whole number of steps >= 1 (or None), got {self.probe_every!r}", where="probe_every")
        if self.fail_on not in FAIL_ON:
            raise BadInput(f"expected fail_on to be None, 'fail' or 'warn', got {self.fail_on!r}", where="fail_on")
        for key, value in self.names.items():
            if value is not None and not isinstance(value, str):
                raise BadInput(f"expected the logged metric's name as a string (or None), got {value!r}", where=key)


# --------------------------------------------------------------------------------------------
# The run: stages, folder, combined summary, fail_on, status log
# --------------------------------------------------------------------------------------------


@dataclass
class Stage:
    name: str  # check-loss | probe | curves
    state: str  # done | skipped | error
    status: str | None  # pass | warn | fail (None unless done)
    note: str = ""  # why a stage was skipped or what went wrong
    seconds: float = 0.0
    verdict: dict[str, Any] | None = None  # the stage's summary.json
    result: Any = None  # its nndiag Result


class Session:
    """One training run's diagnosis: records stages, writes their folders and the combined summary,
    logs each status, and raises DiagnosisFailed when `fail_on` is reached."""

    def __init__(self, command: str, options: Options, log: Callable[[int, str], None]):
        self.command, self.options, self.log = command, options, log
        self.name = options.name or "model"
        self.stages: list[Stage] = []
        self.folder: Path | None = None
        self.stopped = "running"  # running | completed | fail_on:<stage> | exception: <type>
        self.steps = 0  # optimizer steps the trainer took

    def begin(self, default_name: str) -> None:
        """A new fit: forget an earlier fit's stages (a callback object may be reused)."""
        self.name = self.options.name or default_name
        self.stages, self.folder, self.stopped, self.steps = [], None, "running", 0

    @property
    def status(self) -> str:
        statuses = {s.status for s in self.stages}
        return "fail" if "fail" in statuses else "warn" if "warn" in statuses else "pass"

    def _ensure_folder(self) -> Path:
        if self.folder is None:
            from nndiag import report

            out = self.options.out
            try:
                self.folder = report.run_folder(self.name, self.command, Path(out) if out is not None else None)
            except BadInput as exc:
                raise BadInput(str(exc).replace("--out: ", ""), where="out") from None
        return self.folder

    def add(self, name: str, result: Any, seconds: float, stop: bool = True) -> Stage:
        """Write a finished stage's folder, update summary.json, log its status; raise DiagnosisFailed
        when fail_on is reached (with `stop`; else `raise_if_reached` raises later, after the other stages)."""
        from nndiag import report

        folder = self._ensure_folder() / f"{len(self.stages) + 1:02d}-{name}"
        verdict = report.write_run(result, folder, plots=self.options.plots)
        stage = Stage(name, "done", result.status, "", seconds, verdict, result)
        self.stages.append(stage)
        self.write_summary()
        codes = ", ".join(f"{f.code}" for f in result.findings if f.severity != "info")
        self.log(logging.INFO if result.status == "pass" else logging.WARNING,
                 f"nndiag {name}: {result.status.upper()}" + (f" ({codes})" if codes else "") + f" -> {folder}")
        if stop and self.reached(result.status):
            self.fail(stage)
        return stage

    def skip(self, name: str, note: str, state: str = "skipped") -> Stage:
        stage = Stage(name, state, None, note)
        self.stages.append(stage)
        self.log(logging.WARNING, f"nndiag {name}: {state}: {note}")
        if self.folder is not None:
            self.write_summary()
        return stage

    def reached(self, status: str) -> bool:
        """Does a stage with this status stop training under fail_on?"""
        fail_on = self.options.fail_on
        return fail_on is not None and (status == "fail" or (fail_on == "warn" and status == "warn"))

    def raise_if_reached(self) -> None:
        """Raise DiagnosisFailed for the first stage whose status reaches fail_on."""
        for stage in self.stages:
            if stage.status is not None and self.reached(stage.status):
                self.fail(stage)

    def fail(self, stage: Stage) -> None:
        if self.stopped == "running":
            self.stopped = f"fail_on:{stage.name}"
        summary = self.write_summary()
        findings = [f for f in stage.result.findings if f.severity != "info"]
        listing = "; ".join(f"{f.code} ({f.severity}): {f.message}" for f in findings) or "no findings"
        raise DiagnosisFailed(
            f"nndiag stopped training: {stage.name} is {stage.status.upper()} (fail_on={self.options.fail_on!r}): {listing}. "
            f"Details: {self.folder / 'summary.json' if self.folder else '(no folder)'}",
            stage=stage.name, status=str(stage.status), findings=findings, summary=summary, folder=self.folder)

    def finish(self, stopped: str) -> dict[str, Any]:
        """The run ended (completed, or an exception): write the combined summary.json once more."""
        if self.stopped == "running":
            self.stopped = stopped
        summary = self.write_summary() if self.stages else self.summary()
        if self.stages:
            done = [s for s in self.stages if s.state == "done"]
            self.log(logging.INFO if self.status == "pass" else logging.WARNING,
                     f"nndiag: {self.status.upper()} over {len(done)} stage(s) ({', '.join(f'{s.name} {s.status or s.state}' for s in self.stages)})"
                     + (f" -> {self.folder / 'summary.json'}" if self.folder else ""))
        return summary

    def summary(self) -> dict[str, Any]:
        """The combined verdict: the contract's keys for the whole run, plus every stage."""
        from nndiag.result import jsonable

        findings = [{**f, "stage": s.name} for s in self.stages if s.verdict for f in s.verdict["findings"]]
        metrics: dict[str, Any] = {"stages": {s.name: s.status or s.state for s in self.stages}, "steps": self.steps, "stopped": self.stopped}
        for s in self.stages:
            if s.result is not None:
                metrics.update({f"{s.name}.{k}": v for k, v in s.result.metrics.items() if not isinstance(v, (dict, list, tuple))})
        outputs: dict[str, Any] = {}
        if self.folder is not None:
            outputs = {"folder": str(self.folder), "summary": str(self.folder / "summary.json"),
                       "stages": {s.name: s.verdict["outputs"]["summary"] for s in self.stages if s.verdict}}
        return jsonable({
            "command": self.command,
            "recipe": "python",
            "status": self.status,
            "findings": findings,
            "metrics": metrics,
            "outputs": outputs,
            "stages": [{"name": s.name, "state": s.state, "status": s.status, "note": s.note, "seconds": s.seconds} for s in self.stages],
        })

    def write_summary(self) -> dict[str, Any]:
        from nndiag import report

        summary = self.summary()
        report.atomic_write_text(self._ensure_folder() / "summary.json", json.dumps(summary, indent=2) + "\n")
        return summary

    def guarded(self, name: str, work: Callable[[], Any]) -> Any:
        """Run a stage's work; an error in it is recorded (stage `error`) and training goes on, unless
        fail_on is set (then it is raised as it is). DiagnosisFailed always propagates."""
        try:
            return work()
        except DiagnosisFailed:
            raise
        except Exception as exc:
            if self.options.fail_on is not None:
                raise
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            self.skip(name, f"{type(exc).__name__}: {first}", state="error")
            return None


# --------------------------------------------------------------------------------------------
# Stage 1: check-loss on the trainer's data, scored the trainer's way
# --------------------------------------------------------------------------------------------


def private_loader(loader: Any, batch_size: int | None, seed: int) -> Any:
    """A DataLoader over `loader`'s dataset with its collate function and batch size, in a private
    seeded order, in this process: iterating it leaves `loader` (its sampler, generator, workers) and
    the global RNGs alone."""
    import torch
    from torch.utils.data import DataLoader, IterableDataset, RandomSampler

    dataset = loader.dataset
    size = batch_size or getattr(loader, "batch_size", None)
    collate = getattr(loader, "collate_fn", None)
    if size is None:  # a batch sampler decides the batches: use it (iterated under preserved RNGs)
        return DataLoader(dataset, batch_sampler=loader.batch_sampler, collate_fn=collate)
    if isinstance(dataset, IterableDataset):
        return DataLoader(dataset, batch_size=size, collate_fn=collate)
    sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(seed))
    return DataLoader(dataset, batch_size=size, sampler=sampler, collate_fn=collate)


def check_loss(model: Any, data: Any, *, step: Any, optimizer: Any, options: Options) -> Any:
    """nndiag's check-loss on `model` and `data`, through `step` (None: the model's own loss). It uses
    the logits when the step exposes them, else ln `num_classes` when given, else says what it could
    not check (not-checked). Model, optimizer and RNGs are handed back as found."""
    from nndiag import api
    from nndiag.diagnostics import check_loss as diagnostic
    from nndiag.experiment import Experiment

    with api._rng_kept():
        exp = Experiment.from_objects(model, data, step=step, optimizer=optimizer, seed=options.seed)
        expected = math.log(options.num_classes) if exp.num_classes is None and options.num_classes else None
        result = diagnostic.run(exp, batches=options.batches, expected=expected,
                                expected_why=f"ln C = ln {options.num_classes} (num_classes)")
    return api._finish(result, exp, model)


def timed(work: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    value = work()
    return value, time.perf_counter() - started


# --------------------------------------------------------------------------------------------
# Stage 2: the probe every N optimizer steps
# --------------------------------------------------------------------------------------------


class Probing:
    """`ProbeCallback(every)` driven by a trainer's optimizer-step hook: `after_step(model, step)` right
    after optimizer step `step` (gradients still there). Steps every, 2·every, ... are probed; no hooks
    on the others. `latest()` is the verdict of the last probed step (for fail_on)."""

    def __init__(self, every: int):
        from types import SimpleNamespace

        from nndiag.diagnostics.probe import ProbeCallback

        self.callback = ProbeCallback(every=every)
        self.every = every
        self._shim = SimpleNamespace(model=None, optimizer=None)  # ProbeCallback reads trainer.model (and the LR from trainer.optimizer)
        self._last: int | None = None  # the last step told

    def after_step(self, model: Any, step: int, optimizer: Any = None) -> int | None:
        """Tell the probe that `step` ended; returns `step` when it was a probed step (the callback armed
        itself after step - 1 and collects now). `optimizer`: the trainer's, for the LR the schedule sets."""
        self._shim.model, self._shim.optimizer = model, optimizer
        probed = step % self.every == 0 and self._last == step - 1
        self._last = step
        self.callback.on_step(self._shim, step, math.nan)
        return step if probed else None

    def latest(self, step: int) -> Any:
        from nndiag.diagnostics import probe

        rows = self.callback.rows
        return probe.decide(rows[rows["step"] == step].reset_index(drop=True))

    def close(self) -> None:
        self.callback.close()

    @property
    def probed(self) -> int:
        rows = self.callback.rows
        return int(rows["step"].nunique()) if len(rows) else 0

    def result(self) -> Any:
        from nndiag.diagnostics import probe
        from nndiag.result import Result

        rows = self.callback.rows
        verdict = probe.decide(rows)
        metrics = probe.metrics_of(rows, {}) if len(rows) else {}
        metrics = {k: v for k, v in metrics.items() if v is not None and k not in ("steps", "initial_loss", "probed_examples")}
        metrics.update(probed_steps=self.probed, every=self.every)
        if len(rows):
            metrics["worst_layers"] = probe.worst_layers(rows, verdict)
        return Result("probe", verdict, {"probe": rows, "probe_hist": self.callback.histograms}, metrics, source="python")


# --------------------------------------------------------------------------------------------
# Stage 3: the curves verdict on the logged metrics
# --------------------------------------------------------------------------------------------

CURVE_COLUMNS = ("train_loss", "train_acc", "val_loss", "val_acc")  # nndiag's names for the four series


class MetricLog:
    """Logged values by optimizer step: one row per (step, series) event, kept on the device until the end."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, float | None, str, Any]] = []  # (step, epoch, series, value)

    def add(self, step: int, epoch: float | None, series: str, value: Any) -> None:
        if hasattr(value, "detach"):
            value = value.detach()
            if value.numel() != 1:
                return
        elif not isinstance(value, (int, float)) or isinstance(value, bool):
            return  # e.g. a torchmetrics Metric object: not a number we can read
        self.rows.append((step, epoch, series, value))

    def has(self, series: str) -> bool:
        return any(s == series for _, _, s, _ in self.rows)

    def rename(self, old: str, new: str) -> None:
        self.rows = [(step, epoch, new if s == old else s, v) for step, epoch, s, v in self.rows]

    def frame(self) -> Any:
        """step, epoch and the four series (NaN = not logged at that step)."""
        import pandas as pd

        records: dict[int, dict[str, Any]] = {}
        for step, epoch, series, value in self.rows:
            row = records.setdefault(step, {"step": step, "epoch": epoch})
            row[series] = float(value)  # the last value logged at a step wins
            if epoch is not None:
                row["epoch"] = epoch
        return pd.DataFrame(sorted(records.values(), key=lambda r: r["step"]), columns=["step", "epoch", *CURVE_COLUMNS])


def curves_result(frame: Any) -> tuple[Any, str]:
    """(the curves Result, "") or (None, why not) on the logged metrics."""
    from nndiag.diagnostics import curves

    if frame.empty or frame[["train_loss", "val_loss"]].isna().all().all():
        return None, "no training or validation loss was logged"
    try:
        result = curves.run_frame(frame, x="step", train="train_loss", val="val_loss", train_acc="train_acc", val_acc="val_acc")
    except BadInput as exc:
        return None, str(exc)
    result.tables["metrics"] = frame  # metrics.csv: `nndiag curves <this folder>` reads it again
    result.context["files"] = "the metrics logged during training"
    result.source = "python"
    return result, ""
