"""The training engine: device and precision, seeding, the objective, optimizers and schedules,
one training step, evaluation, and snapshot/restore of everything a diagnostic may disturb.
"""

from __future__ import annotations

import contextlib
import copy
import math
import random
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nndiag.errors import BadInput
from nndiag.recipe import LossConfig, OptimConfig, ScheduleConfig

# --------------------------------------------------------------------------------------------
# Device, precision, seeding
# --------------------------------------------------------------------------------------------


def resolve_device(spec: str) -> torch.device:
    """'auto' -> CUDA, then MPS, then CPU; an explicit device must exist."""
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(spec)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise BadInput("CUDA was asked for but no CUDA device is available; use device: auto or cpu", where="device")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise BadInput(f"there are only {torch.cuda.device_count()} CUDA devices", where="device")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise BadInput("MPS was asked for but is not available on this machine", where="device")
    return device


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """The autocast dtype for this device and recipe precision, or None for plain fp32."""
    if precision == "fp32":
        return None
    supported = device.type == "cuda" and torch.cuda.is_bf16_supported()
    if precision == "bf16" and not supported:
        raise BadInput(f"bf16 mixed precision needs a CUDA device that supports it (device is {device})", where="precision")
    return torch.bfloat16 if supported else None


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# --------------------------------------------------------------------------------------------
# The objective: loss, accuracy, and the loss an untrained model should have
# --------------------------------------------------------------------------------------------


@dataclass
class Objective:
    """The recipe's loss function, with accuracy and the expected loss at initialisation."""

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
        """How many outputs the model needs for this loss and data."""
        if self.name == "bce" and self.num_classes == 2:
            return 1
        if self.num_classes is None:
            return self.target_size
        return self.num_classes

    def loss(self, logits: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        logits = logits.float()
        if self.name == "cross_entropy":
            return F.cross_entropy(logits, target, label_smoothing=self.config.label_smoothing, reduction=reduction)
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

    def correct(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
        """Number of correct predictions (a tensor, to avoid a device sync), or None for regression."""
        if not self.is_classification:
            return None
        if logits.dim() == 2 and logits.shape[1] > 1:
            predicted = logits.argmax(dim=1)
        else:
            predicted = (logits.reshape(-1) > 0).long()
        if target.dim() > 1:  # one-hot or multi-label targets
            if target.shape == logits.shape and logits.shape[1] > 1:
                target = target.argmax(dim=1)
            else:
                target = target.reshape(-1)
        return (predicted == target.long()).sum()

    def expected_initial_loss(self, targets: torch.Tensor) -> tuple[float, str]:
        """What an untrained model (near-zero, near-uniform outputs) should score, and why."""
        c = self.num_classes
        if self.name == "cross_entropy" and c:
            return math.log(c), f"ln C = ln {c}"
        if self.name == "multi_margin" and c:
            m = self.config.margin
            return (c - 1) * m / c, f"(C-1)·margin/C = {c - 1}·{m:g}/{c}"
        if self.name == "bce":
            return math.log(2), "ln 2"
        if c:  # mse against one-hot targets: near-zero outputs score the mean of (0 - onehot)^2
            return 1.0 / c, f"1/C = 1/{c} (one-hot targets)"
        variance = float(targets.float().var(unbiased=False))
        return variance, "the variance of the targets"


def build_objective(config: LossConfig, num_classes: int | None, target_size: int = 1) -> Objective:
    if config.name in ("cross_entropy", "multi_margin") and not num_classes:
        raise BadInput(f"{config.name} needs integer class labels; these targets look like regression values", where="loss")
    return Objective(config, num_classes, target_size)


# --------------------------------------------------------------------------------------------
# Optimizers and schedules
# --------------------------------------------------------------------------------------------


def build_optimizer(params: Any, config: OptimConfig, lr: float | None = None, weight_decay: float | None = None) -> torch.optim.Optimizer:
    lr = config.lr if lr is None else lr
    wd = config.weight_decay if weight_decay is None else weight_decay
    name = config.name
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=config.momentum, nesterov=config.nesterov, weight_decay=wd)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=tuple(config.betas), eps=config.eps, weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=tuple(config.betas), eps=config.eps, weight_decay=wd)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=config.momentum, eps=config.eps, weight_decay=wd)
    if name == "adagrad":
        return torch.optim.Adagrad(params, lr=lr, eps=config.eps, weight_decay=wd)
    raise BadInput(f"unknown optimizer {name!r}", where="optim.name")


def lr_factor(config: ScheduleConfig, step: int, total_steps: int, steps_per_epoch: int) -> float:
    """The multiplier on the peak LR at optimizer step `step` (0-based). Pure, for testing."""
    warmup = config.warmup_steps
    if warmup and step < warmup:
        return (step + 1) / warmup
    name = config.name
    if name == "none":
        return 1.0
    if name == "step":
        epoch = step // max(steps_per_epoch, 1)
        return config.gamma ** (epoch // config.step_size)
    if name == "inverse-sqrt":
        return math.sqrt(max(warmup, 1) / max(step + 1, 1)) if step + 1 > max(warmup, 1) else 1.0
    span = max(total_steps - warmup, 1)
    progress = min(max(step - warmup, 0) / span, 1.0)
    floor = config.min_lr_ratio
    if name == "cosine":
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    return floor + (1 - floor) * (1 - progress)  # linear


def build_scheduler(optimizer: torch.optim.Optimizer, config: ScheduleConfig, total_steps: int, steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(config, step, total_steps, steps_per_epoch))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


# --------------------------------------------------------------------------------------------
# Regularization switches
# --------------------------------------------------------------------------------------------

_DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)


@contextlib.contextmanager
def dropout_off(model: nn.Module) -> Iterator[None]:
    """Put every dropout layer in eval mode (other layers, e.g. BatchNorm, keep their mode)."""
    layers = [m for m in model.modules() if isinstance(m, _DROPOUT) and m.training]
    for m in layers:
        m.eval()
    try:
        yield
    finally:
        for m in layers:
            m.train()


def l2_penalty(optimizer: torch.optim.Optimizer) -> torch.Tensor:
    """The L2 term the optimizer's weight decay adds to the objective: sum over groups of wd/2·‖w‖²."""
    total = torch.zeros(())
    for group in optimizer.param_groups:
        wd = group.get("weight_decay", 0.0)
        if wd:
            for p in group["params"]:
                total = total + 0.5 * wd * p.detach().float().pow(2).sum().cpu()
    return total


# --------------------------------------------------------------------------------------------
# One step, and evaluation
# --------------------------------------------------------------------------------------------


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    objective: Objective,
    x: torch.Tensor,
    y: torch.Tensor,
    amp_dtype: torch.dtype | None = None,
    grad_clip: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward, backward, optimizer step. Returns (loss, logits), detached, without a device sync."""
    optimizer.zero_grad(set_to_none=True)
    with autocast(x.device, amp_dtype):
        logits = model(x)
    loss = objective.loss(logits, y)
    loss.backward()
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return loss.detach(), logits.detach()


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterator[tuple[torch.Tensor, torch.Tensor]], objective: Objective, amp_dtype: torch.dtype | None = None) -> dict[str, float]:
    """Mean loss and accuracy over `batches`, in eval mode; the model's mode is restored."""
    was_training = model.training
    model.eval()
    total_loss = torch.zeros((), dtype=torch.float64)
    total_correct = torch.zeros((), dtype=torch.float64)
    count = 0
    try:
        for x, y in batches:
            with autocast(x.device, amp_dtype):
                logits = model(x)
            total_loss += objective.loss(logits, y, reduction="sum").cpu().double() / _per_example(logits, objective)
            correct = objective.correct(logits, y)
            if correct is not None:
                total_correct += correct.cpu().double()
            count += x.shape[0]
    finally:
        model.train(was_training)
    if count == 0:
        return {"loss": float("nan"), "acc": float("nan")}
    acc = float(total_correct / count) if objective.is_classification else float("nan")
    return {"loss": float(total_loss / count), "acc": acc}


def _per_example(logits: torch.Tensor, objective: Objective) -> float:
    """'sum' reduction of elementwise losses (bce, mse) counts every output; divide to get per example."""
    if objective.name in ("bce", "mse") and logits.dim() > 1:
        return float(logits[0].numel())
    return 1.0


# --------------------------------------------------------------------------------------------
# Snapshot / restore: a diagnostic hands everything back exactly as it found it
# --------------------------------------------------------------------------------------------


@dataclass
class Snapshot:
    model_state: dict[str, torch.Tensor]
    grads: list[torch.Tensor | None]  # each parameter's .grad, so a block that trains leaves no gradients behind
    modes: list[bool]
    optimizer_state: dict[str, Any] | None
    rng: dict[str, Any]

    @classmethod
    def take(cls, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> "Snapshot":
        return cls(
            model_state={k: v.detach().clone() for k, v in model.state_dict().items()},
            grads=[p.grad.detach().clone() if p.grad is not None else None for p in model.parameters()],
            modes=[m.training for m in model.modules()],
            optimizer_state=copy.deepcopy(optimizer.state_dict()) if optimizer is not None else None,
            rng=rng_state(),
        )

    def restore(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> None:
        with torch.no_grad():
            state = model.state_dict()
            for key, value in self.model_state.items():
                state[key].copy_(value)
        for p, grad in zip(model.parameters(), self.grads):
            p.grad = grad
        for module, mode in zip(model.modules(), self.modes):
            module.training = mode
        if optimizer is not None and self.optimizer_state is not None:
            optimizer.load_state_dict(copy.deepcopy(self.optimizer_state))
        set_rng_state(self.rng)


@contextlib.contextmanager
def preserved(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> Iterator[Snapshot]:
    """Run a block that may train the model; afterwards model, optimizer and RNGs are as before."""
    snapshot = Snapshot.take(model, optimizer)
    try:
        yield snapshot
    finally:
        snapshot.restore(model, optimizer)


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])

