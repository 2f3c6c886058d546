"""Progress of long work: the diagnostics report Ticks and Notes (nndiag.training.progress) through a plain
callable; the faces draw them (nndiag.output.progress's Rich bar on stderr; the CLI, `progress=True`)."""

from __future__ import annotations

import io
import json

import pytest
import torch
from conftest import SPIRAL_MLP, recipe_dict
from rich.console import Console
from torch import nn

import nndiag
from nndiag.training import progress as P


class Heard(list):
    """A progress callable that keeps what it hears."""

    def __call__(self, event):
        self.append(event)

    def ticks(self, task):
        return [e for e in self if isinstance(e, P.Tick) and e.task == task]

    def notes(self):
        return [e.text for e in self if isinstance(e, P.Note)]


def test_a_ticker_forwards_at_most_one_tick_per_interval_and_always_the_last(monkeypatch):
    heard = Heard()
    ticker = P.Ticker(heard, "work", 1000)
    for step in range(1, 1001):
        ticker(step, loss=1.0 / step)
    assert 1 <= len(heard) < 50 and heard[-1].done == 1000 and heard[-1].total == 1000  # throttled, the last one kept
    ticker = P.Ticker(heard, "early", 1000)
    ticker(7, loss=0.5)
    ticker.finish(note="passed")
    last = heard[-1]
    assert (last.task, last.done, last.finished, last.loss, last.note) == ("early", 7, True, 0.5, "passed")  # ended early
    P.Ticker(None, "nobody", 3)(1)  # no progress asked for: nothing to call


def test_the_diagnostics_report_their_steps(build):
    heard = Heard()
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(0))
    y = (x[:, 0] > 0).long()
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    overfit = nndiag.overfit_small(model, (x, y), batch_size=16, steps=200, progress=heard)
    done = heard.ticks("overfit-small")
    assert done[-1].finished and done[-1].done == overfit.metrics["steps_run"] and done[-1].total == 200
    lr = nndiag.lr_find(model, data=(x, y), batch_size=16, steps=20, batches_per_lr=2, refine_steps=5, progress=heard)
    ranged, refined = heard.ticks("lr-find: range test"), heard.ticks("lr-find: refine")
    assert ranged[-1].finished and ranged[-1].total == 40 and ranged[-1].done == 2 * lr.metrics["points"]
    assert refined[-1].done == 5 * lr.metrics["refine_trials"] and refined[-1].loss is not None
    nndiag.check_loss(model, (x, y), batch_size=16, batches=3, progress=heard)
    nndiag.probe(model, (x, y), batch_size=16, progress=heard)
    assert heard.ticks("check-loss")[-1].done == 3 and heard.ticks("probe")[-1].done == 2 + 5
    assert [n for n in heard.notes() if n.startswith("torch threads: 1 (small model")]  # the choice, once per call


def test_train_and_search_report_steps_and_trials(tmp_path):
    heard = Heard()
    raw = recipe_dict(SPIRAL_MLP, **{"search.space": {"optim.lr": {"low": 1e-3, "high": 1e-1, "log": True}}, "train.epochs": 2})
    trained = nndiag.train(raw, progress=heard)
    steps = heard.ticks("train")
    assert steps[-1].finished and steps[-1].done == trained.metrics["steps_run"] and "epoch 2: val loss" in steps[-1].note
    nndiag.search(raw, trials=2, stages="coarse", storage=str(tmp_path / "j.log"), progress=heard)
    trials = heard.ticks("search coarse")
    assert [(t.done, t.total, t.unit) for t in trials] == [(1, 2, "trials"), (2, 2, "trials")]
    assert sum("search coarse" in n and "val_loss" in n for n in heard.notes()) == 2  # one line per finished trial


def test_progress_true_draws_on_stderr_and_a_bad_value_is_bad_input(capsys):
    x, y = torch.randn(32, 4), torch.randint(0, 2, (32,))
    nndiag.check_loss(nn.Linear(4, 2), (x, y), progress=True)
    captured = capsys.readouterr()
    assert "torch threads: 1" in captured.err and captured.out == ""
    with pytest.raises(nndiag.BadInput, match="progress"):
        nndiag.check_loss(nn.Linear(4, 2), (x, y), progress="yes")


def test_the_bar_draws_ticks_on_a_terminal_and_prints_notes():
    from nndiag.output.progress import ProgressBar

    buffer = io.StringIO()
    bar = ProgressBar(Console(file=buffer, force_terminal=True, color_system=None, width=160))
    bar(P.Note("torch threads: 1"))
    for done in (1, 2):
        bar(P.Tick("lr-find: range test", done, 4, loss=2.0, note="LR 1e-3"))
    bar(P.Tick("lr-find: range test", 2, 4, finished=True))  # ended early (diverged): complete at 2
    bar(P.Tick("lr-find: refine", 3, 10, loss=float("nan")))
    bar.close()
    shown = buffer.getvalue()
    final = shown[shown.rindex("lr-find: range test") :]  # the last frame drawn
    assert shown.startswith("torch threads: 1\n") and "2/2" in final and "loss 2 (avg 2)  LR 1e-3" in final
    assert "3/10" in final and "loss NaN/Inf" in final


def test_the_bar_prints_a_plain_line_per_long_task_when_not_a_terminal(monkeypatch):
    from nndiag.output import progress as bars

    buffer = io.StringIO()
    bar = bars.ProgressBar(Console(file=buffer, force_terminal=False, width=200))
    bar(P.Tick("train", 1, 100, loss=1.0))
    assert buffer.getvalue() == ""  # a task shorter than LOG_EVERY_S prints nothing
    monkeypatch.setattr(bars, "LOG_EVERY_S", 0.0)
    bar(P.Tick("train", 50, 100, loss=0.5))
    bar(P.Note("babysit [5] train: pass (1.0 s)"))
    assert buffer.getvalue().splitlines() == ["train: 50/100 steps  loss 0.5 (avg 0.7368)", "babysit [5] train: pass (1.0 s)"]
    quiet = bars.ProgressBar(Console(file=io.StringIO(), force_terminal=True), bars=False)  # --no-progress: the notes only
    quiet(P.Tick("train", 1, 2))
    assert quiet.progress is None


def test_babysit_reports_each_step_and_the_quick_budget_shrinks_lr_find(tmp_path):
    from nndiag.diagnosis.babysit import QUICK_LR_BATCHES_PER_LR, QUICK_LR_STEPS, QUICK_REFINE_STEPS

    heard = Heard()
    raw = recipe_dict(
        SPIRAL_MLP,
        **{
            "search": {
                "space": {"optim.lr": {"low": 1e-3, "high": 1e-1, "log": True}},
                "coarse": {"trials": 2, "epochs": 1},
                "fine": {"trials": 1, "epochs": 1},
            }
        },
    )
    result = nndiag.babysit(raw, budget="quick", out=tmp_path / "bs", plots=False, progress=heard)
    notes = heard.notes()
    assert (
        notes[0].startswith("torch threads: 1")
        and "babysit [1] check-data ..." in notes
        and "babysit [4] lr-find ..." in notes
        and "babysit [7] curves ..." in notes
    )
    lr = next(s for s in result.steps if s.name == "lr-find")
    assert lr.verdict["metrics"]["planned_steps"] == QUICK_LR_STEPS and lr.verdict["metrics"]["refine_steps"] == QUICK_REFINE_STEPS
    assert heard.ticks("lr-find: range test")[-1].total == QUICK_LR_STEPS * QUICK_LR_BATCHES_PER_LR
    assert f"--steps {QUICK_LR_STEPS} --batches-per-lr {QUICK_LR_BATCHES_PER_LR}" in lr.command  # rerun it on its own, same sizes
    assert heard.ticks("train") and heard.ticks("search coarse") and heard.ticks("overfit-small")
    assert result.context["threads"].startswith("1 (small model") and result.metrics["threads"] == 1


def test_json_keeps_stdout_one_object_and_stderr_quiet(cli, write_recipe, tmp_path):
    result = cli("lr-find", write_recipe(SPIRAL_MLP), "--steps", "20", "--refine-steps", "5", "--json", "--out", tmp_path / "o")
    assert result.exit_code == 0 and json.loads(result.stdout)["command"] == "lr-find" and result.stderr == ""
