"""An Experiment: a model, its data, how a batch becomes a loss, and the settings, built and placed on
the device. Every diagnostic runs on one.

Two ways to build one, one object for the diagnostics:
  Experiment.build(recipe)           everything a recipe describes, seeded: the same recipe and seed
                                     give the same data split, initial weights and batch order
  Experiment.from_objects(model, data, loss=/step=/optimizer=...)   the user's own objects (the
                                     Python API): the model stays where it is and is used as it is

Either way `check_forward` scores one small batch before anything else runs, so a model that rejects
the batch, a step or loss that returns something other than a scalar, or missing labels is a clear
input error (exit 2, naming the recipe key or the API argument), never a crash mid-run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import torch
from torch import nn

from nndiag.config.recipe import LOSSES, MAX_SEED, LossConfig, Recipe, TrainConfig, resolve_target
from nndiag.errors import BadInput
from nndiag.findings import audience_of
from nndiag.training import batch as batching
from nndiag.training import engine
from nndiag.training.batch import Batch
from nndiag.training.scoring import (
    Names,
    Scored,
    Scorer,
    build_objective,
    check_signature,
    class_axis,
    labels_outside,
    loss_callable,
    pick_way,
)
from nndiag.training.splits import DataBundle, Split, TensorSplit, build_data
from nndiag.zoo.models import build_model

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]


class DataFault(BadInput):
    """The data cannot be scored by this model because of a fault in the data itself, found before anything runs:
    class labels outside [0, C) for the model's C outputs (PyTorch's loss would stop with an IndexError, or a device
    assert on CUDA). `facts` says which labels (`scoring.labels_outside`). The Python API and the CLI turn it into
    check-data's failing finding, labels-out-of-range, with its root cause; anywhere else it is bad input (exit 2),
    never a crash."""

    def __init__(self, facts: dict[str, Any], where: str = "data", name: str = "run"):
        self.facts, self.name = facts, name
        super().__init__(
            f"{facts['count']} class labels lie outside [0, {facts['classes']}) for a model with {facts['classes']} outputs "
            f"(values {', '.join(map(str, facts['values']))}); remap the labels to 0..C-1 or give the model more outputs",
            where=where,
        )


@dataclass
class Experiment:
    recipe: Recipe  # the settings (for user objects: a recipe made of the call's options)
    device: torch.device
    amp_dtype: torch.dtype | None  # bf16 autocast on capable CUDA devices, else None (fp32)
    data: DataBundle
    scorer: Scorer
    model: nn.Module
    generator: torch.Generator = field(repr=False)  # batch order; seeded from recipe.seed
    optimizer_factory: OptimizerFactory | None = field(default=None, repr=False)  # the user's optimizer (API); None: the recipe's
    is_classification: bool = False  # class labels scored against class logits: accuracy and ln C apply
    num_classes: int | None = None  # C: the size of the logits' class axis (or the data's classes)
    model_label: str = ""  # how reports name the model

    # -- building ------------------------------------------------------------------------------

    @classmethod
    def build(cls, recipe: Recipe, check: bool = True) -> "Experiment":
        """`check=False` skips `check_forward` (check-data examines data a model cannot score yet)."""
        device = engine.resolve_device(recipe.device)
        amp_dtype = engine.autocast_dtype(device, recipe.precision)
        recipe_dir = recipe.source.parent if recipe.source else None
        data = build_data(recipe.data, device, recipe.seed, recipe_dir)
        return cls._assemble(recipe, device, amp_dtype, data, check)

    @classmethod
    def _assemble(
        cls, recipe: Recipe, device: torch.device, amp_dtype: torch.dtype | None, data: DataBundle, check: bool = True
    ) -> "Experiment":
        """Scorer and model for `recipe` over already built data (shared by search trials)."""
        recipe_dir = recipe.source.parent if recipe.source else None
        scorer = _recipe_scorer(recipe, data, first_batch(data.train), recipe_dir)
        scorer.autocast = lambda: engine.autocast(device, amp_dtype)
        engine.seed_everything(recipe.seed)
        objective = scorer.objective
        outputs = objective.outputs() if objective is not None else (data.num_classes or data.target_size)
        model = build_model(recipe.model, data.input_shape, outputs, recipe_dir, data.structured).to(device)
        label = f"{recipe.model.name or recipe.model.target}"
        data.follow(model)
        experiment = cls(recipe, device, amp_dtype, data, scorer, model, torch.Generator().manual_seed(recipe.seed), model_label=label)
        has_parameters(model, label, "model.target" if recipe.model.target else "model.name")
        if not check:
            return experiment
        experiment.check_forward()
        early = recipe.train.early_stopping
        if early.metric == "val_acc" and early.patience is not None and not experiment.is_classification:
            raise BadInput("val_acc needs class labels scored against class logits; use val_loss", where="train.early_stopping.metric")
        return experiment

    @classmethod
    def from_objects(
        cls,
        model: nn.Module,
        data: Any,
        *,
        loss: str | Callable[..., Any] | None = None,
        step: Callable[[nn.Module, Any], Any] | None = None,
        optimizer: torch.optim.Optimizer | OptimizerFactory | None = None,
        batch_size: int = 64,
        device: str | torch.device | None = None,
        seed: int = 0,
        name: str | None = None,
        val: Any = None,
        check: bool = True,
    ) -> "Experiment":
        """The user's own model and data (the Python API). See nndiag.api for the arguments; `val`: validation
        data of the same kind (default: the training data itself); `check=False` skips `check_forward`. Building
        leaves the RNGs as they were (drawing the first batch from a shuffling DataLoader consumes them)."""
        rng = engine.rng_state()
        try:
            return cls._from_objects(
                model,
                data,
                loss=loss,
                step=step,
                optimizer=optimizer,
                batch_size=batch_size,
                device=device,
                seed=seed,
                name=name,
                val=val,
                check=check,
            )
        finally:
            engine.set_rng_state(rng)

    @classmethod
    def _from_objects(
        cls,
        model: nn.Module,
        data: Any,
        *,
        loss: Any,
        step: Any,
        optimizer: Any,
        batch_size: int,
        device: str | torch.device | None,
        seed: int,
        name: str | None,
        val: Any = None,
        check: bool = True,
    ) -> "Experiment":
        from nndiag.training.splits import as_split

        if not isinstance(model, nn.Module):
            raise BadInput(f"expected a torch.nn.Module, got {type(model).__name__}", where="model")
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
            raise BadInput(f"expected a whole number in [0, {MAX_SEED}] (2**32 - 1), got {seed!r}", where="seed")
        if device is not None:
            model.to(engine.resolve_device(str(device)))
        here = next((p.device for p in model.parameters()), torch.device("cpu"))
        split = as_split(data, here, batch_size, seed)
        val_split = as_split(val, here, batch_size, seed) if val is not None else split
        described = f"{type(data).__name__}: {len(split)} examples" + (f" / {len(val_split)} val" if val is not None else "")
        bundle = DataBundle(split, val_split, None, 1, None, described)
        names = Names(step="step", loss="loss", model="model", data="data")
        if isinstance(loss, str) and loss not in LOSSES:
            raise BadInput(
                f"unknown loss {loss!r}; expected one of {', '.join(LOSSES)}, or a callable loss_fn(outputs, targets)", where="loss"
            )
        recipe = Recipe(
            name=name or type(model).__name__,
            seed=seed,
            device=str(here),
            precision="fp32",
            loss=LossConfig(name=loss) if isinstance(loss, str) else LossConfig(),
            train=TrainConfig(batch_size=batch_size),
        )
        first = first_batch(split)
        if step is not None:
            check_signature(step, ("model", "batch"), "step", "step")
        custom = loss_callable(loss, {}, "loss") if loss is not None and not isinstance(loss, str) else None
        way = pick_way(first, step=step is not None, custom_loss=loss is not None)
        loss_fn: Any = custom
        if way == "loss" and custom is None:
            loss_fn = build_objective(recipe.loss, _labels_count(first), 1)
        scorer = Scorer(way, step_fn=step, loss_fn=loss_fn, names=names, kwargs_batches=isinstance(first, dict) and way == "loss")
        dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
        split.follow(dtype)
        if val_split is not split:
            val_split.follow(dtype)
        experiment = cls(
            recipe,
            here,
            None,
            bundle,
            scorer,
            model,
            torch.Generator().manual_seed(seed),
            optimizer_factory=_optimizer_factory(optimizer),
            model_label=type(model).__name__,
        )
        has_parameters(model, type(model).__name__, "model")
        if check:
            experiment.check_forward()
        return experiment

    def check_forward(self) -> Scored:
        """Score one small training batch in eval mode: the user's model, data and loss must fit together.
        Learns the classification facts (C from the logits) on the way."""
        batch = first_batch(self.data.train)
        names, way = self.scorer.names, self.scorer.way
        if way == "loss" and not self.scorer.kwargs_batches and not (isinstance(batch, (tuple, list)) and len(batch) >= 2):
            raise BadInput(
                f"batches are {batching.describe(batch)}: scoring them with a loss needs (inputs, targets) pairs; "
                f"give a step(model, batch) that returns the loss",
                where=names.data,
            )
        with engine.eval_mode(self.model), torch.no_grad():
            try:
                scored = self.scorer.check(self.model, batch)
            except BadInput:
                self._check_labels(batch, self.model_classes(batch))  # labels the model cannot score: the data's fault
                raise
        classes = self.scorer.classes(scored)
        self._check_labels(batch, classes)
        objective = self.scorer.objective
        if objective is not None and classes and objective.is_classification:
            objective.num_classes = classes
        self.num_classes = classes or (objective.num_classes if objective is not None else None)
        self.is_classification = self.scorer.is_classification(scored)
        return scored

    def model_classes(self, batch: Batch | None = None) -> int | None:
        """C as the model sees it: the size of its logits' class axis on a batch (the first training batch by
        default), found without scoring the loss; None when there are no class logits to read."""
        batch = first_batch(self.data.train) if batch is None else batch
        with engine.eval_mode(self.model), torch.no_grad():
            logits = self.scorer.logits_of(self.model, batch)
        axis = class_axis(logits, batching.targets_of(batch))
        return int(logits.shape[axis]) if axis is not None else None  # type: ignore[union-attr]

    def _check_labels(self, batch: Batch, classes: int | None) -> None:
        """DataFault when class labels (all those held on the device, else this batch's) fall outside the model's C."""
        if classes is None:
            return
        for split in dict.fromkeys([self.data.train, self.data.val]):
            labels = split.y if isinstance(split, TensorSplit) else batching.targets_of(batch)
            bad = labels_outside(labels, classes)
            if bad is not None:
                raise DataFault(bad, where=self.scorer.names.data, name=self.recipe.name)

    # -- helpers the diagnostics share ---------------------------------------------------------

    def optimizer(
        self, model: nn.Module | None = None, lr: float | None = None, weight_decay: float | None = None
    ) -> torch.optim.Optimizer:
        """A fresh optimizer of the recipe's kind (or the user's) over `model` (default: the experiment's)."""
        params = (model or self.model).parameters()
        if self.optimizer_factory is None:
            return engine.build_optimizer(params, self.recipe.optim, lr=lr, weight_decay=weight_decay)
        optimizer = self.optimizer_factory(params)
        if lr is not None:
            engine.set_lr(optimizer, lr)
        if weight_decay is not None:
            for group in optimizer.param_groups:
                if "weight_decay" in group:
                    group["weight_decay"] = weight_decay
        return optimizer

    def train_batches(self, batch_size: int | None = None, split: Split | None = None) -> Iterator[Batch]:
        """One shuffled epoch of training batches, in the seeded order."""
        split = split or self.data.train
        return split.batches(batch_size or self.recipe.train.batch_size, shuffle=True, generator=self.generator)

    def eval_batches(self, split: Split | None = None) -> Iterator[Batch]:
        split = split or self.data.val
        size = self.recipe.train.eval_batch_size or 4 * self.recipe.train.batch_size
        return split.batches(size)

    def evaluate(self, split: Split | None = None, model: nn.Module | None = None) -> dict[str, float]:
        return engine.evaluate(model or self.model, self.eval_batches(split), self.scorer)

    def step(self, optimizer: torch.optim.Optimizer, batch: Batch, model: nn.Module | None = None) -> Scored:
        return engine.train_step(model or self.model, optimizer, self.scorer, batch, self.recipe.train.grad_clip)

    def with_recipe(self, recipe: Recipe) -> "Experiment":
        """A new experiment for `recipe` (e.g. a search trial's overrides) that shares this one's data
        when the data, seed and device are unchanged; model and scorer are built anew, seeded."""
        if (recipe.data, recipe.seed, recipe.device) != (self.recipe.data, self.recipe.seed, self.recipe.device):
            return Experiment.build(recipe)
        return Experiment._assemble(recipe, self.device, engine.autocast_dtype(self.device, recipe.precision), self.data)

    def stamp(self, result: Any, *, source: str = "python", with_recipe: bool = False) -> Any:
        """`result` (a nndiag Result of a diagnostic on this experiment) with what every Result carries about its
        run: what was built (context), the run folder's name, where it came from (`source`: the recipe path, or
        "python") and, `with_recipe`, the resolved recipe written to the run folder. For "python" (your own objects) the
        findings' advice names the arguments of your code instead of recipe keys (nndiag.findings.addressed)."""
        result.verdict.address(audience_of(source))
        result.recipe = self.recipe.to_dict() if with_recipe else None
        result.context = {**self.describe(), **result.context}
        result.name = self.recipe.name
        result.source = source
        return result

    def describe(self) -> dict[str, str]:
        """What was built, for reports."""
        params = sum(p.numel() for p in self.model.parameters())
        way = {"step": "your step", "model": "the model's own loss", "loss": "a custom loss" if self.scorer.objective is None else None}[
            self.scorer.way
        ]
        return {
            "data": self.data.description,
            "model": f"{self.model_label} ({params:,} parameters)" + (f", scored by {way}" if way else ""),
            "device": f"{self.device}" + (" (bf16 autocast)" if self.amp_dtype else ""),
        }


def has_parameters(model: nn.Module, label: str, where: str) -> None:
    """BadInput naming the model when it has no parameters at all: nothing to train, no gradient to probe."""
    if next(iter(model.parameters()), None) is None:
        raise BadInput(
            f"the model {label} ({type(model).__name__}) has no parameters: there is nothing to train or diagnose; "
            "build a model with at least one learnable layer",
            where=where,
        )


def first_batch(split: Split) -> Batch:
    """A small batch of the split (two examples where the split can cut one)."""
    sample = split.take(2)
    for batch in sample.batches(2):
        return batch
    raise BadInput("the training data holds no examples", where="data")


def _labels_count(batch: Batch) -> int | None:
    """Classes the targets of one batch show (max label + 1), for a named loss before the logits are seen."""
    targets = batching.targets_of(batch)
    if targets is None or targets.is_floating_point():
        return None
    from nndiag.training.splits import _top_label

    return max(_top_label(targets) + 1, 2)


def _recipe_scorer(recipe: Recipe, data: DataBundle, batch: Batch, recipe_dir: Any) -> Scorer:
    """The recipe's way from a batch to a loss: step.target, a model that returns its loss, or the loss section."""
    step = None
    if recipe.step.target is not None:
        fn = resolve_target(recipe.step.target, recipe_dir, "step.target")
        check_signature(fn, ("model", "batch"), "step.target", "step")
        step = fn if not recipe.step.args else (lambda model, b, _fn=fn, _args=recipe.step.args: _fn(model, b, **_args))
    custom = None
    if recipe.loss.target is not None:
        custom = loss_callable(resolve_target(recipe.loss.target, recipe_dir, "loss.target"), recipe.loss.args, "loss.target")
    way = pick_way(batch, step=step is not None, custom_loss=custom is not None)
    loss_fn: Any = custom
    if way == "loss" and custom is None:
        loss_fn = build_objective(recipe.loss, data.num_classes, data.target_size)
    return Scorer(way, step_fn=step, loss_fn=loss_fn, names=Names(), kwargs_batches=isinstance(batch, dict) and way == "loss")


def _optimizer_factory(optimizer: Any) -> OptimizerFactory | None:
    """The user's optimizer argument as a factory: a callable(params) is one; an optimizer instance
    becomes 'another of its class with its hyperparameters' (its param groups kept when the parameters
    are its own)."""
    if optimizer is None:
        return lambda params: torch.optim.Adam(params, lr=1e-3)
    if isinstance(optimizer, torch.optim.Optimizer):
        return engine.optimizer_like(optimizer)
    if callable(optimizer):

        def build(params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
            try:
                made = optimizer(params)
            except TypeError as exc:
                raise BadInput(f"calling the optimizer factory with the model's parameters failed: {exc}", where="optimizer") from None
            if not isinstance(made, torch.optim.Optimizer):
                raise BadInput(
                    f"expected the optimizer factory to return a torch.optim.Optimizer, got {type(made).__name__}", where="optimizer"
                )
            return made

        return build
    raise BadInput(f"expected a torch.optim.Optimizer or a function params -> optimizer, got {type(optimizer).__name__}", where="optimizer")
