"""Steps 4-5 of the recipe: a coarse random search in log space, then a fine one around the best.

Coarse: the recipe's `search.space`, `search.coarse.trials` trials of `search.coarse.epochs` epochs
with the recipe's schedule. Fine: every range narrowed around the best `search.top_k` coarse trials,
`search.fine.trials` trials of `search.fine.epochs` epochs, no LR decay (the notes: "train longer,
without learning-rate decay"). Every trial starts from the same initial weights (the recipe's seed)
and stops at once when its loss goes non-finite or above 3x its starting loss (diverged; the Trainer's rule);
the search goes on. Trials live in an Optuna study (see nndiag.diagnostics.search_study), so several processes
share them and a re-run resumes.

Sampling. `random` (default): slot k of a stage draws every parameter from its own generator seeded
with (seed, stage, k): log-uniform where the space says `log: true` (unless --linear-space), uniform
otherwise, integers rounded, categoricals uniformly. `grid`: an even grid (log-spaced for log
parameters) with about trials^(1/d) levels per numeric parameter, thinned evenly to `trials` points.
Same recipe and seed -> the same trials, whatever the number of workers.

Narrowing (fine stage). In the coordinate the stage samples in (log10 for log parameters), the fine
range spans the top-k coarse values plus FINE_MARGIN of the original width on each side, clipped to
the original range. Categoricals keep the values the top-k trials used; integers stay integers.

Rules (documented thresholds, all tested):
  all-trials-diverged  fail  no trial completed with a finite metric: every one diverged or failed
  best-on-boundary     warn  a numeric parameter of the best trial lies within BOUNDARY_FRACTION of
                             the low or high end of its ORIGINAL range, measured in the sampling
                             coordinate (log10 for log parameters): the optimum may lie outside it.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd

from nndiag.errors import BadInput
from nndiag.findings import DIVERGENCE_FACTOR, EXIT_BAD_INPUT, EXIT_INTERRUPTED, Verdict
from nndiag.formatting import recipe_yaml
from nndiag.result import Result
from nndiag.training.progress import Note, Progress, Tick

STAGES = ("coarse", "fine")
ABORT_FACTOR = DIVERGENCE_FACTOR  # a trial whose loss exceeds this multiple of its starting loss has diverged (CS231n)
BOUNDARY_FRACTION = 0.05  # best within 5% of the (log-)range of an edge -> best-on-boundary (Google tuning playbook: widen the space)
FINE_MARGIN = 0.10  # fine range = top-k span plus 10% of the original (log-)width each side
POLL_S = 0.5  # seconds between checks while other processes finish a stage
RESULT_COLUMNS = ["val_acc", "val_loss", "train_loss", "epochs_run", "status", "seconds"]


# --------------------------------------------------------------------------------------------
# The space: one Dim per searched key
# --------------------------------------------------------------------------------------------


@dataclass
class Dim:
    key: str  # recipe key path, e.g. optim.lr
    kind: str  # float | int | categorical
    low: float | None = None
    high: float | None = None
    log: bool = False  # sample and narrow in log10 space
    choices: list[Any] | None = None  # categorical only
    encoded: bool = False  # categorical choices that are lists/mappings travel as JSON strings (Optuna takes scalars only)

    def decode(self, value: Any) -> Any:
        """The recipe value of a sampled value (a JSON-encoded choice back to its list or mapping)."""
        return json.loads(value) if self.encoded and isinstance(value, str) else value

    def t(self, value: float) -> float:
        """The sampling coordinate of a value (log10 for log parameters)."""
        return math.log10(value) if self.log else float(value)

    def untransform(self, t: float) -> Any:
        value = 10.0**t if self.log else t
        value = min(max(value, self.low), self.high)
        return int(round(value)) if self.kind == "int" else float(value)

    def position(self, value: float) -> float:
        """Where `value` sits in [low, high]: 0 at low, 1 at high, in the sampling coordinate."""
        span = self.t(self.high) - self.t(self.low)
        return (self.t(value) - self.t(self.low)) / span if span > 0 else 0.5


def dims_from_space(space: dict[str, Any], log_space: bool = True) -> list[Dim]:
    """recipe.search.space -> Dims. `log_space=False` (--linear-space) samples every range uniformly."""
    if not space:
        raise BadInput(
            "the recipe has no search space; add e.g. search: {space: {optim.lr: {low: 1.0e-4, high: 1.0, log: true}}}",
            where="search.space",
        )
    dims = []
    for key, p in space.items():
        if p.type == "categorical":
            encoded = any(not isinstance(c, (str, int, float, bool, type(None))) for c in p.choices)
            choices = [json.dumps(c) for c in p.choices] if encoded else list(p.choices)
            dims.append(Dim(key, "categorical", choices=choices, encoded=encoded))
        else:
            dims.append(Dim(key, p.type, float(p.low), float(p.high), bool(p.log and log_space)))
    return dims


def dims_to_data(dims: list[Dim]) -> list[dict[str, Any]]:
    return [asdict(d) for d in dims]


def dims_from_data(data: list[dict[str, Any]]) -> list[Dim]:
    return [Dim(**d) for d in data]


def sample(dims: list[Dim], seed: int, stage: str, slot: int, trials: int, sampling: str = "random") -> dict[str, Any]:
    """Slot `slot`'s parameters: a pure function of its arguments (so any process can recreate it)."""
    if sampling == "grid":
        return grid(dims, trials)[slot % max(1, len(grid(dims, trials)))]
    rng = np.random.default_rng([seed, STAGES.index(stage), slot])
    params: dict[str, Any] = {}
    for d in dims:
        if d.kind == "categorical":
            params[d.key] = d.choices[int(rng.integers(len(d.choices)))]
        elif d.kind == "int":
            lo, hi = d.t(d.low - 0.5 if not d.log else d.low), d.t(d.high + 0.4999 if not d.log else d.high)
            params[d.key] = d.untransform(rng.uniform(lo, hi))
        else:
            params[d.key] = d.untransform(rng.uniform(d.t(d.low), d.t(d.high)))
    return params


def grid(dims: list[Dim], trials: int) -> list[dict[str, Any]]:
    """An even grid with about trials^(1/d) levels per numeric parameter, thinned evenly to `trials` points."""
    numeric = [d for d in dims if d.kind != "categorical"]
    n_cat = math.prod(len(d.choices) for d in dims if d.kind == "categorical")
    per_numeric = max(1.0, trials / n_cat)
    levels = max(2, math.ceil(per_numeric ** (1 / len(numeric)) - 1e-9)) if numeric else 1
    axes = []
    for d in dims:
        if d.kind == "categorical":
            axes.append(list(d.choices))
        else:
            values = [d.untransform(t) for t in np.linspace(d.t(d.low), d.t(d.high), levels)]
            axes.append(list(dict.fromkeys(values)))
    points = [dict(zip([d.key for d in dims], combo)) for combo in itertools.product(*axes)]
    if len(points) > trials:
        points = [points[round(i * (len(points) - 1) / max(1, trials - 1))] for i in range(trials)] if trials > 1 else points[:1]
    return points


def narrow(dims: list[Dim], top: list[dict[str, Any]]) -> list[Dim]:
    """Fine-stage ranges around the top coarse trials' parameters (see the module docstring)."""
    fine = []
    for d in dims:
        values = [p[d.key] for p in top if d.key in p]
        if d.kind == "categorical":
            used = [c for c in d.choices if c in values] or list(d.choices)
            fine.append(Dim(d.key, "categorical", choices=used, encoded=d.encoded))
            continue
        lo_t, hi_t = d.t(d.low), d.t(d.high)
        margin = FINE_MARGIN * (hi_t - lo_t)
        ts = [d.t(v) for v in values] or [lo_t, hi_t]
        low, high = d.untransform(max(lo_t, min(ts) - margin)), d.untransform(min(hi_t, max(ts) + margin))
        if d.kind == "int" and low == high:
            low, high = max(int(d.low), low - 1), min(int(d.high), high + 1)
        fine.append(Dim(d.key, d.kind, low, high, d.log))
    return fine


def suggest(trial: Any, d: Dim, original: Dim) -> Any:
    """Record the slot's (enqueued) value in Optuna with the stage's distribution."""
    if d.kind == "categorical":
        return trial.suggest_categorical(d.key, original.choices)  # Optuna needs the same choices in every trial
    if d.kind == "int":
        return trial.suggest_int(d.key, int(d.low), int(d.high), log=d.log)
    return trial.suggest_float(d.key, d.low, d.high, log=d.log)


def better(metric: str) -> str:
    return "maximize" if metric == "val_acc" else "minimize"


def ranked(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Completed trials with a finite metric, best first. Ties on the metric (several trials at val_acc 1.0)
    break on the other validation metric: the lower val_loss (ranking by val_loss: the higher val_acc),
    then the stage and slot order."""
    ok = frame[(frame["status"] == "complete") & np.isfinite(frame[metric].astype(float))]
    other = "val_loss" if metric == "val_acc" else "val_acc"
    keys = [metric] + ([other] if other in ok.columns else [])
    return ok.sort_values(keys, ascending=[k != "val_acc" for k in keys], kind="stable", na_position="last")


# --------------------------------------------------------------------------------------------
# Deciding: a pure function of the trials table and the original space
# --------------------------------------------------------------------------------------------


def decide(frame: pd.DataFrame, dims: list[Dim], metric: str = "val_acc") -> Verdict:
    verdict = Verdict()
    counts = frame["status"].value_counts().to_dict() if len(frame) else {}
    best = ranked(frame, metric) if len(frame) else frame
    if best.empty:
        diverged, failed = int(counts.get("diverged", 0)), int(counts.get("failed", 0))
        verdict.add(
            "all-trials-diverged",
            "fail",
            f"no trial completed: {diverged} of {len(frame)} diverged (loss non-finite or above {ABORT_FACTOR:g}x its starting value) and {failed} failed",
            "The ranges start too high: lower the upper bound of optim.lr (run `nndiag lr-find` for a working range), check the "
            "initialisation (`nndiag check-loss`, `nndiag probe`), add train.grad_clip; failed trials carry their error in search.csv.",
            trials=len(frame),
            diverged=diverged,
            failed=failed,
        )
        return verdict
    top = best.iloc[0]
    for d in dims:
        if d.kind == "categorical" or d.key not in top or d.low == d.high:
            continue
        value = float(top[d.key])
        pos = d.position(value)
        if BOUNDARY_FRACTION < pos < 1 - BOUNDARY_FRACTION:
            continue
        side = "low" if pos <= BOUNDARY_FRACTION else "high"
        edge = d.low if side == "low" else d.high
        scale = "log10 " if d.log else ""
        verdict.add(
            "best-on-boundary",
            "warn",
            f"the best trial ({metric} {float(top[metric]):.4g}) has {d.key} = {value:.4g}, {pos:.0%} of the way through its {scale}range "
            f"[{d.low:.4g}, {d.high:.4g}]: at the {side} edge, so the optimum may lie outside the range",
            f"Widen search.space.{d.key}.{side} (e.g. to {wider_edge(d, side)}) and search again, unless {edge:.4g} is a hard limit.",
            key=d.key,
            value=value,
            position=pos,
            low=d.low,
            high=d.high,
            side=side,
            log=d.log,
        )
    return verdict


def wider_edge(d: Dim, side: str) -> str:
    """A range edge one step further out, as the advice quotes it: a decade for log ranges, half the
    width for linear ones; whole numbers (>= 1 for log) for int parameters."""
    edge = d.low if side == "low" else d.high
    if d.log:
        wider = edge / 10 if side == "low" else edge * 10
    else:
        wider = edge - (d.high - d.low) / 2 if side == "low" else edge + (d.high - d.low) / 2
    if d.kind == "int":
        wider = math.floor(wider) if side == "low" else math.ceil(wider)
        if d.log:
            wider = max(1, wider)
        return str(int(wider if wider != edge else (edge - 1 if side == "low" else edge + 1)))
    from nndiag.formatting import number

    return number(float(wider), d.key)


# --------------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------------


def parse_stages(text: str) -> tuple[str, ...]:
    stages = {"both": ("coarse", "fine"), "coarse": ("coarse",), "fine": ("fine",), "coarse,fine": ("coarse", "fine")}
    if text not in stages:
        raise BadInput(f"expected coarse, fine or both, got {text!r}", where="--stages")
    return stages[text]


def default_storage(recipe_name: str, out: Path | None = None) -> str:
    """The journal file a search uses unless --storage is given: stable, so re-running resumes."""
    from nndiag.formatting import safe_name

    folder = out if out is not None else Path(os.environ.get("NNDIAG_RUNS", "runs")) / safe_name(recipe_name)
    return str(folder / "search-journal.log")


# --------------------------------------------------------------------------------------------
# Running trials
# --------------------------------------------------------------------------------------------


@dataclass
class SearchOptions:
    stages: tuple[str, ...] = STAGES  # which stages to run, in order
    sampling: str = "random"  # random | grid
    log_space: bool = True  # honour `log: true` (False = --linear-space: every range uniform)
    coarse_trials: int | None = None  # override search.coarse.trials
    fine_trials: int | None = None  # override search.fine.trials
    storage: str = "search-journal.log"  # journal file path, or an RDB URL
    study: str | None = None  # study name; default the recipe name
    workers: int = 1  # local worker processes
    threads: int | None = None  # torch threads per process; default cores / workers


class TrialRunner:
    """Trains one configuration. Reuses the base experiment's data whenever the data config is unchanged."""

    def __init__(self, base: Any):
        self.base = base
        self.cache: dict[str, Any] = {}

    def experiment(self, recipe: Any) -> Any:
        """The trial's experiment; data is built once and shared while the data config is unchanged."""
        from nndiag.training.experiment import Experiment

        base, key = self.base, repr((recipe.data, recipe.seed, recipe.device))
        if key != repr((base.recipe.data, base.recipe.seed, base.recipe.device)):
            if key not in self.cache:
                self.cache = {key: Experiment.build(recipe)}  # keep one data set besides the base at most
            base = self.cache[key]
        return base.with_recipe(recipe)

    def run(self, params: dict[str, Any], stage: str, epochs: int) -> dict[str, Any]:
        """Train one trial; return its record (never raises for a failing configuration)."""
        from nndiag.training.trainer import Trainer

        started = time.perf_counter()
        record: dict[str, Any] = {"val_acc": math.nan, "val_loss": math.nan, "train_loss": math.nan, "epochs_run": 0}
        try:
            exp = self.experiment(self.base.recipe.with_overrides(params))
            history = Trainer(exp, epochs=epochs, use_schedule=(stage == "coarse"), abort_factor=ABORT_FACTOR).fit()
            last = history.epochs.iloc[-1]
            record.update(
                val_acc=float(last["val_acc"]),
                val_loss=float(last["val_loss"]),
                train_loss=float(last["train_loss"]),
                epochs_run=int(last["epoch"]),
            )
            finite = math.isfinite(record["val_loss"]) and math.isfinite(record["train_loss"])
            record["status"] = "diverged" if history.diverged or not finite else "complete"
        except BadInput as exc:
            record.update(status="failed", error=str(exc))
        except Exception as exc:  # OOM or an error in the user's model: this trial fails, the search goes on
            record.update(status="failed", error=f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}")
            if _is_oom(exc):
                record["advice"] = "out of memory: lower train.batch_size or the model size in the space, or use fewer workers per GPU"
        record["seconds"] = time.perf_counter() - started
        return record


def _is_oom(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


class Search:
    """A search: its recipe, options, and study. `work()` runs trials until the chosen stages are done."""

    def __init__(self, exp: Any, options: SearchOptions):
        from nndiag.config.recipe import Recipe
        from nndiag.diagnostics import search_study

        self.exp, self.options = exp, options
        recipe: Recipe = exp.recipe
        self.config = recipe.search
        self.metric = self.config.metric
        if self.metric == "auto":
            self.metric = "val_acc" if exp.is_classification else "val_loss"
        if self.metric == "val_acc" and not exp.is_classification:
            raise BadInput("val_acc needs class labels scored against class logits; set search.metric: val_loss", where="search.metric")
        self.dims = dims_from_space(self.config.space, options.log_space)
        self.targets = {
            "coarse": options.coarse_trials or self.config.coarse.trials,
            "fine": options.fine_trials or self.config.fine.trials,
        }
        self.epochs = {"coarse": self.config.coarse.epochs, "fine": self.config.fine.epochs}
        identity = self.identity(recipe, options)
        self.study = search_study.SearchStudy(options.storage, options.study or recipe.name, better(self.metric), identity)
        self.runner: TrialRunner | None = None

    @staticmethod
    def identity(recipe: Any, options: SearchOptions) -> str:
        """What makes two runs the same search (trial counts and device may change between runs)."""
        from nndiag.diagnostics.search_study import fingerprint

        raw = recipe.to_dict()
        raw.pop("device", None)
        raw["search"]["coarse"].pop("trials", None)
        raw["search"]["fine"].pop("trials", None)
        return fingerprint({"recipe": raw, "sampling": options.sampling, "log_space": options.log_space})

    # -- the plan of each stage ----------------------------------------------------------------

    def stage_dims(self, stage: str) -> list[Dim]:
        if stage == "coarse":
            return self.dims
        stored = self.study.user_attr("fine_space")
        if stored is not None:
            return dims_from_data(stored)
        coarse = self.frame(("coarse",))
        top = ranked(coarse, self.metric).head(self.config.top_k) if len(coarse) else coarse
        if top.empty:
            where = "no finished coarse trials" if coarse.empty else "no coarse trial completed (all diverged or failed)"
            raise BadInput(
                f"the fine stage narrows the space around the best coarse trials, but study {self.study.study.study_name!r} has "
                f"{where}; run --stages coarse (or both) first",
                where="--stages",
            )
        fine = narrow(self.dims, [{d.key: row[d.key] for d in self.dims} for _, row in top.iterrows()])
        self.study.set_user_attr("fine_space", dims_to_data(fine))
        return fine

    def params_for(self, stage: str, dims: list[Dim]) -> Callable[[int], dict[str, Any]]:
        seed, trials, sampling = self.exp.recipe.seed, self.targets[stage], self.options.sampling
        return lambda slot: sample(dims, seed, stage, slot, trials, sampling)

    # -- working -------------------------------------------------------------------------------

    def prepare(self, stage: str) -> list[Dim]:
        dims = self.stage_dims(stage)
        self.study.repair(stage, self.targets[stage], self.params_for(stage, dims))
        return dims

    def work(self, progress: Callable[[dict[str, Any]], None] | None = None) -> None:
        """Claim and run trials until every chosen stage has its target (waiting for other processes' trials)."""
        self.runner = self.runner or TrialRunner(self.exp)
        for stage in self.options.stages:
            dims = self.prepare(stage)
            target, fill = self.targets[stage], self.params_for(stage, dims)
            while True:
                trial = self.study.claim(stage)
                if trial is None:
                    if self.study.repair(stage, target, fill):
                        continue
                    counts = self.study.counts(stage, target)
                    if counts["done"] >= target:
                        break
                    time.sleep(POLL_S)  # other processes are finishing their trials
                    continue
                self.run_trial(trial, stage, dims, progress)

    def run_trial(self, trial: Any, stage: str, dims: list[Dim], progress: Callable[[dict[str, Any]], None] | None) -> None:
        assert self.runner is not None
        original = {d.key: d for d in self.dims}
        try:
            with self.study.heartbeat(trial):
                params = {d.key: suggest(trial, d, original[d.key]) for d in dims}
                record = self.runner.run({d.key: d.decode(params[d.key]) for d in dims}, stage, self.epochs[stage])
        except BaseException:
            with _sigint_ignored():  # a second Ctrl-C (an impatient user) must not cut the hand-back short
                self.study.release(trial)
            raise
        self.study.finish(trial, record, self.metric)
        if progress is not None:
            progress(
                {
                    "stage": stage,
                    "slot": trial.user_attrs.get("slot"),
                    "params": params,
                    **record,
                    **self.study.counts(stage, self.targets[stage]),
                }
            )

    # -- results -------------------------------------------------------------------------------

    def frame(self, stages: tuple[str, ...] = STAGES) -> pd.DataFrame:
        rows = []
        for stage in stages:
            for slot, t in sorted(self.study.finished(stage).items()):
                a = t.user_attrs
                row = {"stage": stage, "slot": slot, "trial": t.number}
                row.update({d.key: t.params.get(d.key) for d in self.dims})
                row.update({k: a.get(k) for k in RESULT_COLUMNS})
                row["error"] = a.get("error", "")
                rows.append(row)
        columns = ["stage", "slot", "trial", *[d.key for d in self.dims], *RESULT_COLUMNS, "error"]
        return pd.DataFrame(rows, columns=columns)

    def duplicates(self) -> int:
        """Finished trials beyond one per slot (must be 0)."""
        total = 0
        for stage in STAGES:
            finished = [t for t in self.study.trials(stage) if t.state.is_finished() and t.user_attrs.get("status")]
            total += len(finished) - len({t.user_attrs["slot"] for t in finished})
        return total


# --------------------------------------------------------------------------------------------
# Local worker processes
# --------------------------------------------------------------------------------------------


def spawn_workers(exp: Any, options: SearchOptions) -> list[subprocess.Popen]:
    """Start `options.workers` processes on the same study (`python -m nndiag.diagnostics.search_workers`)."""
    import json

    import torch

    recipe = exp.recipe.to_dict()
    gpus = torch.cuda.device_count() if exp.device.type == "cuda" else 0
    if gpus > 1:
        recipe["device"] = "cuda"  # each worker sees one GPU (CUDA_VISIBLE_DEVICES), as cuda:0
    spec = {
        "recipe": recipe,
        "source": str(exp.recipe.source) if exp.recipe.source else None,
        "options": {**asdict(options), "stages": list(options.stages), "workers": 1},
    }
    root = str(Path(__file__).resolve().parents[2])  # the folder that holds the nndiag package
    threads = options.threads or max(1, (os.cpu_count() or 1) // options.workers)
    procs = []
    for i in range(options.workers):
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
            "NNDIAG_THREADS": str(threads),
        }
        if gpus > 1:
            env["CUDA_VISIBLE_DEVICES"] = str(i % gpus)
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "nndiag.diagnostics.search_workers", json.dumps(spec)],
                env=env,
                stdout=subprocess.DEVNULL,
                stdin=subprocess.DEVNULL,
                preexec_fn=_ignore_sigint if os.name == "posix" else None,  # until the worker installs its own handler
            )
        )
    return procs


def _ignore_sigint() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """SIGINT ignored while the workers are being stopped (a second Ctrl-C must not cut that short); main thread only."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def wait_workers(search: Search, procs: list[subprocess.Popen], progress: Callable[[dict[str, Any]], None] | None) -> None:
    """Watch the study while the workers run; on Ctrl-C, stop them (their running trials are re-run on resume)."""
    seen: dict[str, int] = {}
    try:
        while [p for p in procs if p.poll() is None]:  # poll every one: that also reaps a killed worker
            time.sleep(POLL_S)
            for stage in search.options.stages:
                counts = search.study.counts(stage, search.targets[stage])
                if progress is not None and counts["done"] != seen.get(stage, 0):
                    seen[stage] = counts["done"]
                    progress({"stage": stage, **counts})
        if procs and all(p.returncode not in (0, None) for p in procs):
            codes = sorted({p.returncode for p in procs})
            if EXIT_INTERRUPTED in codes or -2 in codes:  # Ctrl-C reached the workers (their process group) first:
                raise KeyboardInterrupt  # this process is being interrupted too; say so as a single run would (exit 130)
            if codes == [EXIT_BAD_INPUT]:  # each worker refused the input: bad input here too (exit 2)
                raise BadInput("every worker process refused the input (exit code 2); run with --workers 1 to see why", where="--workers")
            raise RuntimeError(  # crashed or killed (the OOM killer: -9): a crash, exit 3
                f"every worker process crashed or was killed (exit codes {codes}); run with --workers 1 to see the traceback"
            )
    except BaseException:
        with _sigint_ignored():
            for p in procs:
                if p.poll() is None:
                    p.send_signal(2)  # SIGINT: the worker releases its trial and exits (a second one is ignored)
            for p in procs:
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        raise


# --------------------------------------------------------------------------------------------
# The diagnostic
# --------------------------------------------------------------------------------------------


def measure(
    exp: Any, options: SearchOptions, progress: Callable[[dict[str, Any]], None] | None = None
) -> tuple[pd.DataFrame, dict[str, Any]]:
    search = Search(exp, options)
    if options.workers > 1:
        search.prepare("coarse" if "coarse" in options.stages else "fine")
        procs = spawn_workers(exp, options)
        wait_workers(search, procs, progress)
    search.work(progress)  # finishes whatever the workers left (a crashed worker's trial), or everything with 1 worker
    shown = tuple(s for s in STAGES if s in options.stages or not search.frame((s,)).empty)
    frame = search.frame(shown)
    facts = {
        "dims": search.dims,
        "metric": search.metric,
        "study": search.study.study.study_name,
        "fine_dims": dims_from_data(search.study.user_attr("fine_space")) if search.study.user_attr("fine_space") else None,
        "targets": search.targets,
        "epochs": search.epochs,
        "duplicates": search.duplicates(),
        "lost": sum(search.study.counts(s, search.targets[s])["lost"] for s in STAGES),
    }
    return frame, facts


def best_recipe(recipe: Any, row: pd.Series, dims: list[Dim], epochs: int, stage: str) -> str:
    """The best configuration as a recipe for `nndiag train` (same epochs and schedule as its trial)."""
    overrides: dict[str, Any] = {d.key: d.decode(_plain(row[d.key])) for d in dims}
    overrides["train.epochs"] = epochs
    if stage == "fine":
        overrides["schedule.name"] = "none"
    best = recipe.with_overrides(overrides).to_dict()
    header = (
        f"# best configuration of `nndiag search` ({stage} trial {int(row['slot'])}: val_acc {row['val_acc']:.4g}, "
        f"val_loss {row['val_loss']:.4g})\n# train it: nndiag train best_recipe.yaml\n"
    )
    return header + recipe_yaml(best)


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def run(exp: Any, options: SearchOptions | None = None, progress: Callable[[dict[str, Any]], None] | None = None) -> Result:
    options = options or SearchOptions()
    frame, facts = measure(exp, options, progress)
    metric, dims = facts["metric"], facts["dims"]
    verdict = decide(frame, dims, metric)
    status_counts = {s: int((frame["status"] == s).sum()) for s in ("complete", "diverged", "failed")}
    metrics: dict[str, Any] = {
        "metric": metric,
        "trials": len(frame),
        **{f"trials_{k}": v for k, v in status_counts.items()},
        "study": facts["study"],
        "duplicates": facts["duplicates"],
        "trials_rerun": facts["lost"],
    }
    for stage in STAGES:
        metrics[f"{stage}_trials"] = int((frame["stage"] == stage).sum())
    extra: dict[str, str] = {}
    best = ranked(frame, metric)
    frame["rank"] = pd.Series(range(1, len(best) + 1), index=best.index, dtype="Int64")  # the ranking `ranked` made (blank: not ranked)
    if not best.empty:
        top = best.iloc[0]
        metrics.update(
            {
                "best_stage": top["stage"],
                "best_slot": int(top["slot"]),
                f"best_{metric}": float(top[metric]),
                "best_val_acc": float(top["val_acc"]),
                "best_val_loss": float(top["val_loss"]),
                "best_params": {d.key: d.decode(_plain(top[d.key])) for d in dims},
            }
        )
        extra["best_recipe.yaml"] = best_recipe(exp.recipe, top, dims, facts["epochs"][top["stage"]], top["stage"])
    if facts["fine_dims"]:
        metrics["fine_space"] = {d.key: (d.choices if d.kind == "categorical" else [d.low, d.high]) for d in facts["fine_dims"]}
    metrics["space"] = {d.key: (d.choices if d.kind == "categorical" else [d.low, d.high]) for d in dims}
    metrics["log_params"] = [d.key for d in dims if d.log]
    result = Result("search", verdict, {"search": frame}, metrics, extra_files=extra)
    result.context = {"storage": _storage_label(options.storage), "study": facts["study"]}
    return result


def trial_events(progress: Progress | None, prefix: str = "") -> Callable[[dict[str, Any]], None] | None:
    """The search's events (a finished trial; with workers, a stage's new count) as progress: one line per
    finished trial (a Note) and one bar per stage, trials done of planned (a Tick)."""
    if progress is None:
        return None

    def heard(event: dict[str, Any]) -> None:
        task = f"{prefix}search {event['stage']}"
        if "status" in event:
            params = "  ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in event["params"].items())
            progress(
                Note(
                    f"{task} {event['done']}/{event['target']}  {params}  {event['status']}  val_acc {event['val_acc']:.4f}  "
                    f"val_loss {event['val_loss']:.4g}  ({event['seconds']:.1f}s)"
                )
            )
        if "status" in event:
            note = f"last: {event['status']}, val_loss {event['val_loss']:.4g}"
        else:
            note = f"{event.get('running', 0)} running"
        progress(Tick(task, int(event["done"]), int(event["target"]), "trials", note=note))

    return heard


def _storage_label(spec: str) -> str:
    from nndiag.diagnostics.search_study import redact

    return redact(spec)
