"""Is the model wired to learn? Structure, gradient flow and the loss, measured on one batch at the
current weights (check-loss runs it; nothing trains).

The bugs people make most often in their own model and loss do not show in how the loss moves until it
is too late, and then they look like a learning-rate problem. Each is measured directly here, on one
training batch of up to PROBE_EXAMPLES examples, with the model, its gradients and the RNGs handed back
as found (`engine.preserved`):
  frozen-parameters        parameters with requires_grad=False: info (named); warn when under
                           TRAINABLE_WARN of the parameters train; fail when none does
  no-gradient              trainable parameters that get no gradient (None) from one backward pass while
                           others do: a .detach() / torch.no_grad() / .data in forward, or an unused branch;
                           warn, fail when they hold over NO_GRADIENT_FAIL of the trainable parameters (or
                           the loss itself carries no gradient)
  not-in-optimizer         trainable parameters the optimizer was not given (an optimizer made before a
                           layer was added, or over one sub-module): warn, fail over NOT_IN_OPTIMIZER_FAIL
  outputs-bounded          class logits that are probabilities (rows in [0, 1] that sum to 1: a softmax; fail), or
                           come out of a bounding activation that runs last (ReLU, Softplus: never negative, warn;
                           Sigmoid: in [0, 1], fail) in front of a loss that expects logits
  symmetric-units          a hidden layer (not the last one) whose weight rows are all identical (a zero or
                           constant init) and whose rows got identical gradients: its units stay the same, forever
  eval-not-deterministic   two eval-mode passes on the same batch differ by more than EVAL_TOLERANCE
                           (relative): dropout, or other randomness, left on at evaluation
  batch-dependence         in eval mode, reversing the order of the examples in the batch does not reverse the
                           outputs, or scoring the first half of the batch alone changes their outputs (relative
                           difference above PERMUTE_TOLERANCE, or PERMUTE_EPS_FACTOR roundings of a half-precision
                           model's outputs; the passes run in fp32, autocast and TF32 off): a layer that mixes
                           examples (statistics over the batch at evaluation, a wrong sequence/batch axis)
  loss-broadcasts          outputs and float targets of different shapes that broadcast to a larger one
                           ((B, 1) against (B,) gives (B, B)): the loss compares every output with every target
  loss-scales-with-batch   the loss grows with the batch size: on the same examples the loss of n, n/2 and n/4
                           of them halves each time (ratios within SUM_RATIO): reduction="sum" (warn)
  regularization-dominates the L2 term the weight decay adds is over REG_DOMINATES x the data loss at init and its
                           gradient over REG_DOMINATES x the data's gradient, or
                           decoupled decay removes over DECAY_PER_STEP_MAX of each weight per step (warn)
Named losses (cross_entropy, mse, ...) are nndiag's own and always mean-reduced and shape-checked, so the
loss checks apply to a custom loss, a step, or a model's own loss.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import nn

from nndiag.findings import Verdict
from nndiag.training import batch as batching
from nndiag.training import engine
from nndiag.training.experiment import Experiment
from nndiag.training.scoring import class_axis

PROBE_EXAMPLES = 32  # examples in the probed batch
TRAINABLE_WARN = 0.1  # frozen-parameters: a warning when under this share of the parameters trains
NO_GRADIENT_FAIL = 0.5  # no-gradient: a fail when the parameters without a gradient hold over this share
NOT_IN_OPTIMIZER_FAIL = 0.5  # not-in-optimizer: a fail when the parameters left out hold over this share
EVAL_TOLERANCE = 1e-5  # eval-not-deterministic: largest relative difference between two eval passes
PERMUTE_TOLERANCE = 1e-3  # batch-dependence: largest relative difference after reversing the batch or halving it
PERMUTE_EPS_FACTOR = 4  # ... or this many roundings of the outputs' dtype, when larger (weights in bf16/fp16: other
# batch sizes pick other kernels, which round differently); the passes run in fp32 with autocast and TF32 off
SUM_RATIO = (1.6, 2.5)  # loss-scales-with-batch: loss(n) / loss(n/2) and loss(n/2) / loss(n/4) both in this range
SUM_MIN_EXAMPLES = 16  # ... measured only on batches of at least this many examples
REG_DOMINATES = 1.0  # regularization-dominates: the L2 term is larger than this multiple of the data loss, and its
# gradient (wd x w over the coupled groups) larger than this multiple of the data's gradient: a penalty can be large
# and still pull gently (ResNet-18 with weight_decay=5e-4: 1.4x ln 10, but its gradient 0.05x the data's)
DECAY_PER_STEP_MAX = 0.01  # ... or decoupled decay removes more than this share of each weight per step
SHOWN = 5  # parameter names quoted in a message


# --------------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------------


def probe_batch(exp: Experiment) -> Any:
    """One training batch of up to PROBE_EXAMPLES examples (a seeded choice; a user's DataLoader: its first batches)."""
    taken = exp.data.train.take(PROBE_EXAMPLES, generator=torch.Generator().manual_seed(exp.recipe.seed))
    batches = list(taken.batches(PROBE_EXAMPLES))
    if len(batches) > 1:
        try:
            return batching.cat(batches)
        except (RuntimeError, TypeError, ValueError):  # batches of different shapes (padded sequences): the first one
            return batches[0]
    return batches[0]


def _weighted_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))]


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().float(), b.detach().float()
    if a.shape != b.shape:
        return math.inf
    scale = float(torch.maximum(a.abs().max(), b.abs().max())) if a.numel() else 0.0
    if not math.isfinite(scale):
        return 0.0 if torch.equal(a.nan_to_num(), b.nan_to_num()) else math.inf
    return float((a - b).abs().max()) / max(scale, 1e-12) if a.numel() else 0.0


def _outputs(scored: Any) -> torch.Tensor | None:
    return scored.logits if isinstance(scored.logits, torch.Tensor) else None


def measure(exp: Experiment, initial_loss: float | None = None) -> dict[str, Any]:
    """Everything `decide` reads. `initial_loss`: check-loss's mean loss at init (the data loss the weight decay is
    compared with); default the probed batch's."""
    model, scorer = exp.model, exp.scorer
    batch = probe_batch(exp)
    n = batching.size(batch)
    named = list(model.named_parameters())
    trainable = [(name, p) for name, p in named if p.requires_grad]
    facts: dict[str, Any] = {
        "parameters": sum(p.numel() for _, p in named),
        "trainable": sum(p.numel() for _, p in trainable),
        "frozen": [name for name, p in named if not p.requires_grad],
        "frozen_count": sum(p.numel() for _, p in named if not p.requires_grad),
        "examples": n,
        "named_loss": scorer.objective is not None,
    }
    rows: list[dict[str, Any]] = []
    with engine.preserved(model):
        optimizer = exp.optimizer()
        covered = {id(p) for g in optimizer.param_groups for p in g["params"]}
        facts["not_in_optimizer"] = [name for name, p in trainable if id(p) not in covered]
        facts["not_in_optimizer_count"] = sum(p.numel() for _, p in trainable if id(p) not in covered)
        facts["l2_penalty"] = float(engine.l2_penalty(optimizer))
        facts["decay_per_step"] = engine.decay_per_step(optimizer)
        # one backward pass in train mode (dropout off), recording the order the weighted layers run in
        order: list[str] = []
        hooks = [m.register_forward_hook(lambda mod, i, o, name=name: order.append(name)) for name, m in _weighted_modules(model)]
        leaves: list[nn.Module] = []  # every leaf module in the order it runs: the last one says what ends the model
        hooks += [m.register_forward_hook(lambda mod, i, o: leaves.append(mod)) for m in model.modules() if not list(m.children())]
        for p in model.parameters():
            p.grad = None
        try:
            model.train()
            with engine.dropout_off(model), warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                scored = scorer(model, batch)
        finally:
            for h in hooks:
                h.remove()
        facts["warnings"] = [str(w.message) for w in caught]
        facts["loss"] = float(scored.loss.detach())
        facts["loss_has_grad"] = bool(scored.loss.requires_grad)
        if scored.loss.requires_grad:
            scored.loss.backward()
        for name, p in named:
            grad = p.grad
            rows.append(
                {
                    "parameter": name,
                    "shape": "x".join(map(str, p.shape)) or "scalar",
                    "numel": p.numel(),
                    "requires_grad": p.requires_grad,
                    "in_optimizer": id(p) in covered,
                    "grad": "none" if grad is None else ("zero" if not bool(grad.any()) else "yes"),
                    "grad_norm": float(grad.norm()) if grad is not None else math.nan,
                }
            )
        facts["no_gradient"] = [r["parameter"] for r in rows if r["requires_grad"] and r["grad"] == "none"]
        facts["no_gradient_count"] = sum(r["numel"] for r in rows if r["requires_grad"] and r["grad"] == "none")
        facts["zero_gradient"] = [r["parameter"] for r in rows if r["requires_grad"] and r["grad"] == "zero"]
        grads = [p.grad.detach().float().pow(2).sum() for _, p in trainable if p.grad is not None and id(p) in covered]
        facts["data_gradient_norm"] = float(torch.stack(grads).sum().sqrt()) if grads else 0.0
        facts["decay_gradient_norm"] = float(engine.decay_gradient_norm(optimizer))
        facts.update(_outputs_facts(exp, scored, leaves[-1] if leaves else None))
        facts["symmetric"] = _symmetric_layers(model, order)
        facts.update(_eval_facts(exp, batch))
        facts["loss_shape"] = _shape_facts(exp, scored, facts["warnings"])
    facts["initial_loss"] = initial_loss if initial_loss is not None else facts["loss"]
    return {**facts, "table": rows}


BOUNDING = (nn.ReLU, nn.ReLU6, nn.Softplus, nn.Sigmoid, nn.Softmax, nn.Hardsigmoid)  # activations that cannot end a logit model


def _outputs_facts(exp: Experiment, scored: Any, last: nn.Module | None) -> dict[str, Any]:
    """What bounds the class logits, if anything: probabilities (rows in [0, 1] that sum to 1: never by chance), or a
    bounding activation module that runs last (ReLU: never negative; Sigmoid: in [0, 1])."""
    logits, targets = _outputs(scored), scored.targets
    if logits is None or not logits.is_floating_point():
        return {"outputs": None}
    objective = exp.scorer.objective
    binary = objective is not None and objective.name == "bce"
    axis = class_axis(logits, targets)
    if axis is None and not binary:
        return {"outputs": None}
    x = logits.detach().float()
    in_unit = bool(((x >= 0) & (x <= 1)).all())
    sums_to_one = (
        axis is not None and x.shape[axis] >= 2 and bool(torch.allclose(x.sum(dim=axis), torch.ones_like(x.sum(dim=axis)), atol=1e-3))
    )
    if in_unit and sums_to_one:
        kind = "probabilities"
    elif isinstance(last, (nn.Sigmoid, nn.Hardsigmoid)) and in_unit:
        kind = "in [0, 1]"
    elif isinstance(last, BOUNDING) and bool((x >= 0).all()):
        kind = "non-negative"
    else:
        kind = None
    return {
        "outputs": {"kind": kind, "min": float(x.min()), "max": float(x.max()), "last": type(last).__name__ if last is not None else None}
    }


def _identical_rows(tensor: torch.Tensor) -> bool:
    rows = tensor.detach().float().reshape(tensor.shape[0], -1)
    return bool(((rows - rows[0]).abs().max() <= 1e-6 * max(1e-30, float(rows.abs().max()))).item())


@torch.no_grad()
def _symmetric_layers(model: nn.Module, order: list[str]) -> list[str]:
    """Hidden Linear/Conv layers (run before the last one) whose trainable output units all have identical weights AND
    got identical gradients from the backward pass just run: such units stay identical for ever. Identical weights
    alone are not enough: a zero layer in front of a random one (a LoRA B matrix, a zero-initialised adapter) gets a
    different gradient per unit and breaks its symmetry at the first step."""
    modules = dict(model.named_modules())
    hidden = list(dict.fromkeys(order))[:-1]
    out = []
    for name in hidden:
        weight = getattr(modules[name], "weight", None)
        if not isinstance(weight, torch.Tensor) or weight.dim() < 2 or weight.shape[0] < 2 or not weight.requires_grad:
            continue
        if weight.grad is not None and _identical_rows(weight) and _identical_rows(weight.grad):
            out.append(name)
    return out


@torch.no_grad()
def _eval_facts(exp: Experiment, batch: Any) -> dict[str, Any]:
    """Two eval passes on the same batch, the batch reversed, its first half alone, and the loss on n, n/2 and n/4 of
    its examples."""
    model, scorer = exp.model, exp.scorer
    n = batching.size(batch)
    facts: dict[str, Any] = {}
    with engine.eval_mode(model), engine.exact_math(scorer):
        first, second = scorer(model, batch), scorer(model, batch)
        a, b = _outputs(first), _outputs(second)
        facts["eval_difference"] = _relative(a, b) if a is not None and b is not None else _relative(first.loss, second.loss)
        if a is not None and n >= 4 and a.dim() >= 1 and a.shape[0] == n:
            reverse = torch.arange(n - 1, -1, -1, device=a.device)
            flipped = _outputs(scorer(model, batching.index(batch, reverse)))
            half = _outputs(scorer(model, batching.index(batch, slice(0, n // 2))))  # statistics over the batch change with it
            differences = [
                _relative(a[reverse], flipped) if flipped is not None else 0.0,
                _relative(a[: n // 2], half) if half is not None else 0.0,
            ]
            facts["permute_difference"] = max(differences)
            facts["output_eps"] = float(torch.finfo(a.dtype).eps) if a.is_floating_point() else 0.0  # a half-precision model
        if n >= SUM_MIN_EXAMPLES and scorer.objective is None:
            losses = [float(scorer(model, batching.index(batch, slice(0, k))).loss) for k in (n, n // 2, n // 4)]
            facts["losses_by_size"] = losses
    return facts


def _shape_facts(exp: Experiment, scored: Any, caught: list[str]) -> dict[str, Any] | None:
    """A custom loss that broadcasts outputs and float targets of different shapes: PyTorch's own warning, or the
    loss changing when the outputs are given the targets' shape (a loss that aligns them itself is fine)."""
    scorer = exp.scorer
    if scorer.objective is not None:
        return None
    out, targets = _outputs(scored), scored.targets
    warned = next((w for w in caught if "target size" in w and "different to the input size" in w), None)
    shapes: dict[str, Any] = {}
    if isinstance(out, torch.Tensor) and isinstance(targets, torch.Tensor) and targets.is_floating_point() and out.shape != targets.shape:
        try:
            shape = torch.broadcast_shapes(out.shape, targets.shape)
        except RuntimeError:
            shape = None
        if shape is not None and math.prod(shape) > max(out.numel(), targets.numel()):
            shapes = {"outputs": list(out.shape), "targets": list(targets.shape), "broadcast": list(shape)}
            if scorer.way == "loss" and scorer.loss_fn is not None and out.numel() == targets.numel() and not warned:
                with torch.no_grad(), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    as_given = float(scorer.loss_fn(out, targets))
                    aligned = float(scorer.loss_fn(out.reshape(targets.shape), targets))
                if math.isclose(as_given, aligned, rel_tol=1e-5, abs_tol=1e-8):
                    return None  # the loss lines the shapes up itself
    if warned:
        return {**shapes, "warning": warned}
    return shapes if shapes and scorer.way == "loss" else None  # a step's own loss is judged by PyTorch's warning only


# --------------------------------------------------------------------------------------------
# Deciding (pure)
# --------------------------------------------------------------------------------------------


def _names(names: list[str]) -> str:
    return ", ".join(names[:SHOWN]) + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")


def decide(facts: dict[str, Any], verdict: Verdict | None = None) -> Verdict:
    verdict = verdict if verdict is not None else Verdict()
    total, trainable = facts["parameters"], facts["trainable"]
    if facts["frozen"]:
        share = trainable / total if total else 0.0
        severity = "fail" if trainable == 0 else "warn" if share < TRAINABLE_WARN else "info"
        verdict.add(
            "frozen-parameters",
            severity,
            f"{len(facts['frozen'])} parameter tensors ({facts['frozen_count']:,} of {total:,} values) have requires_grad=False"
            f" ({_names(facts['frozen'])}): {share:.1%} of the model trains",
            "Nothing learns where requires_grad is False. If you froze a pretrained backbone on purpose, this is fine; "
            "otherwise set requires_grad=True (for p in model.parameters(): p.requires_grad_(True)) before making the optimizer.",
            frozen=facts["frozen"][:50],
            frozen_values=facts["frozen_count"],
            trainable_share=share,
        )
    if not facts["loss_has_grad"] and trainable:
        verdict.add(
            "no-gradient",
            "fail",
            "the loss carries no gradient at all: backward() cannot reach any parameter",
            "The loss was computed without autograd: look for torch.no_grad(), .detach(), .item() or .data on the way from "
            "the outputs to the loss, or a loss built from numpy values.",
            no_gradient=[],
            loss_detached=True,
        )
    elif facts["no_gradient"]:
        share = facts["no_gradient_count"] / trainable if trainable else 0.0
        verdict.add(
            "no-gradient",
            "fail" if share > NO_GRADIENT_FAIL else "warn",
            f"{len(facts['no_gradient'])} trainable parameter tensors ({share:.0%} of the trainable values) get no gradient from "
            f"the loss: {_names(facts['no_gradient'])}",
            "Something cuts them off the graph: a .detach(), torch.no_grad() or .data in forward, a layer whose output "
            "is never used, or a branch the loss does not depend on. Remove the cut or the unused layer.",
            no_gradient=facts["no_gradient"][:50],
            share=share,
        )
    if facts["not_in_optimizer"]:
        share = facts["not_in_optimizer_count"] / trainable if trainable else 0.0
        verdict.add(
            "not-in-optimizer",
            "fail" if share > NOT_IN_OPTIMIZER_FAIL else "warn",
            f"{len(facts['not_in_optimizer'])} trainable parameter tensors ({share:.0%} of the trainable values) are not in the "
            f"optimizer: {_names(facts['not_in_optimizer'])}",
            "Give the optimizer all of the model's parameters (torch.optim.X(model.parameters(), ...)), made after the "
            "model is complete; parameters it was not given get gradients but never change.",
            not_in_optimizer=facts["not_in_optimizer"][:50],
            share=share,
        )
    outputs = facts.get("outputs")
    if outputs and outputs["kind"]:
        kind = outputs["kind"]
        last = outputs.get("last")
        what = {
            "non-negative": f"come out of a {last} that runs last: they are never negative",
            "probabilities": "are probabilities: non-negative rows that sum to 1 (a softmax after the last layer?)",
            "in [0, 1]": f"come out of a {last} that runs last: they all lie in [0, 1]",
        }[kind]
        verdict.add(
            "outputs-bounded",
            "warn" if kind == "non-negative" else "fail",
            f"the model's outputs {what}: min {outputs['min']:.3g}, max {outputs['max']:.3g}, in front of a loss that expects raw logits",
            "Remove the activation after the last layer: cross-entropy applies log-softmax itself (and BCEWithLogits a "
            "sigmoid); logits must be free to be negative.",
            kind=kind,
            outputs_min=outputs["min"],
            outputs_max=outputs["max"],
            outputs_are_probabilities=kind == "probabilities",
        )
    if facts["symmetric"]:
        verdict.add(
            "symmetric-units",
            "fail",
            f"every unit of {_names(facts['symmetric'])} starts with the same weights: they compute the same thing and get the "
            "same gradient, so they stay identical",
            "Initialise hidden layers randomly (Kaiming for ReLU, Xavier for tanh; PyTorch's default does this); only the "
            "last layer may start at zero.",
            layers=facts["symmetric"],
        )
    if facts.get("eval_difference", 0.0) > EVAL_TOLERANCE:
        verdict.add(
            "eval-not-deterministic",
            "fail",
            f"two eval-mode passes on the same batch differ (relative difference {facts['eval_difference']:.3g}): randomness is "
            "left on at evaluation",
            "Dropout must follow the module's mode: use nn.Dropout (not F.dropout(x, training=True)), or pass "
            "training=self.training; call model.eval() before validating.",
            relative_difference=facts["eval_difference"],
        )
    elif facts.get("permute_difference") is not None and facts["permute_difference"] > max(
        PERMUTE_TOLERANCE, PERMUTE_EPS_FACTOR * facts.get("output_eps", 0.0)
    ):
        verdict.add(
            "batch-dependence",
            "fail",
            f"in eval mode an example's output depends on the other examples of its batch (reversing the batch, or scoring "
            f"half of it alone, changes the outputs by {facts['permute_difference']:.3g}, relative)",
            "Look for a layer that mixes examples: statistics over dim 0 at evaluation, a reshape/transpose that swaps the "
            "batch and sequence axes (batch_first), or a normalisation over the batch.",
            relative_difference=facts["permute_difference"],
        )
    shape = facts.get("loss_shape")
    if shape:
        seen = (
            (
                f"outputs of shape {tuple(shape['outputs'])} against targets of shape {tuple(shape['targets'])} broadcast to "
                f"{tuple(shape['broadcast'])}"
            )
            if shape.get("broadcast")
            else f"PyTorch warned: {shape['warning']}"
        )
        verdict.add(
            "loss-broadcasts",
            "fail",
            f"the loss compares outputs and targets of different shapes: {seen}, so every output is compared with every target",
            "Make the shapes equal before the loss: outputs.squeeze(-1) for (B, 1) outputs against (B,) targets, or targets.unsqueeze(-1).",
            **{k: v for k, v in shape.items() if v is not None},
        )
    losses = facts.get("losses_by_size")
    if losses and all(math.isfinite(v) and v > 0 for v in losses):
        r1, r2 = losses[0] / losses[1], losses[1] / losses[2]
        lo, hi = SUM_RATIO
        if lo <= r1 <= hi and lo <= r2 <= hi:
            verdict.add(
                "loss-scales-with-batch",
                "warn",
                f"the loss grows with the batch size: {losses[0]:.4g} on {facts['examples']} examples, {losses[1]:.4g} on half, "
                f"{losses[2]:.4g} on a quarter: it sums over the batch instead of averaging",
                "Use reduction='mean' (PyTorch's default) or divide by the batch size: a summed loss makes the usable "
                "learning rate depend on the batch size and the initial loss B times too large.",
                losses_by_size=losses,
                ratios=[r1, r2],
            )
    loss = facts["initial_loss"]
    pull, data = facts.get("decay_gradient_norm", 0.0), facts.get("data_gradient_norm", 0.0)
    if math.isfinite(loss) and loss > 0 and facts["l2_penalty"] > REG_DOMINATES * loss and pull > REG_DOMINATES * data:
        verdict.add(
            "regularization-dominates",
            "warn",
            f"the weight decay's L2 term ({facts['l2_penalty']:.4g}) is {facts['l2_penalty'] / loss:.1f}x the data loss "
            f"({loss:.4g}) at initialisation and its gradient ({pull:.3g}) "
            + (f"{pull / data:.1f}x the data's ({data:.3g})" if data > 0 else "the only one")
            + ": the optimizer mostly shrinks the weights",
            "Lower weight_decay (1e-5 to 1e-3 are usual; weight decay is per value, so its penalty grows with the model's "
            "size), or use decoupled decay (AdamW).",
            l2_penalty=facts["l2_penalty"],
            initial_loss=loss,
            decay_gradient_norm=pull,
            data_gradient_norm=data,
        )
    elif facts["decay_per_step"] > DECAY_PER_STEP_MAX:
        rate = facts["decay_per_step"]
        verdict.add(
            "regularization-dominates",
            "warn",
            f"decoupled weight decay removes {rate:.1%} of every weight per step (lr x weight_decay): weights halve every "
            f"{math.log(2) / -math.log1p(-min(rate, 0.999)):.0f} steps unless the data's gradient holds them",
            "Lower weight_decay so that lr x weight_decay is about 1e-4 per step or less (AdamW's usual weight_decay is 0.01-0.1).",
            decay_per_step=rate,
        )
    return verdict
