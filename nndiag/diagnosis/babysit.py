"""`nndiag babysit`: the whole recipe in order, one report (the Babysitter; it lives in nndiag.diagnosis, so that it
never shadows the API function `nndiag.babysit`).

    check-data -> check-loss -> overfit-small -> lr-find -> search (coarse, then fine) -> train the best -> curves
    (+ probe, when a step fails or a finding may have a cause only the probe can see)

Each step runs in-process into its own sub-folder of the babysit folder (`01-check-loss/`, ...)
with exactly the files the step's own command writes, and babysit stops at the first step whose
verdict is `fail` (`keep_going=True` runs on). Whenever a step fails, `probe` runs on the model at
initialisation, because per-layer statistics usually explain why; it also runs when a warning (a
plateau, underfitting, ...) is one that dead, vanishing, saturated or exploding layers would explain
(`root_cause.probe_could_explain`). Then `root_cause.rank` reads every step's findings together and
names the root causes, most likely first (`root_causes` in the JSON; report and terminal lead with
them). At the end `diagnosis.report` writes report.md and report.html over all steps.

How the steps hand over (the notes' "use what worked in the previous step"):
  lr-find -> search   the coarse stage's optim.lr range becomes lr-find's [lr_min, lr_max],
                      widened 3x each way and kept below the LR at which the range test diverged
                      (when the recipe has no search.space at all, weight decay is searched over
                      [1e-6, 1e-3], log-uniform, as the notes suggest 1e-4, 1e-5, 0);
  search -> train     the best trial's parameters are applied to the recipe (best_recipe.yaml);
  train -> curves     `curves` reads train's own CSVs.

Budgets scale every step; `standard` is the recipe as written and each command's defaults. `quick`:
check-loss on QUICK_CHECK_LOSS_BATCHES batches, overfit-small on a subset of QUICK_OVERFIT_BATCHES minibatches
(its step limit stays: it stops as soon as it passes, and a lower limit would fail a model that learns slowly),
lr-find's range test over QUICK_LR_STEPS points of QUICK_LR_BATCHES_PER_LR batches and refine trials of
QUICK_REFINE_STEPS iterations, at most 6 coarse trials of 1 epoch and 3 fine ones of at most 3 epochs,
at most 5 training epochs. `thorough`: twice the search trials; the rest as standard.
This module orchestrates only: it never prints (progress goes through the `progress` callable:
nndiag.training.progress's Notes for each step's start and end, Ticks from the steps).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from nndiag.config.recipe import Recipe, parse_recipe
from nndiag.diagnosis import report
from nndiag.diagnosis.root_cause import probe_could_explain
from nndiag.diagnosis.run import Run, Step
from nndiag.diagnostics import defaults as D
from nndiag.errors import BadInput
from nndiag.findings import EXIT_BAD_INPUT, EXIT_CRASH, EXIT_FAIL, EXIT_OK
from nndiag.output import files
from nndiag.result import Result
from nndiag.training import threads
from nndiag.training.progress import Progress, TrainerProgress, note

BUDGETS = ("quick", "standard", "thorough")
QUICK_CHECK_LOSS_BATCHES = 5  # check-loss batches in a quick babysit (standard: defaults.CHECK_LOSS_BATCHES)
QUICK_OVERFIT_BATCHES = 3  # overfit-small's subset in a quick babysit: 3 minibatches are memorised in fewer steps than 5
QUICK_LR_STEPS = 50  # lr-find's range-test points in a quick babysit ...
QUICK_LR_BATCHES_PER_LR = 2  # ... of this many batches each (a quarter of the standard test's optimizer steps)
QUICK_REFINE_STEPS = 50  # lr-find's refine trials' iterations in a quick babysit
LR_RANGE_WIDEN = 3.0  # search lr-find's [lr_min, lr_max] widened by this factor each way
DEFAULT_WEIGHT_DECAY_RANGE = (1e-6, 1e-3)  # searched when the recipe has no search.space


# How a step on your own objects runs again on its own, as the API takes its arguments (train and search take a recipe:
# on your objects they run only inside nndiag.babysit)
OWN_OBJECT_CALLS = {
    "check-data": "nndiag.check_data(data, model=model)",
    "check-loss": "nndiag.check_loss(model, data, optimizer=optimizer, loss=loss)",
    "overfit-small": "nndiag.overfit_small(model, data, optimizer=optimizer, loss=loss)",
    "lr-find": "nndiag.lr_find(model, optimizer, data, loss=loss)",
    "train": "nndiag.babysit(model, data, optimizer=optimizer, loss=loss) (nndiag.train takes a recipe)",
    "probe": "nndiag.probe(model, data, optimizer=optimizer, loss=loss)",
}


@dataclass
class Budget:
    """How much babysit spends on each step (see the module docstring)."""

    name: str
    coarse_trials: int
    coarse_epochs: int
    fine_trials: int
    fine_epochs: int
    train_epochs: int
    check_loss_batches: int = D.CHECK_LOSS_BATCHES
    overfit_batches: int = D.OVERFIT_BATCHES
    lr_steps: int = D.LR_FIND_STEPS
    lr_batches_per_lr: int = D.LR_FIND_BATCHES_PER_LR
    refine_steps: int = D.LR_FIND_REFINE_STEPS

    @classmethod
    def of(cls, name: str, recipe: Recipe) -> "Budget":
        s, epochs = recipe.search, recipe.train.epochs
        if name == "quick":  # a few minutes on 2 CPU cores for the bundled small recipes
            return cls(
                name,
                min(s.coarse.trials, 6),
                1,
                min(s.fine.trials, 3),
                min(s.fine.epochs, 3),
                min(epochs, 5),
                check_loss_batches=QUICK_CHECK_LOSS_BATCHES,
                overfit_batches=QUICK_OVERFIT_BATCHES,
                lr_steps=QUICK_LR_STEPS,
                lr_batches_per_lr=QUICK_LR_BATCHES_PER_LR,
                refine_steps=QUICK_REFINE_STEPS,
            )
        if name == "thorough":
            return cls(name, 2 * s.coarse.trials, s.coarse.epochs, 2 * s.fine.trials, s.fine.epochs, epochs)
        if name == "standard":
            return cls(name, s.coarse.trials, s.coarse.epochs, s.fine.trials, s.fine.epochs, epochs)
        raise BadInput(f"unknown budget {name!r}; expected one of {', '.join(BUDGETS)}", where="--budget")


@dataclass
class Babysitter:
    recipe: Recipe
    recipe_path: str
    folder: Path
    budget: Budget
    keep_going: bool = False  # --continue: run every step even after a failing gate
    cli_args: str = ""  # the overrides the user gave (--set/--device/--seed), repeated in each step's command
    plots: bool = True
    progress: Progress | None = None  # nndiag.training.progress: Notes (a step started, ended) and the steps' Ticks
    threads: int | None = None  # torch threads (None: chosen for the model, nndiag.training.threads)
    make: Callable[[], Any] | None = None  # your own objects: builds their Experiment unchecked (None: the recipe's)
    crashed: bool = False  # a step raised something other than BadInput
    choice: Any = None  # the thread count the steps run with, once chosen
    record: Run = field(init=False)  # the steps, written into `folder` as they end

    def __post_init__(self) -> None:
        self.record = Run("babysit", self.recipe_path, self.folder, plots=self.plots)

    @property
    def steps(self) -> list[Step]:
        return self.record.steps

    @property
    def results(self) -> dict[str, Result]:
        return self.record.results

    @property
    def context(self) -> dict[str, str]:
        return self.record.context

    # -- the recipe, in order ------------------------------------------------------------------

    @property
    def own_objects(self) -> bool:
        """Babysitting your own model and data (the Python API), not a recipe: no search, and Python calls to rerun a step."""
        return self.make is not None

    def run(self) -> list[Step]:
        from nndiag.training.experiment import DataFault, Experiment

        exp = self.make() if self.make is not None else Experiment.build(self.recipe, check=False)
        choice = self.choice = threads.use(exp, self.threads)  # the API's caller hands torch's count back (threads.kept)
        note(self.progress, f"torch threads: {choice}; set with --threads N (threads=N in Python)")
        self.record.context = {**exp.describe(), "threads": str(choice)}
        budget, progress = self.budget, self.progress
        plan: list[tuple[str, str, Callable[[], Result]]] = [
            ("check-loss", "check-loss", lambda: _check_loss(exp, budget, progress)),
            ("overfit-small", "overfit-small", lambda: _overfit_small(exp, budget, progress)),
            ("lr-find", "lr-find", lambda: _lr_find(exp, budget, progress)),
            ("search", "search", lambda: self._search()),
            ("train", "train", lambda: self._train(exp)),
            ("curves", "curves", lambda: self._curves()),
        ]
        check = self._run_step("check-data", "check-data", lambda: _check_data(exp))
        stopped = check.status in ("fail", "error") and not self.keep_going
        try:
            exp.check_forward()  # model, data and loss fit together (check-data has looked at the data first)
        except DataFault:
            stopped, why = True, "the class labels cannot be scored by the model (see check-data)"
        else:
            why = ""  # (any other BadInput here is the caller's: the model cannot score the data at all; exit 2)
        for name, command, work in plan:
            if name == "search" and self.own_objects:
                self.record.skip(
                    name,
                    "the search needs a recipe (its search.space); your own objects train at your optimizer's LR",
                    command=self._command(command),
                )
                continue
            if stopped:
                self.record.skip(
                    name,
                    why
                    or f"babysit stopped at {self._failed()}; "
                    + ("call it with keep_going=True to go on anyway" if self.own_objects else "run with --continue to go on anyway"),
                    "not-reached",
                    self._command(command),
                )
                continue
            step = self._run_step(name, command, work)
            if step.status in ("fail", "error") and not self.keep_going:
                stopped = True
        if why:  # the model cannot score the data: nothing to probe either
            self.record.skip("probe", why, command=self._command("probe"))
        elif self._probe_needed():
            self._run_step("probe", "probe", lambda: _probe(exp, progress))
        else:
            self.record.skip(
                "probe", "runs only when a step fails or a finding may have a cause only the probe can see", command=self._command("probe")
            )
        return self.steps

    def _probe_needed(self) -> bool:
        """A step failed, or a finding is one that a cause only the probe can establish would explain."""
        if any(s.status in ("fail", "error") for s in self.steps):
            return True
        return probe_could_explain(f for s in self.steps for f in s.findings)

    def _run_step(self, name: str, command: str, work: Callable[[], Result]) -> Step:
        index = len(self.steps) + 1
        note(self.progress, f"babysit [{index}] {name} ...")
        started = time.perf_counter()
        try:
            result = work()
        except (BadInput, Exception) as exc:  # a step that cannot run is reported, and the report still gets written
            crashed = not isinstance(exc, BadInput)
            why = f"crashed: {type(exc).__name__}: {exc}" if crashed else str(exc)
            self.crashed |= crashed
            note(self.progress, f"babysit [{index}] {name}: error: {why}")
            return self.record.skip(name, why, "error", self._command(command), seconds=time.perf_counter() - started)
        result.recipe = result.recipe or self.recipe.to_dict()
        result.context = {**self.context, **result.context}
        result.source = self.recipe_path
        step = self.record.add(name, result, command=self._command(command, self.folder / f"{index:02d}-{name}"))
        step.seconds = time.perf_counter() - started
        note(self.progress, f"babysit [{index}] {name}: {result.status} ({step.seconds:.1f} s)")
        return step

    def _command(self, command: str, folder: Path | None = None) -> str:
        """The command line that reproduces a step on its own (the Python call, for your own objects)."""
        if self.own_objects:
            if command == "curves":
                train = self._folder_of("train")
                return f"nndiag.curves({train!r})" if train else "nndiag.curves(<train run folder>)"
            return OWN_OBJECT_CALLS.get(command, f"nndiag.{command.replace('-', '_')}(model, data, optimizer=optimizer)")
        if command == "curves":
            train = self._folder_of("train")
            return f"nndiag curves {train}" if train else "nndiag curves <train run folder>"
        if command in ("search", "train") and folder is not None:
            return f"nndiag {command} {folder / 'recipe.yaml'}"  # the recipe babysit derived for this step
        return f"nndiag {command} {self.recipe_path}{self.cli_args}{self._budget_flags(command)}"

    def _budget_flags(self, command: str) -> str:
        """The flags that give a step on its own the budget's sizes (none where they are the command's defaults)."""
        b = self.budget
        flags = {
            "check-loss": (("--batches", b.check_loss_batches, D.CHECK_LOSS_BATCHES),),
            "overfit-small": (("--batches", b.overfit_batches, D.OVERFIT_BATCHES),),
            "lr-find": (
                ("--steps", b.lr_steps, D.LR_FIND_STEPS),
                ("--batches-per-lr", b.lr_batches_per_lr, D.LR_FIND_BATCHES_PER_LR),
                ("--refine-steps", b.refine_steps, D.LR_FIND_REFINE_STEPS),
            ),
        }.get(command, ())
        return "".join(f" {flag} {value}" for flag, value, default in flags if value != default)

    def _folder_of(self, name: str) -> str | None:
        for step in self.steps:
            if step.name == name and step.verdict:
                return str(step.verdict["outputs"]["folder"])
        return None

    def _failed(self) -> str:
        failed = [s.name for s in self.steps if s.status in ("fail", "error")]
        return failed[-1] if failed else "?"

    # -- steps that depend on earlier ones ------------------------------------------------------

    def search_recipe(self) -> Recipe:
        """The recipe with the budget's trials/epochs and lr-find's LR range in the search space."""
        raw = self.recipe.to_dict()
        search = raw["search"]
        search["coarse"] = {"trials": self.budget.coarse_trials, "epochs": self.budget.coarse_epochs}
        search["fine"] = {"trials": self.budget.fine_trials, "epochs": self.budget.fine_epochs}
        space = search["space"]
        if not space:
            low, high = DEFAULT_WEIGHT_DECAY_RANGE
            space["optim.weight_decay"] = {"low": low, "high": high, "log": True}
        lr_range = lr_search_range(self.results.get("lr-find"))
        if lr_range is not None:
            space["optim.lr"] = {"low": lr_range[0], "high": lr_range[1], "log": True}
        elif "optim.lr" not in space:
            lr = self.recipe.optim.lr
            space["optim.lr"] = {"low": lr / 10, "high": lr * 10, "log": True}
        return parse_recipe(raw, source=self.recipe.source)

    def _search(self) -> Result:
        from nndiag.diagnostics import search
        from nndiag.training.experiment import Experiment

        recipe = self.search_recipe()
        options = search.SearchOptions(storage=str(self.folder / "search-journal.log"), study=f"{recipe.name}-babysit")
        result = search.run(Experiment.build(recipe), options, progress=search.trial_events(self.progress))
        result.recipe = recipe.to_dict()
        return result

    def best_recipe(self) -> Recipe:
        """The recipe with the search's best parameters (or the recipe itself without a search)."""
        result = self.results.get("search")
        params = (result.metrics.get("best_params") if result else None) or {}
        return self.recipe.with_overrides({**params, "train.epochs": self.budget.train_epochs})

    def lr_chosen(self) -> str | None:
        """What chose the LR the train step runs at: the search (its best trial searched optim.lr), else None."""
        result = self.results.get("search")
        params = (result.metrics.get("best_params") if result else None) or {}
        return "the search" if "optim.lr" in params else None

    def _train(self, exp: Any) -> Result:
        from nndiag.diagnostics import train
        from nndiag.training import engine
        from nndiag.training.experiment import Experiment
        from nndiag.training.splits import order_kept

        callbacks = [TrainerProgress(self.progress)] if self.progress is not None else []
        if self.own_objects:  # your own model trains for the budget's epochs at your optimizer's settings, and is handed back
            with engine.preserved(exp.model), order_kept(exp.data.train):
                return train.run(exp, epochs=self.budget.train_epochs, callbacks=callbacks)
        recipe = self.best_recipe()
        result = train.run(Experiment.build(recipe), lr_chosen=self.lr_chosen(), callbacks=callbacks)
        result.recipe = recipe.to_dict()
        return result

    def _curves(self) -> Result:
        from nndiag.diagnostics import curves

        folder = self._folder_of("train")
        if folder is None:
            raise BadInput("there is no training log to read (the train step did not run)", where="curves")
        return curves.run([Path(folder)], lr_chosen=self.lr_chosen())

    # -- the report ----------------------------------------------------------------------------

    def exit_code(self) -> int:
        """The worst step's: 3 if a step crashed, 2 if one could not run (bad input), 1 fail, 0 pass/warn."""
        if self.crashed:
            return EXIT_CRASH
        if any(step.state == "error" for step in self.steps):
            return EXIT_BAD_INPUT
        return EXIT_FAIL if self.record.status == "fail" else EXIT_OK

    def metrics(self) -> dict[str, Any]:
        """babysit's own metrics: the budget, and the numbers a user acts on next (the LR, the best trial, the final accuracy)."""
        metrics: dict[str, Any] = {"budget": self.budget.name}
        if self.choice is not None:
            metrics["threads"] = self.choice.count  # torch threads every step ran with (nndiag.training.threads)
        for key, source in (("suggested_lr", "lr-find"), ("best_params", "search"), ("best_val_acc", "search"), ("final_val_acc", "train")):
            value = self.results[source].metrics.get(key) if source in self.results else None
            if value is not None:
                metrics[f"{source}.{key}"] = value
        return metrics

    def write(self) -> dict[str, Any]:
        """report.md, report.html and summary.json (the same object `--json` prints); returns it."""
        return report.write(self.record, self.metrics(), title=self.recipe.name, budget=self.budget.name)


def lr_search_range(result: Result | None) -> tuple[float, float] | None:
    """lr-find's [lr_min, lr_max], widened LR_RANGE_WIDEN x each way, kept below the divergence LR."""
    if result is None or result.status == "fail":
        return None
    low, high = result.metrics.get("lr_min"), result.metrics.get("lr_max")
    if not low or not high or not (math.isfinite(low) and math.isfinite(high)):
        return None
    low, high = low / LR_RANGE_WIDEN, high * LR_RANGE_WIDEN
    diverged = result.metrics.get("lr_diverged")
    if diverged and math.isfinite(diverged):
        high = min(high, diverged)
    return (low, high) if low < high else None


def _check_data(exp: Any) -> Result:
    from nndiag.diagnostics import check_data
    from nndiag.training.splits import LoaderSplit

    val = exp.data.val if exp.data.val is not exp.data.train else None
    return check_data.run(
        exp.data.train,
        val,
        exp.model_classes(),
        seed=exp.recipe.seed,
        user_loader=isinstance(exp.data.train, LoaderSplit),
    )


def _check_loss(exp: Any, budget: Budget, progress: Progress | None) -> Result:
    from nndiag.diagnostics import check_loss

    return check_loss.run(exp, batches=budget.check_loss_batches, progress=progress)


def _overfit_small(exp: Any, budget: Budget, progress: Progress | None) -> Result:
    from nndiag.diagnostics import overfit_small

    return overfit_small.run(exp, batches=budget.overfit_batches, progress=progress)


def _lr_find(exp: Any, budget: Budget, progress: Progress | None) -> Result:
    from nndiag.diagnostics import lr_find

    return lr_find.run(
        exp, steps=budget.lr_steps, batches_per_lr=budget.lr_batches_per_lr, refine_steps=budget.refine_steps, progress=progress
    )


def _probe(exp: Any, progress: Progress | None) -> Result:
    from nndiag.diagnostics import probe

    return probe.run(exp, progress=progress)


# --------------------------------------------------------------------------------------------
# The whole run, as one Result (the CLI and the Python API)
# --------------------------------------------------------------------------------------------


@dataclass
class BabysitResult(Result):
    """babysit's Result. Its steps wrote their own run folders into `folder` as they went;
    `to_dict()` / `to_json()` give babysit's --json object (the contract's keys plus every step)."""

    summary: dict[str, Any] = field(default_factory=dict)  # the JSON verdict, as summary.json holds it
    folder: Path | None = None  # where babysit wrote its report and the steps' folders
    steps: list[Step] = field(default_factory=list)
    reports: dict[str, Path] = field(default_factory=dict)  # markdown, html
    code: int = EXIT_OK  # 3 a step crashed, 2 a step could not run, 1 fail, 0 pass/warn

    @property
    def status(self) -> str:
        return str(self.summary.get("status", self.verdict.status))

    @property
    def exit_code(self) -> int:
        return self.code

    def to_dict(self) -> dict[str, Any]:
        return self.summary

    def save(self, folder: str | Path | None = None, plots: bool = True) -> Path:
        """Copy babysit's folder to `folder` (it is already written; without a folder, return where it is)."""
        import shutil

        assert self.folder is not None
        if folder is None or Path(folder).resolve() == self.folder.resolve():
            return self.folder
        shutil.copytree(self.folder, Path(folder), dirs_exist_ok=True)
        return Path(folder)


def run_babysit(
    recipe: Recipe,
    source: str,
    *,
    budget: str = "standard",
    keep_going: bool = False,
    out: Path | None = None,
    plots: bool = True,
    progress: Progress | None = None,
    cli_args: str = "",
    make: Callable[[], Any] | None = None,
    threads: int | None = None,
) -> BabysitResult:
    """Run every step into `out` (default runs/<name>/babysit-<timestamp>/), write the report and summary.json.
    `make`: for your own objects, a function that builds their Experiment unchecked (`recipe` is then the one their
    options make: its name, seed and budget)."""
    from nndiag.findings import Finding, Verdict

    sitter = Babysitter(
        recipe,
        source,
        files.run_folder(recipe.name, "babysit", out),
        Budget.of(budget, recipe),
        keep_going=keep_going,
        plots=plots,
        progress=progress,
        threads=threads,
        cli_args=cli_args,
        make=make,
    )
    sitter.run()
    summary = sitter.write()
    reports = {"markdown": Path(summary["outputs"]["report_md"]), "html": Path(summary["outputs"]["report_html"])}
    findings = [
        Finding(f["code"], f["severity"], f"[{f['step']}] {f['message']}", f["advice"], f.get("evidence", {})) for f in summary["findings"]
    ]
    return BabysitResult(
        "babysit",
        Verdict(findings),
        metrics=summary["metrics"],
        context=sitter.context,
        recipe=recipe.to_dict(),
        name=recipe.name,
        source=source,
        outputs=summary["outputs"],
        summary=summary,
        folder=sitter.folder,
        steps=sitter.steps,
        reports=reports,
        code=sitter.exit_code(),
    )
