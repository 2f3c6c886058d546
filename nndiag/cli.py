"""The `nndiag` command line. Thin on purpose: each command loads the recipe, builds the experiment,
runs one diagnostic and hands the result to `report`.

Nothing heavy is imported at module level: `nndiag --help` must not import torch.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

app = typer.Typer(
    name="nndiag",
    help="Neural-network training diagnostics: the babysitting recipe (check the initial loss, overfit a small "
    "sample, find a learning rate, search coarse then fine, read the curves, probe activations) as commands "
    "that end in a verdict and an exit code (0 pass/warn, 1 fail, 2 bad input).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

EXIT_BAD_INPUT = 2  # same as findings.EXIT_BAD_INPUT; repeated here to keep start-up free of imports

# -- options every recipe command takes -------------------------------------------------------

RecipeArg = Annotated[Path, typer.Argument(help="The recipe: a YAML file such as recipes/quickstart.yaml.", show_default=False)]
DeviceOpt = Annotated[Optional[str], typer.Option("--device", help="Override the recipe's device: auto, cpu, cuda, cuda:1, mps.")]
SeedOpt = Annotated[Optional[int], typer.Option("--seed", help="Override the recipe's seed.")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Override any recipe key, e.g. --set optim.lr=0.1 (repeatable).")]
OutOpt = Annotated[Optional[Path], typer.Option("--out", help="Write results here instead of runs/<name>/<command>-<timestamp>/.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print exactly one JSON verdict object on stdout (and nothing else).")]
NoPlotsOpt = Annotated[bool, typer.Option("--no-plots", help="Skip the PNG figures.")]


@dataclass
class Common:
    recipe: Path
    device: str | None = None
    seed: int | None = None
    set: list[str] | None = None
    out: Path | None = None
    json: bool = False
    no_plots: bool = False


def err_console() -> Any:
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def bad_input(message: str) -> typer.Exit:
    """Print a one-paragraph error on stderr; the caller raises the returned Exit(2)."""
    err_console().print(f"[bold red]error:[/] {message}", soft_wrap=True)
    return typer.Exit(EXIT_BAD_INPUT)


def load(common: Common) -> Any:
    """The recipe with command-line overrides applied (precedence: flag > --set > YAML > default)."""
    from nndiag.recipe import load_recipe

    overrides = list(common.set or [])
    if common.device is not None:
        overrides.append(f"device={common.device}")
    if common.seed is not None:
        overrides.append(f"seed={common.seed}")
    return load_recipe(common.recipe, overrides)


def execute(command: str, common: Common, work: Callable[[Any], Any]) -> None:
    """Load -> build -> run one diagnostic -> write the run folder -> print -> exit with the verdict's code."""
    from nndiag.errors import BadInput

    try:
        recipe = load(common)
        from nndiag import report
        from nndiag.experiment import Experiment

        experiment = Experiment.build(recipe)
        result = work(experiment)
        result.recipe = recipe.to_dict()
        result.context = {**experiment.describe(), **result.context}
        folder = report.run_folder(recipe.name, command, common.out)
        verdict = report.write_run(result, folder, str(common.recipe), plots=not common.no_plots)
    except BadInput as exc:
        raise bad_input(str(exc)) from None
    except KeyboardInterrupt:
        err_console().print("[yellow]interrupted[/]")
        raise typer.Exit(130) from None
    finish(result, verdict, common.json, folder)


def finish(result: Any, verdict: dict[str, Any], as_json: bool, folder: Path | None) -> None:
    from nndiag import report

    if as_json:
        sys.stdout.write(json.dumps(verdict) + "\n")
    else:
        from rich.console import Console

        report.render(result, Console(), folder)
    raise typer.Exit(result.verdict.exit_code)


# -- commands -----------------------------------------------------------------------------------


@app.command("check-loss")
def check_loss(
    recipe: RecipeArg,
    batches: Annotated[int, typer.Option(min=1, help="Training batches to measure at initialisation.")] = 10,
    tolerance: Annotated[float, typer.Option(min=0.01, help="Allowed relative excess over the expected loss (and the same log-ratio below).")] = 0.5,
    device: DeviceOpt = None, seed: SeedOpt = None, set: SetOpt = None, out: OutOpt = None, json: JsonOpt = False, no_plots: NoPlotsOpt = False,
) -> None:
    """Step 1: is the loss at initialisation what the loss function predicts (ln C for softmax)? Regularization off.

    Example: nndiag check-loss recipes/quickstart.yaml --json
    """
    common = Common(recipe, device, seed, set, out, json, no_plots)

    def work(exp: Any) -> Any:
        from nndiag.diagnostics import check_loss as step

        return step.run(exp, batches=batches, tolerance=tolerance)

    execute("check-loss", common, work)


@app.command("overfit-small")
def overfit_small(
    recipe: RecipeArg,
    batches: Annotated[int, typer.Option(min=1, help="Minibatches in the fixed subset (the notes say 5-10).")] = 5,
    steps: Annotated[int, typer.Option(min=1, help="Optimizer steps at most; stops as soon as it passes.")] = 500,
    target: Annotated[float, typer.Option(min=1e-6, max=0.99, help="Pass when the loss falls to this fraction of its initial value (and accuracy hits 100%).")] = 0.1,
    device: DeviceOpt = None, seed: SeedOpt = None, set: SetOpt = None, out: OutOpt = None, json: JsonOpt = False, no_plots: NoPlotsOpt = False,
) -> None:
    """Step 2: can the model memorise a tiny sample (100% training accuracy, loss near 0)? Regularization off.

    Example: nndiag overfit-small recipes/quickstart.yaml --batches 5 --steps 300
    """
    common = Common(recipe, device, seed, set, out, json, no_plots)

    def work(exp: Any) -> Any:
        from nndiag.diagnostics import overfit_small as step

        return step.run(exp, batches=batches, steps=steps, target_fraction=target)

    execute("overfit-small", common, work)


@app.command("validate")
def validate(
    recipe: RecipeArg,
    build: Annotated[bool, typer.Option("--build/--no-build", help="Also build the data and model and run one forward pass.")] = True,
    device: DeviceOpt = None, seed: SeedOpt = None, set: SetOpt = None,
) -> None:
    """Check a recipe: keys, types, values, targets, and (with --build) that the model can score the data.

    Example: nndiag validate recipes/quickstart.yaml
    """
    from nndiag.errors import BadInput

    common = Common(recipe, device, seed, set)
    try:
        loaded = load(common)
        lines = [f"recipe {recipe} is valid: name {loaded.name!r}, seed {loaded.seed}"]
        if build:
            from nndiag.experiment import Experiment

            lines += [f"{k}: {v}" for k, v in Experiment.build(loaded).describe().items()]
    except BadInput as exc:
        raise bad_input(str(exc)) from None
    from rich.console import Console

    Console().print("\n".join(lines))


# -- search (steps 4-5) ---------------------------------------------------------------------------


def default_storage(recipe_name: str, out: Path | None) -> str:
    """The journal file a search uses unless --storage is given: stable, so re-running resumes."""
    import os

    from nndiag.report import _safe

    folder = out if out is not None else Path(os.environ.get("NNDIAG_RUNS", "runs")) / _safe(recipe_name)
    return str(folder / "search-journal.log")


def parse_stages(text: str) -> tuple[str, ...]:
    from nndiag.errors import BadInput

    stages = {"both": ("coarse", "fine"), "coarse": ("coarse",), "fine": ("fine",), "coarse,fine": ("coarse", "fine")}
    if text not in stages:
        raise BadInput(f"expected coarse, fine or both, got {text!r}", where="--stages")
    return stages[text]


@app.command("search")
def search(
    recipe: RecipeArg,
    random: Annotated[bool, typer.Option("--random/--grid", help="Random search (default; Bergstra & Bengio 2012) or an even grid, for comparison.")] = True,
    log_space: Annotated[bool, typer.Option("--log-space/--linear-space", help="Sample `log: true` parameters log-uniformly (default), or every range uniformly in linear space.")] = True,
    stages: Annotated[str, typer.Option(help="coarse, fine or both. `fine` alone narrows around the coarse results already in the study.")] = "both",
    trials: Annotated[Optional[int], typer.Option(min=1, help="Trials per stage (overrides search.coarse.trials and search.fine.trials).")] = None,
    coarse_trials: Annotated[Optional[int], typer.Option(min=1, help="Trials in the coarse stage (overrides --trials).")] = None,
    fine_trials: Annotated[Optional[int], typer.Option(min=1, help="Trials in the fine stage (overrides --trials).")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Local worker processes sharing the study (one per GPU when there are several).")] = 1,
    storage: Annotated[Optional[str], typer.Option(help="Where the study lives: a journal file (default runs/<name>/search-journal.log, or DIR/search-journal.log with --out) or postgresql://USER:PASS@HOST/DB, mysql://...")] = None,
    study: Annotated[Optional[str], typer.Option(help="Study name (default: the recipe name). Processes with the same --storage and --study share the work.")] = None,
    threads: Annotated[Optional[int], typer.Option(min=1, help="torch threads per process (default: cores / workers).")] = None,
    device: DeviceOpt = None, seed: SeedOpt = None, set: SetOpt = None, out: OutOpt = None, json: JsonOpt = False, no_plots: NoPlotsOpt = False,
) -> None:
    """Steps 4-5: coarse random search in log space (1-5 epochs), then a fine search around the best trials (longer, no LR decay).

    Re-running the same command resumes the study: no trial is lost or run twice.

    Example: nndiag search recipes/quickstart.yaml --random --log-space --workers 2
    """
    common = Common(recipe, device, seed, set, out, json, no_plots)
    from nndiag.errors import BadInput

    try:
        chosen = parse_stages(stages)
    except BadInput as exc:
        raise bad_input(str(exc)) from None

    def work(exp: Any) -> Any:
        from nndiag.diagnostics import search as step

        options = step.SearchOptions(
            stages=chosen, sampling="random" if random else "grid", log_space=log_space,
            coarse_trials=coarse_trials or trials, fine_trials=fine_trials or trials,
            storage=storage or default_storage(exp.recipe.name, out), study=study, workers=workers, threads=threads,
        )
        if threads:
            import torch

            torch.set_num_threads(threads)
        printer = None if json else search_progress()
        try:
            return step.run(exp, options, printer)
        except KeyboardInterrupt:
            err_console().print(f"[yellow]interrupted: the study in {options.storage} keeps every finished trial; "
                                "re-run the same command to resume[/]")
            raise

    execute("search", common, work)


def search_progress() -> Callable[[dict[str, Any]], None]:
    """Live progress on stderr: one line per finished trial (or per change, with several workers)."""
    console = err_console()

    def show(event: dict[str, Any]) -> None:
        done = f"{event['stage']} {event['done']}/{event['target']}"
        if "status" not in event:
            console.print(f"[dim]{done} trials done, {event['running']} running[/]")
            return
        params = "  ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in event["params"].items())
        style = {"complete": "green", "diverged": "yellow", "failed": "red"}[event["status"]]
        console.print(f"{done}  {params}  [{style}]{event['status']}[/]  val_acc {event['val_acc']:.4f}  val_loss {event['val_loss']:.4g}  "
                      f"({event['seconds']:.1f}s)", highlight=False)

    return show


def main() -> None:
    app()


if __name__ == "__main__":
    main()
