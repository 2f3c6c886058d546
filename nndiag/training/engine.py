"""The training engine: device and precision, seeding, optimizers and schedules, one training step,
evaluation, and snapshot/restore of everything a diagnostic may disturb. How a batch becomes a loss
is `nndiag.training.scoring`'s business.
"""

from __future__ import annotations

import contextlib
import copy
import math
import random
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
from torch import nn

from nndiag.config.recipe import OptimConfig, ScheduleConfig
from nndiag.errors import BadInput
from nndiag.training.scoring import Scored, Scorer, counted_targets

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


@contextlib.contextmanager
def exact_math(scorer: Any) -> Iterator[None]:
    """Full fp32 arithmetic for comparisons between passes (structure checks): the scorer's autocast off, and on CUDA
    no TF32 in matmuls and convolutions, so two passes differ only where the model makes them differ (bf16 rounds at
    ~4e-3, TF32 at ~1e-3: as large as the differences being looked for). Restored on exit."""
    saved = scorer.autocast
    tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    scorer.autocast = contextlib.nullcontext
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        scorer.autocast = saved
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


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


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: ScheduleConfig, total_steps: int, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(config, step, total_steps, steps_per_epoch))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def lr_setter(optimizer: torch.optim.Optimizer) -> Callable[[float], None]:
    """A function that sets the first param group's LR to `lr` and every other group's in proportion,
    as they stand now (layer-wise LRs keep their ratios)."""
    base = optimizer.param_groups[0]["lr"]
    ratios = [group["lr"] / base if base else 1.0 for group in optimizer.param_groups]

    def set_to(lr: float) -> None:
        for group, ratio in zip(optimizer.param_groups, ratios):
            group["lr"] = lr * ratio

    return set_to


def optimizer_like(optimizer: torch.optim.Optimizer) -> Callable[[Any], torch.optim.Optimizer]:
    """A factory of fresh optimizers like `optimizer`: its class and hyperparameters; its param groups
    (with their own settings, and only their parameters) when given the parameters of the model it was made for,
    else one group over what it is given (another model, e.g. a copy)."""
    cls, defaults = type(optimizer), _constructor_defaults(optimizer)
    groups = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    params_of = [list(g["params"]) for g in optimizer.param_groups]
    own = {id(p) for ps in params_of for p in ps}

    def build(params: Any) -> torch.optim.Optimizer:
        params = list(params)
        try:
            if own <= {id(p) for p in params}:  # the model it was made for: its groups only, parameters it left out stay out
                return cls([{**g, "params": ps} for g, ps in zip(groups, params_of)], **defaults)
            return cls(params, **defaults)
        except TypeError as exc:
            raise BadInput(
                f"cannot make a fresh {cls.__name__} from its defaults ({exc}); pass a factory such as "
                f"optimizer=lambda params: {cls.__name__}(params, lr=...)",
                where="optimizer",
            ) from None

    return build


def _constructor_defaults(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """optimizer.defaults without the keys its constructor does not take (torch's AdamW records
    `decoupled_weight_decay` there but its __init__ has no such argument)."""
    import inspect

    defaults = dict(optimizer.defaults)
    try:
        parameters = inspect.signature(type(optimizer).__init__).parameters
    except (TypeError, ValueError):
        return defaults
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return defaults
    return {k: v for k, v in defaults.items() if k in parameters}


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


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """The whole model in eval mode; afterwards every module's own train/eval flag is as it was."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, mode in modes:
            module.training = mode


def decoupled(optimizer: torch.optim.Optimizer, group: dict[str, Any]) -> bool:
    """Whether a group's weight decay is decoupled (AdamW, or Adam(decoupled_weight_decay=True)): it shrinks the
    weights directly each step and adds no L2 term to the objective."""
    return isinstance(optimizer, torch.optim.AdamW) or bool(group.get("decoupled_weight_decay", False))


def l2_penalty(optimizer: torch.optim.Optimizer) -> torch.Tensor:
    """The L2 term the optimizer's weight decay adds to the objective: sum over its coupled groups of wd/2·‖w‖²
    (decoupled decay adds none)."""
    total = torch.zeros(())
    for group in optimizer.param_groups:
        wd = group.get("weight_decay", 0.0)
        if wd and not decoupled(optimizer, group):
            for p in group["params"]:
                total = total + 0.5 * wd * p.detach().float().pow(2).sum().cpu()
    return total


def decay_gradient_norm(optimizer: torch.optim.Optimizer) -> torch.Tensor:
    """The norm of the gradient the coupled weight decay adds: sqrt(sum of (wd·‖w‖)²) over its groups (decoupled decay
    adds none)."""
    total = torch.zeros(())
    for group in optimizer.param_groups:
        wd = group.get("weight_decay", 0.0)
        if wd and not decoupled(optimizer, group):
            for p in group["params"]:
                total = total + (wd**2) * p.detach().float().pow(2).sum().cpu()
    return total.sqrt()


def decay_per_step(optimizer: torch.optim.Optimizer) -> float:
    """The largest share of a weight that decoupled weight decay removes in one step (lr x weight_decay), 0 without it."""
    return max((g.get("lr", 0.0) * g.get("weight_decay", 0.0) for g in optimizer.param_groups if decoupled(optimizer, g)), default=0.0)


# --------------------------------------------------------------------------------------------
# One step, and evaluation
# --------------------------------------------------------------------------------------------


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, scorer: Scorer, batch: Any, grad_clip: float | None = None) -> Scored:
    """Forward, backward, optimizer step on one batch of any structure. Returns what was scored,
    detached, without a device sync."""
    optimizer.zero_grad(set_to_none=True)
    scored = scorer(model, batch)
    scored.loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip) if grad_clip is not None else None
    optimizer.step()
    done = scored.detach()
    done.grad_norm = norm.detach() if norm is not None else None  # the norm before clipping, when it clipped
    return done


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[Any], scorer: Scorer) -> dict[str, float]:
    """Mean loss and accuracy over `batches`, in eval mode; every module's mode is restored.

    Each batch's mean loss is weighted by what it averaged over: its non-ignored token targets for
    token-level targets, else its examples. Accuracy is NaN when there are no class logits."""
    total_loss = torch.zeros((), dtype=torch.float64)
    weight = 0.0
    correct_sum = torch.zeros((), dtype=torch.float64)
    counted_sum = torch.zeros((), dtype=torch.float64)
    has_accuracy = False
    with eval_mode(model):
        for batch in batches:
            scored = scorer(model, batch)
            w = float(counted_targets(scored.targets, scored.examples))
            total_loss += scored.loss.detach().double().cpu() * w
            weight += w
            counts = scorer.correct(scored)
            if counts is not None:
                has_accuracy = True
                correct_sum += counts[0].cpu().double()
                counted_sum += counts[1].cpu().double()
    if weight == 0:
        return {"loss": float("nan"), "acc": float("nan")}
    acc = float(correct_sum / counted_sum) if has_accuracy and float(counted_sum) > 0 else float("nan")
    return {"loss": float(total_loss / weight), "acc": acc}


# --------------------------------------------------------------------------------------------
# Snapshot / restore: a diagnostic hands everything back exactly as it found it
# --------------------------------------------------------------------------------------------


@dataclass
class Snapshot:
    model_state: dict[str, torch.Tensor]  # every parameter and buffer, persistent or not
    grads: list[torch.Tensor | None]  # each parameter's .grad, so a block that trains leaves no gradients behind
    modes: list[bool]
    optimizer_state: dict[str, Any] | None
    rng: dict[str, Any]

    @classmethod
    def take(cls, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> "Snapshot":
        return cls(
            model_state={k: v.detach().clone() for k, v in _tensors(model)},
            grads=[p.grad.detach().clone() if p.grad is not None else None for p in model.parameters()],
            modes=[m.training for m in model.modules()],
            optimizer_state=copy.deepcopy(optimizer.state_dict()) if optimizer is not None else None,
            rng=rng_state(),
        )

    def restore(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> None:
        with torch.no_grad():
            for key, tensor in _tensors(model):
                tensor.copy_(self.model_state[key])
        for p, grad in zip(model.parameters(), self.grads):
            p.grad = grad.clone() if grad is not None else None  # a copy: the snapshot may be restored again
        for module, mode in zip(model.modules(), self.modes):
            module.training = mode
        if optimizer is not None and self.optimizer_state is not None:
            optimizer.load_state_dict(copy.deepcopy(self.optimizer_state))
        set_rng_state(self.rng)


def _tensors(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """Every parameter and buffer (non-persistent buffers too, which state_dict() leaves out)."""
    yield from model.named_parameters()
    for name, buffer in model.named_buffers():
        yield f"buffer:{name}", buffer


@contextlib.contextmanager
def preserved(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> Iterator[Snapshot]:
    """Run a block that may train the model; afterwards model, optimizer and RNGs are as before."""
    snapshot = Snapshot.take(model, optimizer)
    try:
        yield snapshot
    finally:
        snapshot.restore(model, optimizer)


@contextlib.contextmanager
def rng_kept() -> Iterator[None]:
    """The torch / numpy / python RNG states are as before, whatever ran (a user's shuffling DataLoader draws from them)."""
    state = rng_state()
    try:
        yield
    finally:
        set_rng_state(state)


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
