"""The bugs only a training loop can have, seen through PyTorch's own hooks while the loop runs: gradients
that accumulate across steps, no optimizer step, weights that never change, the model in eval mode, no
gradient reaching the parameters, the same batch at every step. Also what the loop's first batch says
about the initial loss, so that a loop that returns only its loss is still checked against ln C.

`Recorder(model, optimizer).attach()` hooks in (nothing else about the loop changes; `detach()` removes
every hook, and a watch does it in `finally`):
  forward pre-/post-hooks  on the model (or, when training code calls a child directly, as a Lightning
                           training_step calling `self.net(x)` does, on the child it calls first): the
                           train/eval flag of each training forward (grad enabled), a fingerprint of its
                           inputs (256 elements at fixed pseudo-random positions, hashed; every forward of
                           the first FINGERPRINT_HEAD, then every FINGERPRINT_EVERY-th), and a loss the
                           output carries (`output.loss`, as Hugging Face models return it)
  a tensor hook            on the last trainable parameter (the last one that got a gradient at the first
                           step): each backward's contribution, and whether the gradient was zeroed since the
                           last optimizer step (p.grad None or zero when the first contribution after a step
                           arrives)
  optimizer step hooks     register_step_pre_hook / register_step_post_hook: optimizer steps, the LR of
                           each (param_groups[0]["lr"]), the gradient each step applied
  first batch (`first_batch=True`, until the first optimizer step)   a global module forward hook finds a
                           torch.nn loss module called on the model's output (its targets and its loss; a
                           forward hook on it then reads the loss at every step); a tensor hook on the
                           model's first output reads its gradient, which for a softmax cross-entropy is
                           (softmax - onehot) / N and so gives the targets and the loss without asking
Everything stays on the device until it is read (every FLUSH_EVERY steps and at the end): no extra device
sync per step, no random numbers drawn (the fingerprint positions come from a private generator), no
change to any value the loop computes.

Rules of `decide` (pure: the facts a Recorder gathered in, a Verdict out; thresholds below):
  no-optimizer-step    fail  >= NO_STEP_MIN_FORWARDS training forwards and not one optimizer.step() (warn
                             when the weights changed anyway: another optimizer trains the model)
  no-gradient-at-step  fail  loss.backward() raised because the loss has no graph (computed under
                             torch.no_grad(), or detached); or at >= NO_GRAD_SHARE of >= NO_GRAD_MIN_STEPS
                             steps no trainable parameter held a gradient (backward on a detached loss,
                             or zero_grad() between backward() and step())
  weights-unchanged    fail  >= UNCHANGED_MIN_STEPS optimizer steps and not one trainable parameter of the
                             model changed (the optimizer holds other parameters, or its LR is 0)
  grads-accumulate     fail  at >= ACCUMULATE_SHARE of >= ACCUMULATE_MIN_STEPS steps the next backward
                             added to the gradient of the step before (zero_grad() missing); accumulation
                             done on purpose (zero_grad() after every k-th backward, step every k) is quiet
  eval-mode-training   warn  the model has layers that compute otherwise in eval mode (dropout with p > 0,
                             batch norm tracking running statistics: depends_on_mode) and >= EVAL_SHARE of the
                             steps (at least EVAL_MIN_STEPS) ran in eval mode
  same-batch-repeated  warn  >= SAME_BATCH_MIN_FORWARDS fingerprinted training forwards, all of one input
                             (full-batch training on purpose looks the same: nndiag cannot tell)
"""

from __future__ import annotations

import hashlib
import math
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable

import pandas as pd
import torch
from torch import nn

from nndiag.findings import Verdict
from nndiag.result import Result
from nndiag.training import batch as batching
from nndiag.training.scoring import accuracy_counts, class_axis

NO_STEP_MIN_FORWARDS = 10  # training forwards without one optimizer step before no-optimizer-step is said
NO_GRAD_MIN_STEPS = 3  # optimizer steps seen before no-gradient-at-step is judged
NO_GRAD_SHARE = 0.5  # ... and the share of them that had no gradient on the watched parameters
UNCHANGED_MIN_STEPS = 3  # optimizer steps after which weights that never changed are a bug
ACCUMULATE_MIN_STEPS = 3  # steps whose next backward was seen, before grads-accumulate is judged
ACCUMULATE_SHARE = 0.5  # ... and the share of them that added to a gradient left over from the step before
EVAL_MIN_STEPS = 3  # steps in eval mode before eval-mode-training is said
EVAL_SHARE = 0.1  # ... and their share of all steps (a validation pass that forgot model.train() leaves the rest in eval mode)
SAME_BATCH_MIN_FORWARDS = 20  # fingerprinted training forwards before same-batch-repeated is judged
FINGERPRINT_HEAD = 32  # every training forward is fingerprinted up to this many ...
FINGERPRINT_EVERY = 16  # ... then every this-many-th
FINGERPRINT_ELEMENTS = 256  # input elements a fingerprint reads (at fixed pseudo-random positions)
FLUSH_EVERY = 256  # optimizer steps between read-backs of what stays on the device
LOGGED_CHECKED = 64  # losses given to w.log that are checked for a missing graph
CE_TOLERANCE = 1e-3  # a first-output gradient within this of (softmax - onehot) / N (max abs, in units of 1/N) is cross-entropy's
CE_EPS_FACTOR = 8  # ... or within this many machine epsilons of the gradient's dtype (bf16 / fp16 under autocast)

MODE_LAYERS = (nn.modules.dropout._DropoutNd, nn.modules.batchnorm._NormBase)  # layers whose forward may depend on train/eval
ERROR_NO_GRAPH = "does not require grad"  # what loss.backward() raises on a loss without a graph

_STEPS: "weakref.WeakKeyDictionary[nn.Module, int]" = weakref.WeakKeyDictionary()  # model -> optimizer steps a Recorder saw


def depends_on_mode(module: nn.Module) -> bool:
    """Does the module compute something else in eval mode? Dropout with p > 0; batch/instance norm that tracks running
    statistics (InstanceNorm's default and BatchNorm(track_running_stats=False) use the batch's in both modes)."""
    if isinstance(module, nn.modules.dropout._DropoutNd):
        return module.p > 0
    return isinstance(module, nn.modules.batchnorm._NormBase) and bool(module.track_running_stats)


def steps_taken(model: Any) -> int:
    """Optimizer steps a Recorder (nndiag.watch, a callback) saw on this model, in this process (0 when none)."""
    try:
        return _STEPS.get(model, 0)
    except TypeError:  # not weak-referenceable
        return 0


def _first_tensor(obj: Any) -> torch.Tensor | None:
    return next(iter(batching.tensors(obj)), None)


def _logits_of(output: Any) -> torch.Tensor | None:
    """A forward's output as logits: the tensor itself, its `.logits` / ["logits"], or its first tensor."""
    if isinstance(output, torch.Tensor):
        return output
    found = output.get("logits") if isinstance(output, dict) else getattr(output, "logits", None)
    if isinstance(found, torch.Tensor):
        return found
    return output[0] if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor) else None


def _loss_of(output: Any) -> torch.Tensor | None:
    """The loss a forward's output carries (Hugging Face: output.loss / output["loss"]), a scalar, or None."""
    if isinstance(output, torch.Tensor):
        return None
    loss = output.get("loss") if isinstance(output, dict) else getattr(output, "loss", None)
    return loss if isinstance(loss, torch.Tensor) and loss.numel() == 1 else None


def _same_data(a: torch.Tensor, b: torch.Tensor | None) -> bool:
    return b is not None and (a is b or (a.device == b.device and a.numel() == b.numel() and a.data_ptr() == b.data_ptr()))


# --------------------------------------------------------------------------------------------
# The first batch: logits, targets and loss, found without asking
# --------------------------------------------------------------------------------------------


def _scalar_loss(loss: torch.Tensor) -> torch.Tensor:
    """One float loss (detached): a per-element loss (a loss module with reduction="none") is averaged, as the loop's own
    `.mean()` does."""
    loss = loss.detach().float()
    return loss.reshape(()) if loss.numel() == 1 else loss.mean()


@dataclass
class FirstBatch:
    """What the loop's first training batch showed before any optimizer step."""

    logits: torch.Tensor | None = None  # the model's first training output (detached)
    grad: torch.Tensor | None = None  # its gradient from the first backward
    labels: torch.Tensor | None = None  # targets the forward was given (a `labels` keyword, as Hugging Face models take)
    model_loss: torch.Tensor | None = None  # the loss the output carried
    loss_module: nn.Module | None = None  # the torch.nn loss module called on the output
    loss_inputs: torch.Tensor | None = None  # ... what it scored (the logits, maybe reshaped)
    loss_targets: torch.Tensor | None = None  # ... against these targets
    loss_value: torch.Tensor | None = None  # ... its result, averaged when the module returns one loss per element
    loss_reduction: str = "mean"  # ... the module's reduction ("mean", "sum", "none": the loop reduces it itself)
    examples: int = 0
    eval_mode: list[str] = field(default_factory=list)  # the layers that computed as at inference (model.eval()) in its forward

    def targets_and_loss(self) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, str]:
        """(logits, targets, loss, how they were found) of the first batch; None where not known."""
        if self.loss_module is not None and self.loss_inputs is not None:
            return self.loss_inputs, self.loss_targets, self.loss_value, f"the loss module {type(self.loss_module).__name__}"
        if self.model_loss is not None:
            return self.logits, self.labels, self.model_loss, "the model's own loss"
        if self.logits is not None and self.grad is not None:
            recovered = cross_entropy_targets(self.logits, self.grad)
            if recovered is not None:
                targets, axis = recovered
                logits = self.logits if axis == self.logits.dim() - 1 else self.logits.movedim(1, -1)
                flat_targets = targets.reshape(-1).to(logits.device)
                loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), flat_targets, ignore_index=-100)
                return logits, targets, loss, "the gradient of your loss: a softmax cross-entropy's"
        return self.logits, None, None, ""


def cross_entropy_targets(logits: torch.Tensor, grad: torch.Tensor) -> tuple[torch.Tensor, int] | None:
    """(targets, class axis) when `grad` is the gradient of a softmax cross-entropy of `logits` (mean or sum over the
    counted targets; rows with zero gradient are ignored targets, -100), else None. The gradient of cross-entropy with
    respect to its logits is (softmax - onehot(target)) / N: its one negative entry per row is the target, N the count."""
    if logits.shape != grad.shape or logits.dim() < 2 or not logits.is_floating_point():
        return None
    axes = [logits.dim() - 1] + ([1] if logits.dim() > 2 else [])
    for axis in axes:
        z = logits.detach().double().movedim(axis, -1).reshape(-1, logits.shape[axis])
        g = grad.detach().double().movedim(axis, -1).reshape(-1, logits.shape[axis])
        if z.shape[1] < 2:
            continue
        rows = g.abs().sum(dim=1) > 0
        if not bool(rows.any()):
            continue
        p = torch.softmax(z[rows], dim=1)
        target = g[rows].argmin(dim=1)
        p_target = p.gather(1, target[:, None]).squeeze(1)
        g_target = g[rows].gather(1, target[:, None]).squeeze(1)
        if not bool((g_target < 0).all()):
            continue
        scale = (p_target - 1) / g_target  # N, the same for every row of one loss
        n = float(scale.median())
        if not (n > 0 and math.isfinite(n)):
            continue
        expected = p - nn.functional.one_hot(target, z.shape[1]).double()
        tolerance = max(CE_TOLERANCE, CE_EPS_FACTOR * torch.finfo(grad.dtype).eps)  # half-precision gradients are coarser
        if float((g[rows] * n - expected).abs().max()) > tolerance:
            continue
        targets = torch.full((z.shape[0],), -100, dtype=torch.long)
        targets[rows.cpu()] = target.cpu()
        shape = list(logits.movedim(axis, -1).shape[:-1])
        return targets.reshape(shape), axis
    return None


# --------------------------------------------------------------------------------------------
# Recording: the hooks
# --------------------------------------------------------------------------------------------


class Recorder:
    """The loop's facts, gathered by hooks on `model` and `optimizer` while attached (see the module docstring).

    `on_step(step)` is called after every optimizer step (the probe and fail_on use it); `on_first_batch()` once,
    as soon as the first batch's logits, targets and loss are known (before the first step is applied when the
    loop computes them before calling optimizer.step()).

    Cheap on purpose (one optimizer step of a small MLP takes well under a millisecond): after the first step only
    a forward pre-hook on the model, one gradient hook on one parameter and the optimizer's post-step hook remain,
    each a few attribute updates; tensors are read back every FLUSH_EVERY steps."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: Any = None,
        *,
        first_batch: bool = False,
        start_step: int = 0,
        on_step: Callable[[int], None] | None = None,
        on_first_batch: Callable[[], None] | None = None,
        strict: bool = False,
    ):
        if not isinstance(model, nn.Module):
            raise TypeError(f"expected a torch.nn.Module, got {type(model).__name__}")
        self.model, self.optimizer = model, optimizer
        self.start_step = start_step  # the step count the trainer was at when the recorder attached (a resumed run)
        self.on_step, self.on_first_batch = on_step, on_first_batch
        self.strict = strict  # an error in nndiag's own hook code is raised (else recorded in `broken`, the hooks removed)
        self.broken: BaseException | None = None
        self.error: BaseException | None = None  # what the loop raised, when it did (set by the watch)
        self.steps = 0  # optimizer steps seen
        self.lrs: list[float] = []  # the LR of every step (param_groups[0]["lr"])
        self.losses: list[
            tuple[int, Any]
        ] = []  # (step, loss) the hooks read (a loss module's, or output.loss): a tensor until flushed, then a float
        self.forwards = 0  # training forwards (grad enabled) of the entry module
        self.nograd_train_forwards = 0  # forwards in training mode with grad disabled (a loss computed under torch.no_grad())
        self.logged_detached = 0  # losses given to w.log that had no graph
        self.first = FirstBatch() if first_batch else None
        self._first_done = not first_batch  # the first batch's facts are complete (or not wanted)
        trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.trainable = len(trainable)
        in_optimizer = {id(p) for g in getattr(optimizer, "param_groups", []) for p in g["params"]}
        self.in_optimizer = sum(id(p) in in_optimizer for _, p in trainable)
        self.mode_layers = [n or type(m).__name__ for n, m in model.named_modules() if depends_on_mode(m)]
        self._named = trainable
        self._params = [p for _, p in trainable]
        self.watched_name, self._watched = trainable[-1] if trainable else ("", None)  # the last trainable parameter
        # per step (lists, one entry per optimizer step): the train/eval flag of the last training forward before it
        # (None: no forward seen), training forwards since the step before, backward contributions to the watched
        # parameter since the step before, whether it held a gradient when the step ran
        self._training: list[bool | None] = []
        self._forwards: list[int] = []
        self._contributions: list[int] = []
        self._has_grad: list[bool] = []
        self._leftovers: list[Any] = []  # per step after the first: ‖gradient left over‖ when its first contribution came (None: zeroed)
        self._norms: dict[int, tuple[Any, Any]] = {}  # sampled step -> (‖p.grad‖ at the step, ‖the step's own contributions‖)
        self._since_forwards, self._since_training, self._since_contributions = 0, None, 0
        self._fresh = True  # no contribution to the watched parameter yet since the last step
        self._own: torch.Tensor | None = None  # the sum of this step's contributions (sampled steps)
        self._before: torch.Tensor | None = None
        self._handles: list[Any] = []
        self._early: list[Any] = []  # hooks needed only until the first step
        self._grad_handle: Any = None
        self._loss_handle: Any = None
        self._entry: nn.Module | None = None  # the module whose calls are the loop's forwards
        self._depth = 0
        self._fingerprints: list[Any] = []  # pending samples (device tensors)
        self._digests: dict[str, int] = {}
        self._positions: dict[tuple[int, str], torch.Tensor] = {}
        self._loss_module: nn.Module | None = None
        self._step_losses: list[Any] = []
        self._carries_loss: bool | None = None
        self._user_logs = 0  # losses given to w.log (the loss hooks stop once the loop logs its own)
        self._flushed = 0
        self._first_output: torch.Tensor | None = None  # the model's first training output, until the first step

    # -- attaching -------------------------------------------------------------------------------

    def attach(self) -> "Recorder":
        self._before = self._weights()
        for module in (self.model, *self.model.children()):
            self._early.append(module.register_forward_pre_hook(self._pre_forward, with_kwargs=True))
            self._early.append(module.register_forward_hook(self._post_forward, with_kwargs=True, always_call=True))
        if self._watched is not None:
            self._grad_handle = self._watched.register_hook(self._grad)
        if self.optimizer is not None:
            self._early.append(self.optimizer.register_step_pre_hook(self._pre_step))
            self._handles.append(self.optimizer.register_step_post_hook(self._post_step))
        if self.first is not None:
            self._early.append(nn.modules.module.register_module_forward_hook(self._any_forward))
        self._count()
        return self

    def detach(self) -> None:
        for handle in [*self._early, *self._handles, self._grad_handle, self._loss_handle]:
            if handle is not None:
                handle.remove()
        self._early, self._handles, self._grad_handle, self._loss_handle = [], [], None, None
        self._count()

    def _count(self) -> None:
        try:
            _STEPS[self.model] = max(_STEPS.get(self.model, 0), self.start_step + self.steps)
        except TypeError:  # not weak-referenceable
            pass

    def _failed(self, exc: Exception) -> None:
        """An error in nndiag's own hook code must not stop the user's training: it is kept in `broken` and every hook is
        removed (with `strict`, it is raised as it is)."""
        self.broken = exc
        self.detach()
        if self.strict:
            raise exc

    # -- forwards --------------------------------------------------------------------------------

    def _pre_forward(self, module: nn.Module, args: Any, kwargs: Any) -> None:
        try:
            if self._depth > 0 or (self._entry is not None and module is not self._entry):
                self._depth += 1
                return
            self._depth += 1
            if self._entry is None and torch.is_grad_enabled():  # the first training call: the model, or the child called first
                self._entry = module
            self._forward(module, args, kwargs)
            first = self.first
            if first is not None and not self._first_done and first.logits is None and torch.is_grad_enabled():
                labels = kwargs.get("labels") if isinstance(kwargs, dict) else None
                first.labels = labels.detach() if isinstance(labels, torch.Tensor) else None
                first.examples = batching.size((args, kwargs))
        except Exception as exc:
            self._failed(exc)

    def _fast_forward(self, module: nn.Module, args: Any, kwargs: Any) -> None:
        """The model's forward pre-hook after the first step, when the loop calls the model itself."""
        try:
            self._forward(module, args, kwargs)
        except Exception as exc:
            self._failed(exc)

    def _forward(self, module: nn.Module, args: Any, kwargs: Any) -> None:
        if not torch.is_grad_enabled():
            if module.training:
                self.nograd_train_forwards += 1
            return
        self.forwards += 1
        self._since_forwards += 1
        self._since_training = self.model.training and module.training
        n = self.forwards
        if n <= FINGERPRINT_HEAD or n % FINGERPRINT_EVERY == 0:
            self._fingerprint(args, kwargs)

    def _post_forward(self, module: nn.Module, args: Any, kwargs: Any, output: Any) -> None:
        try:
            self._depth = max(self._depth - 1, 0)
            if self._depth > 0 or module is not self._entry or not torch.is_grad_enabled():
                return
            if self._carries_loss is None:
                self._carries_loss = _loss_of(output) is not None
            if self._carries_loss and self._loss_module is None and not self._user_logs:
                loss = _loss_of(output)
                if loss is not None:
                    self._step_losses.append(loss.detach())
            first = self.first
            if first is not None and not self._first_done and first.logits is None:
                logits = _logits_of(output)
                if logits is not None and logits.is_floating_point():
                    first.logits = logits.detach().clone()
                    if not (self.model.training and module.training):
                        first.eval_mode = list(self.mode_layers)
                    model_loss = _loss_of(output)
                    first.model_loss = model_loss.detach().clone() if model_loss is not None else None
                    self._first_output = logits
                    if logits.requires_grad:
                        self._early.append(logits.register_hook(self._first_grad))
        except Exception as exc:
            self._failed(exc)

    def _first_grad(self, grad: torch.Tensor) -> None:
        if self.first is not None and self.first.grad is None:
            self.first.grad = grad.detach().clone()

    def _any_forward(self, module: nn.Module, inputs: Any, output: Any) -> None:
        """The global hook, until the first step: a torch.nn loss module called on the model's first output."""
        try:
            first = self.first
            if first is None or self._loss_module is not None or not isinstance(module, nn.modules.loss._Loss):
                return
            scored = inputs[0] if isinstance(inputs, tuple) and inputs and isinstance(inputs[0], torch.Tensor) else None
            if scored is None or not _same_data(scored, self._first_output) or not isinstance(output, torch.Tensor):
                return
            self._loss_module = first.loss_module = module
            first.loss_inputs = scored.detach().clone()
            target = inputs[1] if len(inputs) > 1 and isinstance(inputs[1], torch.Tensor) else None
            first.loss_targets = target.detach().clone() if target is not None else None
            first.loss_reduction = str(getattr(module, "reduction", "mean"))
            value = _scalar_loss(output)
            first.loss_value = value.clone()
            self._step_losses = [value]
            self._loss_handle = module.register_forward_hook(self._loss_forward)
        except Exception as exc:
            self._failed(exc)

    def _loss_forward(self, module: nn.Module, inputs: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor) and output.numel() >= 1 and torch.is_grad_enabled():
            self._step_losses.append(_scalar_loss(output))

    def _fingerprint(self, args: Any, kwargs: Any) -> None:
        x = _first_tensor(args) if args else None
        x = x if x is not None else _first_tensor(kwargs)
        if x is None or x.numel() == 0:
            return
        key = (x.numel(), str(x.device))
        positions = self._positions.get(key)
        if positions is None:
            g = torch.Generator().manual_seed(x.numel())  # private: the loop's RNG streams are not touched
            count = min(FINGERPRINT_ELEMENTS, x.numel())
            positions = torch.randint(0, x.numel(), (count,), generator=g).to(x.device)
            self._positions[key] = positions
        self._fingerprints.append((tuple(x.shape), x.detach().reshape(-1).index_select(0, positions)))

    # -- backward --------------------------------------------------------------------------------

    def _grad(self, grad: torch.Tensor) -> None:
        """The watched parameter's gradient hook: each backward's contribution, before it is added to .grad."""
        try:
            if self._fresh:
                self._fresh = False
                self._own = None
                if self.steps > 0:  # after an optimizer step: was the gradient zeroed (None, or all zeros) since?
                    left = self._watched.grad  # type: ignore[union-attr]
                    self._leftovers.append(None if left is None else torch.linalg.vector_norm(left.detach().float()))
            self._since_contributions += 1
            if _sampled(self.steps + 1):
                g = grad.detach()
                self._own = g.clone() if self._own is None else self._own + g
        except Exception as exc:
            self._failed(exc)

    # -- optimizer steps -------------------------------------------------------------------------

    def _pre_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        """Until the first step: when the first batch is complete, say so before the step changes the weights."""
        if not self._first_done and self.broken is None and self.first_ready():
            self._finish_first()  # fail_on can stop the loop here, before the first update

    def _post_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if self.broken is not None:
            return
        try:
            self._record_step(optimizer)
        except Exception as exc:
            self._failed(exc)
            return
        if not self._first_done:
            self._finish_first()
        if self.steps == 1:
            self._settle()
        if self.on_step is not None:
            self.on_step(self.start_step + self.steps)

    def _record_step(self, optimizer: Any) -> None:
        self.steps += 1
        step = self.steps
        self.lrs.append(float(optimizer.param_groups[0].get("lr", math.nan)) if optimizer.param_groups else math.nan)
        watched = self._watched
        grad = watched.grad if watched is not None else None
        self._training.append(self._since_training)
        self._forwards.append(self._since_forwards)
        self._contributions.append(self._since_contributions)
        # a gradient reached the watched parameter; when none did (a head this step did not use), any non-zero gradient
        # on another trainable parameter counts (read only on such steps: one device sync)
        self._has_grad.append((grad is not None and self._since_contributions > 0) or self._any_gradient())
        if grad is not None and _sampled(step):
            own = self._own
            self._norms[step] = (
                torch.linalg.vector_norm(grad.detach().float()),
                None if own is None else torch.linalg.vector_norm(own.float()),
            )
        if self._step_losses:
            losses = self._step_losses
            self.losses.append((step, losses[0] if len(losses) == 1 else torch.stack([v.float() for v in losses]).mean()))
            self._step_losses = []
        self._fresh, self._since_contributions, self._since_forwards, self._since_training = True, 0, 0, None
        if step - self._flushed >= FLUSH_EVERY:
            self.flush()

    def _any_gradient(self) -> bool:
        grads = [p.grad.detach() for p in self._params if p.grad is not None]
        if not grads:
            return False
        with torch.no_grad():
            return (
                bool(torch.stack([g.abs().amax().float().cpu() for g in grads if g.numel()]).amax() > 0)
                if any(g.numel() for g in grads)
                else False
            )

    def _settle(self) -> None:
        """After the first step: drop the hooks only the first batch needed; when the watched parameter got no gradient
        while others did (an unused last layer), watch the last one that did instead."""
        for handle in self._early:
            handle.remove()
        self._early = []
        if self._entry is self.model:
            self._early.append(self.model.register_forward_pre_hook(self._fast_forward, with_kwargs=True))
            if self._carries_loss and self._loss_module is None:
                self._early.append(self.model.register_forward_hook(self._output_loss, with_kwargs=True))
        else:  # a child is the entry (a Lightning training_step calling self.net(x)), or no training forward yet: keep the depth
            for module in (self.model, *self.model.children()):
                self._early.append(module.register_forward_pre_hook(self._pre_forward, with_kwargs=True))
                self._early.append(module.register_forward_hook(self._post_forward, with_kwargs=True, always_call=True))
        if self._contributions and self._contributions[0] == 0:
            used = [(n, p) for n, p in self._named if p.grad is not None]
            if used and used[-1][1] is not self._watched:
                self._grad_handle.remove()
                self.watched_name, self._watched = used[-1]
                self._grad_handle = self._watched.register_hook(self._grad)
                self._contributions[0], self._has_grad[0] = 1, True  # that parameter did get its gradient at step 1
        self._count()

    def _output_loss(self, module: nn.Module, args: Any, kwargs: Any, output: Any) -> None:
        """After the first step, when the model's output carries its loss (Hugging Face): read it, until the loop logs its own."""
        if self._user_logs or not torch.is_grad_enabled():
            return
        loss = _loss_of(output)
        if loss is not None:
            self._step_losses.append(loss.detach())

    def first_ready(self) -> bool:
        """The first batch's logits were seen, with their gradient or the loss module that scored them."""
        first = self.first
        return first is not None and first.logits is not None and (first.grad is not None or first.loss_module is not None)

    def _finish_first(self) -> None:
        """The first batch is complete: stop looking for it, and tell on_first_batch (it may raise DiagnosisFailed, which
        must reach the loop)."""
        self._first_done = True
        self._first_output = None
        if self.on_first_batch is not None and self.broken is None:
            self.on_first_batch()

    # -- reading ---------------------------------------------------------------------------------

    def note_logged_loss(self, loss: Any) -> None:
        """A loss the loop gave to w.log: the hooks stop reading losses of their own; one without a graph is evidence of a
        detached loss (the first LOGGED_CHECKED are looked at)."""
        self._user_logs += 1
        if self._user_logs == 1 and self._loss_handle is not None:
            self._loss_handle.remove()
            self._loss_handle = None
        if self._user_logs <= LOGGED_CHECKED and isinstance(loss, torch.Tensor):
            if loss.grad_fn is None and not loss.requires_grad and torch.is_grad_enabled():
                self.logged_detached += 1

    def flush(self) -> None:
        """Read back what waits on the device (fingerprints, norms): one transfer for many steps."""
        if self._fingerprints:
            samples, self._fingerprints = self._fingerprints, []
            groups: dict[tuple[int, torch.dtype], list[int]] = {}
            for i, (_, sample) in enumerate(samples):
                groups.setdefault((sample.numel(), sample.dtype), []).append(i)
            rows: list[Any] = [None] * len(samples)
            for indices in groups.values():  # one transfer per kind of input
                stacked = torch.stack([samples[i][1] for i in indices]).cpu()
                stacked = stacked.double() if stacked.is_floating_point() else stacked.long()
                for row, i in zip(stacked, indices):
                    rows[i] = row
            for (shape, _), row in zip(samples, rows):
                digest = hashlib.sha1(repr(shape).encode() + row.numpy().tobytes()).hexdigest()
                self._digests[digest] = self._digests.get(digest, 0) + 1
        for step, pair in self._norms.items():
            if any(isinstance(v, torch.Tensor) for v in pair):
                self._norms[step] = tuple(float(v) if isinstance(v, torch.Tensor) else v for v in pair)  # type: ignore[assignment]
        self._leftovers = [float(v) if isinstance(v, torch.Tensor) else v for v in self._leftovers]
        waiting = [i for i, (_, loss) in enumerate(self.losses) if isinstance(loss, torch.Tensor)]
        if waiting:  # the losses the hooks read, as floats: a long run keeps no tensor per step on the device
            values = torch.stack([_scalar_loss(self.losses[i][1]) for i in waiting]).tolist()  # one transfer
            for i, value in zip(waiting, values):
                self.losses[i] = (self.losses[i][0], value)
        self._flushed = self.steps
        self._count()

    def _weights(self) -> torch.Tensor | None:
        """A fingerprint of every trainable parameter (its sum and norm), to tell at the end which changed."""
        if not self._params:
            return None
        with torch.no_grad():
            rows = [torch.stack([p.detach().float().sum(), torch.linalg.vector_norm(p.detach().float())]).cpu() for p in self._params]
        return torch.stack(rows)

    def loss_series(self) -> list[tuple[int, float]]:
        """(step, loss) the hooks read (a loss module's result, or the model output's loss), per optimizer step."""
        if not self.losses:
            return []
        self.flush()  # every loss a float (one read-back for those still on the device)
        return [(self.start_step + step, float(value)) for step, value in self.losses]

    def table(self) -> pd.DataFrame:
        """One row per optimizer step: what the hooks saw (loop.csv)."""
        self.flush()
        norms = [self._norms.get(step, (None, None)) for step in range(1, self.steps + 1)]
        return pd.DataFrame(
            {
                "step": [self.start_step + s for s in range(1, self.steps + 1)],
                "lr": self.lrs,
                "training": self._training,
                "forwards": self._forwards,
                "backward_contributions": self._contributions,
                "has_grad": self._has_grad,
                "grad_norm": [math.nan if g is None else g for g, _ in norms],
                "own_grad_norm": [math.nan if o is None else o for _, o in norms],
            },
            columns=["step", "lr", "training", "forwards", "backward_contributions", "has_grad", "grad_norm", "own_grad_norm"],
        )

    def facts(self) -> dict[str, Any]:
        """Plain numbers for `decide`."""
        self.flush()
        after = self._weights()
        changed = 0
        if after is not None and self._before is not None:
            changed = int((after != self._before).any(dim=1).sum())
        steps = range(1, self.steps + 1)
        accumulated = [v is not None and v > 0 for v in self._leftovers]
        ratios = [g / o for g, o in self._norms.values() if g is not None and o]
        no_grad = [s for s in steps if not self._has_grad[s - 1]]
        eval_steps = [s for s in steps if self._training[s - 1] is False]
        error = self.error
        return {
            "steps": self.steps,
            "forwards": self.forwards,
            "nograd_train_forwards": self.nograd_train_forwards,
            "logged_detached": self.logged_detached,
            "trainable": self.trainable,
            "in_optimizer": self.in_optimizer,
            "changed": changed,
            "lr_zero": bool(self.lrs) and all(lr == 0 for lr in self.lrs),
            "watched": [self.watched_name] if self._watched is not None else [],
            "no_grad_steps": len(no_grad),
            "cleared_steps": sum(self._contributions[s - 1] > 0 and not self._has_grad[s - 1] for s in no_grad),
            "first_no_grad_step": no_grad[0] if no_grad else None,
            "checked_steps": len(self._leftovers),
            "accumulated_steps": int(sum(accumulated)),
            "first_accumulated_step": (accumulated.index(True) + 2) if any(accumulated) else None,
            "grad_ratio_last": ratios[-1] if ratios else None,
            "grad_ratio_max": max(ratios) if ratios else None,
            "eval_steps": len(eval_steps),
            "first_eval_step": eval_steps[0] if eval_steps else None,
            "mode_layers": self.mode_layers,
            "fingerprinted": int(sum(self._digests.values())),
            "distinct_inputs": len(self._digests),
            "error": None
            if error is None
            else f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}",
            "backward_raised": error is not None and ERROR_NO_GRAPH in str(error),
        }


def _sampled(step: int) -> bool:
    """Steps whose gradient norms are kept (evidence for grads-accumulate): the first FINGERPRINT_HEAD, then every FINGERPRINT_EVERY-th."""
    return step <= FINGERPRINT_HEAD or step % FINGERPRINT_EVERY == 0


# --------------------------------------------------------------------------------------------
# Deciding: pure over the facts
# --------------------------------------------------------------------------------------------


def decide(facts: dict[str, Any]) -> Verdict:
    """The loop's findings (see the module docstring). Pure: numbers in, findings out."""
    verdict = Verdict()
    steps = int(facts.get("steps") or 0)
    if facts.get("backward_raised"):
        _no_graph(verdict, facts)
    if steps == 0:
        if int(facts.get("forwards") or 0) >= NO_STEP_MIN_FORWARDS and not facts.get("backward_raised"):
            moved = int(facts.get("changed") or 0) > 0
            verdict.add(
                "no-optimizer-step",
                "warn" if moved else "fail",
                f"{facts['forwards']} training forward passes ran and not one optimizer.step() of the optimizer nndiag watched"
                + ("; the weights changed all the same, so another optimizer trains the model" if moved else "; the weights never changed"),
                "Pass nndiag the optimizer your loop steps."
                if moved
                else "Call optimizer.step() after loss.backward() in every iteration (or every k-th, accumulating).",
                forwards=int(facts["forwards"]),
                weights_changed=moved,
            )
        return verdict
    if not facts.get("backward_raised") and steps >= NO_GRAD_MIN_STEPS and facts["no_grad_steps"] >= NO_GRAD_SHARE * steps:
        _no_gradient(verdict, facts)
    if steps >= UNCHANGED_MIN_STEPS and facts["trainable"] > 0 and facts["changed"] == 0:
        why = []
        if facts.get("lr_zero"):
            why.append("the optimizer's LR was 0 at every step")
        if facts.get("in_optimizer") == 0:
            why.append(
                f"the optimizer holds none of the model's {facts['trainable']} trainable parameters (it was built for another model object)"
            )
        if facts["no_grad_steps"] >= NO_GRAD_SHARE * steps:
            why.append("no gradient reached them")
        verdict.add(
            "weights-unchanged",
            "fail",
            f"{steps} optimizer steps ran and not one of the model's {facts['trainable']} trainable parameters changed"
            + (f": {'; '.join(why)}" if why else ""),
            "Build the optimizer over this model's parameters (optimizer = torch.optim.Adam(model.parameters(), lr=...), after the model "
            "is built and moved to its device), with an lr= above 0, and check that gradients reach them.",
            steps=steps,
            trainable=int(facts["trainable"]),
            in_optimizer=facts.get("in_optimizer"),
            lr_zero=bool(facts.get("lr_zero")),
        )
    checked, accumulated = int(facts.get("checked_steps") or 0), int(facts.get("accumulated_steps") or 0)
    if checked >= ACCUMULATE_MIN_STEPS and accumulated >= ACCUMULATE_SHARE * checked:
        ratio = facts.get("grad_ratio_max")
        growth = f"; the gradient of {facts['watched'][0]} grew to {ratio:.1f}x its step's own batch gradient" if ratio else ""
        verdict.add(
            "grads-accumulate",
            "fail",
            f"gradients were not zeroed between optimizer steps: at {accumulated} of {checked} steps the next backward added to the "
            f"gradient of the step before (first at step {facts['first_accumulated_step']}){growth}, so each step applies the sum of "
            "every batch's gradient so far",
            "Call optimizer.zero_grad() (or model.zero_grad()) once per optimizer step, before loss.backward(). To accumulate over k "
            "batches on purpose, call it after every k-th step.",
            checked_steps=checked,
            accumulated_steps=accumulated,
            grad_ratio=ratio,
            parameter=facts["watched"][0] if facts.get("watched") else None,
        )
    evals = int(facts.get("eval_steps") or 0)
    if facts.get("mode_layers") and evals >= EVAL_MIN_STEPS and evals >= EVAL_SHARE * steps:
        layers = facts["mode_layers"]
        verdict.add(
            "eval-mode-training",
            "warn",
            f"the model was in eval mode during {evals} of {steps} optimizer steps (from step {facts['first_eval_step']}): its "
            f"{len(layers)} layers that depend on the mode ({', '.join(layers[:4])}{', ...' if len(layers) > 4 else ''}) behaved as at "
            "inference while it trained (BatchNorm normalises with running statistics it never updates; dropout is off)",
            "Call model.train() before the training steps, and again after every validation pass (model.eval() stays set until then).",
            eval_steps=evals,
            steps=steps,
            layers=layers[:20],
        )
    fingerprinted, distinct = int(facts.get("fingerprinted") or 0), int(facts.get("distinct_inputs") or 0)
    if fingerprinted >= SAME_BATCH_MIN_FORWARDS and distinct == 1:
        verdict.add(
            "same-batch-repeated",
            "warn",
            f"every one of the {fingerprinted} training forwards nndiag fingerprinted saw the same inputs: the loop trains on one batch "
            "over and over",
            "Draw a new batch every iteration (for x, y in loader: ...; not x, y = next(iter(loader)) once before the loop). If you "
            "train on the whole data set at every step on purpose (full-batch gradient descent), this is expected.",
            fingerprinted=fingerprinted,
            distinct=distinct,
        )
    return verdict


def _no_graph(verdict: Verdict, facts: dict[str, Any]) -> None:
    where = []
    if facts.get("nograd_train_forwards"):
        where.append(f"{facts['nograd_train_forwards']} forward passes in training mode ran under torch.no_grad()")
    if facts.get("logged_detached"):
        where.append(f"{facts['logged_detached']} losses given to w.log had no graph")
    verdict.add(
        "no-gradient-at-step",
        "fail",
        f"loss.backward() raised ({facts.get('error')}): the loss has no graph back to the model"
        + (f" ({'; '.join(where)})" if where else ""),
        "Compute the loss with gradients on: not under torch.no_grad() or torch.inference_mode(), not from .detach(), .item() or "
        ".data, and not re-wrapped in torch.tensor(...).",
        error=facts.get("error"),
        nograd_train_forwards=int(facts.get("nograd_train_forwards") or 0),
    )


def _no_gradient(verdict: Verdict, facts: dict[str, Any]) -> None:
    steps, none = int(facts["steps"]), int(facts["no_grad_steps"])
    cleared = int(facts.get("cleared_steps") or 0)
    if cleared >= none / 2 and cleared:
        how = "the gradients were computed and then cleared before the step: zero_grad() runs between loss.backward() and optimizer.step()"
        advice = "Call optimizer.zero_grad() before loss.backward() (or right after optimizer.step()), never between backward and step."
    else:
        how = "no backward reached any trainable parameter of the model"
        if facts.get("nograd_train_forwards"):
            how += f"; {facts['nograd_train_forwards']} forward passes in training mode ran under torch.no_grad()"
        if facts.get("logged_detached"):
            how += f"; {facts['logged_detached']} losses given to w.log had no graph"
        advice = (
            "Call loss.backward() on the loss computed from the model's output with gradients on: not under torch.no_grad(), not "
            "from .detach(), .item() or .data, not re-wrapped in torch.tensor(..., requires_grad=True)."
        )
    verdict.add(
        "no-gradient-at-step",
        "fail",
        f"{none} of {steps} optimizer steps ran without a gradient on the model's parameters (first at step {facts['first_no_grad_step']}): {how}",
        advice,
        no_grad_steps=none,
        steps=steps,
        cleared_steps=cleared,
    )


def result(recorder: Recorder) -> Result:
    """The loop stage's Result: the findings over what `recorder` saw, and its per-step table (loop.csv)."""
    facts = recorder.facts()
    verdict = decide(facts)
    metrics = {
        k: facts[k]
        for k in (
            "steps",
            "forwards",
            "trainable",
            "changed",
            "distinct_inputs",
            "fingerprinted",
            "eval_steps",
            "no_grad_steps",
            "accumulated_steps",
        )
    }
    metrics["grad_ratio_max"] = facts["grad_ratio_max"]
    return Result("loop", verdict, {"loop": recorder.table()}, metrics, source="python")


# --------------------------------------------------------------------------------------------
# The first batch as check-loss's rule sees it
# --------------------------------------------------------------------------------------------


LOSS_MODULES = {  # torch.nn loss class -> the named loss whose expected initial value applies
    "CrossEntropyLoss": "cross_entropy",
    "NLLLoss": "cross_entropy",
    "MultiMarginLoss": "multi_margin",
    "BCEWithLogitsLoss": "bce",
    "MSELoss": "mse",
}


def first_batch_expected(first: FirstBatch, num_classes: int | None) -> tuple[Any, Any, Any, float | None, str]:
    """(logits, targets, loss, expected initial loss, why) of the loop's first batch; expected None (with why not) when unknown."""
    from nndiag.config.recipe import LossConfig
    from nndiag.training.scoring import Objective

    logits, targets, loss, how = first.targets_and_loss()
    if num_classes:
        return logits, targets, loss, math.log(num_classes), f"ln C = ln {num_classes} (num_classes)"
    axis = class_axis(logits, targets)
    classes = int(logits.shape[axis]) if axis is not None else None
    module = first.loss_module
    if module is not None:
        name = LOSS_MODULES.get(type(module).__name__)
        if name is None:
            return (
                logits,
                targets,
                loss,
                None,
                f"the loss module {type(module).__name__} has no known initial value; pass num_classes= for ln C",
            )
        config = LossConfig(name=name, margin=float(getattr(module, "margin", 1.0)))
        objective = Objective(config, classes if name in ("cross_entropy", "multi_margin") else None)
        if name in ("cross_entropy", "multi_margin") and not classes:
            return logits, targets, loss, None, f"the targets of {type(module).__name__} are not class labels of the logits"
        expected, why = objective.expected_initial_loss(
            targets.float() if isinstance(targets, torch.Tensor) and name == "mse" else None, classes
        )
        return logits, targets, loss, expected, f"{why} ({how})"
    if classes:
        return logits, targets, loss, math.log(classes), f"ln C = ln {classes}, C from the logits ({how})"
    if logits is None:
        return logits, targets, loss, None, "no training forward of the model was seen before the first optimizer step"
    return (
        logits,
        targets,
        loss,
        None,
        (
            "your loss is neither a torch.nn loss module called on the model's output nor a softmax cross-entropy of it, and the "
            "output carries no loss: pass num_classes= for ln C"
        ),
    )


def _summed_count(first: FirstBatch) -> int:
    """How many losses a reduction="sum" loss module added up on the first batch: the targets it counted (class labels
    other than its ignore_index), else one per row of class probabilities (cross-entropy), else one per output value."""
    targets, inputs = first.loss_targets, first.loss_inputs
    if targets is not None and not targets.is_floating_point():
        return max(1, int((targets != getattr(first.loss_module, "ignore_index", -100)).sum()))
    if inputs is None:
        return max(1, first.examples)
    if isinstance(first.loss_module, nn.CrossEntropyLoss) and inputs.dim() >= 2:
        return max(1, inputs.numel() // inputs.shape[1])
    return max(1, inputs.numel())


def _loop_scale(first: FirstBatch) -> float | None:
    """What the loop multiplied the loss module's result by before backward (1: as it was; 1/B: divided by the batch
    size), read from the model output's gradient against the module's own; None when it cannot be told."""
    if first.grad is None or first.loss_inputs is None or first.loss_module is None:
        return None
    try:
        with torch.enable_grad():
            inputs = first.loss_inputs.detach().float().clone().requires_grad_()
            targets = first.loss_targets
            (own,) = torch.autograd.grad(first.loss_module(inputs, targets.to(inputs.device) if targets is not None else None), inputs)
    except Exception:  # a loss module that needs more than (input, target): nothing to compare with
        return None
    if own.numel() != first.grad.numel() or not bool(own.any()):
        return None
    return float(first.grad.float().norm() / own.norm())


def first_batch_result(
    first: FirstBatch, *, num_classes: int | None, optimizer: Any, logged_loss: float | None, tolerance: float
) -> Result:
    """check-loss's verdict on the loop's first batch (before any optimizer step): its loss against the expected initial loss."""
    from nndiag.diagnostics import check_loss
    from nndiag.training import engine

    logits, targets, loss, expected, why = first_batch_expected(first, num_classes)
    value = float(loss) if loss is not None else logged_loss
    if value is None:
        value = math.nan
    summed = first.loss_module is not None and first.loss_reduction == "sum" and loss is not None and math.isfinite(value)
    if summed:  # a sum over the batch: judge the mean per element against the expected initial loss
        count = _summed_count(first)
        summed_value, value = value, value / count
    axis = class_axis(logits, targets)
    accuracy = math.nan
    if axis is not None:
        correct, counted = accuracy_counts(logits, targets.to(logits.device), axis)
        accuracy = float(correct) / float(counted) if float(counted) > 0 else math.nan
    penalty = float(engine.l2_penalty(optimizer)) if optimizer is not None else 0.0
    frame = pd.DataFrame(
        [
            {
                "batch": 0,
                "examples": first.examples,
                "loss": value,
                "regularized_loss": value + penalty,
                "accuracy": accuracy,
                "logit_std": float(logits.float().std()) if logits is not None and logits.numel() > 1 else math.nan,
                "expected_loss": expected if expected is not None else math.nan,
            }
        ]
    )
    groups = getattr(optimizer, "param_groups", [])
    facts = {
        "expected": expected,
        "expected_why": why,
        "penalty": penalty,
        "weight_decay": max((g.get("weight_decay", 0.0) for g in groups if not engine.decoupled(optimizer, g)), default=0.0),
        "decoupled_decay": max((g.get("weight_decay", 0.0) for g in groups if engine.decoupled(optimizer, g)), default=0.0),
        "decay_per_step": engine.decay_per_step(optimizer) if optimizer is not None else 0.0,
        "optimizer": type(optimizer).__name__,
    }
    verdict = check_loss.decide(frame, facts, tolerance)
    if summed and (scale := _loop_scale(first)) is not None and scale > 0.5:  # the sum went to backward as it was
        verdict.add(
            "loss-scales-with-batch",
            "warn",
            f"the loss module {type(first.loss_module).__name__} sums over the batch (reduction='sum'): the first batch's loss "
            f"{summed_value:.4g} adds {count} losses (the mean per element, {value:.4g}, is what the expected initial loss was "
            "compared with)",
            "Use reduction='mean' (PyTorch's default) or divide by the batch size: a summed loss makes the usable learning rate "
            "depend on the batch size and the initial loss B times too large.",
            summed_loss=summed_value,
            elements=count,
            backward_scale=scale,
        )
    if first.eval_mode:  # the loss of a model in eval mode: not what training starts from
        layers = first.eval_mode
        for finding in verdict.findings:
            if finding.code in ("initial-loss-high", "initial-loss-low"):
                finding.evidence["eval_mode"] = True
                finding.message += (
                    f"; measured in eval mode (model.training False): {len(layers)} layer(s) that compute otherwise in training "
                    f"({', '.join(layers[:3])}{', ...' if len(layers) > 3 else ''}) ran as at inference"
                )
    metrics = {
        "initial_loss": value,
        "expected_loss": expected,
        "expected_from": why,
        "ratio": value / expected if expected else math.nan,
        "initial_accuracy": accuracy,
        "logit_std": float(frame["logit_std"].iloc[0]),
        "regularized_loss": value + penalty,
        "l2_penalty": penalty,
        "batches": 1,
        "eval_mode": bool(first.eval_mode),
    }
    return Result("check-loss", verdict, {"check_loss": frame}, metrics, source="python")
