"""babysit: the whole recipe in order, gates, --continue, the report and the JSON."""

from __future__ import annotations

import json

import pytest

from conftest import SPIRAL_MLP, recipe_dict
from nndiag.babysit import Budget, lr_search_range
from nndiag.errors import BadInput
from nndiag.findings import Verdict
from nndiag.recipe import parse_recipe
from nndiag.result import Result

HEALTHY = recipe_dict(
    SPIRAL_MLP,
    **{"model.args.hidden": [64, 64], "train.epochs": 4,
       "search": {"space": {"optim.lr": {"low": 1e-3, "high": 1e-1, "log": True}}, "coarse": {"trials": 3, "epochs": 1}, "fine": {"trials": 2, "epochs": 2}}},
)


def test_healthy_recipe_runs_every_step_and_writes_one_report(cli, write_recipe, tmp_path):
    out = tmp_path / "bs"
    result = cli("babysit", write_recipe(HEALTHY), "--budget", "quick", "--json", "--out", out)
    verdict = json.loads(result.stdout)
    assert result.exit_code == 0, result.output
    names = [s["name"] for s in verdict["steps"]]
    assert names == ["check-loss", "overfit-small", "lr-find", "search", "train", "curves", "probe"]
    assert [s["state"] for s in verdict["steps"]] == ["run"] * 6 + ["skipped"]
    assert verdict["status"] in ("pass", "warn") and verdict["command"] == "babysit"
    assert {"command", "recipe", "status", "findings", "metrics", "outputs"} <= set(verdict)
    assert (out / "report.md").is_file() and (out / "report.html").is_file()
    assert json.loads((out / "summary.json").read_text()) == verdict
    assert (out / "04-search" / "search.csv").is_file() and (out / "05-train" / "train_epochs.csv").is_file()
    html = (out / "report.html").read_text()
    assert "data:image/png;base64" in html and "check-loss" in html
    assert verdict["metrics"]["lr-find.suggested_lr"] > 0 and verdict["metrics"]["search.best_params"]


def test_failing_gate_stops_and_probes(cli, write_recipe, tmp_path):
    out = tmp_path / "bs"
    result = cli("babysit", write_recipe(recipe_dict(HEALTHY, optim={"name": "sgd", "lr": 1e-8})), "--json", "--out", out, "--no-plots")
    verdict = json.loads(result.stdout)
    assert result.exit_code == 1
    states = {s["name"]: (s["state"], s["status"]) for s in verdict["steps"]}
    assert states["overfit-small"] == ("run", "fail")
    assert states["lr-find"] == ("not-reached", "not-reached") and states["train"] == ("not-reached", "not-reached")
    assert states["probe"][0] == "run"  # a failing step triggers the probe
    codes = {(f["step"], f["code"]) for f in verdict["findings"]}
    assert ("overfit-small", "loss-not-decreasing") in codes and ("probe", "update-ratio-low") in codes
    assert "stopped" in (out / "report.md").read_text().lower()


def test_continue_runs_past_a_failing_gate(cli, write_recipe, tmp_path):
    raw = recipe_dict(HEALTHY, optim={"name": "sgd", "lr": 1e-8})
    result = cli("babysit", write_recipe(raw), "--continue", "--budget", "quick", "--json", "--no-plots", "--out", tmp_path / "bs")
    verdict = json.loads(result.stdout)
    assert result.exit_code == 1  # the worst step's code
    assert all(s["state"] == "run" for s in verdict["steps"])
    # lr-find's range replaced the recipe's hopeless LR, so the searched and trained model learns
    assert verdict["metrics"]["search.best_val_acc"] > 0.5


def test_bad_budget_is_bad_input(cli, write_recipe):
    result = cli("babysit", write_recipe(HEALTHY), "--budget", "huge")
    assert result.exit_code == 2 and "--budget" in result.stderr


def test_budgets_scale_the_recipe():
    recipe = parse_recipe(recipe_dict(HEALTHY, **{"search.coarse": {"trials": 20, "epochs": 3}, "train.epochs": 30}))
    quick, standard, thorough = (Budget.of(name, recipe) for name in ("quick", "standard", "thorough"))
    assert quick.coarse_trials == 6 and quick.coarse_epochs == 1 and quick.train_epochs == 5
    assert standard.coarse_trials == 20 and standard.train_epochs == 30
    assert thorough.coarse_trials == 40
    with pytest.raises(BadInput):
        Budget.of("huge", recipe)


def _lr_result(status="pass", **metrics):
    verdict = Verdict()
    if status == "fail":
        verdict.add("no-decrease", "fail", "m", "a")
    return Result("lr-find", verdict, metrics=metrics)


def test_lr_search_range_widens_and_respects_divergence():
    assert lr_search_range(_lr_result(lr_min=1e-3, lr_max=1e-2, lr_diverged=1.0)) == pytest.approx((1e-3 / 3, 3e-2))
    assert lr_search_range(_lr_result(lr_min=1e-3, lr_max=1e-2, lr_diverged=2e-2)) == pytest.approx((1e-3 / 3, 2e-2))
    assert lr_search_range(_lr_result("fail", lr_min=1e-3, lr_max=1e-2)) is None
    assert lr_search_range(_lr_result(lr_min=None, lr_max=None)) is None
    assert lr_search_range(None) is None
