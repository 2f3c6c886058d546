"""The bug corpus: the faults people make in their own PyTorch code, each with a fixed twin, and healthy controls.

For every case:
  1. proof   a plain PyTorch loop (no nndiag) trains the bug and its fixed twin the same way and scores both on a
             clean held-out test set: the bug must be clearly worse (`Case.metric`, margin `Case.margin`), else the
             case proves nothing and is reported as unproven;
  2. nndiag  `nndiag babysit --budget quick` on the bug, on its fixed twin and on each healthy control (a loop case:
             its hand-written loop inside `nndiag.watch`): is the bug
             detected (a warn/fail finding), is its true root cause ranked first (`root_causes[0]` among
             `Case.causes`), and do the fixed twins and the controls stay silent (no warn/fail finding)?
  3. before  the same on the version before issue 18 (`--old DIR`: a checkout of that commit), for the cases that
             version can take (a recipe); cases of your own DataLoader / optimizer need the Python API's babysit on
             your own objects, and loop cases need `nndiag.watch`, which it did not have: counted as not detected.

    python -m benchmarks.bug_corpus                       # proof + nndiag, writes benchmarks/results/bug_corpus.{md,csv}
    python -m benchmarks.bug_corpus --old /tmp/nndiag-old # also the previous version (git worktree add /tmp/nndiag-old d0bb332)
    python -m benchmarks.bug_corpus --cases nan-inputs,healthy-mlp --no-proof   # a few cases, quickly

Cases are recipes over benchmarks/bug_targets.py (data, models, losses written the way the bug is written), so the
previous version runs them unchanged; `api` cases are run through `nndiag.babysit(model, data, ...)`, `loop` cases
through `user_loop` (one line of it wrong) inside `nndiag.watch(model, optimizer)`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
TARGETS = "benchmarks.bug_targets"


def recipe(
    name: str,
    *,
    data: str = "digits",
    data_bug: str = "none",
    model: str = "mlp",
    model_args: dict | None = None,
    loss: Any = "cross_entropy",
    optim: dict | None = None,
    train: dict | None = None,
    normalize: bool = False,
) -> dict[str, Any]:
    return {
        "name": name,
        "seed": 0,
        "device": "cpu",
        "data": {"target": f"{TARGETS}:{data}", "args": {"bug": data_bug}, "normalize": normalize},
        "model": {"target": f"{TARGETS}:{model}", "args": model_args or {"bug": "none"}},
        "loss": loss,
        "optim": optim or {"name": "adam", "lr": 0.003},
        "train": {"batch_size": 64, "epochs": 10, **(train or {})},
        "search": {"coarse": {"trials": 4, "epochs": 2}, "fine": {"trials": 2, "epochs": 3}},
    }


@dataclass
class Case:
    name: str
    kind: str  # data | model | loss | optimizer | healthy
    fault: str  # what is wrong, in a user's words
    bug: dict[str, Any]  # the recipe with the bug (for a healthy control: the recipe)
    fixed: dict[str, Any] | None  # its fixed twin (None for a healthy control)
    causes: tuple[str, ...] = ()  # root-cause ids that name the fault (root_cause.RULES)
    metric: str = "test_acc"  # test_acc | balanced_acc | test_mse | val_inflation | eval_instability | single_example_acc
    margin: float = 0.05  # the fixed twin must be better by this much (accuracy points, or x1.5 for test_mse)
    api: dict[str, Any] = field(default_factory=dict)  # run through the API: {"shuffle": False} / {"optimizer": "head"}
    loop: str = ""  # a hand-written loop (user_loop) with this bug planted, run inside nndiag.watch ("none": a healthy loop)


LOOP_SGD = {"name": "sgd", "lr": 0.05, "momentum": 0.9}


def _loss(name: str) -> dict[str, Any]:
    return {"target": f"{TARGETS}:{name}"}


CASES: list[Case] = [
    # -- data ---------------------------------------------------------------------------------------
    Case(
        "nan-inputs",
        "data",
        "a few training rows are NaN (a failed parse)",
        recipe("nan-inputs", data_bug="nan"),
        recipe("nan-inputs-fixed"),
        ("non-finite-data", "non-finite-values"),
    ),
    Case(
        "labels-from-1",
        "data",
        "labels 1..10 for a model with 10 outputs",
        recipe("labels-from-1", data_bug="shifted"),
        recipe("labels-from-1-fixed"),
        ("labels-out-of-range",),
    ),
    Case(
        "labels-shuffled",
        "data",
        "labels shuffled apart from their inputs",
        recipe("labels-shuffled", data_bug="shuffled"),
        recipe("labels-shuffled-fixed"),
        ("labels-look-random",),
    ),
    Case(
        "val-overlaps-train",
        "data",
        "the validation set is drawn from the training set (its accuracy is inflated)",
        {**recipe("val-overlap"), "data": {"target": f"{TARGETS}:digits", "args": {"bug": "overlap", "train_size": 300}}},
        {**recipe("val-overlap-fixed"), "data": {"target": f"{TARGETS}:digits", "args": {"bug": "none", "train_size": 300}}},
        ("train-val-overlap",),
        metric="val_inflation",
    ),
    Case(
        "repeated-items",
        "data",
        "a Dataset whose __getitem__ returns 20 items over and over",
        recipe("repeated", data_bug="repeated"),
        recipe("repeated-fixed"),
        ("few-distinct-examples",),
    ),
    Case(
        "unnormalized-inputs",
        "data",
        "pixels left at x1000 + 500 with SGD",
        recipe("unnormalized", data_bug="unnormalized", optim={"name": "sgd", "lr": 0.05, "momentum": 0.9}),
        recipe("unnormalized-fixed", data_bug="unnormalized", normalize=True, optim={"name": "sgd", "lr": 0.05, "momentum": 0.9}),
        ("inputs-not-normalized",),
    ),
    Case(
        "constant-inputs",
        "data",
        "preprocessing zeroed every feature but one",
        recipe("constant", data_bug="constant"),
        recipe("constant-fixed"),
        ("constant-inputs",),
    ),
    Case(
        "nan-targets",
        "data",
        "NaN regression targets",
        recipe("nan-targets", data="regression", data_bug="nan_labels", model_args={"bug": "none", "outputs": 1}, loss="mse"),
        recipe("nan-targets-fixed", data="regression", model_args={"bug": "none", "outputs": 1}, loss="mse"),
        ("non-finite-data", "non-finite-values"),
        metric="test_mse",
    ),
    Case(
        "majority-class",
        "data",
        "90% of the labels are one class and the model settles for it",
        recipe(
            "majority",
            data="rare_nines",
            model_args={"bug": "none", "outputs": 2},
            optim={"name": "sgd", "lr": 0.05, "momentum": 0.9},
            train={"epochs": 3},
        ),
        recipe(
            "majority-fixed",
            data="rare_nines",
            model_args={"bug": "none", "outputs": 2},
            loss=_loss("weighted_ce"),
            optim={"name": "sgd", "lr": 0.05, "momentum": 0.9},
            train={"epochs": 3},
        ),
        ("majority-class",),
        metric="balanced_acc",
    ),
    Case(
        "sorted-loader",
        "data",
        "a DataLoader without shuffle over data sorted by class",
        recipe("sorted-loader", optim={"name": "sgd", "lr": 0.05, "momentum": 0.9}),
        recipe("sorted-loader-fixed", optim={"name": "sgd", "lr": 0.05, "momentum": 0.9}),
        ("unshuffled-batches",),
        api={"shuffle": False},
    ),
    # -- model --------------------------------------------------------------------------------------
    Case(
        "detach-in-forward",
        "model",
        "a .detach() cuts the features off the loss",
        recipe("detach", model="detached", model_args={"bug": "detach"}),
        recipe("detach-fixed", model="detached"),
        ("nothing-trains",),
    ),
    Case(
        "frozen-by-mistake",
        "model",
        "requires_grad switched off on the hidden layers of a model trained from scratch",
        recipe("frozen", model_args={"bug": "frozen"}),
        recipe("frozen-fixed"),
        ("nothing-trains",),
    ),
    Case(
        "optimizer-misses-layers",
        "model",
        "the optimizer was given only the last layer's parameters",
        recipe("optimizer-head"),
        recipe("optimizer-head-fixed"),
        ("nothing-trains",),
        api={"optimizer": "head"},
    ),
    Case(
        "relu-after-last",
        "model",
        "a ReLU after the last layer",
        recipe("relu-last", model_args={"bug": "relu_last"}),
        recipe("relu-last-fixed"),
        ("softmax-before-loss",),
    ),
    Case(
        "softmax-before-ce",
        "model",
        "a softmax in front of cross_entropy",
        recipe("softmax-last", model_args={"bug": "softmax_last"}, optim={"name": "sgd", "lr": 0.05, "momentum": 0.9}),
        recipe("softmax-last-fixed", optim={"name": "sgd", "lr": 0.05, "momentum": 0.9}),
        ("softmax-before-loss",),
    ),
    Case(
        "zero-init-hidden",
        "model",
        "hidden layers initialised to zeros",
        recipe("zero-hidden", model_args={"bug": "zero_hidden"}),
        recipe("zero-hidden-fixed"),
        ("symmetric-units",),
    ),
    Case(
        "dropout-at-eval",
        "model",
        "F.dropout(x, training=True): dropout stays on at evaluation (predictions change each time)",
        recipe("dropout-eval", model="functional_dropout", model_args={"bug": "dropout_eval"}),
        recipe("dropout-eval-fixed", model="functional_dropout"),
        ("eval-randomness",),
        metric="eval_instability",
        margin=0.01,
    ),
    Case(
        "batchnorm-frozen-stats",
        "model",
        "BatchNorm(momentum=0) on raw pixels: its running statistics never move",
        recipe("bn-momentum0", data_bug="raw", model_args={"bug": "bn_momentum0"}),
        recipe("bn-momentum0-fixed", data_bug="raw", model_args={"bug": "bn"}),
        ("eval-statistics",),
    ),
    Case(
        "batch-mixing",
        "model",
        "forward subtracts the batch mean, at evaluation too (one example at a time fails)",
        recipe("batch-mix", model="batch_mixing", model_args={"bug": "batch_mix"}),
        recipe("batch-mix-fixed", model="batch_mixing"),
        ("batch-dependence",),
        metric="single_example_acc",
    ),
    Case(
        "dead-relus",
        "model",
        "biases of -10 kill every ReLU at initialisation",
        recipe("dead", model_args={"bug": "dead"}),
        recipe("dead-fixed"),
        ("dead-units", "zero-gradients"),
    ),
    Case(
        "tiny-init-deep",
        "model",
        "a 7-layer ReLU net initialised at std 0.01",
        recipe("tiny-init", model_args={"bug": "tiny_init"}, optim={"name": "sgd", "lr": 0.05, "momentum": 0.9}),
        recipe("tiny-init-fixed", optim={"name": "sgd", "lr": 0.05, "momentum": 0.9}),
        ("vanishing-activations", "vanishing-gradients"),
    ),
    Case(
        "saturated-tanh",
        "model",
        "tanh layers initialised at std 1",
        recipe("huge-tanh", model_args={"bug": "huge_tanh"}, optim={"name": "sgd", "lr": 0.05}),
        recipe("huge-tanh-fixed", optim={"name": "sgd", "lr": 0.05}),
        ("saturated-activations",),
    ),
    Case(
        "head-x100",
        "model",
        "the last layer's weights 100x too large",
        recipe("head-x100", model_args={"bug": "head_x100"}, optim={"name": "sgd", "lr": 0.05, "momentum": 0.9}),
        recipe("head-x100-fixed", optim={"name": "sgd", "lr": 0.05, "momentum": 0.9}),
        ("output-too-large", "init-too-large"),
    ),
    # -- loss ---------------------------------------------------------------------------------------
    Case(
        "loss-broadcast",
        "loss",
        "(B, 1) outputs against (B,) targets in a hand-written MSE",
        recipe("broadcast", data="regression", model_args={"bug": "none", "outputs": 1}, loss=_loss("mse_broadcast")),
        recipe("broadcast-fixed", data="regression", model_args={"bug": "none", "outputs": 1}, loss=_loss("mse_aligned")),
        ("loss-broadcasts",),
        metric="test_mse",
    ),
    Case(
        "loss-reduction-sum",
        "loss",
        "cross-entropy with reduction='sum' at an LR tuned for a mean",
        recipe("sum", loss=_loss("ce_sum"), optim={"name": "sgd", "lr": 0.1, "momentum": 0.9}),
        recipe("sum-fixed", loss=_loss("ce_mean"), optim={"name": "sgd", "lr": 0.1, "momentum": 0.9}),
        ("loss-sums",),
    ),
    # -- optimizer ----------------------------------------------------------------------------------
    Case(
        "huge-weight-decay",
        "optimizer",
        "SGD with weight_decay=1",
        recipe("huge-wd", optim={"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 1.0}),
        recipe("huge-wd-fixed", optim={"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4}),
        ("regularization-dominates",),
    ),
    Case(
        "huge-decoupled-decay",
        "optimizer",
        "AdamW with weight_decay=50",
        recipe("adamw-decay", optim={"name": "adamw", "lr": 0.003, "weight_decay": 50.0}),
        recipe("adamw-decay-fixed", optim={"name": "adamw", "lr": 0.003, "weight_decay": 0.01}),
        ("regularization-dominates",),
    ),
    Case(
        "tiny-grad-clip",
        "optimizer",
        "SGD with gradients clipped to a norm of 1e-3",
        recipe("tiny-clip", optim={"name": "sgd", "lr": 0.05, "momentum": 0.9}, train={"grad_clip": 1e-3}),
        recipe("tiny-clip-fixed", optim={"name": "sgd", "lr": 0.05, "momentum": 0.9}, train={"grad_clip": 5.0}),
        ("clipping-too-tight",),
    ),
    Case(
        "lr-far-too-high",
        "optimizer",
        "SGD at LR 20",
        recipe("lr-high", optim={"name": "sgd", "lr": 20.0}),
        recipe("lr-high-fixed", optim={"name": "sgd", "lr": 0.05}),
        ("lr-too-high",),
    ),
    Case(
        "lr-far-too-low",
        "optimizer",
        "SGD at LR 1e-6",
        recipe("lr-low", optim={"name": "sgd", "lr": 1e-6}),
        recipe("lr-low-fixed", optim={"name": "sgd", "lr": 0.05}),
        ("lr-too-low",),
    ),
    # -- the training loop (a hand-written loop inside nndiag.watch; its fixed twin is the same loop done right) --
    *(
        Case(name, "loop", fault, recipe(name, optim=LOOP_SGD, **extra), recipe(f"{name}-fixed", optim=LOOP_SGD, **extra), causes, loop=bug)
        for name, bug, fault, causes, extra in (
            ("no-zero-grad", "no-zero-grad", "optimizer.zero_grad() forgotten", ("loop-grads-accumulate",), {}),
            ("no-optimizer-step", "no-step", "optimizer.step() forgotten", ("loop-no-optimizer-step",), {}),
            ("zero-grad-before-step", "zero-grad-before-step", "zero_grad() between backward() and step()", ("loop-no-gradient",), {}),
            ("loss-under-no-grad", "no-grad", "the loss computed under torch.no_grad() (backward raises)", ("loop-no-gradient",), {}),
            ("same-batch", "same-batch", "x, y = next(iter(loader)) before the loop: one batch forever", ("loop-same-batch",), {}),
            (
                "eval-mode-after-validation",
                "eval-mode",
                "model.eval() for validation, never model.train() (BatchNorm normalizing unscaled inputs)",
                ("loop-eval-mode",),
                {"data_bug": "unnormalized", "model_args": {"bug": "bn"}},
            ),
            (
                "scheduler-per-batch",
                "schedule-per-batch",
                "StepLR(step_size=3) sized in epochs, stepped every batch",
                ("schedule-collapses",),
                {"train": {"epochs": 4}},
            ),
            ("optimizer-over-old-model", "rebuilt", "the model rebuilt after its optimizer was made", ("loop-weights-unchanged",), {}),
        )
    ),
    # -- healthy controls -----------------------------------------------------------------------
    Case("healthy-mlp-adam", "healthy", "a ReLU MLP with Adam", recipe("healthy-mlp"), None),
    Case(
        "healthy-mlp-sgd",
        "healthy",
        "a ReLU MLP with SGD + momentum",
        recipe("healthy-sgd", optim={"name": "sgd", "lr": 0.05, "momentum": 0.9}),
        None,
    ),
    Case("healthy-dropout-mlp", "healthy", "an MLP with nn.Dropout", recipe("healthy-dropout", model="functional_dropout"), None),
    Case(
        "healthy-bn-cnn",
        "healthy",
        "a CNN with BatchNorm and dropout",
        recipe("healthy-cnn", model="cnn", optim={"name": "sgd", "lr": 0.05, "momentum": 0.9}),
        None,
    ),
    Case("healthy-bn-mlp", "healthy", "an MLP with BatchNorm", recipe("healthy-bn", model_args={"bug": "bn"}), None),
    Case(
        "healthy-imbalanced",
        "healthy",
        "10% positives, learnable, class-weighted loss, a 16-unit MLP (the 64-unit one overfits these 1,000 noisy images: val loss +74% from epoch 2 to 5, a true alarm)",
        {
            **recipe("healthy-imbalanced", model_args={"bug": "none", "outputs": 2, "hidden": 16}, loss=_loss("weighted_ce")),
            "data": {"target": f"{TARGETS}:rare_nines", "args": {"bug": "none", "noise": 0.5}},
        },
        None,
    ),
    Case(
        "healthy-finetune",
        "healthy",
        "fine-tuning an MLP already trained on the task",
        recipe("healthy-finetune", model="pretrained_mlp", optim={"name": "adam", "lr": 3e-4}),
        None,
    ),
    Case(
        "healthy-regression",
        "healthy",
        "a regression MLP with MSE",
        recipe("healthy-regression", data="regression", model_args={"bug": "none", "outputs": 1}, loss="mse"),
        None,
    ),
    Case(
        "healthy-label-smoothing",
        "healthy",
        "cross-entropy with label smoothing 0.1",
        recipe("healthy-smoothing", loss={"name": "cross_entropy", "label_smoothing": 0.1}),
        None,
    ),
    Case(
        "healthy-gru",
        "healthy",
        "a GRU on token ids (the bundled tokens-gru recipe's task)",
        {
            **recipe("healthy-gru"),
            "data": {"name": "tokens", "args": {"task": "first", "num_samples": 2000, "seq_len": 24, "vocab_size": 16}},
            "model": {"name": "gru", "args": {"vocab_size": 16, "d_model": 32, "hidden": 64}},
        },
        None,
    ),
    Case(
        "healthy-own-loader",
        "healthy",
        "your own shuffled DataLoader and optimizer (the Python API)",
        recipe("healthy-own"),
        None,
        api={"shuffle": True},
    ),
    Case("healthy-grad-clip", "healthy", "gradient clipping at a usual threshold", recipe("healthy-clip", train={"grad_clip": 5.0}), None),
    Case(
        "healthy-loop",
        "healthy",
        "your own loop (BatchNorm, a StepLR per epoch, a validation pass each epoch) inside nndiag.watch",
        recipe("healthy-loop", data_bug="raw", model_args={"bug": "bn"}, optim=LOOP_SGD),
        None,
        loop="none",
    ),
    Case(
        "healthy-loop-accumulation",
        "healthy",
        "your own loop accumulating gradients over 4 batches on purpose",
        recipe("healthy-accumulate", optim=LOOP_SGD),
        None,
        loop="accumulate",
    ),
]


# --------------------------------------------------------------------------------------------
# 1. The proof: a plain PyTorch loop, no nndiag
# --------------------------------------------------------------------------------------------


def _call(spec: dict[str, Any], **extra: Any) -> Any:
    import importlib

    module, _, attr = spec["target"].partition(":")
    return getattr(importlib.import_module(module), attr)(**{**spec.get("args", {}), **extra})


def plain_loss(spec: Any) -> Any:
    import torch.nn.functional as F

    if isinstance(spec, dict) and "target" in spec:
        import importlib

        module, _, attr = spec["target"].partition(":")
        return getattr(importlib.import_module(module), attr)
    name = spec if isinstance(spec, str) else spec.get("name", "cross_entropy")
    smoothing = spec.get("label_smoothing", 0.0) if isinstance(spec, dict) else 0.0
    if name == "mse":
        return lambda out, t: F.mse_loss(out.squeeze(-1), t)
    return lambda out, t: F.cross_entropy(out, t, label_smoothing=smoothing)


def plain_run(raw: dict[str, Any], options: dict[str, Any]) -> dict[str, float]:
    """Train as a user's loop would (the recipe's model, loss, optimizer, batch size, epochs; `options`: the API case's
    loader and optimizer quirks, {} for its fixed twin) and score on the clean test split."""
    import torch
    from torch.utils.data import DataLoader, Dataset, TensorDataset

    torch.manual_seed(0)
    train_part, (xv, yv) = _call(raw["data"], part="fit")
    test = _call(raw["data"], part="test")  # clean, but preprocessed as the training data is
    train_data: Any = train_part if isinstance(train_part, Dataset) else TensorDataset(*train_part)
    if raw["data"].get("normalize"):
        xs = torch.stack([train_data[i][0] for i in range(len(train_data))])
        mean, std = xs.mean(0), xs.std(0).clamp_min(1e-6)
        train_data = TensorDataset((xs - mean) / std, torch.stack([train_data[i][1] for i in range(len(train_data))]))
        xv, test = (xv - mean) / std, ((test[0] - mean) / std, test[1])
    if options.get("shuffle") is False:  # the bug: a loader over data sorted by class, not shuffled
        order = torch.argsort(torch.stack([train_data[i][1] for i in range(len(train_data))]), stable=True)
        train_data = TensorDataset(*[torch.stack([train_data[int(i)][k] for i in order]) for k in (0, 1)])
    torch.manual_seed(0)
    model = _call(raw["model"])
    loss_fn = plain_loss(raw["loss"])
    params = model[-1].parameters() if options.get("optimizer") == "head" else model.parameters()
    optimizer = make_optimizer([p for p in params if p.requires_grad], raw["optim"])
    loader = DataLoader(
        train_data,
        batch_size=raw["train"]["batch_size"],
        shuffle=options.get("shuffle", True) is not False,
        generator=torch.Generator().manual_seed(0),
    )
    clip = raw["train"].get("grad_clip")
    for _ in range(raw["train"]["epochs"]):
        model.train()
        for xb, yb in loader:
            optimizer.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            optimizer.step()
    return evaluate(model, test, (xv, yv))


def evaluate(model: Any, test: Any, val: Any) -> dict[str, float]:
    """The trained model's scores in eval mode: on the clean test split, and the validation split's inflation."""
    import torch

    model.eval()
    with torch.no_grad():

        def score(xs: Any, ys: Any) -> dict[str, float]:
            out = model(xs)
            if ys.is_floating_point():
                return {"mse": float(((out.squeeze(-1) - ys) ** 2).mean())}
            pred = out.argmax(-1)
            recalls = [float((pred[ys == c] == c).float().mean()) for c in torch.unique(ys)]
            return {"acc": float((pred == ys).float().mean()), "balanced": sum(recalls) / len(recalls)}

        t, v = score(*test), score(*val)
        if "mse" in t:
            return {"test_mse": t["mse"] if math.isfinite(t["mse"]) else math.inf}
        again = model(test[0]).argmax(-1)
        single = torch.cat([model(test[0][i : i + 1]).argmax(-1) for i in range(len(test[1]))])
    return {
        "test_acc": t["acc"],
        "balanced_acc": t["balanced"],
        "val_inflation": v["acc"] - t["acc"],
        "eval_instability": float((again != model(test[0]).argmax(-1)).float().mean()),
        "single_example_acc": float((single == test[1]).float().mean()),
    }


# The hand-written loop of the loop cases, as people write it: a shuffling DataLoader, CrossEntropyLoss, SGD, a StepLR
# stepped per epoch, a validation pass each epoch. Each bug is one line wrong; "none" is the loop done right and
# "accumulate" accumulates gradients over 4 batches on purpose.
LOOP_BUGS = ("no-zero-grad", "no-step", "zero-grad-before-step", "no-grad", "same-batch", "eval-mode", "schedule-per-batch", "rebuilt")


def loop_objects(raw: dict[str, Any], bug: str) -> tuple[Any, Any, Any]:
    """(model, optimizer, scheduler) as the loop's user builds them; "rebuilt": the model built again after the optimizer."""
    import torch

    torch.manual_seed(0)
    model = _call(raw["model"])
    optimizer = make_optimizer(model.parameters(), raw["optim"])
    if bug == "rebuilt":
        model = _call(raw["model"])  # e.g. re-created to reset it, or reloaded: the optimizer still holds the first one's
    return model, optimizer, torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.5)


def user_loop(raw: dict[str, Any], bug: str, model: Any, optimizer: Any, scheduler: Any, w: Any = None) -> None:
    """Train `model` with the recipe's data, batch size and epochs in a plain PyTorch loop with `bug` planted (`w`: a
    nndiag.watch told the losses; None in the proof, which runs the same loop without nndiag)."""
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, TensorDataset

    (x, y), (xv, yv) = _call(raw["data"], part="fit")
    torch.manual_seed(0)
    loader = DataLoader(
        TensorDataset(x, y), batch_size=raw["train"]["batch_size"], shuffle=True, generator=torch.Generator().manual_seed(0)
    )
    first = next(iter(loader))  # the same-batch bug trains on it forever
    criterion = torch.nn.CrossEntropyLoss()
    accumulate = 4 if bug == "accumulate" else 1

    def validate() -> None:
        model.eval()
        with torch.no_grad():
            out = model(xv)
            if w is not None:
                w.log(val_loss=F.cross_entropy(out, yv), val_acc=(out.argmax(1) == yv).float().mean())

    validate()  # the untrained model's validation score, as a baseline
    for _epoch in range(raw["train"]["epochs"]):
        if bug != "eval-mode":
            model.train()  # the bug: forgotten, so training runs in the validation's eval mode
        for i, (xb, yb) in enumerate(loader):
            if bug == "same-batch":
                xb, yb = first
            if bug not in ("no-zero-grad", "zero-grad-before-step") and i % accumulate == 0:
                optimizer.zero_grad()
            if bug == "no-grad":
                with torch.no_grad():
                    loss = criterion(model(xb), yb)
            else:
                loss = criterion(model(xb), yb) / accumulate
            loss.backward()
            if bug == "zero-grad-before-step":
                optimizer.zero_grad()
            if bug != "no-step" and (i + 1) % accumulate == 0:
                optimizer.step()
            if bug == "schedule-per-batch":
                scheduler.step()
            if w is not None:
                w.log(loss=loss * accumulate)
        if bug != "schedule-per-batch":
            scheduler.step()
        validate()


def loop_run(raw: dict[str, Any], bug: str) -> dict[str, float]:
    """The proof of a loop case: user_loop with `bug`, no nndiag, scored as plain_run scores."""
    model, optimizer, scheduler = loop_objects(raw, bug)
    user_loop(raw, bug, model, optimizer, scheduler)
    return evaluate(model, _call(raw["data"], part="test"), _call(raw["data"], part="fit")[1])


def make_optimizer(params: Any, o: dict[str, Any]) -> Any:
    """The recipe's optim section as a torch optimizer (the plain loop's and the API cases')."""
    import torch

    kw = {"lr": o["lr"], "weight_decay": o.get("weight_decay", 0.0)}
    if o["name"] == "sgd":
        return torch.optim.SGD(params, momentum=o.get("momentum", 0.0), **kw)
    return {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[o["name"]](params, **kw)


def proof(raw: dict[str, Any], options: dict[str, Any], loop: str = "") -> dict[str, float]:
    """plain_run (or loop_run for a loop case), or the worst score when the plain loop cannot even train (PyTorch raises:
    labels out of range, a loss without a graph)."""
    try:
        return loop_run(raw, loop) if loop else plain_run(raw, options)
    except (IndexError, RuntimeError) as exc:
        return {"test_acc": 0.0, "balanced_acc": 0.0, "test_mse": math.inf, "crashed": 1.0, "error": str(exc).splitlines()[0]}  # type: ignore[dict-item]


def proven(case: Case, bug: dict[str, float], fixed: dict[str, float]) -> bool:
    b, f = bug[case.metric], fixed[case.metric]
    if case.metric == "test_mse":
        return not math.isfinite(b) or b > 1.5 * f
    if case.metric in ("val_inflation", "eval_instability"):  # higher is worse
        return b - f >= case.margin
    return f - b >= case.margin


# --------------------------------------------------------------------------------------------
# 2. nndiag babysit on the bug, its fixed twin and the controls
# --------------------------------------------------------------------------------------------


def api_objects(raw: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """A case run through the Python API: the data as a DataLoader (sorted when `options` say shuffle False), the
    optimizer over the last layer only when they say optimizer "head"."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    (x, y), (xv, yv) = _call(raw["data"], part="fit")
    shuffle = options.get("shuffle", True) is not False
    if not shuffle:
        order = torch.argsort(y, stable=True)
        x, y = x[order], y[order]
    loader = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=shuffle, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    model = _call(raw["model"])
    params = model[-1].parameters() if options.get("optimizer") == "head" else model.parameters()
    return {"model": model, "data": loader, "val": (xv, yv), "optimizer": make_optimizer(params, raw["optim"])}


def run_nndiag(case: Case, raw: dict[str, Any], folder: Path, fixed: bool) -> dict[str, Any]:
    """babysit's verdict on one recipe (or, for an API case, on its objects): status, warn/fail codes, root causes."""
    import nndiag

    started = time.perf_counter()
    if case.loop:
        if not hasattr(nndiag, "watch"):
            return {"status": "n/a", "codes": [], "causes": [], "seconds": 0.0}  # the previous version had no watch
        bug = "none" if fixed else case.loop
        model, optimizer, scheduler = loop_objects(raw, bug)
        try:
            with nndiag.watch(model, optimizer, out=folder, plots=False) as w:
                user_loop(raw, bug, model, optimizer, scheduler, w=w)
        except RuntimeError:  # the loop's own error (a loss without a graph): the watch's verdict is written first
            pass
        verdict = w.result.to_dict()
    elif case.api:
        if not hasattr(nndiag, "check_data"):
            return {"status": "n/a", "codes": [], "causes": [], "seconds": 0.0}  # the previous version had no babysit on objects
        objects = api_objects(raw, {} if fixed else case.api)  # the fixed twin: shuffled, every parameter in the optimizer
        result = nndiag.babysit(objects.pop("model"), objects.pop("data"), budget="quick", out=folder, plots=False, **objects)
        verdict = result.to_dict()
    else:
        path = folder.with_suffix(".yaml")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        verdict = nndiag.babysit(str(path), budget="quick", out=folder, plots=False).to_dict()
    return {
        "status": verdict["status"],
        "codes": sorted({f["code"] for f in verdict["findings"] if f["severity"] != "info"}),
        "causes": [c["cause"] for c in verdict.get("root_causes", [])],
        "seconds": time.perf_counter() - started,
    }


def run_case(name: str, which: str, folder: Path) -> dict[str, Any]:
    case = next(c for c in CASES if c.name == name)
    raw = case.bug if which == "bug" else case.fixed
    assert raw is not None
    return run_nndiag(case, raw, folder / f"{name}-{which}", fixed=which == "fixed")


def in_subprocess(name: str, which: str, folder: Path, old: Path | None) -> dict[str, Any]:
    """One babysit in a fresh process (one torch thread), on this checkout's nndiag or on `old`'s."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NNDIAG_RUNS": str(folder / "runs"), "PYTHONPATH": str(ROOT)}
    if old:
        env["BUG_CORPUS_NNDIAG"] = str(old)
    else:
        env.pop("BUG_CORPUS_NNDIAG", None)
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.bug_corpus", "--one", name, which, str(folder)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return {
            "status": "crash",
            "codes": [],
            "causes": [],
            "seconds": 0.0,
            "error": (done.stderr or done.stdout).strip().splitlines()[-1:],
        }
    return json.loads(lines[-1])


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------


def score(case: Case, outcome: dict[str, Any]) -> dict[str, Any]:
    detected = outcome["status"] in ("warn", "fail")
    return {"detected": detected, "first": bool(outcome["causes"]) and outcome["causes"][0] in case.causes}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", help="comma-separated case names (default: all)")
    parser.add_argument("--old", type=Path, help="a checkout of the previous version, to run the same cases on")
    parser.add_argument("--no-proof", action="store_true", help="skip the plain PyTorch loops")
    parser.add_argument("--one", nargs=3, metavar=("CASE", "WHICH", "FOLDER"), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=RESULTS / "bug_corpus.md")
    args = parser.parse_args(argv)
    if args.one:
        old = os.environ.get("BUG_CORPUS_NNDIAG")  # the previous version's checkout goes first (python -m puts the cwd first)
        if old:
            sys.path.insert(0, old)
        import torch

        torch.set_num_threads(1)
        print(json.dumps(run_case(args.one[0], args.one[1], Path(args.one[2]))))
        return 0
    chosen = [c for c in CASES if not args.cases or c.name in args.cases.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in chosen:
            row: dict[str, Any] = {"case": case.name, "kind": case.kind, "fault": case.fault, "expected": " / ".join(case.causes) or "none"}
            if case.fixed is not None and not args.no_proof:
                bug, fixed = proof(case.bug, case.api, case.loop), proof(case.fixed, {}, "none" if case.loop else "")
                row.update(
                    metric=case.metric, bug_metric=bug[case.metric], fixed_metric=fixed[case.metric], proven=proven(case, bug, fixed)
                )
            for label, old in (("now", None), ("before", args.old)):
                if label == "before" and old is None:
                    continue
                out = in_subprocess(case.name, "bug", Path(tmp) / label, old)
                row[f"{label}_bug"] = out
                if case.fixed is not None:
                    row[f"{label}_fixed"] = in_subprocess(case.name, "fixed", Path(tmp) / label, old)
            rows.append(row)
            print(_line(case, row), flush=True)
    write_report(rows, args.out, args.old)
    return 0


def _line(case: Case, row: dict[str, Any]) -> str:
    now = row["now_bug"]
    s = score(case, now) if case.fixed is not None else {}
    extra = f" fixed={row['now_fixed']['status']}" if "now_fixed" in row else ""
    proof = (
        f" proven={row.get('proven')} ({row.get('bug_metric', math.nan):.3g} vs {row.get('fixed_metric', math.nan):.3g})"
        if "proven" in row
        else ""
    )
    return f"{case.name:28} {now['status']:5} {now['causes'][:2]} {s}{extra}{proof}"


def write_report(rows: list[dict[str, Any]], out: Path, old: Path | None) -> None:
    import pandas as pd

    cases = {c.name: c for c in CASES}
    flat = []
    for r in rows:
        c = cases[r["case"]]
        entry = {k: r.get(k) for k in ("case", "kind", "fault", "expected", "metric", "bug_metric", "fixed_metric", "proven")}
        for label in ("now", "before"):
            if f"{label}_bug" not in r:
                continue
            bug = r[f"{label}_bug"]
            entry[f"{label}_status"] = bug["status"]
            entry[f"{label}_first_cause"] = (bug["causes"] or ["-"])[0]
            entry[f"{label}_codes"] = " ".join(bug["codes"])
            if c.fixed is not None:
                s = score(c, bug)
                entry[f"{label}_detected"], entry[f"{label}_cause_first"] = s["detected"], s["first"]
                fixed = r[f"{label}_fixed"]
                entry[f"{label}_fixed_status"] = fixed["status"]
                entry[f"{label}_fixed_codes"] = " ".join(fixed["codes"])
                entry[f"{label}_fixed_alarm"] = fixed["status"] in ("warn", "fail")
            else:
                entry[f"{label}_control_alarm"] = bug["status"] in ("warn", "fail")
        flat.append(entry)
    frame = pd.DataFrame(flat)
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out.with_suffix(".csv"), index=False)
    bugs, controls = frame[frame["kind"] != "healthy"], frame[frame["kind"] == "healthy"]
    lines = [
        "# Bug corpus: the faults people make, their fixed twins, healthy controls",
        "",
        f"Command: `python -m benchmarks.bug_corpus{' --old <checkout of the previous version>' if old else ''}` "
        "(one torch thread per babysit, `--budget quick`). A bug is *detected* when babysit reports a warn/fail finding; its "
        "*root cause is first* when `root_causes[0]` names it; a fixed twin or control *alarms* when it gets any warn/fail "
        "finding. *Proven*: a plain PyTorch loop trains the bug clearly worse than its twin on a clean test split.",
        "",
    ]

    def rate(column: str, part: Any) -> str:
        if column not in part:
            return "-"
        values = part[column].fillna(False).astype(bool)
        return f"{int(values.sum())}/{len(values)} ({values.mean():.0%})"

    lines += ["| | now | before |", "|---|---|---|"]
    for title, column, part in (
        ("bugs detected", "detected", bugs),
        ("root cause first", "cause_first", bugs),
        ("fixed twins with a false alarm", "fixed_alarm", bugs),
        ("healthy controls with a false alarm", "control_alarm", controls),
    ):
        lines.append(f"| {title} | {rate('now_' + column, part)} | {rate('before_' + column, part)} |")
    if "proven" in bugs:
        lines += ["", f"Proven by the plain loop: {int(bugs['proven'].fillna(False).astype(bool).sum())} of {len(bugs)} bugs.", ""]
    columns = [
        "case",
        "kind",
        "expected",
        "metric",
        "bug_metric",
        "fixed_metric",
        "proven",
        "now_first_cause",
        "now_cause_first",
        "now_fixed_status",
        "before_first_cause",
        "before_cause_first",
    ]
    shown = [c for c in columns if c in frame]
    lines += ["| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    for _, r in frame.iterrows():
        lines.append("| " + " | ".join(_cell(r[c]) for c in shown) + " |")
    out.write_text("\n".join(lines) + "\n")


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.3g}"
    return "" if value is None else str(value)


if __name__ == "__main__":
    sys.exit(main())
