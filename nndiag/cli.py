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


# -- probe (issue 4) ---------------------------------------------------------------------------


@app.command("probe")
def probe(
    recipe: Annotated[Optional[Path], typer.Argument(help="The recipe (YAML). Not needed with --init-experiment.", show_default=False)] = None,
    batches: Annotated[int, typer.Option(min=1, help="Batches probed forward and backward at the current weights.")] = 2,
    steps: Annotated[int, typer.Option(min=0, help="Optimizer steps afterwards, for the update/weight ratio (0 = skip).")] = 5,
    init_experiment: Annotated[bool, typer.Option("--init-experiment", help="Run the weight-init lecture's experiment (no recipe): tanh/ReLU stacks on Gaussian input.")] = False,
    width: Annotated[int, typer.Option(min=2, help="--init-experiment: units per layer (the lecture's 4096).")] = 4096,
    depth: Annotated[int, typer.Option(min=1, help="--init-experiment: hidden layers (the lecture's 6).")] = 6,
    samples: Annotated[int, typer.Option(min=1, help="--init-experiment: rows of Gaussian input (the lecture's 16).")] = 16,
    activation: Annotated[Optional[list[str]], typer.Option("--activation", help="--init-experiment: activation(s) to try, e.g. tanh, relu (repeatable).")] = None,
    init: Annotated[Optional[list[str]], typer.Option("--init", help="--init-experiment: xavier, kaiming, or a weight std at width 4096 such as 0.01 (repeatable).")] = None,
    device: DeviceOpt = None, seed: SeedOpt = None, set: SetOpt = None, out: OutOpt = None, json: JsonOpt = False, no_plots: NoPlotsOpt = False,
) -> None:
    """Weight-init lecture: per-layer activation mean/std, saturation, dead ReLUs, gradient norms and update/weight ratios.

    Examples: nndiag probe recipes/quickstart.yaml --json
              nndiag probe --init-experiment --width 1024
              nndiag probe --init-experiment --init kaiming --activation relu --depth 10
    """
    if init_experiment:
        _probe_init_experiment(width, depth, samples, init, activation, seed, out, json, no_plots)
        return
    if recipe is None:
        raise bad_input("probe needs a RECIPE (a YAML file such as recipes/quickstart.yaml), or --init-experiment")
    if activation or init:
        raise bad_input("--activation and --init belong to --init-experiment; to probe a recipe with another init use --set model.args.init=xavier")
    common = Common(recipe, device, seed, set, out, json, no_plots)

    def work(exp: Any) -> Any:
        from nndiag.diagnostics import probe as step

        return step.run(exp, batches=batches, steps=steps)

    execute("probe", common, work)


def _probe_init_experiment(width: int, depth: int, samples: int, inits: list[str] | None, activations: list[str] | None,
                           seed: int | None, out: Path | None, as_json: bool, no_plots: bool) -> None:
    from nndiag.errors import BadInput

    try:
        from nndiag import report
        from nndiag.diagnostics import probe_init

        result = probe_init.run(width=width, depth=depth, inits=inits, activations=activations, samples=samples, seed=seed or 0)
        folder = report.run_folder("init-experiment", "probe", out)
        verdict = report.write_run(result, folder, "--init-experiment", plots=not no_plots)
    except BadInput as exc:
        raise bad_input(str(exc)) from None
    finish(result, verdict, as_json, folder)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
