"""check-loss: planted faults are caught, healthy models pass."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pandas as pd
import pytest
from conftest import DIGITS_MLP, SPIRAL_MLP, recipe_dict

import nndiag
from nndiag.diagnostics import check_loss

FAULTS = Path(__file__).with_name("faults.py")


def _run(build, raw, **kwargs):
    return check_loss.run(build(raw), **kwargs)


def _with_faults(tmp_path: Path) -> None:
    shutil.copy(FAULTS, tmp_path / "faults.py")


@pytest.mark.parametrize(
    "raw",
    [
        recipe_dict(SPIRAL_MLP),
        recipe_dict(DIGITS_MLP),
        recipe_dict(DIGITS_MLP, loss="multi_margin"),
        recipe_dict(DIGITS_MLP, **{"model.args": {"hidden": [64, 64], "activation": "tanh", "init": "xavier"}}),
        recipe_dict(DIGITS_MLP, **{"model.name": "cnn", "model.args": {"channels": [8, 16]}}),
        recipe_dict(SPIRAL_MLP, loss="bce", **{"data.args.classes": 2}),
    ],
    ids=["spiral-kaiming-ce", "digits-kaiming-ce", "digits-hinge", "digits-xavier-tanh", "digits-cnn", "spiral-bce"],
)
def test_healthy_models_pass(build, raw):
    result = _run(build, raw)
    assert result.verdict.findings == [], [f.message for f in result.verdict.findings]
    assert result.status == "pass"
    assert len(result.tables["check_loss"]) > 0


def test_last_layer_scaled_x20_is_initial_loss_high(build, tmp_path, write_recipe):
    _with_faults(tmp_path)
    from nndiag.config.recipe import load_recipe
    from nndiag.training.experiment import Experiment

    path = write_recipe(recipe_dict(SPIRAL_MLP, model={"target": "faults:scaled_last_layer", "args": {"scale": 20.0}}))
    result = check_loss.run(Experiment.build(load_recipe(path)))
    assert result.verdict.codes == ["initial-loss-high"]
    finding = result.verdict.findings[0]
    assert finding.severity == "fail" and finding.evidence["ratio"] > 1.5 and "ln C = ln 3" in finding.message


def test_unnormalised_inputs_warn_and_raise_the_loss(tmp_path, write_recipe):
    _with_faults(tmp_path)
    from nndiag.config.recipe import load_recipe
    from nndiag.training.experiment import Experiment

    path = write_recipe(recipe_dict(SPIRAL_MLP, data={"target": "faults:scaled_spiral"}))
    result = check_loss.run(Experiment.build(load_recipe(path)))
    assert result.verdict.codes == ["initial-loss-high"]  # the input scale itself is check-data's finding now
    assert "inputs-not-normalized" in nndiag.check_data(path).verdict.codes
    # data.normalize fixes both
    fixed = check_loss.run(Experiment.build(load_recipe(path, ["data.normalize=true"])))
    assert fixed.verdict.codes == []
    assert "inputs-not-normalized" not in nndiag.check_data(path, set=["data.normalize=true"]).verdict.codes


def test_non_finite_loss(tmp_path, write_recipe):
    _with_faults(tmp_path)
    from nndiag.config.recipe import load_recipe
    from nndiag.training.experiment import Experiment

    path = write_recipe(recipe_dict(SPIRAL_MLP, data={"target": "faults:spiral_with_nan"}))
    result = check_loss.run(Experiment.build(load_recipe(path)))
    assert "non-finite-loss" in result.verdict.codes and result.status == "fail"


def test_model_that_already_knows_the_labels_is_initial_loss_low(tmp_path, write_recipe):
    _with_faults(tmp_path)
    from nndiag.config.recipe import load_recipe
    from nndiag.training.experiment import Experiment

    path = write_recipe(recipe_dict(SPIRAL_MLP, data={"target": "faults:leaky_labels"}, model={"target": "faults:label_reader"}))
    result = check_loss.run(Experiment.build(load_recipe(path)))
    assert result.verdict.codes == ["initial-loss-low"]


def test_negligible_weight_decay_has_no_effect(build):
    assert "regularization-no-effect" in _run(build, recipe_dict(SPIRAL_MLP, **{"optim.weight_decay": 1e-12})).verdict.codes
    healthy = _run(build, recipe_dict(SPIRAL_MLP, **{"optim.weight_decay": 1e-3}))
    assert healthy.verdict.codes == [] and healthy.metrics["regularized_loss"] > healthy.metrics["initial_loss"]
    assert healthy.metrics["weight_decay_kind"] == "L2" and healthy.metrics["l2_penalty"] > 0  # Adam's decay is coupled


def test_adamw_reports_no_l2_penalty_and_says_what_its_decay_does(build):
    """AdamW's decay is decoupled: nothing is added to the loss, so there is no penalty to report and the notes'
    'the loss goes up with regularization' check does not apply; the finding gives the shrink per step instead."""
    result = _run(build, recipe_dict(SPIRAL_MLP, **{"optim.name": "adamw", "optim.lr": 0.01, "optim.weight_decay": 1e-12}))
    assert result.metrics["l2_penalty"] is None and result.metrics["regularized_loss"] is None
    assert result.metrics["weight_decay_kind"] == "decoupled" and result.metrics["decay_per_step"] == pytest.approx(1e-14)
    assert result.verdict.codes == ["not-checked"] and result.status == "pass"  # not regularization-no-effect, a false alarm
    finding = result.findings[0]
    assert "decoupled" in finding.message and "no L2 term" in finding.message and "shrinks every weight" in finding.message
    no_decay = _run(build, recipe_dict(SPIRAL_MLP, **{"optim.name": "adamw", "optim.weight_decay": 0.0}))
    assert no_decay.verdict.codes == [] and no_decay.metrics["weight_decay_kind"] is None


# -- decide() on synthetic numbers -------------------------------------------------------------


def _facts(expected=math.log(10), wd=0.0, penalty=0.0):
    return {"expected": expected, "expected_why": "ln C = ln 10", "penalty": penalty, "weight_decay": wd}


def _frame(losses):
    return pd.DataFrame({"loss": losses, "logit_std": [1.0] * len(losses)})


@pytest.mark.parametrize(
    "losses,facts,codes",
    [
        ([2.30, 2.31, 2.29], _facts(), []),
        ([3.4, 3.3], _facts(), []),  # a healthy Kaiming net: +1 nat is within tolerance
        ([4.5, 4.6], _facts(), []),
        ([4.7, 4.8], _facts(), ["initial-loss-high"]),
        ([1.0, 1.1], _facts(), ["initial-loss-low"]),
        ([2.3, float("nan")], _facts(), ["non-finite-loss"]),
        ([2.3], _facts(wd=1e-9, penalty=1e-9), ["regularization-no-effect"]),
        ([2.3], _facts(wd=1e-4, penalty=0.02), []),
    ],
)
def test_decide(losses, facts, codes):
    assert check_loss.decide(_frame(losses), facts).codes == codes


def test_decide_is_tolerance_aware():
    assert check_loss.decide(_frame([3.0]), _facts(), tolerance=0.1).codes == ["initial-loss-high"]
    assert check_loss.decide(_frame([3.0]), _facts(), tolerance=0.5).codes == []
    assert check_loss.decide(_frame([1.5]), _facts(), tolerance=0.25).codes == ["initial-loss-low"]


@pytest.mark.parametrize(
    "accuracy,chance,severity",
    [
        (0.99, 0.5, "info"),  # a fine-tuned binary classifier: 2x chance would ask for 100%
        (0.75, 0.5, "info"),
        (0.55, 0.5, "fail"),  # at chance: the loss is low for another reason
        (0.60, 0.1, "info"),
        (0.30, 0.1, "fail"),
    ],
)
def test_initial_loss_low_is_info_when_the_model_already_predicts_the_labels(accuracy, chance, severity):
    frame = _frame([0.05, 0.05]).assign(accuracy=accuracy)
    finding = check_loss.decide(frame, {**_facts(expected=math.log(1 / chance)), "chance_accuracy": chance}).findings[0]
    assert (finding.code, finding.severity) == ("initial-loss-low", severity)
    assert ("trained" in finding.message) and (f"{accuracy:.0%}" in finding.message)


def test_initial_loss_low_without_an_accuracy_claims_no_chance_level():
    finding = check_loss.decide(_frame([0.05]), _facts(expected=1.0)).findings[0]
    assert finding.severity == "fail" and "chance" not in finding.message and "recipe" not in finding.message
