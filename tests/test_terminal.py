"""The terminal views at 80 columns (COLUMNS=80): no number, code or header word is cut or split across lines,
several runs keep names that tell them apart, and tables lead with the right row."""

from __future__ import annotations

import math
import re

import pandas as pd
import pytest
import torch
from rich.console import Console
from torch import nn

import nndiag
from nndiag.findings import Verdict
from nndiag.output import terminal
from nndiag.result import Result


def rendered(result: Result, width: int = 80) -> str:
    console = Console(width=width, record=True, color_system=None)
    terminal.VIEWS[result.command](result, console)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= width
    return text


def intact(text: str, *words: str) -> list[str]:
    """The words (numbers, codes, header words) that do not appear whole on one line of `text`."""
    lines = [line.replace("│", " ").replace("┃", " ") for line in text.splitlines()]
    return [w for w in words if not any(re.search(rf"(?<![\w.-]){re.escape(w)}(?![\w%-])", line) for line in lines)]


def search_result() -> Result:
    rows = []
    for slot, (lr, wd, acc, loss) in enumerate(
        [(7.33e-1, 1.2e-6, 1.0, 0.47), (3.16e-3, 5.5e-5, 1.0, 9.2e-5), (1.14e-1, 2.2e-4, 1.0, 3.1e-4), (1e-5, 1e-6, 0.25, 2.2)]
    ):
        rows.append(
            {
                "stage": "coarse",
                "slot": slot,
                "trial": slot,
                "optim.lr": lr,
                "optim.weight_decay": wd,
                "val_acc": acc,
                "val_loss": loss,
                "train_loss": loss * 1.1,
                "epochs_run": 5,
                "status": "complete",
                "seconds": 123.4,
                "error": "",
            }
        )
    rows.append({**rows[0], "slot": 4, "trial": 4, "val_acc": math.nan, "val_loss": math.nan, "status": "diverged"})
    frame = pd.DataFrame(rows)
    from nndiag.diagnostics.search import ranked

    best = ranked(frame, "val_acc")
    frame["rank"] = pd.Series(range(1, len(best) + 1), index=best.index, dtype="Int64")
    return Result("search", Verdict(), {"search": frame}, {"metric": "val_acc"})


def test_the_search_leaderboard_keeps_numbers_and_headers_whole_and_breaks_ties_on_val_loss():
    result = search_result()
    text = rendered(result)
    assert not intact(text, "7.33e-1", "3.16e-3", "1.14e-1", "1.2e-6", "5.5e-5", "9.2e-05", "0.47", "status", "complete", "diverged")
    rows = [line for line in text.splitlines() if re.match(r"^│ \d", line)]
    assert [r.split("│")[2].strip() for r in rows] == [
        "coarse#1",
        "coarse#2",
        "coarse#0",
        "coarse#3",
        "coarse#4",
    ]  # ties: lowest val_loss first
    wide = rendered(result, 160)
    assert "epochs" in wide and "left out" not in wide and "left out at this width: epochs, s" in " ".join(text.split())  # and says so


def test_several_runs_keep_names_that_tell_them_apart():
    assert terminal.run_names(["runs/quickstart/train-20261201-233242", "runs/quickstart/train-20261201-233250"]) == {
        "runs/quickstart/train-20261201-233242": "train-20261201-233242",
        "runs/quickstart/train-20261201-233250": "train-20261201-233250",
    }
    long = [f"experiments/a-very-long-project-name/sweep-{i}/lightning_logs/version_0" for i in range(2)]
    shown = terminal.run_names(long, width=20)
    assert list(shown.values()) == ["sweep-0/…", "sweep-1/…"]
    frame = pd.concat(
        [
            pd.DataFrame(
                {"run": label, "series": "train_loss", "x_name": "step", "x": range(1, 301), "value": 1 / pd.Series(range(1, 301))}
            )
            for label in long
        ]
    )
    frame["smooth"] = frame["value"]
    text = rendered(Result("curves", Verdict(), {"curves": frame}, {}))
    assert not intact(text, *shown.values(), "1-300", "0.003333")


def test_probe_and_init_experiment_tables_fit_80_columns():
    x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3))
    result = nndiag.probe(model, (x, y), batch_size=32)
    text = rendered(result)
    layers = result.tables["probe"]
    numbers = [terminal.fmt(float(v)) for v in layers["mean"]] + [terminal.fmt(float(v)) for v in layers["std"]]
    assert not intact(text, *numbers, "saturated", "update", "weight", "(Linear)", "layer 0", "layer 2")
    lecture = nndiag.api.init_experiment(width=64, depth=6)
    text = rendered(lecture)
    stds = [f"{s:.2g}" for s in lecture.tables["probe"].query("kind in ['bounded', 'relu']")["std"]]
    assert not intact(text, *stds, "0.01 tanh", "kaiming relu", "saturated", "dead", "verdict")


@pytest.mark.parametrize(
    ("path", "name"), [("3", "layer 3 (Linear)"), ("net.3", "net.3 (Linear)"), ("layer1.0.conv1", "layer1.0.conv1"), ("", "Linear")]
)
def test_layers_named_by_a_position_read_as_layers(path, name):
    from nndiag.diagnostics.probe import layer_name

    assert layer_name(path, nn.Linear(2, 2)) == name


def test_a_finding_on_a_sequential_names_the_layer_not_a_bare_number():
    x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    with torch.no_grad():
        model[0].bias.fill_(-100.0)  # every unit of the ReLU dead from the start
    result = nndiag.probe(model, (x, y), batch_size=32, steps=0)
    dead = next(f for f in result.findings if f.code == "dead-relu")
    assert "layer 1 (ReLU): 100% of 16" in dead.message and dead.evidence["layers"] == ["layer 1 (ReLU)"]
