"""Edge cases a demanding user hits: crashes vs bad input, BatchNorm on a last batch of one,
multi-output regression, mse on class labels, regression through search."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import torch
from conftest import DIGITS_MLP, SPIRAL_MLP, recipe_dict

REGRESSION = """
import torch

def make(n=300, k=3):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 5, generator=g)
    y = x[:, :k] * 0.5 + 0.1 * torch.randn(n, k, generator=g)
    return (x, y), None
"""

CRASHING = '''
import torch
from torch import nn

class Flaky(nn.Module):
    """Scores the data once (nndiag's shape check), then crashes: a bug in the user's own code."""
    def __init__(self):
        super().__init__()
        self.net = nn.Linear(2, 3)
        self.calls = 0
    def forward(self, x):
        self.calls += 1
        if self.calls > 1:
            raise ZeroDivisionError("boom")
        return self.net(x)
'''


def _regression_recipe(tmp_path, **changes):
    (tmp_path / "reg.py").write_text(REGRESSION)
    raw = {
        "name": "reg",
        "device": "cpu",
        "data": {"target": "reg:make"},
        "model": {"name": "mlp", "args": {"hidden": [32]}},
        "loss": "mse",
        "optim": {"name": "adam", "lr": 0.01},
        "train": {"batch_size": 32, "epochs": 2},
    }
    return recipe_dict(raw, **changes)


def test_a_crash_exits_3_not_1(write_recipe, tmp_path):
    (tmp_path / "flaky.py").write_text(CRASHING)
    path = write_recipe(recipe_dict(SPIRAL_MLP, model={"target": "flaky:Flaky"}))
    done = subprocess.run(
        [sys.executable, "-m", "nndiag", "check-loss", str(path), "--json"],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "NNDIAG_RUNS": str(tmp_path / "runs")},
    )
    assert done.returncode == 3, done.stderr
    assert "ZeroDivisionError" in done.stderr and "nndiag crashed" in done.stderr and done.stdout == ""


def test_bad_builtin_arguments_and_out_are_bad_input(cli, write_recipe, tmp_path):
    bad_type = cli("check-loss", write_recipe(SPIRAL_MLP), "--set", "model.args.dropout=x")
    assert bad_type.exit_code == 2 and "model.args" in bad_type.stderr
    (tmp_path / "file.txt").write_text("x")
    bad_out = cli("check-loss", write_recipe(SPIRAL_MLP), "--out", tmp_path / "file.txt")
    assert bad_out.exit_code == 2 and "--out" in bad_out.stderr


def test_batchnorm_never_sees_a_training_batch_of_one(build):
    from nndiag.diagnostics import check_loss, overfit_small

    exp = build(recipe_dict(DIGITS_MLP, **{"model.args.batchnorm": True, "train.batch_size": 479}))  # 1438 = 3 x 479 + 1
    assert all(x.shape[0] > 1 for x, _ in exp.train_batches())
    assert check_loss.run(exp).status == "pass"
    assert overfit_small.run(exp, batches=1, steps=30).metrics["steps_run"] > 0


def test_multi_output_regression_gets_one_output_per_target(build, tmp_path, write_recipe):
    from nndiag.config.recipe import load_recipe
    from nndiag.diagnostics import check_loss
    from nndiag.training.experiment import Experiment

    exp = Experiment.build(load_recipe(write_recipe(_regression_recipe(tmp_path))))
    assert exp.data.target_size == 3 and exp.scorer.objective.outputs() == 3
    assert exp.model(exp.data.train.x[:4]).shape == (4, 3)
    result = check_loss.run(exp)
    assert result.status == "pass" and "variance" in result.metrics["expected_from"]
    assert math.isnan(result.metrics["initial_accuracy"])


def test_mse_on_class_labels_expects_one_over_c_and_counts_accuracy():
    from nndiag.config.recipe import LossConfig
    from nndiag.training.scoring import Objective

    objective = Objective(LossConfig(name="mse"), 10)
    y = torch.randint(0, 10, (200,))
    assert objective.expected_initial_loss(y)[0] == 0.1
    assert float(objective.loss(torch.zeros(200, 10), y)) == 0.1 - 0 or abs(float(objective.loss(torch.zeros(200, 10), y)) - 0.1) < 1e-6
    assert objective.is_classification and objective.correct(torch.eye(10)[y], y)[0] == 200


def test_regression_search_ranks_by_val_loss(cli, tmp_path, write_recipe):
    raw = _regression_recipe(
        tmp_path,
        search={
            "space": {"optim.lr": {"low": 1e-3, "high": 1e-1, "log": True}},
            "coarse": {"trials": 2, "epochs": 1},
            "fine": {"trials": 1, "epochs": 1},
        },
    )
    result = cli("search", write_recipe(raw), "--json", "--no-plots", "--out", tmp_path / "s")
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)["metrics"]
    assert metrics["trials_complete"] == 3 and metrics["best_val_loss"] > 0


def test_early_stopping_on_accuracy_is_rejected_for_regression(cli, tmp_path, write_recipe):
    raw = _regression_recipe(tmp_path, **{"train.early_stopping": {"patience": 2, "metric": "val_acc"}})
    result = cli("train", write_recipe(raw))
    assert result.exit_code == 2 and "train.early_stopping.metric" in result.stderr
