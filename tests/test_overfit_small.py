"""overfit-small: planted faults are caught, healthy models pass."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from conftest import DIGITS_MLP, SPIRAL_MLP, recipe_dict
from torch import nn

import nndiag
from nndiag.diagnostics import overfit_small

FAULTS = Path(__file__).with_name("faults.py")
HEALTHY = recipe_dict(SPIRAL_MLP, **{"model.args.hidden": [64, 64]})


@pytest.mark.parametrize(
    "raw",
    [
        HEALTHY,
        recipe_dict(HEALTHY, loss="multi_margin"),
        recipe_dict(DIGITS_MLP, **{"model.args.dropout": 0.5, "optim.weight_decay": 0.01}),
    ],
    ids=["spiral-ce", "spiral-hinge", "digits-regularized"],
)
def test_healthy_models_overfit(build, raw):
    result = overfit_small.run(build(raw))
    assert result.verdict.codes == [], [f.message for f in result.verdict.findings]
    assert result.metrics["final_accuracy"] == 1.0 and result.metrics["final_loss_ratio"] <= 0.1
    assert result.metrics["steps_to_100pct"] is not None


def test_lr_too_low_is_loss_not_decreasing(build):
    result = overfit_small.run(build(recipe_dict(HEALTHY, optim={"name": "sgd", "lr": 1e-8})), steps=200)
    assert result.verdict.codes == ["loss-not-decreasing"]
    assert "too low" in result.verdict.findings[0].advice


def test_lr_too_high_is_loss_diverged(build):
    result = overfit_small.run(build(recipe_dict(HEALTHY, optim={"name": "sgd", "lr": 1e3})), steps=200)
    assert result.verdict.codes == ["loss-diverged"]
    assert result.metrics["steps_run"] < 200  # stops at once


def test_linear_model_on_spiral_cannot_overfit(build):
    result = overfit_small.run(build(recipe_dict(SPIRAL_MLP, model={"name": "linear"})), steps=300)
    assert result.verdict.codes == ["cannot-overfit"]
    assert "capacity" in result.verdict.findings[0].advice


def test_softmax_before_cross_entropy_cannot_overfit_and_is_named(tmp_path, write_recipe):
    shutil.copy(FAULTS, tmp_path / "faults.py")
    from nndiag.config.recipe import load_recipe
    from nndiag.training.experiment import Experiment

    path = write_recipe(recipe_dict(SPIRAL_MLP, model={"target": "faults:SoftmaxOutput"}))
    result = overfit_small.run(Experiment.build(load_recipe(path)), steps=300)
    assert result.verdict.codes == ["cannot-overfit"]
    finding = result.verdict.findings[0]
    assert finding.evidence["outputs_are_probabilities"] and "softmax" in finding.advice


def test_model_and_rng_are_handed_back(build):
    import torch

    exp = build(HEALTHY)
    before = {k: v.clone() for k, v in exp.model.state_dict().items()}
    overfit_small.run(exp, steps=20)
    assert all(torch.equal(v, before[k]) for k, v in exp.model.state_dict().items())


def test_the_csv_has_one_row_per_step(build):
    result = overfit_small.run(build(HEALTHY), steps=15)
    frame = result.tables["overfit_small"]
    assert list(frame["step"]) == list(range(len(frame)))
    assert {"step", "loss", "evaluated", "subset_loss", "subset_acc", "lr"} <= set(frame.columns)


# -- decide() on synthetic numbers -------------------------------------------------------------


def _frame(losses, accs):
    return pd.DataFrame(
        {"step": range(len(losses)), "loss": losses, "evaluated": True, "subset_loss": losses, "subset_acc": accs, "lr": 0.1}
    )


FACTS = {"initial_loss": 2.3}


@pytest.mark.parametrize(
    "losses,accs,codes",
    [
        ([2.3, 1.0, 0.1], [0.1, 0.7, 1.0], []),
        ([2.3, 1.0, 0.3], [0.1, 0.7, 1.0], ["cannot-overfit"]),  # 100% but loss 13% of initial
        ([2.3, 0.5, 0.1], [0.1, 0.7, 0.95], ["cannot-overfit"]),
        ([2.3, 2.29, 2.28], [0.1, 0.1, 0.12], ["loss-not-decreasing"]),
        ([2.3, 5.0, float("nan")], [0.1, 0.1, 0.1], ["loss-diverged"]),
        ([2.3, 8.0, 9.0], [0.1, 0.1, 0.1], ["loss-diverged"]),
        ([2.3, 8.0, 2.5], [0.1, 0.1, 0.1], ["loss-diverged"]),  # a peak over 3x that ends above its start
        ([2.3, 8.0, 1.5], [0.1, 0.4, 0.6], ["cannot-overfit"]),  # ... not when it came back below its start
    ],
)
def test_decide(losses, accs, codes):
    assert overfit_small.decide(_frame(losses, accs), FACTS).codes == codes


def test_a_loss_already_non_finite_before_training_is_loss_diverged_at_init():
    verdict = overfit_small.decide(_frame([math.nan, math.nan], [0.1, 0.1]), {"initial_loss": math.nan})
    assert verdict.codes == ["loss-diverged"] and verdict.findings[0].evidence["at_init"] is True


def test_regression_passes_on_loss_alone():
    assert overfit_small.decide(_frame([1.0, 0.05], [math.nan, math.nan]), {"initial_loss": 1.0}).codes == []


# -- losses whose minimum is not 0, eval mode against train mode, clipping ------------------------------


def _blobs(n=240, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = 3 * torch.randn(2, 8, generator=g)[y] + torch.randn(n, 8, generator=g)
    return x, y


def _net(bn=False, momentum=0.1):
    torch.manual_seed(0)
    layers = [nn.Linear(8, 32), *([nn.BatchNorm1d(32, momentum=momentum)] if bn else []), nn.ReLU(), nn.Linear(32, 2)]
    return nn.Sequential(*layers)


def test_label_smoothing_is_judged_against_its_floor():
    from nndiag.training.scoring import smoothed_floor

    assert smoothed_floor(0.05, 2) == pytest.approx(0.1169, abs=1e-4) and smoothed_floor(0.0, 2) == 0.0
    x, y = _blobs()
    smoothed = nndiag.overfit_small(_net(), (x, y), loss=nn.CrossEntropyLoss(label_smoothing=0.05), batch_size=16, steps=600)
    assert smoothed.status == "pass", smoothed.findings
    plain = nndiag.overfit_small(_net(), (x, y), loss="cross_entropy", batch_size=16, steps=600)
    assert plain.status == "pass"


def test_an_unknown_floor_is_judged_by_accuracy_and_convergence():
    x, y = _blobs()

    def step(model, batch):  # a custom loss with a floor above 0: cross-entropy plus a constant
        logits = model(batch[0])
        return {"loss": F.cross_entropy(logits, batch[1]) + 1.0, "logits": logits, "targets": batch[1]}

    result = nndiag.overfit_small(_net(), (x, y), step=step, batch_size=16, steps=800)
    assert result.status == "pass", result.findings
    assert any(f.code == "not-checked" and "floor is not known" in f.message for f in result.findings)


def test_batchnorm_statistics_that_never_move_mismatch_eval_and_train():
    x, y = _blobs()
    x = x * 5 + 10  # far from BatchNorm's initial statistics (mean 0, variance 1)
    frozen = nndiag.overfit_small(_net(bn=True, momentum=0.0), (x, y), batch_size=16, steps=300)
    assert "eval-train-mismatch" in [f.code for f in frozen.findings], frozen.findings
    moving = nndiag.overfit_small(_net(bn=True), (x, y), batch_size=16, steps=300)
    assert "eval-train-mismatch" not in [f.code for f in moving.findings]


def test_clipping_far_below_the_gradient_norm_is_always_active():
    from conftest import SPIRAL_MLP, recipe_dict

    tight = nndiag.overfit_small(recipe_dict(SPIRAL_MLP, **{"optim.name": "sgd", "optim.lr": 0.05, "train.grad_clip": 1e-3}), steps=200)
    finding = next(f for f in tight.findings if f.code == "clipping-always-active")
    assert finding.evidence["active_share"] > 0.9 and finding.evidence["median_grad_norm"] > 10 * 1e-3
    usual = nndiag.overfit_small(recipe_dict(SPIRAL_MLP, **{"train.grad_clip": 5.0}), steps=200)
    assert "clipping-always-active" not in [f.code for f in usual.findings]
