"""The `nndiag` command line. Thin on purpose: each command loads the recipe, builds the experiment,
runs one diagnostic through the Python API (the same function a Python user calls) and hands the result
to nndiag.output; `exits()` is the one place where errors become exit codes.

Nothing heavy is imported at module level: `nndiag --help` must not import torch.

May import: nndiag.version, nndiag.errors, nndiag.formatting, nndiag.codes, nndiag.findings, nndiag.result, nndiag.output,
nndiag.config, nndiag.training, nndiag.diagnostics, nndiag.diagnosis, nndiag.api.
"""

from __future__ import annotations

import contextlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, Iterator, Optional

import typer
from typer.core import TyperCommand, TyperGroup

from nndiag.diagnostics import defaults as D  # stdlib only, like findings
from nndiag.findings import (  # a stdlib-only module: start-up stays free of torch
    EXIT_BAD_INPUT,
    EXIT_CRASH,
    EXIT_FAIL,
    EXIT_INTERRUPTED,
    EXIT_OK,
)


class Command(TyperCommand):
    """Every nndiag command: help that shows what to type, not Python types. Options show a metavar (--set KEY=VALUE,
    --seed N, --out DIR), flags show none, and the usage line names arguments in capitals (RECIPE, [RECIPE], FILES...).
    Parameters are read by duck typing (param_type_name, is_flag): Typer's click differs between versions."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if param.param_type_name == "option" and param.metavar is None:
                param.metavar = "" if getattr(param, "is_flag", False) else _metavar(param)
            elif param.param_type_name == "argument":
                param.metavar = param.metavar or param.name.upper()
                param.display_type_rich = lambda ctx: None  # type: ignore[method-assign]  # the name says it (RECIPE, FILES)

    def get_help_option(self, ctx: Any) -> Any:
        return _no_metavar(super().get_help_option(ctx))

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                name = str(param.metavar) + ("..." if param.nargs != 1 else "")
                pieces.append(name if param.required else f"[{name}]")
        return pieces


class Group(TyperGroup):
    """The top level: --help and --version without a type beside them."""

    def get_help_option(self, ctx: Any) -> Any:
        return _no_metavar(super().get_help_option(ctx))


def _no_metavar(option: Any) -> Any:
    if option is not None and option.metavar is None:
        option.metavar = ""
    return option


def _metavar(param: Any) -> str:
    """An option's metavar when it gives none: N for a whole number, X for a real one, else its name in capitals
    (--mode MODE). The type is read from the default, or from Typer's or click's record of it (versions differ)."""
    kind: Any = type(param.default) if param.default is not None else None
    kind = kind or getattr(getattr(param, "type_descriptor", None), "annotation", None)  # Typer >= 0.2x (its own click)
    kind = kind or {"integer": int, "float": float}.get(getattr(getattr(param, "type", None), "name", ""))  # click's types
    return {int: "N", float: "X"}.get(kind, (param.name or "value").upper())


app = typer.Typer(
    name="nndiag",
    help="Neural-network training diagnostics: the babysitting recipe (check the initial loss, overfit a small "
    "sample, find a learning rate, search coarse then fine, read the curves, probe activations) as commands "
    f"that end in a verdict and an exit code: {EXIT_OK} pass or warn, {EXIT_FAIL} fail, {EXIT_BAD_INPUT} bad input, "
    f"{EXIT_CRASH} a crash (nndiag or your own model/data code; the traceback is on stderr), {EXIT_INTERRUPTED} "
    "interrupted (Ctrl-C).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    cls=Group,
)


def command(name: str, panel: str) -> Callable[[Callable[..., Any]], Any]:
    return app.command(name, rich_help_panel=panel, cls=Command)


STEPS, REFERENCE, RECIPES = "The recipe, step by step", "Reference", "Recipes"


def _version(value: bool) -> None:
    if value:
        from nndiag.version import __version__

        sys.stdout.write(f"nndiag {__version__}\n")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, metavar="", help="Print the version and exit.")
    ] = False,
) -> None:
    pass


# -- options every recipe command takes -------------------------------------------------------

RecipeArg = Annotated[
    Path,
    typer.Argument(
        help="The recipe: a YAML file such as recipes/quickstart.yaml, or the name of a bundled recipe (nndiag recipes).",
        show_default=False,
        metavar="RECIPE",
    ),
]
DeviceOpt = Annotated[
    Optional[str], typer.Option("--device", metavar="DEVICE", help="Override the recipe's device: auto, cpu, cuda, cuda:1, mps.")
]
SeedOpt = Annotated[Optional[int], typer.Option("--seed", metavar="N", help="Override the recipe's seed.")]
SetOpt = Annotated[
    Optional[list[str]],
    typer.Option("--set", metavar="KEY=VALUE", help="Override any recipe key, e.g. --set optim.lr=0.1 (repeatable)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print exactly one JSON verdict object on stdout (and nothing else).")]
NoPlotsOpt = Annotated[bool, typer.Option("--no-plots", help="Skip the PNG figures.")]
ThreadsOpt = Annotated[
    Optional[int],
    typer.Option(
        "--threads",
        min=1,
        metavar="N",
        help="torch CPU threads (default: chosen for the model: 1 for small models, torch's count for large ones; printed on stderr).",
    ),
]
ProgressOpt = Annotated[
    bool,
    typer.Option(
        "--progress/--no-progress",
        help="Show progress on stderr (steps done, loss, time left); off with --json. Not a terminal: a line every 15 s.",
    ),
]


def out_option(folder: str) -> Any:
    """The --out option of a command that writes `folder` by default."""
    return Annotated[
        Optional[Path], typer.Option("--out", metavar="DIR", help=f"Write the run folder here instead of {folder}.", show_default=False)
    ]


@dataclass
class Common:
    recipe: Path
    device: str | None = None
    seed: int | None = None
    set: list[str] | None = None
    out: Path | None = None
    json: bool = False
    no_plots: bool = False
    threads: int | None = None
    progress: bool = True


MAX_MESSAGE = 2000  # characters of a bad-input paragraph at most


def err_console() -> Any:
    from rich.console import Console

    return Console(stderr=True, highlight=False)


@contextlib.contextmanager
def exits(interrupted: str = "") -> Iterator[None]:
    """The one place where what goes wrong in a command becomes its exit code: bad input (nndiag.BadInput,
    raised by nndiag or by a command itself) is one paragraph on stderr and exit 2; Ctrl-C is one line
    (`interrupted`, with what is kept) and exit 130. A crash (any other exception) goes on to `main`: exit 3;
    so does SystemExit or GeneratorExit raised by the user's code while a command runs it (nndiag ends a command
    with typer.Exit, never SystemExit), which Python would otherwise turn into a silent exit 0 or 7.
    Every command runs inside it."""
    from nndiag.errors import BadInput, CodeExited

    try:
        yield
    except BadInput as exc:
        raise bad_input(str(exc)) from None
    except (SystemExit, GeneratorExit) as exc:
        raise CodeExited(exc) from exc
    except KeyboardInterrupt:
        err_console().print(f"[yellow]interrupted{': ' + interrupted if interrupted else ''}[/]")
        raise typer.Exit(EXIT_INTERRUPTED) from None


def bad_input(message: str) -> typer.Exit:
    """Bad input: the one-paragraph message on stderr; the caller raises the returned Exit(2)."""
    from rich.markup import escape

    if len(message) > MAX_MESSAGE:  # one paragraph, even when what went wrong quotes something huge
        message = f"{message[: MAX_MESSAGE - 40]}... ({len(message) - MAX_MESSAGE + 40:,} more characters)"
    err_console().print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    return typer.Exit(EXIT_BAD_INPUT)


def load(common: Common) -> Any:
    """The recipe with command-line overrides applied (precedence: flag > --set > YAML > default)."""
    from nndiag import api

    return api.load(common.recipe, common.set, common.device, common.seed)


def overrides(common: Common) -> dict[str, Any]:
    """The recipe, its overrides and the thread count, as the Python API takes them."""
    return {"set": common.set, "device": common.device, "seed": common.seed, "threads": common.threads}


def progress_bar(as_json: bool, bars: bool = True) -> Any:
    """Progress on stderr for a command (None with --json): the thread choice and other notes, and bars unless --no-progress."""
    if as_json:
        return None
    from nndiag.output.progress import ProgressBar

    return ProgressBar(bars=bars)


def note_bundled(recipe: Path, as_json: bool) -> None:
    """Say which file a bare recipe name stands for (`nndiag check-loss quickstart`)."""
    if as_json or recipe.is_file():
        return
    from nndiag.config.recipe import resolve_recipe_path
    from nndiag.errors import BadInput

    try:
        err_console().print(f"[dim]using the bundled recipe {resolve_recipe_path(recipe)}[/]")
    except BadInput:
        pass  # the command itself reports the missing file


def execute(command: str, common: Common, work: Callable[[Any], Any], interrupted: str = "") -> None:
    """Run one diagnostic through the Python API (`work(progress)`, with the command's progress on stderr) -> write
    the run folder -> print -> exit with the verdict's code."""
    note_bundled(common.recipe, common.json)
    bar = progress_bar(common.json, common.progress)
    try:
        with exits(interrupted):
            result = work(bar or False)
    finally:
        if bar is not None:
            bar.close()
    report(result, command, common.out, common.json, common.no_plots)


def report(result: Any, folder_name: str, out: Path | None, as_json: bool, no_plots: bool) -> None:
    """Write the run folder (`out`, else runs/<result's name>/<folder_name>-<timestamp>/), print the verdict
    (`--json`: exactly one JSON object on stdout), and exit with the verdict's code."""
    from nndiag.output import files

    with exits():
        folder = files.run_folder(result.name, folder_name, out)
        verdict = files.write_run(result, folder, plots=not no_plots)
    finish(result, verdict, as_json, folder)


def emit_json(verdict: dict[str, Any]) -> None:
    """The --json contract: exactly one JSON object on stdout."""
    sys.stdout.write(json.dumps(verdict) + "\n")


def finish(result: Any, verdict: dict[str, Any], as_json: bool, folder: Path | None) -> None:
    if as_json:
        emit_json(verdict)
    else:
        from rich.console import Console

        from nndiag.output import terminal

        terminal.render(result, Console(), folder)
    raise typer.Exit(result.exit_code)


# -- commands -----------------------------------------------------------------------------------


@command("check-data", STEPS)
def check_data(
    recipe: RecipeArg,
    device: DeviceOpt = None,
    seed: SeedOpt = None,
    set: SetOpt = None,
    out: out_option("runs/<name>/check-data-<timestamp>/") = None,
    json: JsonOpt = False,
    no_plots: NoPlotsOpt = False,
) -> None:
    """Step 0: check the data before the model sees it: NaN/Inf, labels outside the model's outputs, class balance and the
    majority baseline, duplicates and train/validation overlap, distinct examples, constant features, input scale, labels
    that do not depend on the inputs.

    Example: nndiag check-data recipes/quickstart.yaml --json
    """
    common = Common(recipe, device, seed, set, out, json, no_plots, progress=False)

    def work(bar: Any) -> Any:
        from nndiag import api

        return api.check_data(recipe, set=set, device=device, seed=seed)  # nothing trains: no --threads, no bars

    execute("check-data", common, work)


@command("check-loss", STEPS)
def check_loss(
    recipe: RecipeArg,
    batches: Annotated[int, typer.Option(min=1, help="Training batches to measure at initialisation.")] = D.CHECK_LOSS_BATCHES,
    tolerance: Annotated[
        float,
        typer.Option(min=0.01, help="Allowed relative excess over the expected loss (and the same log-ratio below); 1.0 = within 2x."),
    ] = D.CHECK_LOSS_TOLERANCE,
    expected: Annotated[
        Optional[float],
        typer.Option(help="The loss an untrained model should have, when nndiag cannot know it (e.g. a custom step without logits)."),
    ] = None,
    device: DeviceOpt = None,
    seed: SeedOpt = None,
    set: SetOpt = None,
    threads: ThreadsOpt = None,
    progress: ProgressOpt = True,
    out: out_option("runs/<name>/check-loss-<timestamp>/") = None,
    json: JsonOpt = False,
    no_plots: NoPlotsOpt = False,
) -> None:
    """Step 1: is the loss at initialisation what the loss function predicts (ln C for softmax)? Regularization off.

    Example: nndiag check-loss recipes/quickstart.yaml --json
    """
    common = Common(recipe, device, seed, set, out, json, no_plots, threads, progress)

    def work(bar: Any) -> Any:
        from nndiag import api

        return api.check_loss(recipe, batches=batches, tolerance=tolerance, expected=expected, progress=bar, **overrides(common))

    execute("check-loss", common, work)


@command("overfit-small", STEPS)
def overfit_small(
    recipe: RecipeArg,
    batches: Annotated[int, typer.Option(min=1, help="Minibatches in the fixed subset (the notes say 5-10).")] = D.OVERFIT_BATCHES,
    steps: Annotated[int, typer.Option(min=1, help="Optimizer steps at most; stops as soon as it passes.")] = D.OVERFIT_STEPS,
    target: Annotated[
        float,
        typer.Option(min=1e-6, max=0.99, help="Pass when the loss falls to this fraction of its initial value (and accuracy hits 100%)."),
    ] = D.OVERFIT_TARGET,
    device: DeviceOpt = None,
    seed: SeedOpt = None,
    set: SetOpt = None,
    threads: ThreadsOpt = None,
    progress: ProgressOpt = True,
    out: out_option("runs/<name>/overfit-small-<timestamp>/") = None,
    json: JsonOpt = False,
    no_plots: NoPlotsOpt = False,
) -> None:
    """Step 2: can the model memorise a tiny sample (100% training accuracy, loss near 0)? Regularization off.

    Example: nndiag overfit-small recipes/quickstart.yaml --batches 5 --steps 300
    """
    common = Common(recipe, device, seed, set, out, json, no_plots, threads, progress)

    def work(bar: Any) -> Any:
        from nndiag import api

        return api.overfit_small(recipe, batches=batches, steps=steps, target=target, progress=bar, **overrides(common))

    execute("overfit-small", common, work)


@command("lr-find", STEPS)
def lr_find(
    recipe: RecipeArg,
    start: Annotated[float, typer.Option(help="First LR (> 0) of the range test.")] = D.LR_FIND_START,
    end: Annotated[float, typer.Option(help="Last LR of the range test.")] = D.LR_FIND_END,
    steps: Annotated[int, typer.Option(min=1, help="LR points in the range test.")] = D.LR_FIND_STEPS,
    mode: Annotated[str, typer.Option(help="LR spacing: exp (geometric) or linear.")] = D.LR_FIND_MODE,
    batches_per_lr: Annotated[
        int, typer.Option(min=1, help="Optimizer steps (batches) at each LR point; the point's loss is their mean.")
    ] = D.LR_FIND_BATCHES_PER_LR,
    candidates: Annotated[
        Optional[str], typer.Option(help="Candidates mode: comma-separated LRs to train at, e.g. 1e-1,1e-2,1e-3,1e-4.")
    ] = None,
    candidate_steps: Annotated[int, typer.Option(min=1, help="Iterations per candidate LR (candidates mode).")] = D.LR_FIND_CANDIDATE_STEPS,
    refine_steps: Annotated[
        int, typer.Option(min=0, help="Iterations per trial LR of the refine stage (0: the range test's suggestion is final).")
    ] = D.LR_FIND_REFINE_STEPS,
    apply: Annotated[
        bool,
        typer.Option("--apply", help="Write the recipe with optim.lr set to the suggestion (recipe.lr-applied.yaml in the run folder)."),
    ] = False,
    device: DeviceOpt = None,
    seed: SeedOpt = None,
    set: SetOpt = None,
    threads: ThreadsOpt = None,
    progress: ProgressOpt = True,
    out: out_option("runs/<name>/lr-find-<timestamp>/") = None,
    json: JsonOpt = False,
    no_plots: NoPlotsOpt = False,
) -> None:
    """Step 3: find a learning rate that makes the loss drop (LR range test, or the notes' candidates mode).

    Example: nndiag lr-find recipes/quickstart.yaml --apply
    Example: nndiag lr-find recipes/quickstart.yaml --candidates 1e-1,1e-2,1e-3,1e-4
    """
    common = Common(recipe, device, seed, set, out, json, no_plots, threads, progress)

    def work(bar: Any) -> Any:
        from nndiag import api
        from nndiag.diagnostics.lr_find import parse_candidates

        return api.lr_find(
            recipe,
            start=start,
            end=end,
            steps=steps,
            mode=mode,
            batches_per_lr=batches_per_lr,
            candidates=parse_candidates(candidates),
            candidate_steps=candidate_steps,
            refine_steps=refine_steps,
            apply=apply,
            progress=bar,
            **overrides(common),
        )

    execute("lr-find", common, work)


@command("search", STEPS)
def search(
    recipe: RecipeArg,
    random: Annotated[
        bool, typer.Option("--random/--grid", help="Random search (default; Bergstra & Bengio 2012) or an even grid, for comparison.")
    ] = True,
    log_space: Annotated[
        bool,
        typer.Option(
            "--log-space/--linear-space",
            help="Sample `log: true` parameters log-uniformly (default), or every range uniformly in linear space.",
        ),
    ] = True,
    stages: Annotated[
        str, typer.Option(help="coarse, fine or both. `fine` alone narrows around the coarse results already in the study.")
    ] = "both",
    trials: Annotated[
        Optional[int], typer.Option(min=1, help="Trials per stage (overrides search.coarse.trials and search.fine.trials).")
    ] = None,
    coarse_trials: Annotated[Optional[int], typer.Option(min=1, help="Trials in the coarse stage (overrides --trials).")] = None,
    fine_trials: Annotated[Optional[int], typer.Option(min=1, help="Trials in the fine stage (overrides --trials).")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Local worker processes sharing the study (one per GPU when there are several).")] = 1,
    storage: Annotated[
        Optional[str],
        typer.Option(
            help="Where the study lives: a journal file (default runs/<name>/search-journal.log, or DIR/search-journal.log with --out) or postgresql://USER:PASS@HOST/DB, mysql://..."
        ),
    ] = None,
    study: Annotated[
        Optional[str],
        typer.Option(help="Study name (default: the recipe name). Processes with the same --storage and --study share the work."),
    ] = None,
    threads: Annotated[
        Optional[int],
        typer.Option(
            min=1,
            metavar="N",
            help="torch CPU threads per process (default: chosen for the model, at most the cores divided by --workers).",
        ),
    ] = None,
    device: DeviceOpt = None,
    seed: SeedOpt = None,
    set: SetOpt = None,
    progress: ProgressOpt = True,
    out: out_option("runs/<name>/search-<timestamp>/ (the study's journal: DIR/search-journal.log)") = None,
    json: JsonOpt = False,
    no_plots: NoPlotsOpt = False,
) -> None:
    """Steps 4-5: coarse random search in log space (1-5 epochs), then a fine search around the best trials (longer, no LR decay).

    Re-running the same command resumes the study: no trial is lost or run twice.

    Example: nndiag search recipes/quickstart.yaml --random --log-space --workers 2
    """
    common = Common(recipe, device, seed, set, out, json, no_plots, threads, progress)

    def work(bar: Any) -> Any:
        from nndiag import api

        where = storage or (str(out / "search-journal.log") if out is not None else None)  # default: runs/<name>/search-journal.log
        return api.search(
            recipe,
            random=random,
            log_space=log_space,
            stages=stages,
            trials=trials,
            coarse_trials=coarse_trials,
            fine_trials=fine_trials,
            workers=workers,
            storage=where,
            study=study,
            progress=bar,
            **overrides(common),
        )

    execute("search", common, work, interrupted="the study keeps every finished trial; re-run the same command to resume")


@command("train", STEPS)
def train(
    recipe: RecipeArg,
    epochs: Annotated[Optional[int], typer.Option(min=1, help="Override train.epochs.")] = None,
    max_steps: Annotated[
        Optional[int],
        typer.Option("--max-steps", min=1, help="Stop after this many optimizer steps (smoke runs); overrides train.max_steps."),
    ] = None,
    progress: ProgressOpt = True,
    probe_every: Annotated[
        Optional[int],
        typer.Option(
            "--probe-every",
            min=1,
            help="Probe per-layer activations and gradients every N steps (probe.csv, probe findings); measured cost at N=50: a few percent (benchmarks/results/probe_overhead.md).",
        ),
    ] = None,
    device: DeviceOpt = None,
    seed: SeedOpt = None,
    set: SetOpt = None,
    threads: ThreadsOpt = None,
    out: out_option("runs/<name>/train-<timestamp>/") = None,
    json: JsonOpt = False,
    no_plots: NoPlotsOpt = False,
) -> None:
    """Train with the recipe (optimizer, schedule, regularization, early stopping); log the curves to CSV,
    keep the best validation weights (best.pt), and end with the `curves` verdict on its own log.

    Example: nndiag train recipes/quickstart.yaml --epochs 20
    """
    common = Common(recipe, device, seed, set, out, json, no_plots, threads, progress)

    def work(bar: Any) -> Any:
        from nndiag import api
        from nndiag.output import files

        log = files.TrainLog(lambda name: files.run_folder(name, "train", out), source=str(recipe))  # the folder, from the first step
        result = api.train(
            recipe, epochs=epochs, max_steps=max_steps, probe_every=probe_every, callbacks=[log], progress=bar, **overrides(common)
        )
        common.out = log.folder  # the verdict goes into the folder the logs are in
        return result

    execute("train", common, work, interrupted="the run folder keeps the logs so far (its summary.json says interrupted)")


@command("curves", STEPS)
def curves(
    files: Annotated[
        list[Path],
        typer.Argument(
            help="CSV files (nndiag's train_steps.csv / train_epochs.csv, Lightning's metrics.csv, any CSV with "
            "a step or epoch column and loss columns), TensorBoard event files, or folders (a run "
            "folder, or one holding several: lightning_logs/, runs/; diagnosed run by run).",
            show_default=False,
        ),
    ],
    x: Annotated[
        Optional[str], typer.Option("--x", help="The x column or tag (default: step, global_step, iteration, ..., epoch).")
    ] = None,
    train: Annotated[
        Optional[str], typer.Option("--train", help="The training-loss column or tag (default: train_loss, train/loss, loss, ...).")
    ] = None,
    val: Annotated[
        Optional[str], typer.Option("--val", help="The validation-loss column or tag (default: val_loss, val/loss, eval/loss, ...).")
    ] = None,
    train_acc: Annotated[
        Optional[str], typer.Option("--train-acc", help="The training-accuracy column or tag (default: train_acc, acc, accuracy, ...).")
    ] = None,
    val_acc: Annotated[
        Optional[str],
        typer.Option("--val-acc", help="The validation-accuracy column or tag (default: val_acc, val/acc, eval/accuracy, ...)."),
    ] = None,
    out: out_option("runs/curves/curves-<timestamp>/") = None,
    json: JsonOpt = False,
    no_plots: NoPlotsOpt = False,
) -> None:
    """Step 6: read loss curves from CSV or TensorBoard logs and diagnose them (overfitting, underfitting, still
    improving, diverged, plateau, noisy, LR too low/high, bad init, not generalizing). No recipe needed.

    Example: nndiag curves tests/data/curves/c-healthy-digits-mlp/metrics.csv --json   (a Lightning CSV log in a clone)
    Example: nndiag curves runs/quickstart/   (every run folder that `nndiag train recipes/quickstart.yaml` wrote)
    """
    with exits():
        from nndiag import api

        result = api.curves(list(files), x=x, train=train, val=val, train_acc=train_acc, val_acc=val_acc)
    report(result, "curves", out, json, no_plots)


@command("probe", STEPS)
def probe(
    recipe: Annotated[
        Optional[Path], typer.Argument(help="The recipe (YAML). Not needed with --init-experiment.", show_default=False)
    ] = None,
    batches: Annotated[int, typer.Option(min=1, help="Batches probed forward and backward at the current weights.")] = D.PROBE_BATCHES,
    steps: Annotated[int, typer.Option(min=0, help="Optimizer steps afterwards, for the update/weight ratio (0 = skip).")] = D.PROBE_STEPS,
    init_experiment: Annotated[
        bool,
        typer.Option("--init-experiment", help="Run the weight-init lecture's experiment (no recipe): tanh/ReLU stacks on Gaussian input."),
    ] = False,
    width: Annotated[int, typer.Option(min=2, help="--init-experiment: units per layer (the lecture's 4096).")] = D.INIT_WIDTH,
    depth: Annotated[int, typer.Option(min=1, help="--init-experiment: hidden layers (the lecture's 6).")] = D.INIT_DEPTH,
    samples: Annotated[int, typer.Option(min=1, help="--init-experiment: rows of Gaussian input (the lecture's 16).")] = D.INIT_SAMPLES,
    activation: Annotated[
        Optional[list[str]], typer.Option("--activation", help="--init-experiment: activation(s) to try, e.g. tanh, relu (repeatable).")
    ] = None,
    init: Annotated[
        Optional[list[str]],
        typer.Option("--init", help="--init-experiment: xavier, kaiming, or a weight std at width 4096 such as 0.01 (repeatable)."),
    ] = None,
    device: DeviceOpt = None,
    seed: SeedOpt = None,
    set: SetOpt = None,
    threads: ThreadsOpt = None,
    progress: ProgressOpt = True,
    out: out_option("runs/<name>/probe-<timestamp>/ (--init-experiment: runs/init-experiment/probe-<timestamp>/)") = None,
    json: JsonOpt = False,
    no_plots: NoPlotsOpt = False,
) -> None:
    """Weight-init lecture: per-layer activation mean/std, saturation, dead ReLUs, gradient norms and update/weight ratios.

    Examples: nndiag probe recipes/quickstart.yaml --json
              nndiag probe --init-experiment --width 1024
              nndiag probe --init-experiment --init kaiming --activation relu --depth 10
    """
    if init_experiment:
        _probe_init_experiment(
            width, depth, samples, init, activation, seed, Common(Path(), None, seed, None, out, json, no_plots, threads, progress)
        )
        return
    if recipe is None:
        raise bad_input("probe needs a RECIPE (a YAML file such as recipes/quickstart.yaml), or --init-experiment")
    if activation or init:
        raise bad_input(
            "--activation and --init belong to --init-experiment; to probe a recipe with another init use --set model.args.init=xavier"
        )
    common = Common(recipe, device, seed, set, out, json, no_plots, threads, progress)

    def work(bar: Any) -> Any:
        from nndiag import api

        return api.probe(recipe, batches=batches, steps=steps, progress=bar, **overrides(common))

    execute("probe", common, work)


def _probe_init_experiment(
    width: int, depth: int, samples: int, inits: list[str] | None, activations: list[str] | None, seed: int | None, common: Common
) -> None:
    bar = progress_bar(common.json, common.progress)
    try:
        with exits():
            from nndiag import api

            result = api.init_experiment(
                width=width,
                depth=depth,
                samples=samples,
                init=inits,
                activation=activations,
                seed=seed or 0,
                threads=common.threads,
                progress=bar or False,
            )
    finally:
        if bar is not None:
            bar.close()
    report(result, "probe", common.out, common.json, common.no_plots)


@command("babysit", STEPS)
def babysit(
    recipe: RecipeArg,
    budget: Annotated[
        str,
        typer.Option(
            "--budget",
            metavar="BUDGET",
            help="How much every step spends: quick (fewer lr-find points, trials, epochs) | standard (the recipe as written) | thorough.",
        ),
    ] = "standard",
    keep_going: Annotated[bool, typer.Option("--continue", help="Run every step even after a failing gate.")] = False,
    device: DeviceOpt = None,
    seed: SeedOpt = None,
    set: SetOpt = None,
    threads: ThreadsOpt = None,
    progress: ProgressOpt = True,
    out: out_option("runs/<name>/babysit-<timestamp>/ (each step in its sub-folder, report.md, report.html)") = None,
    json: JsonOpt = False,
    no_plots: NoPlotsOpt = False,
) -> None:
    """All of it, in order: check-loss -> overfit-small -> lr-find -> search (coarse, fine) -> train the best -> curves,
    with a probe where a step fails. Stops at the first failing gate; writes report.md and report.html.

    Example: nndiag babysit recipes/quickstart.yaml --budget quick
    """
    common = Common(recipe, device, seed, set, out, json, no_plots, threads, progress)
    note_bundled(recipe, json)
    bar = progress_bar(json, progress)
    try:
        with exits():
            from nndiag import api

            result = api.babysit(
                recipe, budget=budget, keep_going=keep_going, out=out, plots=not no_plots, progress=bar or False, **overrides(common)
            )
    finally:
        if bar is not None:
            bar.close()
    if json:
        emit_json(result.to_dict())
    else:
        from rich.console import Console

        from nndiag.diagnosis.report import render_terminal

        render_terminal(result.steps, result.reports, Console())
    raise typer.Exit(result.exit_code)


# -- tools around the recipe -------------------------------------------------------------------


@command("explain", REFERENCE)
def explain(
    code: Annotated[
        Optional[str],
        typer.Argument(help="A finding code such as initial-loss-high; without one, every code is listed.", show_default=False),
    ] = None,
) -> None:
    """What a finding code means, its rule with the thresholds in use now, where the rule comes from, and what to do.

    Example: nndiag explain dead-relu
    """
    from rich.console import Console
    from rich.markup import escape
    from rich.padding import Padding

    from nndiag import codes

    console = Console(highlight=False)
    if code is None:
        from rich.table import Table

        table = Table(title="finding codes (nndiag explain CODE for one)", title_justify="left")
        for column in ("command", "code", "severity", "meaning"):
            table.add_column(column, no_wrap=column != "meaning", overflow="fold")
        for command, names in codes.codes_by_command().items():
            for name in names:
                table.add_row(command, name, "/".join(codes.severities(name)), escape(codes.REGISTRY[name].meaning))
        console.print(table)
        return
    entry = codes.REGISTRY.get(code)
    if entry is None:
        near = codes.nearest(code)
        hint = f"; did you mean {', '.join(near)}?" if near else ""
        raise bad_input(f"unknown finding code {code!r}{hint} (`nndiag explain` lists every code)")
    console.print(f"[bold]{entry.code}[/]  [dim]({', '.join(entry.commands)} · {escape(entry.render(entry.severity))})[/]\n")
    console.print(escape(entry.meaning) + "\n")
    for title, text in (("Rule", entry.rule), ("Source", entry.source), ("What to do", entry.advice)):
        console.print(f"[bold]{title}[/]")
        console.print(Padding(escape(entry.render(text)), (0, 0, 1, 2)))
    values = codes.thresholds(code)
    if values:
        console.print("[bold]Thresholds in use[/] (module constants)")
        for name, value in values.items():
            module, constant = name.split(".")
            console.print(f"  {constant} = {value!r}  [dim](nndiag/{codes.MODULES[module]})[/]")


@command("validate", RECIPES)
def validate(
    recipe: RecipeArg,
    build: Annotated[bool, typer.Option("--build/--no-build", help="Also build the data and model and run one forward pass.")] = True,
    device: DeviceOpt = None,
    seed: SeedOpt = None,
    set: SetOpt = None,
) -> None:
    """Check a recipe: keys, types, values, targets, and (with --build) that the model can score the data.

    Example: nndiag validate recipes/quickstart.yaml
    """

    common = Common(recipe, device, seed, set)
    with exits():
        loaded = load(common)
        shown = recipe if recipe.is_file() else loaded.source  # a bare name: the bundled file it stands for
        lines = [f"recipe {shown} is valid: name {loaded.name!r}, seed {loaded.seed}"]
        if build:
            from nndiag.training.experiment import Experiment

            lines += [f"{k}: {v}" for k, v in Experiment.build(loaded).describe().items()]
    from rich.console import Console

    Console().print("\n".join(lines))


@command("recipes", RECIPES)
def recipes(
    json_out: Annotated[bool, typer.Option("--json", help="Print a JSON list (name, file, description, command, commands).")] = False,
) -> None:
    """List the bundled recipes: what each is for and the command that runs it.

    Example: nndiag recipes --json | jq -r '.[].command'
    """
    from nndiag.config.library import bundled, recipes_dir

    with exits():
        found = bundled()
        folder = recipes_dir()
    if json_out:
        sys.stdout.write(json.dumps([r.to_dict() for r in found]) + "\n")
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"bundled recipes in {folder}", title_justify="left", show_lines=True)
    table.add_column("name", style="bold", no_wrap=True)
    table.add_column("what it is for, and the command that runs it")
    for r in found:
        table.add_row(r.name, f"{escape(r.description)}\n[cyan]{escape(r.command)}[/]")
    console = Console()
    console.print(table)
    console.print("Copy one to start from: nndiag init my-recipe.yaml --from quickstart")


@command("init", RECIPES)
def init(
    path: Annotated[
        Path, typer.Argument(help="Where to write the recipe: a .yaml file, or a folder (created if needed) that gets recipe.yaml.")
    ] = Path("recipe.yaml"),
    with_targets: Annotated[
        bool,
        typer.Option(
            "--with-targets",
            help="Also write example my_data.py and my_models.py next to it (a synthetic dataset and an MLP that work as is).",
        ),
    ] = False,
    from_: Annotated[
        Optional[str], typer.Option("--from", help="Start from a bundled recipe instead (a name from `nndiag recipes`).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing files.")] = False,
) -> None:
    """Write a starter recipe for your own model and data, every key with a one-line comment.

    Example: nndiag init my-recipe.yaml --with-targets && nndiag check-loss my-recipe.yaml
    """
    from nndiag.config.library import find, init_files

    if path.is_dir() or path.suffix not in (".yaml", ".yml"):  # a folder (new or existing) gets recipe.yaml
        path = path / "recipe.yaml"
    with exits():
        files = init_files(path, with_targets, find(from_) if from_ else None)
    existing = [str(p) for p in files if p.exists()]
    if existing and not force:
        raise bad_input(
            f"{', '.join(existing)} already exist{'s' if len(existing) == 1 else ''}; nothing written (use --force to overwrite)"
        )
    try:
        for file, text in files.items():
            file.parent.mkdir(parents=True, exist_ok=True)
            file.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise bad_input(f"cannot write {exc.filename}: {exc.strerror}") from None
    from rich.console import Console

    console = Console(highlight=False)
    for file in files:
        console.print(f"wrote {file}")
    if with_targets or from_:
        console.print(f"next: nndiag validate {path} && nndiag check-loss {path}")
    else:
        console.print(
            f"next: write my_data.py (make -> (train, val)) and my_models.py (build -> nn.Module) next to it, "
            f"or run `nndiag init {path} --with-targets --force` for working examples; then nndiag validate {path}"
        )


def main() -> None:
    """The console script: exit 3 (with the traceback) when something crashes, never 1, so that CI
    can tell a crash from a failing verdict."""
    try:
        app()
    except KeyboardInterrupt:  # a second Ctrl-C after a command's exits() said "interrupted" (the one place that says it)
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:  # a bug in nndiag, or in the user's own model/data code
        import traceback

        traceback.print_exc()
        from rich.markup import escape

        from nndiag.errors import CodeExited

        if isinstance(exc, CodeExited):
            err_console().print(f"[bold red]error:[/] {escape(str(exc))}; exit code {EXIT_CRASH}.", soft_wrap=True)
        else:
            err_console().print(
                f"[bold red]nndiag crashed:[/] {type(exc).__name__}: {escape(str(exc))}. This is a bug in nndiag or in your own "
                f"model/data code (the traceback above says which); exit code {EXIT_CRASH}.",
                soft_wrap=True,
            )
        sys.exit(EXIT_CRASH)
    finally:
        import signal

        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the command is over: a late Ctrl-C must not cut the exit short


if __name__ == "__main__":
    main()
