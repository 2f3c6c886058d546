"""Training logs written as training goes: `nndiag train`'s run folder exists from the first step, its CSVs grow by
whole rows (on disk every epoch and every few seconds), summary.json says running / interrupted, and `nndiag curves`
reads such a folder and says the run has not finished."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import SPIRAL_MLP, recipe_dict

from nndiag.output import files

SMALL = recipe_dict(SPIRAL_MLP, **{"data.args.points_per_class": 60, "model.args.hidden": [16], "train.epochs": 6})

STOPS = '''
import os
import time
from pathlib import Path

from torch import nn


class Stops(nn.Module):
    """The spiral MLP. Its STOP_AT-th training forward pass (in this process) raises KeyboardInterrupt (STOP=int, as
    Ctrl-C does), or writes STOP_MARK and sleeps for the test to SIGKILL it (STOP=kill)."""

    calls = 0

    def __init__(self, hidden=16):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, hidden), nn.ReLU(), nn.Linear(hidden, 3))

    def forward(self, x):
        if self.training and os.environ.get("STOP_AT"):
            Stops.calls += 1
            if Stops.calls == int(os.environ["STOP_AT"]):
                if os.environ.get("STOP") == "kill":
                    Path(os.environ["STOP_MARK"]).write_text(str(os.getpid()))
                    time.sleep(120)
                raise KeyboardInterrupt
        return self.net(x)
'''
BATCHES = 5  # training batches per epoch: 144 training points (80% of 3 x 60) in batches of 32


def stopping_recipe(tmp_path: Path) -> dict:
    (tmp_path / "stops.py").write_text(STOPS)
    return recipe_dict(SMALL, model={"target": "stops:Stops"})


def rows_are_whole(path: Path, cells: int) -> list[str]:
    text = path.read_text()
    assert text.endswith("\n"), "a half-written last row"
    lines = text.splitlines()
    assert all(len(line.split(",")) == cells for line in lines), lines
    return lines


def test_the_folder_exists_from_the_first_step_and_grows_by_epoch(build, tmp_path):
    from nndiag.diagnostics import curves
    from nndiag.training.trainer import Trainer

    seen: list[dict] = []

    class Look:
        """Reads the run folder at the end of every epoch, as a user's `nndiag curves` would."""

        def on_step(self, trainer, step, loss):
            pass

        def on_epoch(self, trainer, row):
            folder = log.folder
            steps = rows_are_whole(folder / "train_steps.csv", 4)
            epochs = rows_are_whole(folder / "train_epochs.csv", 8)
            summary = json.loads((folder / "summary.json").read_text())
            verdict = curves.run([folder]) if row["epoch"] == 3 else None
            seen.append({"steps": len(steps) - 1, "epochs": len(epochs) - 1, "summary": summary, "verdict": verdict})

    log = files.TrainLog(lambda name: files.run_folder(name, "train", tmp_path / "run"))
    history = Trainer(build(SMALL), callbacks=[log, Look()]).fit()
    assert [s["epochs"] for s in seen] == [1, 2, 3, 4, 5, 6]  # each epoch's row is on disk when the next callback looks
    assert [s["steps"] for s in seen] == [BATCHES * e for e in range(1, 7)]
    running = seen[2]["summary"]
    assert running["status"] == "running" and running["run"]["pid"] == os.getpid() and running["metrics"]["epochs_run"] == 3
    finding = next(f for f in seen[2]["verdict"].findings if f.code == "run-incomplete")
    assert finding.severity == "info" and "still in progress" in finding.message
    pd.testing.assert_frame_equal(pd.read_csv(log.folder / "train_steps.csv"), history.steps, check_dtype=False)
    assert (log.folder / "recipe.yaml").read_text().startswith("# resolved recipe")


def test_a_stream_is_on_disk_every_few_seconds_and_only_in_whole_rows(tmp_path):
    stream = files.CsvStream(tmp_path / "log.csv", ["step", "loss"], every_s=3600)
    stream.add({"step": 1, "loss": 2.5})
    assert (tmp_path / "log.csv").read_text() == "step,loss\n"  # not yet: it waits for the interval or a flush
    stream.every_s = 0.0
    stream.add({"step": 2, "loss": float("nan")})
    assert (tmp_path / "log.csv").read_text() == "step,loss\n1,2.5\n2,\n"  # NaN as pandas writes it: a blank cell
    stream.close()
    assert files.FLUSH_S <= 5  # "every few seconds"


def test_a_write_that_fails_part_way_writes_nothing_twice(tmp_path, monkeypatch):
    """A full disk: os.write takes 5 bytes, then raises. The next flush writes what did not reach the file, once."""
    stream = files.CsvStream(tmp_path / "log.csv", ["step", "loss"], every_s=3600)
    stream.add({"step": 1, "loss": 2.5})
    stream.add({"step": 2, "loss": 1.5})
    real, calls = files.os.write, []

    def full_disk(fd, data):
        calls.append(len(data))
        if len(calls) == 1:
            return real(fd, data[:5])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "write", full_disk)
    with pytest.raises(OSError):
        stream.flush()
    monkeypatch.undo()
    stream.add({"step": 3, "loss": 0.5})
    stream.close()
    assert (tmp_path / "log.csv").read_text() == "step,loss\n1,2.5\n2,1.5\n3,0.5\n"


def test_ctrl_c_leaves_the_logs_and_an_interrupted_summary(cli, write_recipe, tmp_path, monkeypatch):
    monkeypatch.setenv("STOP_AT", str(2 * BATCHES + 3))  # the 3rd batch of epoch 3
    out = tmp_path / "run"
    result = cli("train", write_recipe(stopping_recipe(tmp_path)), "--out", out, "--no-plots", "--json")
    assert result.exit_code == 130 and result.stdout == ""
    said = " ".join(result.stderr.split())
    assert said == "interrupted: the run folder keeps the logs so far (its summary.json says interrupted)"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["run"]["state"] == "interrupted"
    steps = rows_are_whole(out / "train_steps.csv", 4)
    assert len(steps) - 1 == 2 * BATCHES + 2 and len(rows_are_whole(out / "train_epochs.csv", 8)) - 1 == 2
    again = cli("curves", out, "--json", "--no-plots", "--out", tmp_path / "c")
    finding = next(f for f in json.loads(again.stdout)["findings"] if f["code"] == "run-incomplete")
    assert finding["severity"] == "warn" and "interrupted" in finding["message"]


def test_sigkill_leaves_whole_rows_and_a_summary_that_says_running(cli, write_recipe, tmp_path):
    path, out, mark = write_recipe(stopping_recipe(tmp_path)), tmp_path / "run", tmp_path / "in-epoch-4"
    proc = subprocess.Popen(
        [sys.executable, "-m", "nndiag", "train", str(path), "--out", str(out), "--no-plots", "--json"],
        env={**os.environ, "STOP_AT": str(3 * BATCHES + 2), "STOP": "kill", "STOP_MARK": str(mark)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while not mark.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert mark.exists(), proc.communicate()[1]
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "running" and summary["run"]["pid"] == proc.pid and summary["metrics"]["epochs_run"] == 3
    assert len(rows_are_whole(out / "train_epochs.csv", 8)) - 1 == 3
    assert len(rows_are_whole(out / "train_steps.csv", 4)) - 1 >= 3 * BATCHES  # every step up to the last flush at least
    result = cli("curves", out, "--json", "--no-plots", "--out", tmp_path / "c")
    assert result.exit_code == 0, result.output
    finding = next(f for f in json.loads(result.stdout)["findings"] if f["code"] == "run-incomplete")
    assert finding["severity"] == "warn" and "killed?" in finding["message"]


def test_a_finished_run_holds_its_verdict_and_no_run_state(cli, write_recipe, tmp_path):
    out = tmp_path / "run"
    result = cli("train", write_recipe(SMALL), "--out", out, "--no-plots", "--json")
    assert result.exit_code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary == json.loads(result.stdout) and summary["status"] in ("pass", "warn") and "run" not in summary
    assert len(pd.read_csv(out / "train_steps.csv")) == summary["metrics"]["steps_run"]
    assert not list(out.glob(".*.tmp"))


def test_train_on_bad_input_writes_nothing(cli, write_recipe, tmp_path):
    from test_bad_input import NO_PARAMETERS

    (tmp_path / "empty.py").write_text(NO_PARAMETERS)
    result = cli("train", write_recipe(recipe_dict(SMALL, model={"target": "empty:build"})))
    assert result.exit_code == 2 and "no parameters" in result.stderr
    runs = tmp_path / "runs"
    assert not runs.exists() or not any(runs.rglob("*"))
