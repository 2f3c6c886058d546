"""`nndiag search`: sampling, narrowing, the verdict rules, and the study (workers, resume, storage)."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import SPIRAL_MLP, recipe_dict

from nndiag.config.recipe import SearchParam
from nndiag.diagnostics import search

SPACE = {
    "optim.lr": {"low": 1.0e-4, "high": 1.0, "log": True},
    "optim.weight_decay": {"low": 1.0e-6, "high": 1.0e-2, "log": True},
}


def spiral_search(**changes):
    base = recipe_dict(SPIRAL_MLP, **{"data.args.points_per_class": 60, "model.args.hidden": [16], "train.epochs": 1})
    base["search"] = {"space": SPACE, "coarse": {"trials": 6, "epochs": 1}, "fine": {"trials": 2, "epochs": 1}, "top_k": 2}
    return recipe_dict(base, **changes)


def dims(**space):
    return search.dims_from_space({k: SearchParam(**v) for k, v in (space or SPACE).items()})


def frame(rows):
    return pd.DataFrame(
        [
            {"stage": "coarse", "slot": i, "val_loss": 1.0, "train_loss": 1.0, "epochs_run": 1, "seconds": 0.1, **r}
            for i, r in enumerate(rows)
        ]
    )


# -- sampling and narrowing ----------------------------------------------------------------------


def test_random_sampling_is_log_uniform_in_range_and_reproducible():
    d = dims()
    draws = [search.sample(d, 0, "coarse", k, 400) for k in range(400)]
    lrs = [p["optim.lr"] for p in draws]
    assert all(1e-4 <= v <= 1.0 for v in lrs)
    below = sum(v < 1e-2 for v in lrs) / len(lrs)  # 1e-2 is the log-midpoint of [1e-4, 1]
    assert 0.4 < below < 0.6
    assert draws[7] == search.sample(d, 0, "coarse", 7, 400)  # a pure function of (seed, stage, slot)
    assert draws[7] != search.sample(d, 1, "coarse", 7, 400)


def test_linear_space_samples_uniformly():
    d = search.dims_from_space({k: SearchParam(**v) for k, v in SPACE.items()}, log_space=False)
    lrs = [search.sample(d, 0, "coarse", k, 200)["optim.lr"] for k in range(200)]
    assert sum(v < 1e-2 for v in lrs) < 10  # only 1% of a linear [1e-4, 1] lies below 1e-2


def test_int_and_categorical_parameters():
    d = dims(
        **{
            "train.batch_size": {"type": "int", "low": 8, "high": 128, "log": True},
            "optim.name": {"type": "categorical", "choices": ["sgd", "adam"]},
        }
    )
    draws = [search.sample(d, 0, "coarse", k, 50) for k in range(50)]
    assert all(isinstance(p["train.batch_size"], int) and 8 <= p["train.batch_size"] <= 128 for p in draws)
    assert {p["optim.name"] for p in draws} == {"sgd", "adam"}


def test_grid_has_the_requested_number_of_distinct_points():
    points = search.grid(dims(), 9)
    assert len(points) == 9 and len({tuple(p.values()) for p in points}) == 9
    assert min(p["optim.lr"] for p in points) == pytest.approx(1e-4)


def test_narrow_works_in_log_space_and_clips_to_the_original_range():
    d = dims(**{**SPACE, "optim.name": {"type": "categorical", "choices": ["sgd", "adam", "rmsprop"]}})
    fine = {
        f.key: f
        for f in search.narrow(
            d,
            [
                {"optim.lr": 1e-2, "optim.weight_decay": 1e-6, "optim.name": "adam"},
                {"optim.lr": 1e-1, "optim.weight_decay": 1e-5, "optim.name": "adam"},
            ],
        )
    }
    lr = fine["optim.lr"]
    assert lr.log and lr.low == pytest.approx(10 ** (-2 - 0.4)) and lr.high == pytest.approx(10 ** (-1 + 0.4))
    assert fine["optim.weight_decay"].low == pytest.approx(1e-6)  # clipped at the original low end
    assert fine["optim.name"].choices == ["adam"]


# -- the rules -------------------------------------------------------------------------------------


def test_best_on_boundary_triggers_at_an_edge():
    rows = [
        {"optim.lr": 0.95, "optim.weight_decay": 1e-4, "val_acc": 0.9, "status": "complete"},
        {"optim.lr": 1e-2, "optim.weight_decay": 1e-4, "val_acc": 0.5, "status": "complete"},
    ]
    verdict = search.decide(frame(rows), dims())
    assert verdict.codes == ["best-on-boundary"] and verdict.status == "warn"
    assert verdict.findings[0].evidence["key"] == "optim.lr" and verdict.findings[0].evidence["side"] == "high"


def test_best_on_boundary_advice_keeps_an_integer_width_whole():
    dim = search.Dim("model.args.hidden", "int", 16, 256, log=True)
    rows = [
        {"model.args.hidden": 16, "val_acc": 0.9, "status": "complete"},
        {"model.args.hidden": 128, "val_acc": 0.5, "status": "complete"},
    ]
    advice = search.decide(frame(rows), [dim]).findings[0].advice
    assert "model.args.hidden.low (e.g. to 1)" in advice
    assert search.wider_edge(search.Dim("model.args.hidden", "int", 2, 8, log=True), "low") == "1"
    assert search.wider_edge(search.Dim("train.batch_size", "int", 32, 256), "high") == "368"
    assert search.wider_edge(search.Dim("optim.lr", "float", 1e-4, 1.0, log=True), "high") == "1e1"


def test_best_on_boundary_silent_for_an_interior_best():
    rows = [
        {"optim.lr": 1e-2, "optim.weight_decay": 1e-4, "val_acc": 0.9, "status": "complete"},
        {"optim.lr": 0.95, "optim.weight_decay": 1e-4, "val_acc": 0.5, "status": "complete"},
        {"optim.lr": 1.0, "optim.weight_decay": 1e-2, "val_acc": math.nan, "status": "diverged"},
    ]
    assert search.decide(frame(rows), dims()).codes == []


def test_all_trials_diverged():
    rows = [
        {"optim.lr": 0.9, "optim.weight_decay": 1e-4, "val_acc": 0.3, "status": "diverged"},
        {"optim.lr": 0.5, "optim.weight_decay": 1e-4, "val_acc": math.nan, "status": "failed"},
    ]
    verdict = search.decide(frame(rows), dims())
    assert verdict.codes == ["all-trials-diverged"] and verdict.status == "fail"


# -- end to end --------------------------------------------------------------------------------------


def run_json(cli, *args):
    result = cli("search", *args, "--json", "--no-plots")
    return result, (json.loads(result.stdout) if result.stdout.strip() else None)


def test_search_writes_csv_best_recipe_and_resumes_without_rerunning(cli, write_recipe, tmp_path):
    path = write_recipe(spiral_search())
    out = tmp_path / "out"
    result, verdict = run_json(cli, path, "--out", out)
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "search.csv")
    assert list(table["stage"]) == ["coarse"] * 6 + ["fine"] * 2
    assert {"optim.lr", "optim.weight_decay", "val_acc", "val_loss", "train_loss", "epochs_run", "status", "seconds"} <= set(table.columns)
    assert verdict["metrics"]["duplicates"] == 0 and "best_params" in verdict["metrics"]
    best = (out / "best_recipe.yaml").read_text()
    assert best.startswith("# best configuration") and "nndiag train" in best
    again, verdict2 = run_json(cli, path, "--out", out)  # the same command: everything is already done
    assert again.exit_code == 0
    assert pd.read_csv(out / "search.csv")["trial"].tolist() == table["trial"].tolist()
    assert verdict2["metrics"]["best_params"] == verdict["metrics"]["best_params"]


def test_list_valued_categorical_choices_reach_the_recipe(cli, write_recipe, tmp_path):
    raw = spiral_search(
        **{
            "search.space": {
                "model.args.hidden": {"type": "categorical", "choices": [[8], [16, 16]]},
                "optim.lr": {"low": 1e-3, "high": 1e-1, "log": True},
            },
            "search.coarse.trials": 3,
        }
    )
    result, verdict = run_json(cli, write_recipe(raw), "--stages", "coarse", "--out", tmp_path / "o")
    assert result.exit_code == 0 and verdict["status"] == "pass", result.output
    assert verdict["metrics"]["best_params"]["model.args.hidden"] in ([8], [16, 16])
    assert set(pd.read_csv(tmp_path / "o" / "search.csv")["status"]) == {"complete"}


def test_absurd_learning_rates_give_all_trials_diverged(cli, write_recipe, tmp_path):
    raw = spiral_search(
        **{"optim.name": "sgd", "search.space": {"optim.lr": {"low": 1e2, "high": 1e3, "log": True}}, "search.coarse.trials": 3}
    )
    result, verdict = run_json(cli, write_recipe(raw), "--stages", "coarse", "--out", tmp_path / "o")
    assert result.exit_code == 1
    assert [f["code"] for f in verdict["findings"]] == ["all-trials-diverged"]


def test_ties_on_the_metric_break_on_the_other_validation_metric():
    """Nine trials at val_acc 1.0 (as a tiny BERT reaches): the best is the one with the lowest val_loss, not the first
    one found; the fine stage narrows around the ranked top-k and train takes the ranked first (both call `ranked`)."""
    tied = frame([{"val_acc": 1.0, "val_loss": loss, "status": "complete"} for loss in (0.47, 9e-5, 3e-4)])
    tied.loc[len(tied)] = {**tied.iloc[0].to_dict(), "slot": 3, "val_acc": 0.9, "val_loss": 1e-6}  # lower loss, lower accuracy
    assert list(search.ranked(tied, "val_acc")["slot"]) == [1, 2, 0, 3]
    by_loss = frame([{"val_acc": acc, "val_loss": 0.5, "status": "complete"} for acc in (0.7, 0.9, 0.8)])
    assert list(search.ranked(by_loss, "val_loss")["slot"]) == [1, 2, 0]  # val_loss ties: the higher accuracy first
    regression = frame([{"val_acc": float("nan"), "val_loss": 0.5, "status": "complete"} for _ in range(2)])
    assert list(search.ranked(regression, "val_loss")["slot"]) == [0, 1]  # nothing to break the tie with: slot order


def test_an_lr_range_that_is_too_low_puts_the_best_on_the_boundary(cli, write_recipe, tmp_path):
    """Every LR in 1e-6..1e-3 is too low for one epoch (the accuracies are chance, ties among them): ranked by the
    validation loss, the best is the largest LR tried, at the range's high edge."""
    raw = spiral_search(
        **{"search.space": {"optim.lr": {"low": 1e-6, "high": 1e-3, "log": True}}, "search.coarse.trials": 4, "search.metric": "val_loss"}
    )
    result, verdict = run_json(cli, write_recipe(raw), "--grid", "--stages", "coarse", "--out", tmp_path / "o")
    assert result.exit_code == 0
    assert [(f["code"], f["evidence"]["side"]) for f in verdict["findings"]] == [("best-on-boundary", "high")]


@pytest.mark.parametrize(
    "args", [["--stages", "medium"], ["--storage", "foo://nowhere/db"], ["--storage", "postgresql://u:p@127.0.0.1:1/nodb"]]
)
def test_bad_input_exits_2(cli, write_recipe, tmp_path, args):
    result = cli("search", write_recipe(spiral_search()), "--out", tmp_path / "o", *args)
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_fine_alone_without_coarse_results_exits_2(cli, write_recipe, tmp_path):
    result = cli("search", write_recipe(spiral_search()), "--stages", "fine", "--out", tmp_path / "o")
    assert result.exit_code == 2 and "coarse" in result.output


def test_a_changed_search_refuses_the_old_study(cli, write_recipe, tmp_path):
    out = tmp_path / "o"
    assert cli("search", write_recipe(spiral_search()), "--stages", "coarse", "--trials", "2", "--out", out, "--json").exit_code == 0
    changed = write_recipe(spiral_search(**{"search.coarse.epochs": 2}), name="changed.yaml")
    result = cli("search", changed, "--stages", "coarse", "--trials", "2", "--out", out, "--study", "spiral-mlp")
    assert result.exit_code == 2 and "different search" in result.output


# -- workers and resume -------------------------------------------------------------------------------


def finished_slots(journal: Path, study: str, stage: str = "coarse") -> list[int]:
    import optuna

    from nndiag.diagnostics.search_study import open_storage

    trials = optuna.load_study(study_name=study, storage=open_storage(str(journal))).get_trials(deepcopy=False)
    return sorted(
        t.user_attrs["slot"] for t in trials if t.user_attrs.get("stage") == stage and t.state.is_finished() and t.user_attrs.get("status")
    )


def test_three_workers_share_one_study_exactly_even_when_one_is_killed(cli, write_recipe, tmp_path):
    import threading

    import optuna
    from optuna.trial import TrialState

    from nndiag.diagnostics.search_study import open_storage, owners

    out = tmp_path / "o"
    journal = out / "search-journal.log"
    path = write_recipe(spiral_search(**{"search.coarse.epochs": 3, "data.args.points_per_class": 150}))
    outcome = {}
    thread = threading.Thread(
        target=lambda: outcome.update(
            zip(("result", "verdict"), run_json(cli, path, "--workers", "3", "--stages", "coarse", "--trials", "9", "--out", out))
        )
    )
    thread.start()
    victim = None
    deadline = time.time() + 120
    while victim is None and thread.is_alive() and time.time() < deadline:
        time.sleep(0.05)
        if not journal.exists() or len(finished_slots(journal, "spiral-mlp")) < 2:
            continue
        study = optuna.load_study(study_name="spiral-mlp", storage=open_storage(str(journal)))
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            pids = [r["pid"] for r in owners(t)]
            if len(pids) == 1 and pids[0] != os.getpid():
                victim = t
                os.kill(pids[0], signal.SIGKILL)  # a worker dies mid-trial
                break
    thread.join(timeout=180)
    assert victim is not None, "no worker could be killed mid-trial"
    result, verdict = outcome["result"], outcome["verdict"]
    assert result.exit_code == 0, result.output
    assert finished_slots(journal, "spiral-mlp") == list(range(9))  # exactly the requested trials: no gap, no duplicate
    assert sorted(pd.read_csv(out / "search.csv")["slot"]) == list(range(9))
    assert verdict["metrics"]["duplicates"] == 0
    study = optuna.load_study(study_name="spiral-mlp", storage=open_storage(str(journal)))
    killed = study.trials[victim.number]
    assert killed.state == TrialState.COMPLETE or "gone" in killed.user_attrs.get("lost", "")  # it finished just before, or was re-run
    assert verdict["metrics"]["trials_rerun"] == (0 if killed.state == TrialState.COMPLETE else 1)


def test_a_trial_left_running_by_a_dead_worker_is_rerun(cli, write_recipe, tmp_path):
    import optuna
    from optuna.trial import TrialState

    from nndiag.diagnostics.search_study import open_storage

    path, out = write_recipe(spiral_search()), tmp_path / "o"
    assert cli("search", path, "--stages", "coarse", "--trials", "3", "--out", out, "--json").exit_code == 0
    journal = out / "search-journal.log"
    study = optuna.load_study(study_name="spiral-mlp", storage=open_storage(str(journal)))
    study.enqueue_trial({"optim.lr": 1e-3, "optim.weight_decay": 1e-5}, user_attrs={"stage": "coarse", "slot": 3})
    waiting = study.get_trials(states=(TrialState.WAITING,))[0]
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    study._storage.set_trial_state_values(waiting._trial_id, TrialState.RUNNING)
    study._storage.set_trial_user_attr(waiting._trial_id, "pid", dead.pid)
    study._storage.set_trial_user_attr(waiting._trial_id, "host", socket.gethostname())

    result, verdict = run_json(cli, path, "--stages", "coarse", "--trials", "5", "--out", out)
    assert result.exit_code == 0, result.output
    assert finished_slots(journal, "spiral-mlp") == [0, 1, 2, 3, 4]  # no gap, no duplicate
    assert verdict["metrics"]["trials_rerun"] == 1
    lost = [t for t in study.get_trials() if t.state == TrialState.FAIL]
    assert len(lost) == 1 and "gone" in lost[0].user_attrs["lost"]


# -- PostgreSQL (CI starts a server and sets NNDIAG_TEST_POSTGRES_URL) -----------------------------------


@pytest.mark.postgres
@pytest.mark.skipif(not os.environ.get("NNDIAG_TEST_POSTGRES_URL"), reason="set NNDIAG_TEST_POSTGRES_URL to a PostgreSQL database")
def test_two_workers_on_postgres(cli, write_recipe, tmp_path):
    url = os.environ["NNDIAG_TEST_POSTGRES_URL"]
    study = f"nndiag-test-{os.getpid()}-{int(time.time())}"
    result, verdict = run_json(
        cli,
        write_recipe(spiral_search()),
        "--storage",
        url,
        "--study",
        study,
        "--workers",
        "2",
        "--trials",
        "6",
        "--stages",
        "both",
        "--out",
        tmp_path / "o",
    )
    assert result.exit_code == 0, result.output
    table = pd.read_csv(tmp_path / "o" / "search.csv")
    assert sorted(table[table["stage"] == "coarse"]["slot"]) == list(range(6))
    assert sorted(table[table["stage"] == "fine"]["slot"]) == list(range(6))
    assert verdict["metrics"]["duplicates"] == 0
