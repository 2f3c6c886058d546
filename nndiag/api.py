"""nndiag from Python: the diagnostics the CLI runs, on a recipe or on your own model and data.

    import nndiag, torch
    r = nndiag.check_loss(model, loader, loss="cross_entropy")     # or loss=callable, or step=callable
    r = nndiag.overfit_small(model, loader, optimizer=lambda params: torch.optim.Adam(params, 1e-3))
    r = nndiag.lr_find(model, optimizer, loader, loss=torch.nn.CrossEntropyLoss())  # all handed back as found
    r = nndiag.probe(model, loader)
    r = nndiag.curves("metrics.csv")                                 # or a DataFrame, a list of dicts, a dict of lists
    r = nndiag.train("recipe.yaml"); nndiag.search("recipe.yaml"); nndiag.babysit("recipe.yaml")
    with nndiag.watch(model, optimizer, probe_every=50) as w: ...    # your own training loop; w.result afterwards
    r.status, r.findings, r.metrics, r.table, r.plot(), r.save("out/"), r.to_json()

The first argument of check_loss, overfit_small, lr_find and probe is either your model (an
nn.Module, with `data`: a DataLoader, a Dataset, an (X, y) pair or a mapping of tensors) or a recipe
(a YAML path, a dict, or a Recipe). A batch becomes a loss in one of three ways, tried in this order:
`step(model, batch)` -> loss or {loss, logits, targets}; a model whose output carries `loss` (a dict
batch is passed as keyword arguments, as Hugging Face models take it); or (inputs, targets) with
`loss` (a name: cross_entropy, multi_margin, bce, mse; or a callable loss_fn(outputs, targets)).
A Lightning LightningModule brings its own: its training_step is the step, configure_optimizers the
optimizer and its train_dataloader() (or its trainer's datamodule) the data, so `nndiag.lr_find(module)`
works as it is (nndiag/integrations/lightning.py).

Keyword options are the CLI flags with underscores. Your model stays on its device (pass `device=` to
move it) and nothing is printed or written unless you call `.save()`. Bad input raises
`nndiag.BadInput` (a ValueError) naming the argument or recipe key; a bug in your own code raises as
it is. The CLI calls these same functions. Importing this module does not import torch.

May import: nndiag.errors, nndiag.formatting, nndiag.findings, nndiag.result, nndiag.output, nndiag.config, nndiag.training,
nndiag.diagnostics, nndiag.diagnosis, nndiag.integrations.
"""

from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence

from nndiag.diagnostics import defaults as D
from nndiag.errors import BadInput

if TYPE_CHECKING:  # pragma: no cover
    from nndiag.config.recipe import Recipe
    from nndiag.result import Result
    from nndiag.training.experiment import Experiment

RecipeLike = Any  # a path to a YAML recipe, a dict, or a nndiag.config.recipe.Recipe


def is_recipe(obj: Any) -> bool:
    from nndiag.config.recipe import Recipe

    return isinstance(obj, (str, os.PathLike, dict, Recipe))


def load(recipe: RecipeLike, set: Sequence[str] | None = None, device: str | None = None, seed: int | None = None) -> "Recipe":
    """A Recipe from a path, a dict or a Recipe, with `key=value` overrides (precedence: device/seed > set > recipe)."""
    from nndiag.config.recipe import Recipe, load_recipe, parse_assignment, parse_recipe, set_path

    overrides = list(set or [])
    if device is not None:
        overrides.append(f"device={device}")
    if seed is not None:
        overrides.append(f"seed={seed}")
    if isinstance(recipe, (str, os.PathLike)):
        return load_recipe(Path(recipe), overrides)
    if isinstance(recipe, Recipe):
        raw, source = recipe.to_dict(), recipe.source
    elif isinstance(recipe, dict):
        import copy

        raw, source = copy.deepcopy(recipe), None
    else:
        raise BadInput(f"expected a recipe (a YAML path, a dict or a Recipe), got {type(recipe).__name__}", where="recipe")
    for assignment in overrides:
        set_path(raw, *parse_assignment(assignment))
    return parse_recipe(raw, source=source)


def _source(target: Any, loaded: "Recipe | None" = None) -> str:
    """What ran, for the JSON "recipe" key: the recipe path as given (a bundled recipe's file for a bare
    name: the file `loaded` came from, when given)."""
    if isinstance(target, (str, os.PathLike)):
        if Path(target).is_file():
            return str(target)
        if loaded is not None and loaded.source is not None:
            return str(loaded.source)
        from nndiag.config.recipe import resolve_recipe_path

        return str(resolve_recipe_path(Path(target)))
    return "python" if not is_recipe(target) else "recipe dict"


def experiment(
    target: Any,
    data: Any = None,
    *,
    loss: Any = None,
    step: Any = None,
    optimizer: Any = None,
    batch_size: int | None = None,
    device: str | None = None,
    seed: int | None = None,
    set: Sequence[str] | None = None,
    val: Any = None,
    check: bool = True,
) -> "Experiment":
    """An Experiment from a recipe, or from the user's own model and data (`val`: their validation data).
    `check=False`: without the first forward pass that proves model, data and loss fit together (check-data)."""
    from nndiag.training.experiment import Experiment

    if is_recipe(target):
        given = [
            name
            for name, value in (("data", data), ("loss", loss), ("step", step), ("optimizer", optimizer), ("batch_size", batch_size))
            if value is not None
        ]
        if given:
            raise BadInput(
                f"{', '.join(given)} go with your own model; a recipe names its own (change it with set=['key=value'])", where=given[0]
            )
        if val is not None:
            raise BadInput("val goes with your own model and data; a recipe names its own validation split", where="val")
        return Experiment.build(load(target, set, device, seed), check=check)
    if set:
        raise BadInput("set= overrides recipe keys; with your own model, pass the options as arguments", where="set")
    if _is_lightning_module(target):  # its own training_step, configure_optimizers and data (nndiag/integrations/lightning.py)
        from nndiag.integrations.lightning import module_experiment

        return module_experiment(target, data, loss=loss, step=step, optimizer=optimizer, batch_size=batch_size, device=device, seed=seed)
    if data is None:
        raise BadInput("your own model needs `data`: a DataLoader, a Dataset, an (X, y) pair or a mapping of tensors", where="data")
    return Experiment.from_objects(
        target,
        data,
        loss=loss,
        step=step,
        optimizer=optimizer,
        batch_size=batch_size or 64,
        device=device,
        seed=0 if seed is None else seed,
        val=val,
        check=check,
    )


def _data_faults(command: str) -> Callable[[Callable[..., "Result"]], Callable[..., "Result"]]:
    """A step on data whose class labels the model cannot score (a DataFault, found while the experiment is built)
    returns check-data's failing finding, labels-out-of-range, instead of raising: a bug in the user's data is a
    finding with its root cause, not a crash."""

    def wrap(fn: Callable[..., "Result"]) -> Callable[..., "Result"]:
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> "Result":
            from nndiag.diagnostics import check_data
            from nndiag.training.experiment import DataFault

            try:
                return fn(*args, **kwargs)
            except DataFault as fault:
                result = check_data.fault_result(command, fault.facts)
                result.name, result.source = fault.name, _source(args[0] if args else next(iter(kwargs.values()), None))
                return result

        return run

    return wrap


def _finish(result: "Result", exp: "Experiment", target: Any, session: "_Session | None" = None) -> "Result":
    """The Result stamped with its run: what was built, and where it came from (a recipe's resolved form too);
    the thread count it ran with (context and metrics `threads`)."""
    if session is not None and session.choice is not None:
        result.context["threads"] = str(session.choice)
        result.metrics["threads"] = session.choice.count
    return exp.stamp(result, source=_source(target, exp.recipe), with_recipe=is_recipe(target))


class _Session:
    """What a call that runs a model shares: its thread count (given, or chosen for the work once the experiment is
    built: nndiag.training.threads) and where its progress goes."""

    def __init__(self, threads: int | None, progress: Any):
        self.threads, self.progress = threads, progress
        self.choice: Any = None

    def start(self, exp: "Experiment") -> None:
        """Set the thread count for `exp` and say so (a Note to the progress)."""
        from nndiag.training import threads as torch_threads
        from nndiag.training.progress import note

        self.choice = torch_threads.use(exp, self.threads)
        note(self.progress, f"torch threads: {self.choice}; set with --threads N (threads=N in Python)")


@contextlib.contextmanager
def _session(threads: int | None, progress: Any) -> Iterator[_Session]:
    """A _Session: torch's thread count is handed back as found at the end; `progress=True` gets a Rich bar on
    stderr (closed at the end), a callable gets nndiag.training.progress's Ticks and Notes, None/False nothing."""
    from nndiag.training import threads as torch_threads

    count = torch_threads.check(threads)
    sink, close = _progress_sink(progress)
    try:
        with torch_threads.kept():
            torch_threads.set_given(count)  # a given count applies to building the experiment too
            yield _Session(count, sink)
    finally:
        close()


def _progress_sink(progress: Any) -> tuple[Any, Callable[[], None]]:
    if progress is None or progress is False:
        return None, lambda: None
    if progress is True:
        from nndiag.output.progress import ProgressBar

        bar = ProgressBar()
        return bar, bar.close
    if callable(progress):
        return progress, lambda: None
    raise BadInput(f"expected True, False or a callable taking progress events, got {type(progress).__name__}", where="progress")


# --------------------------------------------------------------------------------------------
# The recipe, step by step
# --------------------------------------------------------------------------------------------


def check_data(
    data: Any,
    model: Any = None,
    *,
    val: Any = None,
    loss: Any = None,
    step: Any = None,
    batch_size: int | None = None,
    device: str | None = None,
    seed: int | None = None,
    set: Sequence[str] | None = None,
) -> "Result":
    """Step 0: check the data before the model sees it: NaN/Inf values, class labels outside the model's outputs, the
    class balance and majority baseline, duplicates inside training and across training/validation, distinct examples
    per pass, single-class batches from your own DataLoader, constant features, the input scale, and labels that do not
    depend on the inputs.

    `data`: a recipe (path, dict or Recipe), or your own training data (a DataLoader, a Dataset, an (X, y) pair or a
    mapping of tensors) with `val=` your validation data and `model=` your model (its outputs give C; without it C is
    the largest label + 1). The model and the RNGs are handed back as found."""
    from nndiag.diagnostics import check_data as diagnostic
    from nndiag.training.engine import rng_kept

    with rng_kept():
        if is_recipe(data):
            if model is not None:
                raise BadInput("model goes with your own data; a recipe names its own model", where="model")
            exp = experiment(data, loss=loss, step=step, batch_size=batch_size, device=device, seed=seed, set=set, check=False)
            result = diagnostic.run(exp.data.train, exp.data.val, exp.model_classes(), seed=exp.recipe.seed)
            return _finish(result, exp, data)
        if set:
            raise BadInput("set= overrides recipe keys; with your own data, pass the options as arguments", where="set")
        user_loader = _is_loader(data)
        if model is not None:
            exp = experiment(model, data, loss=loss, step=step, batch_size=batch_size, device=device, seed=seed, val=val, check=False)
            result = diagnostic.run(
                exp.data.train,
                exp.data.val if val is not None else None,
                exp.model_classes(),
                seed=exp.recipe.seed,
                user_loader=user_loader,
            )
            return _finish(result, exp, model)
        from nndiag.training.engine import resolve_device
        from nndiag.training.splits import as_split

        where = resolve_device(device or "cpu")
        size, order = batch_size or 64, 0 if seed is None else seed
        train = as_split(data, where, size, order)
        result = diagnostic.run(
            train, as_split(val, where, size, order) if val is not None else None, None, seed=order, user_loader=user_loader
        )
        result.context = {"data": f"{type(data).__name__}: {len(train)} examples"}
        result.verdict.address("python")  # your own data: the advice names your code, not recipe keys
        return result


@_data_faults("check-loss")
def check_loss(
    model: Any,
    data: Any = None,
    *,
    loss: Any = None,
    step: Any = None,
    optimizer: Any = None,
    batches: int = D.CHECK_LOSS_BATCHES,
    tolerance: float = D.CHECK_LOSS_TOLERANCE,
    expected: float | None = None,
    batch_size: int | None = None,
    device: str | None = None,
    seed: int | None = None,
    set: Sequence[str] | None = None,
    threads: int | None = None,
    progress: Any = False,
) -> "Result":
    """Step 1: is the loss at initialisation what the loss predicts (ln C for softmax cross-entropy)?

    `expected`: the loss an untrained model should have, when the rule cannot know it (a custom step)."""
    from nndiag.diagnostics import check_loss as diagnostic
    from nndiag.training.engine import rng_kept

    with rng_kept(), _session(threads, progress) as run:
        exp = experiment(model, data, loss=loss, step=step, optimizer=optimizer, batch_size=batch_size, device=device, seed=seed, set=set)
        run.start(exp)
        result = diagnostic.run(exp, batches=batches, tolerance=tolerance, expected=expected, progress=run.progress)
        return _finish(result, exp, model, run)


@_data_faults("overfit-small")
def overfit_small(
    model: Any,
    data: Any = None,
    *,
    loss: Any = None,
    step: Any = None,
    optimizer: Any = None,
    batches: int = D.OVERFIT_BATCHES,
    steps: int = D.OVERFIT_STEPS,
    target: float = D.OVERFIT_TARGET,
    batch_size: int | None = None,
    device: str | None = None,
    seed: int | None = None,
    set: Sequence[str] | None = None,
    threads: int | None = None,
    progress: Any = False,
) -> "Result":
    """Step 2: can the model memorise `batches` minibatches (100% accuracy, loss <= target x initial)?

    `optimizer`: a function params -> optimizer (default Adam, lr 1e-3), or an optimizer to copy the
    class and settings of. The model and optimizer are handed back as found."""
    from nndiag.diagnostics import overfit_small as diagnostic
    from nndiag.training.engine import rng_kept

    with rng_kept(), _session(threads, progress) as run:
        exp = experiment(model, data, loss=loss, step=step, optimizer=optimizer, batch_size=batch_size, device=device, seed=seed, set=set)
        run.start(exp)
        result = diagnostic.run(exp, batches=batches, steps=steps, target_fraction=target, progress=run.progress)
        return _finish(result, exp, model, run)


@_data_faults("lr-find")
def lr_find(
    model: Any,
    optimizer: Any = None,
    data: Any = None,
    *,
    loss: Any = None,
    step: Any = None,
    start: float = D.LR_FIND_START,
    end: float = D.LR_FIND_END,
    steps: int = D.LR_FIND_STEPS,
    mode: str = D.LR_FIND_MODE,
    batches_per_lr: int = D.LR_FIND_BATCHES_PER_LR,
    candidates: Sequence[float] | None = None,
    candidate_steps: int = D.LR_FIND_CANDIDATE_STEPS,
    refine_steps: int = D.LR_FIND_REFINE_STEPS,
    apply: bool = False,
    batch_size: int | None = None,
    device: str | None = None,
    seed: int | None = None,
    set: Sequence[str] | None = None,
    threads: int | None = None,
    progress: Any = False,
) -> "Result":
    """Step 3: an LR range test (or the notes' candidates mode) and a suggested learning rate.

    After the range test, short trial runs of `refine_steps` iterations at 0.316, 1, 3.16 and 10x its pick
    settle the suggestion: the smallest trial LR within 5% of the best trial's drop (`refine_steps=0`: the
    range test's pick is final).

    On your own model and optimizer, both are handed back bit for bit: parameters, buffers, optimizer
    state and LR, train/eval flags and the RNG states. `apply` (recipes only) also writes the recipe
    with optim.lr set to the suggestion (`recipe.lr-applied.yaml` in the run folder)."""
    from nndiag.diagnostics import lr_find as diagnostic
    from nndiag.training.engine import rng_kept

    diagnostic.check_options(start, end, mode, candidates, refine_steps)
    if apply and not is_recipe(model):
        raise BadInput("apply writes the recipe with the suggested LR; it needs a recipe, not your own model", where="apply")
    instance = optimizer if _is_optimizer(optimizer) else None
    with rng_kept(), _session(threads, progress) as run:
        exp = experiment(model, data, loss=loss, step=step, optimizer=optimizer, batch_size=batch_size, device=device, seed=seed, set=set)
        run.start(exp)
        text = exp.recipe.source.read_text() if apply and exp.recipe.source else None
        result = diagnostic.run(
            exp,
            start=start,
            end=end,
            steps=steps,
            mode=mode,
            batches_per_lr=batches_per_lr,
            candidates=list(candidates) if candidates else None,
            candidate_steps=candidate_steps,
            refine_steps=refine_steps,
            apply=apply,
            recipe_text=text,
            optimizer=instance,
            progress=run.progress,
        )
        return _finish(result, exp, model, run)


@_data_faults("probe")
def probe(
    model: Any,
    data: Any = None,
    *,
    loss: Any = None,
    step: Any = None,
    optimizer: Any = None,
    batches: int = D.PROBE_BATCHES,
    steps: int = D.PROBE_STEPS,
    trained: bool | None = None,
    batch_size: int | None = None,
    device: str | None = None,
    seed: int | None = None,
    set: Sequence[str] | None = None,
    threads: int | None = None,
    progress: Any = False,
) -> "Result":
    """Per-layer activation, gradient and update/weight statistics with the weight-init lecture's
    verdicts. The model and RNGs are handed back as found.

    `trained`: whether optimizer steps already ran on the model's weights (dead units or NaN at trained weights may be
    the learning rate's doing; at an initialisation they are not). Default: known for a recipe (fresh) and when nndiag
    saw the steps (nndiag.watch, a callback, a LightningModule's trainer, an optimizer with state); else not known."""
    from nndiag.diagnostics import probe as diagnostic
    from nndiag.training.engine import rng_kept

    if trained is None:
        trained = _trained(model, optimizer)
    with rng_kept(), _session(threads, progress) as run:
        exp = experiment(model, data, loss=loss, step=step, optimizer=optimizer, batch_size=batch_size, device=device, seed=seed, set=set)
        run.start(exp)
        result = diagnostic.run(exp, batches=batches, steps=steps, trained=trained, progress=run.progress)
        return _finish(result, exp, model, run)


def _trained(model: Any, optimizer: Any) -> bool | None:
    """Did optimizer steps run on `model`'s weights? False for a recipe (built fresh), True when nndiag saw them (issue 19:
    a watch or a callback counted them) or a trainer / an optimizer's state says so, None when nothing tells."""
    if is_recipe(model):
        return False
    from nndiag.diagnostics.loop import steps_taken

    trainer = getattr(model, "_trainer", None) if _is_lightning_module(model) else None
    stepped = _is_optimizer(optimizer) and any(bool(state) for state in optimizer.state.values())
    if steps_taken(model) > 0 or getattr(trainer, "global_step", 0) > 0 or stepped:
        return True
    return None


def init_experiment(
    *,
    width: int = D.INIT_WIDTH,
    depth: int = D.INIT_DEPTH,
    samples: int = D.INIT_SAMPLES,
    init: Sequence[str] | None = None,
    activation: Sequence[str] | None = None,
    seed: int = 0,
    threads: int | None = None,
    progress: Any = False,
) -> "Result":
    """The weight-init lecture's experiment (`nndiag probe --init-experiment`): tanh/ReLU stacks on Gaussian input,
    each init judged by the probe's rules. `threads`: torch threads (default: torch's count; the stacks are wide)."""
    from nndiag.diagnostics import probe_init
    from nndiag.training.engine import rng_kept

    with rng_kept(), _session(threads, progress) as run:
        result = probe_init.run(
            width=width,
            depth=depth,
            inits=list(init) if init else None,
            activations=list(activation) if activation else None,
            samples=samples,
            seed=seed,
            progress=run.progress,
        )
    import torch

    result.context["threads"] = f"{threads or torch.get_num_threads()} ({'given' if threads else 'torch count'})"
    result.metrics["threads"] = threads or torch.get_num_threads()
    result.source, result.name = "--init-experiment", "init-experiment"
    return result


def curves(
    source: Any,
    *,
    x: str | None = None,
    train: str | None = None,
    val: str | None = None,
    train_acc: str | None = None,
    val_acc: str | None = None,
) -> "Result":
    """Step 6: diagnose loss curves. `source` is what a training loop produces: a list of dicts (one per logged point,
    e.g. {"step": 10, "train_loss": 0.9}), a dict of lists ({"step": [...], "train_loss": [...]}), a pandas DataFrame, a
    CSV file, a TensorBoard event file or a folder of logs (run folders, lightning_logs/, TensorBoard runs), or a list
    of paths. Anything else is BadInput naming what is accepted. Columns are found by name (step, train_loss, loss,
    val_loss, val_acc, lr, ...; `x`, `train`, `val`, `train_acc`, `val_acc` name them when they differ)."""
    from nndiag.diagnostics import curves as diagnostic

    columns = {"x": x, "train": train, "val": val, "train_acc": train_acc, "val_acc": val_acc}
    frame = _curves_frame(source)
    if frame is not None:  # your own numbers: the advice names what your code controls (nndiag.findings.addressed)
        result = diagnostic.run_frame(frame, **columns)
        result.source = "DataFrame"
        result.verdict.address("python")
        return result
    paths = [Path(p) for p in (source if isinstance(source, (list, tuple)) else [source])]
    result = diagnostic.run(paths, **columns)
    result.name, result.source = "curves", " ".join(str(p) for p in paths)
    return result


CURVES_ACCEPTS = (
    "a list of dicts (one per logged point: {'step': 10, 'train_loss': 0.9, ...}), a dict of lists ({'step': [...], "
    "'train_loss': [...]}), a pandas DataFrame, a CSV file, a TensorBoard event file or a folder of logs (or a list of paths)"
)


def _curves_frame(source: Any) -> Any:
    """`source` as a pandas DataFrame when it is one, a list of dicts or a dict of lists; None for paths; else BadInput."""
    import numbers

    def bad(why: str) -> BadInput:
        return BadInput(f"curves reads {CURVES_ACCEPTS}; got {why}", where="source")

    def a(name: str) -> str:
        return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"

    if _is_frame(source):
        return source
    if isinstance(source, (str, os.PathLike)):
        return None
    if isinstance(source, dict):
        if not source:
            raise bad("an empty dict")
        lengths = {}
        for key, values in source.items():
            if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
                raise bad(f"a dict whose {key!r} is {a(type(values).__name__)}, not a list of numbers")
            lengths[key] = len(values)
        if len(set(lengths.values())) > 1:
            raise bad("a dict of lists of different lengths (" + ", ".join(f"{k}: {n}" for k, n in lengths.items()) + ")")
        import pandas as pd

        return pd.DataFrame({k: [x.item() if hasattr(x, "item") else x for x in v] for k, v in source.items()})
    if isinstance(source, (list, tuple)):
        if not source:
            raise bad(f"an empty {type(source).__name__}")
        if all(isinstance(item, (str, os.PathLike)) for item in source):
            return None
        if all(isinstance(item, dict) for item in source):
            import pandas as pd

            for i, item in enumerate(source):
                for key, value in item.items():
                    if value is not None and not isinstance(value, numbers.Number) and not hasattr(value, "item"):
                        raise bad(f"a list of dicts whose item {i} has {key!r} = {a(type(value).__name__)}, not a number")
            return pd.DataFrame([{k: (v.item() if hasattr(v, "item") else v) for k, v in item.items()} for item in source])
        kinds = sorted({type(item).__name__ for item in source})
        raise bad(f"{a(type(source).__name__)} of {', '.join(kinds)}")
    raise bad(a(type(source).__name__))


@_data_faults("train")
def train(
    recipe: RecipeLike,
    *,
    epochs: int | None = None,
    max_steps: int | None = None,
    probe_every: int | None = None,
    callbacks: Iterable[Any] = (),
    device: str | None = None,
    seed: int | None = None,
    set: Sequence[str] | None = None,
    threads: int | None = None,
    progress: Any = False,
) -> "Result":
    """Train with the recipe; log the curves; end with the curves verdict on its own log.

    `callbacks`: objects with on_step(trainer, step, loss) and on_epoch(trainer, row) (see nndiag.training.trainer)."""
    from nndiag.diagnostics import train as diagnostic
    from nndiag.training.progress import TrainerProgress

    with _session(threads, progress) as run:
        exp = experiment(recipe, device=device, seed=seed, set=set)
        run.start(exp)
        hooks = [*callbacks, TrainerProgress(run.progress)] if run.progress is not None else list(callbacks)
        result = diagnostic.run(exp, epochs=epochs, max_steps=max_steps, callbacks=hooks, probe_every=probe_every)
        return _finish(result, exp, recipe, run)


@_data_faults("search")
def search(
    recipe: RecipeLike,
    *,
    random: bool = True,
    log_space: bool = True,
    stages: str = "both",
    trials: int | None = None,
    coarse_trials: int | None = None,
    fine_trials: int | None = None,
    workers: int = 1,
    storage: str | None = None,
    study: str | None = None,
    threads: int | None = None,
    progress: Any = False,
    device: str | None = None,
    seed: int | None = None,
    set: Sequence[str] | None = None,
) -> "Result":
    """Steps 4-5: a coarse random search in log space, then a fine one around the best trials.

    The study lives in `storage` (default: runs/<recipe name>/search-journal.log), so calling again resumes it.
    `threads`: torch threads in this process (default: chosen for the model); each of `workers` processes gets
    that many, at most the cores divided by the workers."""
    from nndiag.diagnostics import search as diagnostic

    with _session(threads, progress) as run:
        exp = experiment(recipe, device=device, seed=seed, set=set)
        run.start(exp)
        options = diagnostic.SearchOptions(
            stages=diagnostic.parse_stages(stages),
            sampling="random" if random else "grid",
            log_space=log_space,
            coarse_trials=coarse_trials or trials,
            fine_trials=fine_trials or trials,
            storage=storage or diagnostic.default_storage(exp.recipe.name),
            study=study,
            workers=workers,
            threads=threads or min(run.choice.count, max(1, (os.cpu_count() or 1) // max(1, workers))),  # per worker process
        )
        return _finish(diagnostic.run(exp, options, diagnostic.trial_events(run.progress)), exp, recipe, run)


def babysit(
    recipe: Any,
    data: Any = None,
    *,
    optimizer: Any = None,
    loss: Any = None,
    step: Any = None,
    val: Any = None,
    batch_size: int | None = None,
    budget: str = "standard",
    keep_going: bool = False,
    out: str | Path | None = None,
    plots: bool = True,
    progress: Any = False,
    device: str | None = None,
    seed: int | None = None,
    set: Sequence[str] | None = None,
    threads: int | None = None,
) -> "Result":
    """All of it in order (check-data, check-loss, overfit-small, lr-find, search, train, curves; probe where a step
    fails), stopping at the first failing gate unless `keep_going`; the root causes ranked over every step.

    `recipe`: a recipe (path, dict or Recipe), or your own model with `data` (and `optimizer`, `loss` or `step`,
    `val` your validation data, as the other functions take them): then there is no search (it needs a recipe's
    search space), train runs your optimizer for the budget's epochs, and the model is handed back as found.
    Its steps write their run folders as they go: into `out` when given, else into runs/<name>/babysit-<timestamp>/.
    The report's commands to rerun a step repeat `set`, `device`, `seed` and `threads`. `progress=True` shows each
    step's start and end and its bar on stderr (a callable gets nndiag.training.progress's Notes and Ticks)."""
    import shlex

    from nndiag.diagnosis.babysit import run_babysit

    common = {"budget": budget, "keep_going": keep_going, "out": Path(out) if out is not None else None, "plots": plots}
    if not is_recipe(recipe):
        with _session(threads, progress) as run:
            exp = experiment(
                recipe,
                data,
                loss=loss,
                step=step,
                optimizer=optimizer,
                batch_size=batch_size,
                device=device,
                seed=seed,
                set=set,
                val=val,
                check=False,
            )
            return run_babysit(exp.recipe, "python", make=lambda: exp, progress=run.progress, threads=run.threads, **common)
    given = [
        name
        for name, value in (
            ("data", data),
            ("optimizer", optimizer),
            ("loss", loss),
            ("step", step),
            ("val", val),
            ("batch_size", batch_size),
        )
        if value is not None
    ]
    if given:
        raise BadInput(
            f"{', '.join(given)} go with your own model; a recipe names its own (change it with set=['key=value'])", where=given[0]
        )
    loaded = load(recipe, set, device, seed)
    repeated = [f"--set {shlex.quote(s)}" for s in set or []]
    repeated += [f"--device {device}"] if device else []
    repeated += [f"--seed {seed}"] if seed is not None else []
    repeated += [f"--threads {threads}"] if threads else []
    with _session(threads, progress) as run:
        return run_babysit(
            loaded,
            _source(recipe, loaded),
            progress=run.progress,
            threads=run.threads,
            cli_args="".join(f" {p}" for p in repeated),
            **common,
        )


# --------------------------------------------------------------------------------------------
# Your own training loop (issue 19)
# --------------------------------------------------------------------------------------------


def watch(
    model: Any,
    optimizer: Any,
    *,
    probe_every: int | None = None,
    check_loss: bool = True,
    num_classes: int | None = None,
    loop: bool = True,
    curves: bool = True,
    fail_on: str | None = None,
    out: str | Path | None = None,
    name: str | None = None,
    plots: bool = True,
) -> Any:
    """nndiag inside your own training loop: `with nndiag.watch(model, optimizer) as w: ...` (w.log(loss=...) optional).

    PyTorch's hooks on `model` and `optimizer` (removed when the block ends) give check-loss on the loop's first batch
    (`num_classes`: C for ln C, overriding what the logits say), the probe every `probe_every` optimizer steps, the loop
    checks (`loop`: accumulating gradients, no optimizer step, weights that never change, eval mode, no gradient, the
    same batch), the curves verdict (`curves`) on what w.log got and the LR of every step; then the run folder (`out`,
    default runs/<model class>/watch-<timestamp>/; `name` instead of the class; `plots`) with summary.json, report.md
    and report.html. `w.result` is the combined Result with its root causes. `fail_on` ("fail" | "warn") raises
    nndiag.integrations.DiagnosisFailed out of the loop when a stage reaches it. See nndiag/integrations/loop.py."""
    from nndiag.integrations.loop import watch as start

    return start(
        model,
        optimizer,
        probe_every=probe_every,
        check_loss=check_loss,
        num_classes=num_classes,
        loop=loop,
        curves=curves,
        fail_on=fail_on,
        out=out,
        name=name,
        plots=plots,
    )


def _is_optimizer(obj: Any) -> bool:
    import sys

    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.optim.Optimizer)


def _is_lightning_module(obj: Any) -> bool:
    """A LightningModule (from lightning.pytorch or pytorch_lightning), told by its class names: no import of Lightning."""
    from nndiag.integrations import lightning_base

    return lightning_base(obj, "LightningModule") is not None


def _is_loader(obj: Any) -> bool:
    import sys

    data = sys.modules.get("torch.utils.data")
    return data is not None and isinstance(obj, data.DataLoader)


def _is_frame(obj: Any) -> bool:
    import sys

    pandas = sys.modules.get("pandas")
    return pandas is not None and isinstance(obj, pandas.DataFrame)
