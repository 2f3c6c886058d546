"""What nndiag.watch and the Lightning and Hugging Face callbacks share: their options, the stages they run,
the run folder they write and the combined verdict (framework-free; the callbacks and the watch only
translate hooks into the session's calls).

A callback's run folder is the CLI's: `runs/<model class>/<command>-<timestamp>/` (or `out=`), with one
sub-folder per stage in the order they ran, as babysit writes them (`01-check-loss/`, `02-probe/`,
`03-loop/`, `04-curves/`: each with its CSVs, PNGs and summary.json), and a combined `summary.json` with
the contract's keys (command, recipe, status, findings, metrics, outputs) plus `root_causes` and `steps`.
Each finding carries the `step` (stage) it came from. The folder is created when training starts with the
curves stage on (metrics.csv grows there as logged, beside a summary.json in state running), else when the
first stage ends, so a callback that never runs writes nothing. Every stage speaks to a Python user: its advice names the
arguments of their code (`lr=` of their optimizer), not recipe keys (nndiag.findings.addressed).

Stages (each may be turned off):
  check-loss  nndiag's check-loss on the first `batches` training batches, drawn in a private seeded
              order from the trainer's own dataset and collate function (the trainer's DataLoader, its
              sampler and its workers are not touched), scored the way the trainer scores them. The
              model, its gradients, train/eval flags, torchmetrics states and every RNG are handed
              back as found, so training goes on exactly as it would have without it.
              (nndiag.watch has no data of its own: it checks the loop's first batch instead, seen by hooks
              before the first optimizer step: nndiag.diagnostics.loop.first_batch_result.)
  probe       `ProbeCallback`'s arm / collect logic every `probe_every` optimizer steps (hooks only on
              the probed step), decided by probe.decide; `Session.stepped` runs it after every step.
  loop        nndiag.diagnostics.loop's checks over the whole run (hooks on the model and the optimizer):
              gradients that accumulate, no optimizer step, weights that never change, eval mode, no
              gradient at the step, the same batch; the LR of every step goes to the curves.
  curves      curves.run_frame on the metrics the trainer logged (x = optimizer step, with the LR of each
              step); the frame is saved as metrics.csv beside the verdict, so `nndiag curves 04-curves/`
              reproduces it.

A stage that cannot run (no DataLoader, nothing logged, an error in the user's step) is recorded as
`skipped` or `error` with a note, logged, and never stops training, unless `fail_on` is set: then an
error is raised as it is, so a CI job sees it.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from nndiag.diagnosis.run import Run, RunResult, Step
from nndiag.diagnostics.defaults import CHECK_LOSS_BATCHES
from nndiag.errors import BadInput
from nndiag.findings import audience_of
from nndiag.integrations import DiagnosisFailed

FAIL_ON = (None, "fail", "warn")  # fail_on values: never stop; stop on a failing stage; stop on a warning too
STATUS_CODE = {"pass": 0, "warn": 1, "fail": 2}  # the number a trainer's logger records as nndiag/status
DEFAULT_BATCHES = CHECK_LOSS_BATCHES  # training batches check-loss scores (the check-loss command's default)
DEFAULT_SEED = 0  # seeds check-loss's private batch order
CURVE_COLUMNS = ("train_loss", "train_acc", "val_loss", "val_acc")  # nndiag's names for the four series


def _whole(value: Any, least: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


@dataclass(kw_only=True, eq=False)
class Options:
    """A callback's keyword options: the one definition both callbacks inherit (each callback class is a dataclass
    of these fields; the Hugging Face one changes the metric names' defaults). Bad values raise BadInput naming the
    argument."""

    check_loss: bool = True  # run check-loss before the first training step
    batches: int = DEFAULT_BATCHES  # training batches check-loss scores
    num_classes: int | None = None  # C for check-loss's ln C, overriding what the logits say (a loss nndiag cannot read)
    probe_every: int | None = None  # probe every N optimizer steps (None: never)
    loop: bool = True  # the loop checks (accumulating gradients, no step, eval mode, ...) over the whole run
    curves: bool = True  # the curves verdict on the logged metrics at the end
    train_loss: str | None = "train_loss"  # the name the training loss is logged under (None: not logged)
    val_loss: str | None = "val_loss"  # the name of the validation loss
    train_acc: str | None = "train_acc"  # the name of the training accuracy
    val_acc: str | None = "val_acc"  # the name of the validation accuracy
    fail_on: str | None = None  # None | "fail" | "warn": raise DiagnosisFailed (stopping training) when a stage reaches it
    out: str | Path | None = None  # the run folder (default runs/<model class>/<command>-<timestamp>/; NNDIAG_RUNS moves runs/)
    name: str | None = None  # names the default run folder (default: the model's class)
    plots: bool = True  # write the PNG figures beside the CSVs
    seed: int = DEFAULT_SEED  # check-loss's private batch order

    def __post_init__(self) -> None:
        if not _whole(self.batches, 1):
            raise BadInput(f"expected a whole number of batches >= 1, got {self.batches!r}", where="batches")
        if self.num_classes is not None and not _whole(self.num_classes, 2):
            raise BadInput(f"expected num_classes to be a whole number >= 2 (or None), got {self.num_classes!r}", where="num_classes")
        if self.probe_every is not None and not _whole(self.probe_every, 1):
            raise BadInput(
                f"expected probe_every to be a whole number of steps >= 1 (or None), got {self.probe_every!r}", where="probe_every"
            )
        for key in ("check_loss", "loop", "curves", "plots"):
            if not isinstance(getattr(self, key), bool):
                raise BadInput(f"expected {key} to be True or False, got {getattr(self, key)!r}", where=key)
        if self.fail_on not in FAIL_ON:
            raise BadInput(f"expected fail_on to be None, 'fail' or 'warn', got {self.fail_on!r}", where="fail_on")
        for key, value in self.names.items():
            if value is not None and not isinstance(value, str):
                raise BadInput(f"expected the logged metric's name as a string (or None), got {value!r}", where=key)

    @property
    def names(self) -> dict[str, str | None]:
        """nndiag's series (train_loss, val_loss, train_acc, val_acc) -> the name it is logged under."""
        return {series: getattr(self, series) for series in CURVE_COLUMNS}


# --------------------------------------------------------------------------------------------
# The run: stages, folder, combined summary, fail_on, status log
# --------------------------------------------------------------------------------------------


class Session:
    """One training run's diagnosis: its stages are the steps of a `Run` (each written to its own sub-folder,
    the combined summary.json updated as they end, report.md / report.html at the end), each status logged;
    raises DiagnosisFailed when `fail_on` is reached."""

    def __init__(self, command: str, options: Options, log: Callable[[int, str], None]):
        self.command, self.options, self.log = command, options, log
        self.name = options.name or "model"
        self.stopped = "running"  # running | completed | fail_on:<stage> | exception: <type>
        self.optimizer_steps = 0  # optimizer steps the trainer took
        self.run = self._new_run()
        self.probing: Probing | None = None  # the probe stage while training runs
        self.recorder: Any = None  # the loop stage's nndiag.diagnostics.loop.Recorder while training runs

    def _new_run(self) -> Run:
        return Run(self.command, "python", self._make_folder, plots=self.options.plots)

    def begin(self, default_name: str) -> None:
        """A new fit: forget an earlier fit's stages (a callback object may be reused)."""
        self.name = self.options.name or default_name
        self.stopped, self.optimizer_steps = "running", 0
        self.run = self._new_run()
        self.close_hooks()
        self.probing = Probing(self.options.probe_every) if self.options.probe_every else None

    @property
    def stages(self) -> list[Step]:
        return self.run.steps

    @property
    def folder(self) -> Path | None:
        return self.run.folder

    @property
    def status(self) -> str:
        return self.run.status

    def _make_folder(self) -> Path:
        from nndiag.output import files

        out = self.options.out
        try:
            return files.run_folder(self.name, self.command, Path(out) if out is not None else None)
        except BadInput as exc:
            raise BadInput(str(exc).replace("--out: ", ""), where="out") from None

    def add(self, name: str, result: Any, seconds: float, stop: bool = True) -> Step:
        """Write a finished stage's folder, update summary.json, log its status; raise DiagnosisFailed
        when fail_on is reached (with `stop`; else `raise_if_reached` raises later, after the other stages).
        The stage's advice is addressed to a Python user (the session's source is "python")."""
        result.source = self.run.source
        result.verdict.address(audience_of(self.run.source))
        stage = self.run.add(name, result, seconds)
        self.write_summary()
        codes = ", ".join(f"{f.code}" for f in result.findings if f.severity != "info")
        self.log(
            logging.INFO if result.status == "pass" else logging.WARNING,
            f"nndiag {name}: {result.status.upper()}" + (f" ({codes})" if codes else "") + f" -> {stage.verdict['outputs']['folder']}",
        )
        if stop and self.reached(result.status):
            self.fail(stage)
        return stage

    def skip(self, name: str, note: str, state: str = "skipped") -> Step:
        stage = self.run.skip(name, note, state)
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
            if stage.state == "run" and self.reached(stage.status):
                self.fail(stage)

    def fail(self, stage: Step) -> None:
        if self.stopped == "running":
            self.stopped = f"fail_on:{stage.name}"
        summary = self.write_summary()
        findings = [f for f in stage.result.findings if f.severity != "info"]
        listing = "; ".join(f"{f.code} ({f.severity}): {f.message}" for f in findings) or "no findings"
        raise DiagnosisFailed(
            f"nndiag stopped training: {stage.name} is {stage.status.upper()} (fail_on={self.options.fail_on!r}): {listing}. "
            f"Details: {self.folder / 'summary.json' if self.folder else '(no folder)'}",
            stage=stage.name,
            status=str(stage.status),
            findings=findings,
            summary=summary,
            folder=self.folder,
        )

    def finish(self, stopped: str) -> dict[str, Any]:
        """The run ended (completed, or an exception): report.md, report.html and the combined summary.json."""
        if self.stopped == "running":
            self.stopped = stopped
        if not self.stages:
            return self.summary()
        from nndiag.diagnosis import report

        summary = report.write(self.run, self.metrics(), title=self.name)
        ran = [s for s in self.stages if s.state == "run"]
        self.log(
            logging.INFO if self.status == "pass" else logging.WARNING,
            f"nndiag: {self.status.upper()} over {len(ran)} stage(s) ({', '.join(f'{s.name} {s.status}' for s in self.stages)})"
            + f" -> {self.folder / 'summary.json'}",
        )
        return summary

    def metrics(self) -> dict[str, Any]:
        """The run's own numbers, then every stage's scalar metrics as <stage>.<metric>."""
        metrics: dict[str, Any] = {"optimizer_steps": self.optimizer_steps, "stopped": self.stopped}
        for s in self.stages:
            if s.result is not None:
                metrics.update({f"{s.name}.{k}": v for k, v in s.result.metrics.items() if not isinstance(v, (dict, list, tuple))})
        return metrics

    def summary(self) -> dict[str, Any]:
        """The combined verdict (nndiag.diagnosis.run.summary): the contract's keys, root causes and every stage."""
        return self.run.summary(self.metrics())

    def result(self, summary: dict[str, Any] | None = None) -> RunResult:
        """The run as one Result: status, every stage's findings, the ranked root causes (`root_causes`), `results`."""
        return self.run.result(summary if summary is not None else self.summary())

    # -- what happens while training runs: the loop's hooks and the probe, after every optimizer step -------------

    def watch_loop(self, model: Any, optimizer: Any, *, start_step: int = 0, **hooks: Any) -> Any:
        """Attach the loop stage's hooks to `model` and `optimizer` (when `loop` is on, or for `hooks`): a
        nndiag.diagnostics.loop.Recorder, returned. `hooks`: the Recorder's first_batch / on_step / on_first_batch / strict."""
        from nndiag.diagnostics.loop import Recorder

        if not (self.options.loop or hooks) or optimizer is None:  # nndiag.watch always attaches: its steps drive the probe
            return None
        self.recorder = Recorder(model, optimizer, start_step=start_step, **hooks).attach()
        return self.recorder

    def stepped(self, model: Any, step: int, optimizer: Any = None) -> None:
        """Optimizer step `step` ended (its gradients still there): the probe arms or collects; with fail_on, a probed
        step whose verdict reaches it ends the probe stage and raises DiagnosisFailed."""
        self.optimizer_steps = step
        probing = self.probing
        if probing is None:
            return
        probed = self.guarded("probe", lambda: probing.after_step(model, step, optimizer))
        if self.probing is None:  # the probe failed (recorded as the probe stage's error): no more probing
            return
        if probed is not None and self.options.fail_on is not None and self.reached(probing.latest(probed).status):
            probing.close()
            self.probing = None
            self.add("probe", *timed(probing.result))  # raises DiagnosisFailed

    def close_probe(self) -> None:
        """Training ended: remove the probe's hooks and add the probe stage when it probed a step."""
        probing, self.probing = self.probing, None
        if probing is None:
            return
        probing.close()
        if probing.probed:
            self.guarded("probe", lambda: self.add("probe", *timed(probing.result), stop=False))

    def close_loop(self, error: BaseException | None = None) -> None:
        """Training ended (`error`: what the loop raised): remove the loop's hooks and add the loop stage."""
        recorder, self.recorder = self.recorder, None
        if recorder is None:
            return
        recorder.detach()
        if not self.options.loop:
            return
        if recorder.broken is not None:
            self.skip("loop", f"{type(recorder.broken).__name__}: {recorder.broken}", state="error")
            return
        recorder.error = error

        def stage() -> None:
            from nndiag.diagnostics import loop

            self.add("loop", *timed(lambda: loop.result(recorder)), stop=False)

        self.guarded("loop", stage)

    def lr_rows(self) -> list[tuple[int, float]]:
        """(step, LR) of every optimizer step the loop's hooks saw (for the curves' lr column)."""
        recorder = self.recorder
        return [] if recorder is None else [(recorder.start_step + i + 1, lr) for i, lr in enumerate(recorder.lrs)]

    def close_hooks(self) -> None:
        """Remove every hook (the probe's, the loop's) without adding a stage: an exception, a reused callback."""
        if self.probing is not None:
            self.probing.close()
        if self.recorder is not None:
            self.recorder.detach()

    def write_summary(self) -> dict[str, Any]:
        from nndiag import processes
        from nndiag.output import files

        summary = self.summary()
        run = {**processes.record(), "state": self.stopped}  # `nndiag curves` on this folder: a run still going, or killed
        files.write_summary(self.run.ensure_folder(), {**summary, "run": run})
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
            if name == "probe" and self.probing is not None:  # an error while probing ends the probe stage
                self.probing.close()
                self.probing = None
            self.skip(name, f"{type(exc).__name__}: {first}", state="error")
            return None


class SessionCallback(Options):
    """The part both callbacks share beyond their options: the session, and what a user reads after fit."""

    COMMAND = "session"  # names the default run folder: runs/<model>/<COMMAND>-<timestamp>/
    LOGGER = "nndiag"  # the logging.Logger the status lines go to

    def __post_init__(self) -> None:
        super().__post_init__()
        logger = logging.getLogger(self.LOGGER)
        self.session = Session(self.COMMAND, self, lambda level, message: logger.log(level, message))
        self.summary: dict[str, Any] = {}

    @property
    def options(self) -> Options:
        return self

    @property
    def folder(self) -> Path | None:
        return self.session.folder

    @property
    def status(self) -> str:
        return self.session.status

    @property
    def results(self) -> dict[str, Any]:
        return self.session.run.results

    @property
    def result(self) -> RunResult:
        """The run as one Result (status, findings, root_causes), as nndiag.watch gives it."""
        return self.session.result(self.summary or None)


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
    from nndiag.diagnostics import check_loss as diagnostic
    from nndiag.training.engine import rng_kept
    from nndiag.training.experiment import Experiment

    with rng_kept():
        exp = Experiment.from_objects(model, data, step=step, optimizer=optimizer, seed=options.seed)
        expected = math.log(options.num_classes) if options.num_classes else None  # num_classes overrides what the logits say
        result = diagnostic.run(
            exp, batches=options.batches, expected=expected, expected_why=f"ln C = ln {options.num_classes} (num_classes)"
        )
    return exp.stamp(result)


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


class MetricLog:
    """Logged values by optimizer step: one row per (step, series) event, kept on the device until the end; with
    `stream_to(path)`, also written to a CSV as training goes (`flush()`: the steps that can no longer change). Besides
    the four curve series, `lr` (the LR of each step) and whatever else was logged become columns of `frame()`."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, float | None, str, Any]] = []  # (step, epoch, series, value)
        self.stream: Any = None  # a files.CsvStream while streaming
        self._streamed = 0  # rows[:_streamed] are in the stream

    def add(self, step: int, epoch: float | None, series: str, value: Any) -> None:
        if hasattr(value, "detach"):
            value = value.detach()
            if value.numel() != 1:
                return
        elif not isinstance(value, (int, float)) or isinstance(value, bool):
            return  # e.g. a torchmetrics Metric object: not a number we can read
        self.rows.append((step, epoch, series, value))
        if self.stream is not None and time.monotonic() - self.stream.last >= self.stream.every_s:
            self.flush()

    def stream_to(self, path: Path) -> None:
        """Write the log to `path` (step, epoch and the four series, as `frame()` has them) as training goes."""
        from nndiag.output import files

        self.stream = files.CsvStream(path, ["step", "epoch", *CURVE_COLUMNS])
        self._streamed = 0

    def flush(self, final: bool = False) -> None:
        """Append the rows of every step before the latest one (a step's row is closed once a later step is logged;
        `final`: every step, then close the file). Reads those values back from the device, once per flush."""
        if self.stream is None:
            return
        latest = max((step for step, _, _, _ in self.rows[self._streamed :]), default=None)
        cut = len(self.rows)
        if not final and latest is not None:
            cut = next((i for i in range(self._streamed, len(self.rows)) if self.rows[i][0] >= latest), cut)
        pending, self._streamed = self.rows[self._streamed : cut], cut
        for row in _wide(pending):
            self.stream.add(row)
        self.stream.flush()
        if final:
            self.stream.close()
            self.stream = None

    def has(self, series: str) -> bool:
        return any(s == series for _, _, s, _ in self.rows)

    def rename(self, old: str, new: str) -> None:
        self.rows = [(step, epoch, new if s == old else s, v) for step, epoch, s, v in self.rows]

    def frame(self) -> Any:
        """step, epoch, the four series, then the other series logged (lr first; NaN = not logged at that step)."""
        import pandas as pd

        others = [s for s in dict.fromkeys(s for _, _, s, _ in self.rows) if s not in CURVE_COLUMNS and s != "returned_loss"]
        others.sort(key=lambda name: name != "lr")
        return pd.DataFrame(_wide(self.rows), columns=["step", "epoch", *CURVE_COLUMNS, *others])


def _wide(rows: list[tuple[int, float | None, str, Any]]) -> list[dict[str, Any]]:
    """(step, epoch, series, value) events -> one row per step, in step order (the last value logged at a step wins)."""
    records: dict[int, dict[str, Any]] = {}
    for step, epoch, series, value in rows:
        row = records.setdefault(step, {"step": step, "epoch": epoch})
        row[series] = float(value)
        if epoch is not None:
            row["epoch"] = epoch
    return sorted(records.values(), key=lambda r: r["step"])


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
