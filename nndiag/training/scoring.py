"""From a batch to a loss: three ways, tried in this order.

  1. step      a `step(model, batch)` callable returns a scalar loss, or a mapping with `loss` and
               optionally `logits` and `targets` (recipe: `step: {target: "my_module:step"}`). A step that
               returns no logits still has them: forward hooks on the model and its children catch the
               output of the outermost call the step makes (`model(x)`, or `self.net(x)` in a Lightning
               training_step), taken as the logits when the batch's targets are class labels of it.
  2. model     the model's output carries its loss, as Hugging Face models do when the batch holds
               `labels`: a dict batch is passed as keyword arguments; `output.loss` / `output["loss"]`
               is the loss and `logits` the logits.
  3. loss      `(inputs, targets)` batches scored by a named loss (`Objective`: cross_entropy,
               multi_margin, bce, mse) or a custom `loss_fn(outputs, targets) -> scalar`
               (`loss: {target: "my_module:loss_fn"}`). A dict batch with a custom loss is split into
               its targets (`labels`, `label`, `targets`, `target` or `y`) and the rest, which the
               model takes as keyword arguments.

A `Scorer` does one of them and returns a `Scored`: the loss (with its graph), and the logits and
targets where they are known. Classification facts follow from them: the class axis is the last
logits dimension when the targets have the logits' shape without it (a language model's (B, T, V)
logits with (B, T) targets), or dimension 1 in PyTorch's (B, C, ...) convention; C is its size, so
an untrained model expects ln C under softmax cross-entropy. Targets equal to IGNORE_INDEX (-100, as
in PyTorch's cross-entropy) count neither in the loss, nor in accuracy. Where logits or targets are
not known, there is no accuracy and no expected loss: the commands say what they could not check.
"""

from __future__ import annotations

import contextlib
import inspect
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from nndiag.config.recipe import LossConfig, quote, raised
from nndiag.errors import BadInput
from nndiag.training import batch as batching

IGNORE_INDEX = -100  # targets with this value are ignored (PyTorch's cross-entropy default)
WAYS = ("step", "model", "loss")


@dataclass
class Scored:
    """One forward pass: the loss, and the logits and targets when they are known."""

    loss: torch.Tensor  # a scalar
    logits: torch.Tensor | None
    targets: torch.Tensor | None
    examples: int  # examples in the batch
    grad_norm: torch.Tensor | None = None  # after a training step with gradient clipping: the total norm before clipping

    def detach(self) -> "Scored":
        return Scored(self.loss.detach(), None if self.logits is None else self.logits.detach(), self.targets, self.examples)


# --------------------------------------------------------------------------------------------
# Classification facts from logits and targets
# --------------------------------------------------------------------------------------------


def class_axis(logits: torch.Tensor | None, targets: torch.Tensor | None) -> int | None:
    """The logits dimension that indexes classes, or None when the targets are not class labels of them."""
    if logits is None or targets is None or not isinstance(logits, torch.Tensor) or not isinstance(targets, torch.Tensor):
        return None
    if targets.is_floating_point() or targets.dtype == torch.bool or targets.is_complex() or logits.dim() != targets.dim() + 1:
        return None
    if logits.shape[:-1] == targets.shape and logits.shape[-1] >= 2:
        return logits.dim() - 1
    if logits.dim() > 2 and logits.shape[:1] + logits.shape[2:] == targets.shape and logits.shape[1] >= 2:
        return 1
    return None


def accuracy_counts(logits: torch.Tensor, targets: torch.Tensor, axis: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(correct, counted) over the targets that are not IGNORE_INDEX, as tensors (no device sync)."""
    predicted = logits.argmax(dim=axis)
    counted = targets != IGNORE_INDEX
    return ((predicted == targets) & counted).sum(), counted.sum()


def labels_outside(labels: torch.Tensor | None, classes: int | None, first_shown: int = 5) -> dict[str, Any] | None:
    """Integer class labels outside [0, classes) (IGNORE_INDEX aside): their values, how many, where the first are,
    and the labels' range; None when every label fits (or there are no class labels or no C)."""
    if labels is None or not classes or labels.is_floating_point() or labels.numel() == 0:
        return None
    labels = labels.detach().reshape(-1).long().cpu()
    labels = labels[labels != IGNORE_INDEX]
    bad = (labels < 0) | (labels >= classes)
    if labels.numel() == 0 or not bool(bad.any()):
        return None
    values = torch.unique(labels[bad])
    return {
        "classes": int(classes),
        "values": [int(v) for v in values[:10]],
        "count": int(bad.sum()),
        "first": [int(i) for i in torch.nonzero(bad).flatten()[:first_shown]],
        "low": int(labels.min()),
        "high": int(labels.max()),
    }


def smoothed_floor(smoothing: float, classes: int | None) -> float | None:
    """The minimum of cross-entropy with label smoothing `smoothing` over `classes` classes: the entropy of the smoothed
    target (1 - s + s/C on the true class, s/C on each other). 0 without smoothing; None when C is unknown."""
    if not smoothing:
        return 0.0
    if not classes:
        return None
    true, other = 1 - smoothing + smoothing / classes, smoothing / classes
    return -(true * math.log(true) + (classes - 1) * other * math.log(other))


def counted_targets(targets: torch.Tensor | None, examples: int) -> int | torch.Tensor:
    """The weight of a batch's mean loss: its non-ignored integer targets, else its examples."""
    if targets is not None and not targets.is_floating_point() and targets.dim() > 1:
        return (targets != IGNORE_INDEX).sum()
    return examples


# --------------------------------------------------------------------------------------------
# Named losses (way 3)
# --------------------------------------------------------------------------------------------


@dataclass
class Objective:
    """A named loss (recipe `loss: name`), with accuracy and the expected loss at initialisation."""

    config: LossConfig
    num_classes: int | None  # None for regression targets
    target_size: int = 1  # regression values per example (targets of shape (N, k) -> k)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def is_classification(self) -> bool:
        """Class labels (accuracy counts), whatever the loss: mse on labels compares one-hot targets."""
        return self.num_classes is not None

    def outputs(self) -> int:
        """How many outputs a built-in model needs for this loss and data."""
        if self.name == "bce" and self.num_classes == 2:
            return 1
        if self.num_classes is None:
            return self.target_size
        return self.num_classes

    def __call__(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.loss(logits, target)

    def loss(self, logits: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        logits = logits.float()
        if self.name == "cross_entropy":
            if logits.dim() > 2 and logits.shape[:-1] == target.shape:  # (B, T, C) logits, (B, T) targets
                logits, target = logits.reshape(-1, logits.shape[-1]), target.reshape(-1)
            return F.cross_entropy(
                logits, target, ignore_index=IGNORE_INDEX, label_smoothing=self.config.label_smoothing, reduction=reduction
            )
        if self.name == "multi_margin":
            return F.multi_margin_loss(logits, target, margin=self.config.margin, reduction=reduction)
        if self.name == "bce":
            return F.binary_cross_entropy_with_logits(logits, self.target_as_float(logits, target), reduction=reduction)
        return F.mse_loss(logits, self.target_as_float(logits, target), reduction=reduction)

    def target_as_float(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.dtype in (torch.int64, torch.int32, torch.uint8) and logits.dim() == 2 and logits.shape[1] > 1 and target.dim() == 1:
            return F.one_hot(target.long(), logits.shape[1]).float()  # class labels vs. one output per class
        target = target.float()
        if target.dim() == 1 and logits.dim() == 2 and logits.shape[1] == 1:
            target = target.unsqueeze(1)
        return target

    def correct(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(correct, counted) predictions as tensors (no device sync), or None for regression."""
        if not self.is_classification:
            return None
        axis = class_axis(logits, target)
        if axis is not None:
            return accuracy_counts(logits, target, axis)
        if logits.dim() == 2 and logits.shape[1] > 1:  # one-hot or multi-label targets of the logits' shape
            predicted = logits.argmax(dim=1)
            target = target.argmax(dim=1) if target.shape == logits.shape else target.reshape(-1)
        else:  # one output: a binary decision at 0
            predicted = (logits.reshape(-1) > 0).long()
            target = target.reshape(-1)
        correct = (predicted == target.long()).sum()
        return correct, torch.full_like(correct, predicted.numel())

    def expected_initial_loss(self, targets: torch.Tensor | None, classes: int | None = None) -> tuple[float | None, str]:
        """What an untrained model (near-zero, near-uniform outputs) should score, and why.

        `classes`: C read from the logits, when known; else the data's number of classes."""
        c = classes or self.num_classes
        if self.name == "cross_entropy" and c:
            return math.log(c), f"ln C = ln {c}"
        if self.name == "multi_margin" and c:
            m = self.config.margin
            return (c - 1) * m / c, f"(C-1)·margin/C = {c - 1}·{m:g}/{c}"
        if self.name == "bce":
            return math.log(2), "ln 2"
        if c:  # mse against one-hot targets: near-zero outputs score the mean of (0 - onehot)^2
            return 1.0 / c, f"1/C = 1/{c} (one-hot targets)"
        if targets is None or targets.numel() < 2:
            return None, "the variance of the targets (no targets seen)"
        return float(targets.float().var(unbiased=False)), "the variance of the targets"


def build_objective(config: LossConfig, num_classes: int | None, target_size: int = 1) -> Objective:
    if config.name in ("cross_entropy", "multi_margin") and not num_classes:
        raise BadInput(f"{config.name} needs integer class labels; these targets look like regression values", where="loss")
    return Objective(config, num_classes, target_size)


# --------------------------------------------------------------------------------------------
# The scorer: one of the three ways
# --------------------------------------------------------------------------------------------


@dataclass
class Names:
    """What to call each user-supplied piece in an error message: a recipe key or an API argument."""

    step: str = "step.target"
    loss: str = "loss.target"
    model: str = "model"
    data: str = "data"


def check_signature(fn: Callable[..., Any], arguments: tuple[str, ...], where: str, what: str) -> None:
    """Raise BadInput when `fn` cannot be called with len(arguments) positional arguments."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin without a signature: trust it
        return
    try:
        signature.bind(*arguments)
    except TypeError:
        raise BadInput(
            f"expected {what}({', '.join(arguments)}), but {getattr(fn, '__name__', fn)!r} takes {signature}", where=where
        ) from None


def loss_callable(obj: Any, args: dict[str, Any], where: str) -> Callable[[Any, torch.Tensor], torch.Tensor]:
    """A custom loss: a function loss_fn(outputs, targets), or a class (e.g. nn.CrossEntropyLoss) built with `args`."""
    if isinstance(obj, type):
        try:
            obj = obj(**args)
        except (Exception, SystemExit, GeneratorExit) as exc:
            raise BadInput(f"building the loss {obj.__name__}({quote(args)}) failed: {raised(exc)}", where=where) from None
    elif args:
        import functools

        obj = functools.partial(obj, **args)
    if not callable(obj):
        raise BadInput(f"expected a callable loss_fn(outputs, targets), got {type(obj).__name__}", where=where)
    check_signature(obj.forward if isinstance(obj, nn.Module) else obj, ("outputs", "targets"), where, "loss_fn")
    return obj


def _field(output: Any, name: str) -> Any:
    """`output.name` or `output["name"]`, else None."""
    if isinstance(output, Mapping):
        return output.get(name)
    return getattr(output, name, None)


@dataclass
class Scorer:
    """Scores a batch with one of the three ways (see the module docstring)."""

    way: str  # step | model | loss
    step_fn: Callable[[nn.Module, Any], Any] | None = None
    loss_fn: Callable[[Any, torch.Tensor], torch.Tensor] | None = None  # way "loss": an Objective or a custom callable
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    names: Names = field(default_factory=Names)
    kwargs_batches: bool = False  # way "loss" with dict batches: the model takes the inputs as keyword arguments
    capture: bool | None = None  # way "step": catch the model's outputs with hooks (None: until a step shows whether it returns logits)

    @property
    def objective(self) -> Objective | None:
        """The named loss, when the scorer uses one."""
        return self.loss_fn if isinstance(self.loss_fn, Objective) else None

    def __call__(self, model: nn.Module, batch: Any) -> Scored:
        if self.way == "loss":
            outputs, logits, targets = self._forward(model, batch)
            return self._score_outputs(outputs, logits, targets, batch)
        if self.way == "model":
            return self._score_model_output(self._model_output(model, batch), batch)
        seen: list[Any] = []
        return self._score_step_output(self._step_output(model, batch, seen), batch, seen)

    def check(self, model: nn.Module, batch: Any) -> Scored:
        """Score `batch` like __call__, but a failure names the piece that failed (the model, the loss, the step)."""
        names = self.names
        if self.way == "loss":
            outputs, logits, targets = _attempt(
                lambda: self._forward(model, batch), names.model, "the model cannot score the data: a forward pass failed", batch
            )
            scored = _attempt(
                lambda: self._score_outputs(outputs, logits, targets, batch),
                names.loss,
                "the loss cannot score the model's outputs",
                batch,
                outputs,
            )
            if self.objective is not None:
                self._check_named(scored)
            return scored
        if self.way == "model":
            output = _attempt(
                lambda: self._model_output(model, batch),
                names.model,
                "the model cannot score the data: a forward pass with the batch as keyword arguments failed",
                batch,
            )
            return self._score_model_output(output, batch)
        seen: list[Any] = []
        out = _attempt(lambda: self._step_output(model, batch, seen), names.step, "the step failed", batch)
        return self._score_step_output(out, batch, seen)

    def loss_floor(self, classes: int | None = None) -> float | None:
        """The lowest value the loss can reach on correctly predicted class labels (or exact regression): 0 for the
        plain losses, the smoothed target's entropy for a cross-entropy with label smoothing; None when unknown (a
        step, a custom loss other than nn.CrossEntropyLoss). `classes`: C, for a custom smoothed cross-entropy."""
        objective = self.objective
        if objective is not None:
            smoothing = objective.config.label_smoothing if objective.name == "cross_entropy" else 0.0
            return smoothed_floor(smoothing, objective.num_classes)
        if self.way == "model":
            return 0.0
        if self.way == "loss" and isinstance(self.loss_fn, nn.CrossEntropyLoss):
            return smoothed_floor(self.loss_fn.label_smoothing, classes)
        return None

    def logits_of(self, model: nn.Module, batch: Any) -> torch.Tensor | None:
        """The model's logits for `batch` without scoring the loss (so labels the loss would reject cannot stop it):
        the forward pass of way "loss", the model without its labels for way "model", the step's `logits` for way
        "step". None where they cannot be had (a step that returns only the loss, or raises)."""
        try:
            if self.way == "loss":
                return self._forward(model, batch)[1]
            if self.way == "model":
                inputs = batching.inputs_of(batch)
                with self.autocast():
                    out = _field(model(**inputs), "logits")
                return out if isinstance(out, torch.Tensor) else None
            out = self._step_output(model, batch)
        except Exception:  # noqa: BLE001 - no logits to be had; the caller scores the batch and reports what fails
            return None
        logits = out.get("logits") if isinstance(out, Mapping) else None
        return logits if isinstance(logits, torch.Tensor) else None

    def _check_named(self, scored: Scored) -> None:
        objective = self.objective
        assert objective is not None
        logits, targets = scored.logits, scored.targets
        if objective.name in ("mse", "bce") and logits is not None and targets is not None:
            if logits.shape != objective.target_as_float(logits, targets).shape:
                raise BadInput(
                    f"outputs of shape {tuple(logits.shape)} do not match targets of shape {tuple(targets.shape)} "
                    f"for the {objective.name} loss",
                    where=self.names.model,
                )

    def _forward(self, model: nn.Module, batch: Any) -> tuple[Any, torch.Tensor | None, torch.Tensor | None]:
        if self.kwargs_batches:
            targets = batching.targets_of(batch)
            with self.autocast():
                outputs = model(**batching.inputs_of(batch))
        else:
            targets = batch[1]
            with self.autocast():
                outputs = model(batch[0])
        logits = outputs if isinstance(outputs, torch.Tensor) else _field(outputs, "logits")
        return outputs, logits, targets

    def _model_output(self, model: nn.Module, batch: Any) -> Any:
        with self.autocast():
            return model(**batch)

    def _step_output(self, model: nn.Module, batch: Any, seen: list[Any] | None = None) -> Any:
        """The step's output; `seen` collects the outputs of the outermost module calls it made (see `outermost_outputs`)."""
        with self.autocast(), outermost_outputs(model, seen if self.capture is not False else None):
            out = self.step_fn(model, batch)  # type: ignore[misc]
        if self.capture is None:
            self.capture = not (isinstance(out, Mapping) and out.get("logits") is not None)
        return out

    def _score_outputs(self, outputs: Any, logits: torch.Tensor | None, targets: Any, batch: Any) -> Scored:
        loss = self.loss_fn(logits if logits is not None else outputs, targets)  # type: ignore[misc]
        return Scored(self._scalar(loss, self.names.loss), logits, targets, batching.size(batch))

    def _score_model_output(self, output: Any, batch: Any) -> Scored:
        loss = _field(output, "loss")
        if loss is None:
            raise BadInput(self._no_loss_message(batch, output), where=self.names.data)
        return Scored(self._scalar(loss, self.names.model), _field(output, "logits"), batching.targets_of(batch), batching.size(batch))

    def _score_step_output(self, out: Any, batch: Any, seen: list[Any] | None = None) -> Scored:
        """The step's loss, with its logits: those it returned, else the model's output its hooks saw (`seen`), when the
        targets (returned, or the batch's) are class labels of it."""
        if isinstance(out, Mapping):
            if "loss" not in out:
                raise BadInput(
                    f"the step returned a mapping with keys {sorted(map(str, out))} but no 'loss'; return a scalar loss "
                    "or a mapping {loss, logits, targets}",
                    where=self.names.step,
                )
            targets = out.get("targets")
            targets = targets if targets is not None else batching.targets_of(batch)
            logits = out.get("logits")
            if logits is None:
                logits = _seen_logits(seen or [], targets)
            return Scored(self._scalar(out["loss"], self.names.step), logits, targets, batching.size(batch))
        targets = batching.targets_of(batch)
        logits = _seen_logits(seen or [], targets)
        return Scored(self._scalar(out, self.names.step), logits, targets if logits is not None else None, batching.size(batch))

    @staticmethod
    def _scalar(loss: Any, where: str) -> torch.Tensor:
        if not isinstance(loss, torch.Tensor):
            raise BadInput(f"expected the loss as a scalar torch tensor, got {type(loss).__name__}", where=where)
        if loss.numel() != 1:
            raise BadInput(f"expected a scalar loss, got a tensor of shape {tuple(loss.shape)}; reduce it (e.g. .mean())", where=where)
        return loss.reshape(())

    def _no_loss_message(self, batch: Any, output: Any) -> str:
        keys = sorted(map(str, batch)) if isinstance(batch, Mapping) else []
        has_labels = any(k in keys for k in batching.TARGET_KEYS)
        why = (
            (
                "the batch holds no `labels` (keys: " + ", ".join(keys) + "); a Hugging Face model computes its loss only when "
                "`labels` is passed, so add `labels` to each item of the data"
            )
            if not has_labels
            else f"the model's output ({type(output).__name__}) has no `loss`"
        )
        return (
            f"the model returned no loss for a dict batch: {why}. Or give a `step` that returns the loss, or a custom loss "
            "(loss: {target: module:fn}) that scores the outputs against the targets"
        )

    # -- classification facts -----------------------------------------------------------------

    def correct(self, scored: Scored) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(correct, counted) predictions, or None when there are no class logits to judge."""
        if scored.logits is None or scored.targets is None or not isinstance(scored.logits, torch.Tensor):
            return None
        objective = self.objective
        if objective is not None:
            return objective.correct(scored.logits, scored.targets)
        axis = class_axis(scored.logits, scored.targets)
        return accuracy_counts(scored.logits, scored.targets, axis) if axis is not None else None

    def classes(self, scored: Scored) -> int | None:
        """C, the size of the class axis of the logits, when the targets are class labels."""
        axis = class_axis(scored.logits, scored.targets)
        return int(scored.logits.shape[axis]) if axis is not None else None  # type: ignore[union-attr]

    def is_classification(self, scored: Scored) -> bool:
        objective = self.objective
        if objective is not None:
            return objective.is_classification
        return self.classes(scored) is not None

    def expected_initial_loss(self, scored: list[Scored], targets: torch.Tensor | None = None) -> tuple[float | None, str]:
        """What an untrained model should score on these batches, and why; (None, why not) when unknown.
        `targets`: the regression targets to take the variance of (default: those of `scored`)."""
        objective = self.objective
        first = scored[0] if scored else None
        classes = self.classes(first) if first is not None else None
        if objective is not None:
            if targets is None:
                seen = [s.targets for s in scored if isinstance(s.targets, torch.Tensor)]
                targets = torch.cat([t.reshape(-1).float() for t in seen]) if seen else None
            return objective.expected_initial_loss(targets, classes)
        if classes:
            source = {"step": "the step", "model": "the model's own loss", "loss": "the custom loss"}[self.way]
            return math.log(classes), f"ln C = ln {classes}, C from the logits (assuming {source} is a softmax cross-entropy)"
        if first is None or first.logits is None:
            return None, {
                "step": "the step returned no logits",
                "model": "the model's output has no logits",
                "loss": "the model's output is not a tensor of logits",
            }[self.way]
        return None, "the targets are not class labels of the logits' last dimension"


@contextlib.contextmanager
def outermost_outputs(model: nn.Module, seen: list[Any] | None) -> Any:
    """While the block runs, append to `seen` the output of every outermost call of `model` or one of its children
    (a call made inside another of those calls is not outermost): what a training step's `model(x)` or `self.net(x)`
    returned. `seen` None: no hooks at all."""
    if seen is None:
        yield
        return
    depth = [0]

    def enter(module: nn.Module, args: Any) -> None:
        depth[0] += 1

    def leave(module: nn.Module, args: Any, output: Any) -> None:
        depth[0] -= 1
        if depth[0] == 0:
            seen.append(output)

    handles = []
    for module in (model, *model.children()):
        handles.append(module.register_forward_pre_hook(enter))
        handles.append(module.register_forward_hook(leave, always_call=True))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _seen_logits(seen: list[Any], targets: Any) -> torch.Tensor | None:
    """The last output in `seen` (a tensor, or an output's `logits`) whose class axis the targets index, or None."""
    if not isinstance(targets, torch.Tensor):
        return None
    for output in reversed(seen):
        logits = output if isinstance(output, torch.Tensor) else _field(output, "logits")
        if isinstance(logits, torch.Tensor) and class_axis(logits, targets) is not None:
            return logits
    return None


def _attempt(work: Callable[[], Any], where: str, what: str, batch: Any, outputs: Any = None) -> Any:
    """Run a piece of the user's code; anything it raises is their input error, naming `where`."""
    try:
        return work()
    except BadInput:
        raise
    except (Exception, SystemExit, GeneratorExit) as exc:  # SystemExit too: code that ends the program when first called is unusable
        seen = f" on a batch {batching.describe(batch)}" + (
            f" with model outputs {batching.describe(outputs)}" if outputs is not None else ""
        )
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        said = f"{type(exc).__name__}: {first}" if isinstance(exc, Exception) else raised(exc)
        raise BadInput(f"{what}{seen}: {said}", where=where) from None


def pick_way(batch: Any, *, step: bool, custom_loss: bool) -> str:
    """Which of the three ways scores batches like `batch` (the module docstring's order)."""
    if step:
        return "step"
    if isinstance(batch, Mapping):
        return "loss" if custom_loss else "model"
    return "loss"
