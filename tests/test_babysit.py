"""babysit: the whole recipe in order, gates, --continue, the report and the JSON."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from conftest import REPO, SPIRAL_MLP, recipe_dict

from nndiag.config.recipe import parse_recipe
from nndiag.diagnosis.babysit import Babysitter, Budget, lr_search_range
from nndiag.diagnosis.run import Step
from nndiag.errors import BadInput
from nndiag.findings import Verdict
from nndiag.result import Result

HEALTHY = recipe_dict(
    SPIRAL_MLP,
    **{
        "model.args.hidden": [64, 64],
        "train.epochs": 4,
        "search": {
            "space": {"optim.lr": {"low": 1e-3, "high": 1e-1, "log": True}},
            "coarse": {"trials": 3, "epochs": 1},
            "fine": {"trials": 2, "epochs": 2},
        },
    },
)


def test_healthy_recipe_runs_every_step_and_writes_one_report(cli, write_recipe, tmp_path):
    out = tmp_path / "bs"
    result = cli("babysit", write_recipe(HEALTHY), "--budget", "quick", "--json", "--out", out)
    verdict = json.loads(result.stdout)
    assert result.exit_code == 0, result.output
    names = [s["name"] for s in verdict["steps"]]
    assert names == ["check-data", "check-loss", "overfit-small", "lr-find", "search", "train", "curves", "probe"]
    assert [s["state"] for s in verdict["steps"]] == ["run"] * 7 + ["skipped"]
    assert verdict["status"] in ("pass", "warn") and verdict["command"] == "babysit"
    assert {"command", "recipe", "status", "findings", "metrics", "outputs"} <= set(verdict)
    assert (out / "report.md").is_file() and (out / "report.html").is_file()
    assert json.loads((out / "summary.json").read_text()) == verdict
    assert (out / "05-search" / "search.csv").is_file() and (out / "06-train" / "train_epochs.csv").is_file()
    html = (out / "report.html").read_text()
    assert "data:image/png;base64" in html and "check-loss" in html
    assert verdict["metrics"]["lr-find.suggested_lr"] > 0 and verdict["metrics"]["search.best_params"]
    assert verdict["root_causes"] == [] and all(f["explained_by"] is None for f in verdict["findings"])


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
    cause = verdict["root_causes"][0]
    assert cause["cause"] == "lr-too-low" and cause["rank"] == 1 and "optim.lr" in cause["fix"]
    assert {(e["step"], e["code"]) for e in cause["evidence"]} == {("overfit-small", "loss-not-decreasing"), ("probe", "update-ratio-low")}
    _assert_sane_advice(verdict)


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


# -- root causes end to end ------------------------------------------------------------------------

FACTOR = re.compile(r"(\d+(?:\.\d+)?(?:e[+-]?\d+)?)x", re.IGNORECASE)


def _assert_sane_advice(verdict):
    """No LR factor outside [3, 1000] anywhere in what babysit says."""
    texts = [f["advice"] for f in verdict["findings"]] + [c["fix"] for c in verdict["root_causes"]]
    assert all(float(v) <= 1000 for text in texts for v in FACTOR.findall(text)), texts


def _with_faults(write_recipe, tmp_path, raw) -> Path:
    shutil.copy(Path(__file__).with_name("root_faults.py"), tmp_path / "root_faults.py")
    return write_recipe(raw)


def test_dead_relus_are_named_first_and_the_lr_is_not_blamed(cli, write_recipe, tmp_path):
    out = tmp_path / "bs"
    recipe = _with_faults(write_recipe, tmp_path, recipe_dict(HEALTHY, model={"target": "root_faults:dead_relu"}))
    verdict = json.loads(cli("babysit", recipe, "--json", "--no-plots", "--out", out).stdout)
    assert verdict["status"] == "fail" and {s["name"]: s["state"] for s in verdict["steps"]}["probe"] == "run"
    first = verdict["root_causes"][0]
    assert first["cause"] == "dead-units" and [e["code"] for e in first["evidence"]] == ["dead-relu"]
    assert {(e["step"], e["code"]) for e in first["explains"]} >= {("overfit-small", "loss-not-decreasing"), ("probe", "update-ratio-low")}
    by_code = {f["code"]: f for f in verdict["findings"]}
    assert by_code["loss-not-decreasing"]["explained_by"] == "dead-units" and by_code["dead-relu"]["explained_by"] is None
    for code in ("loss-not-decreasing", "update-ratio-low"):  # the diagnostics' own advice no longer points at the LR
        assert "too low" not in by_code[code]["advice"] and "higher" not in by_code[code]["advice"], by_code[code]["advice"]
    _assert_sane_advice(verdict)
    md = (out / "report.md").read_text()
    assert md.index("ReLU units dead") < md.index("## Summary") and "far too low" not in md
    terminal = cli("babysit", recipe, "--no-plots", "--out", tmp_path / "again").stdout
    assert "root cause (most likely): ReLU units dead" in terminal


def test_a_warning_a_probe_cause_would_explain_runs_the_probe(cli, write_recipe, tmp_path):
    """A 0.003-std deep tanh net trained with Adam passes every gate but plateaus: the probe finds why."""
    raw = recipe_dict(
        HEALTHY, model={"name": "mlp", "args": {"hidden": [64] * 6, "activation": "tanh", "init": "normal", "init_std": 0.003}}
    )
    verdict = json.loads(cli("babysit", write_recipe(raw), "--budget", "quick", "--json", "--no-plots", "--out", tmp_path / "bs").stdout)
    states = {s["name"]: (s["state"], s["status"]) for s in verdict["steps"]}
    assert states["overfit-small"] == ("run", "pass") and states["probe"][0] == "run", states
    first = verdict["root_causes"][0]
    assert first["cause"] == "vanishing-activations"
    assert {e["code"] for e in first["explains"]} & {"plateau", "underfitting", "lr-too-low", "bad-init"}
    _assert_sane_advice(verdict)


def _sitter(tmp_path, *steps):
    from nndiag.config.recipe import parse_recipe

    recipe = parse_recipe(HEALTHY)
    sitter = Babysitter(recipe, "r.yaml", tmp_path, Budget.of("quick", recipe))
    sitter.record.steps[:] = steps
    return sitter


def _ran(name, status, *codes):
    findings = [{"code": c, "severity": status, "message": "m", "advice": "a", "evidence": {}} for c in codes]
    return Step(name, f"nndiag {name}", verdict={"command": name, "status": status, "findings": findings, "metrics": {}, "outputs": {}})


@pytest.mark.parametrize(
    "steps,probe",
    [
        ([_ran("check-loss", "fail", "initial-loss-high")], True),
        ([_ran("check-loss", "pass"), _ran("overfit-small", "fail", "cannot-overfit")], True),
        ([_ran("check-loss", "pass"), _ran("lr-find", "fail", "no-decrease")], True),
        ([_ran("search", "fail", "all-trials-diverged")], True),
        ([_ran("train", "pass"), _ran("curves", "fail", "diverged")], True),
        ([Step("train", "nndiag train", state="error", note="bad")], True),
        ([_ran("curves", "warn", "plateau")], True),
        ([_ran("curves", "warn", "underfitting")], True),
        ([_ran("search", "warn", "best-on-boundary"), _ran("curves", "warn", "overfitting")], False),
        ([_ran("curves", "pass")], False),
    ],
    ids=lambda v: "-".join(f"{s.name}:{s.status}" for s in v) if isinstance(v, list) else str(v),
)
def test_every_failing_gate_and_every_probe_explainable_warning_runs_the_probe(tmp_path, steps, probe):
    assert _sitter(tmp_path, *steps)._probe_needed() is probe


def test_nndiag_babysit_can_be_called_again_after_its_module_was_imported():
    """Importing a module nndiag/babysit.py would bind it to `nndiag.babysit`, hiding the API function: the second
    call of `nndiag.babysit(...)` in a session raised "TypeError: 'module' object is not callable"."""
    import subprocess
    import sys

    code = (
        "import nndiag\nfor _ in range(2):\n    try:\n        nndiag.babysit('no-such-recipe.yaml')\n"
        "    except nndiag.BadInput:\n        pass\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr


# -- issue 18: check-data first, your own objects, data faults --------------------------------------------


def test_babysit_on_your_own_objects_ranks_the_measured_cause_first(tmp_path):
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    import nndiag

    torch.manual_seed(0)
    x, xv = torch.randn(600, 12), torch.randn(150, 12)
    y, yv = (x[:, 0] > 0).long() + (x[:, 1] > 0).long(), (xv[:, 0] > 0).long() + (xv[:, 1] > 0).long()

    def model():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 3))

    net = model()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    left_out = nndiag.babysit(
        net,
        DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True),
        val=(xv, yv),
        optimizer=torch.optim.SGD(net[2].parameters(), lr=0.05),
        budget="quick",
        out=tmp_path / "a",
    )
    verdict = left_out.to_dict()
    assert verdict["root_causes"][0]["cause"] == "nothing-trains", verdict["root_causes"]
    steps = {s["name"]: s for s in verdict["steps"]}
    assert steps["check-data"]["status"] == "pass" and steps["check-loss"]["status"] == "fail"  # the gate: it stops there
    assert steps["search"]["state"] == "skipped" and steps["train"]["state"] == "not-reached"
    assert steps["check-loss"]["verdict"]["outputs"]["folder"].endswith("02-check-loss")
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # handed back as found
    assert "keep_going=True" in steps["train"]["note"] and "--continue" not in steps["train"]["note"]
    page = (tmp_path / "a" / "report.md").read_text()
    assert "nndiag.check_data(data, model=model)" in page  # each step's call as the API takes its arguments
    assert "nndiag.lr_find(model, optimizer, data, loss=loss)" in page
    assert page.startswith("# nndiag babysit: ") and "keep_going=True" in page and "--continue" not in page
    assert "Recipe: " not in page and "resolved recipe" not in page  # your own objects have no recipe file
    healthy = model()
    fine = nndiag.babysit(
        healthy,
        (x, y),
        val=(xv, yv),
        optimizer=torch.optim.SGD(healthy.parameters(), lr=0.05, momentum=0.9),
        budget="quick",
        out=tmp_path / "b",
    ).to_dict()
    assert fine["root_causes"] == [] and fine["status"] in ("pass", "warn")
    assert not [f for f in fine["findings"] if f["severity"] != "info"], fine["findings"]


def test_labels_the_model_cannot_score_stop_babysit_at_check_data(cli, write_recipe, tmp_path):
    (tmp_path / "two_outputs.py").write_text(
        "from torch import nn\ndef build():\n    return nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 2))\n"
    )
    result = cli(
        "babysit",
        write_recipe({**HEALTHY, "model": {"target": "two_outputs:build"}}),
        "--budget",
        "quick",
        "--json",
        "--continue",
        "--out",
        tmp_path / "bs",
    )
    verdict = json.loads(result.stdout)
    assert result.exit_code == 1 and verdict["root_causes"][0]["cause"] == "labels-out-of-range"
    states = {s["name"]: s["state"] for s in verdict["steps"]}
    assert states["check-data"] == "run" and states["check-loss"] == "not-reached" and states["probe"] == "skipped"


def test_the_train_step_knows_the_search_chose_its_lr(tmp_path, monkeypatch):
    from nndiag.diagnostics import train

    seen = {}
    real = train.run

    def spy(exp, *args, **kwargs):
        seen["lr_chosen"] = kwargs.get("lr_chosen")
        return real(exp, *args, **kwargs)

    monkeypatch.setattr(train, "run", spy)
    import nndiag

    verdict = nndiag.babysit(HEALTHY, budget="quick", out=tmp_path / "bs").to_dict()
    assert seen["lr_chosen"] == "the search" and "optim.lr" in verdict["metrics"]["search.best_params"]
