"""train: real logs from a tiny recipe, best.pt, --max-steps/--epochs, divergence, callbacks, and
`curves` reading the logs `train` wrote."""

from __future__ import annotations

import io
import json

import pandas as pd
import torch
from conftest import SPIRAL_MLP, recipe_dict


def test_train_json_writes_logs_and_best_weights(cli, write_recipe, tmp_path):
    out = tmp_path / "run"
    result = cli("train", write_recipe(SPIRAL_MLP), "--epochs", "5", "--json", "--out", out)
    assert result.exit_code == 0, result.output
    verdict = json.loads(result.stdout)  # exactly one object on stdout
    assert verdict["command"] == "train" and verdict["status"] in ("pass", "warn")
    steps, epochs = pd.read_csv(out / "train_steps.csv"), pd.read_csv(out / "train_epochs.csv")
    assert list(steps.columns) == ["step", "epoch", "lr", "loss"] and len(steps) == 5 * 8  # 240 examples / 32
    assert list(epochs["epoch"]) == [1, 2, 3, 4, 5] and {"train_loss", "val_loss", "train_acc", "val_acc"} <= set(epochs.columns)
    assert steps["loss"].iloc[-10:].mean() < steps["loss"].iloc[:5].mean()  # it learned
    state = torch.load(out / "best.pt")
    assert "0.weight" in state or any(k.endswith("weight") for k in state)
    assert verdict["metrics"]["best_epoch"] == int(epochs.loc[epochs["val_loss"].idxmin(), "epoch"])
    assert verdict["outputs"]["best.pt"].endswith("best.pt") and (out / "curves.png").exists()
    # `curves` on the folder `train` wrote reaches the same verdict
    again = json.loads(cli("curves", out, "--json", "--no-plots", "--out", tmp_path / "c").stdout)
    assert [f["code"] for f in again["findings"]] == [f["code"] for f in verdict["findings"]]


def test_max_steps_smoke_run_and_same_numbers(cli, write_recipe, tmp_path):
    path = write_recipe(SPIRAL_MLP)
    a = json.loads(cli("train", path, "--max-steps", "5", "--json", "--no-plots", "--out", tmp_path / "a").stdout)
    b = json.loads(cli("train", path, "--max-steps", "5", "--json", "--no-plots", "--out", tmp_path / "b").stdout)
    assert a["metrics"]["steps_run"] == 5 and a["metrics"]["stopped"] == "max_steps"
    assert a["metrics"]["final_val_loss"] == b["metrics"]["final_val_loss"]  # same recipe + seed -> same numbers


def test_divergence_fails(cli, write_recipe, tmp_path):
    raw = recipe_dict(SPIRAL_MLP, **{"optim.name": "sgd", "optim.lr": 1000.0})
    result = cli("train", write_recipe(raw), "--epochs", "3", "--json", "--no-plots")
    verdict = json.loads(result.stdout)
    assert result.exit_code == 1 and verdict["status"] == "fail"
    assert [f["code"] for f in verdict["findings"]] == ["diverged"]


def test_human_output_shows_curves(cli, write_recipe):
    result = cli("train", write_recipe(SPIRAL_MLP), "--epochs", "2", "--no-plots")
    assert result.exit_code == 0 and "val loss" in result.stdout and "train" in result.stdout


def test_bad_recipe_exit_2(cli, write_recipe):
    result = cli("train", write_recipe(recipe_dict(SPIRAL_MLP, **{"train.epochs": -1})))
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_callbacks_and_early_stopping_keep_best(build):
    from nndiag.diagnostics import train

    class Count:
        steps, epochs = 0, 0

        def on_step(self, trainer, step, loss):
            self.steps += 1

        def on_epoch(self, trainer, row):
            self.epochs += 1
            if row["epoch"] == 3:
                trainer.request_stop("probe says stop")

    exp = build(recipe_dict(SPIRAL_MLP, **{"train.early_stopping": {"patience": 2}}))
    counter = Count()
    result = train.run(exp, epochs=6, callbacks=[counter])
    assert counter.steps == 24 and counter.epochs == 3 and result.metrics["stopped"] == "probe says stop"
    best = torch.load(io.BytesIO(result.extra_files["best.pt"]))
    live = exp.model.state_dict()  # early stopping on: the model holds the best weights
    assert all(torch.equal(best[k], live[k].cpu()) for k in best)


def test_keep_best_without_early_stopping_leaves_final_weights(build):
    from nndiag.training.trainer import Trainer

    exp = build(SPIRAL_MLP)
    history = Trainer(exp, epochs=2, keep_best=True).fit()
    assert history.best_state is not None and history.best_epoch in (1, 2)


def test_progress_bar_prints_to_its_console():
    """The Trainer's progress callback drives the Rich bar: steps of the planned total, the loss, the epoch's validation."""
    from rich.console import Console

    from nndiag.output.progress import ProgressBar
    from nndiag.training.progress import TrainerProgress

    buffer = io.StringIO()
    bar = ProgressBar(Console(file=buffer, force_terminal=True, color_system=None, width=160))
    hook = TrainerProgress(bar)

    class Fake:
        total_steps = 3

    hook.on_step(Fake(), 1, 1.0)
    hook.on_epoch(Fake(), {"epoch": 1, "val_loss": 0.5, "val_acc": 0.75})
    for step in (2, 3):
        hook.on_step(Fake(), step, 1.0 / step)
    hook.on_train_end(Fake())
    bar.close()
    shown = buffer.getvalue()
    assert "3/3" in shown and "loss 0.3333" in shown and "epoch 1: val loss 0.5, acc 75.0%" in shown


def test_the_trainers_abort_is_diverged_even_when_the_curve_alone_does_not_show_it():
    """The Trainer stops at 3x its starting loss (batch losses); the logged curve may end below the curves
    rule's own blow-up line. train.decide still says diverged, from the abort."""
    from nndiag.diagnostics import train as train_diagnostic
    from nndiag.training.trainer import History

    steps = pd.DataFrame({"step": [1, 2, 3, 4], "epoch": [1] * 4, "lr": [0.1] * 4, "loss": [2.3, 2.4, 2.6, 5.0]})
    epochs = pd.DataFrame(columns=["epoch", "step", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "seconds"])
    verdict = train_diagnostic.decide(History(steps, epochs, "diverged", starting_loss=2.3), {})
    assert verdict.codes == ["diverged"] and "training stopped at step 4" in verdict.findings[0].message
    healthy = History(steps.assign(loss=[2.3, 2.0, 1.8, 1.7]), epochs, "completed", starting_loss=2.3)
    assert "diverged" not in train_diagnostic.decide(healthy, {}).codes


# -- train's own findings: the majority baseline, clipping, the LR the search chose ------------------------


def test_a_model_that_only_predicts_the_majority_class_is_at_the_baseline():
    import pandas as pd

    from nndiag.diagnostics import train
    from nndiag.findings import Verdict

    epochs = pd.DataFrame({"val_acc": [0.89, 0.9, 0.9]})
    collapsed, weighted, balanced = Verdict(), Verdict(), Verdict()
    train.accuracy_finding(collapsed, epochs, baseline=0.9, balanced=0.5, classes=2)
    train.accuracy_finding(weighted, epochs, baseline=0.9, balanced=0.75, classes=2)  # trades accuracy for balanced accuracy
    train.accuracy_finding(balanced, pd.DataFrame({"val_acc": [0.1, 0.11]}), baseline=0.1, balanced=None, classes=10)
    assert collapsed.codes == ["accuracy-at-baseline"] and collapsed.findings[0].evidence["imbalanced"]
    assert weighted.codes == [] and balanced.codes == ["accuracy-at-baseline"] and not balanced.findings[0].evidence["imbalanced"]
    learned = Verdict()
    train.accuracy_finding(learned, pd.DataFrame({"val_acc": [0.5, 0.97]}), baseline=0.9, balanced=0.9, classes=2)
    assert learned.codes == []


def test_train_reports_clipping_that_is_always_active(cli, write_recipe):
    raw = recipe_dict(SPIRAL_MLP, **{"optim.name": "sgd", "optim.lr": 0.05, "train.grad_clip": 0.001})
    verdict = json.loads(cli("train", write_recipe(raw), "--epochs", "3", "--json", "--no-plots", "--no-progress").stdout)
    assert "clipping-always-active" in [f["code"] for f in verdict["findings"]]
    healthy = json.loads(
        cli(
            "train",
            write_recipe(recipe_dict(SPIRAL_MLP, **{"train.grad_clip": 5.0})),
            "--epochs",
            "3",
            "--json",
            "--no-plots",
            "--no-progress",
        ).stdout
    )
    assert "clipping-always-active" not in [f["code"] for f in healthy["findings"]]


def test_lr_findings_only_inform_at_the_lr_the_search_chose():
    import numpy as np
    import pandas as pd

    from nndiag.diagnostics import curves
    from nndiag.diagnostics.curve_logs import Curves

    u = np.linspace(0, 1, 200)
    slow = pd.Series(2.3 - 1.2 * u + 0.01 * np.sin(40 * u), index=np.arange(200.0))  # a slow, nearly linear decline
    plain = curves.decide(Curves(dense=slow))
    chosen = curves.decide(Curves(dense=slow, lr_chosen="the search"))
    assert "lr-too-low" in [f.code for f in plain.findings if f.severity == "warn"]
    low = next(f for f in chosen.findings if f.code == "lr-too-low")
    assert low.severity == "info" and low.evidence["at_chosen_lr"] and chosen.status == "pass"
