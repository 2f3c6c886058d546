"""Readable numbers: accuracies as percentages, LRs in scientific notation, losses with 4 significant
digits, keys as words; JSON keeps its keys and raw numbers."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from nndiag.findings import Verdict
from nndiag.formatting import number, words
from nndiag.output.terminal import render
from nndiag.result import Result


@pytest.mark.parametrize(
    "key,value,shown",
    [
        ("final_accuracy", 1.0, "100%"),
        ("final_val_acc", 0.9725, "97.2%"),
        ("max_frac_dead", 0.5, "50%"),
        ("suggested_lr", 0.0031622776, "3.16e-3"),
        ("applied_lr", 0.09999999999999999, "1e-1"),  # no float noise
        ("optim.weight_decay", 5.6e-05, "5.6e-5"),
        ("initial_loss", 2.302585092994046, "2.303"),
        ("steps_run", 12000, "12,000"),
        ("steps_to_100pct", 45, "45"),
        ("best_epoch", 4.0, "4"),
        ("best_val_acc_at_epoch", 1.0, "1"),  # where the best accuracy happened, not an accuracy
        ("best_val_loss_at_global_step", 1200.0, "1,200"),
        ("lr_at_min_loss", 0.0316, "3.16e-2"),  # an LR measured at a place: still an LR
        ("final_loss_ratio", 37.16, "37.16"),  # a ratio both ways: a diverged run ...
        ("final_loss_ratio", 0.006, "0.006"),  # ... and a passing one (never a percentage for one and not the other)
        ("val_loss", float("nan"), "n/a"),
        ("lr_min", None, "—"),
    ],
)
def test_numbers_read_as_people_expect(key, value, shown):
    assert number(value, key) == shown


def test_curves_of_a_train_folder_say_at_which_epoch_the_best_accuracy_came(tmp_path):
    from conftest import SPIRAL_MLP, recipe_dict

    import nndiag

    folder = nndiag.train(recipe_dict(SPIRAL_MLP, **{"train.epochs": 2})).save(tmp_path / "train", plots=False)
    result = nndiag.curves(folder)
    at = result.metrics["best_val_acc_at_epoch"]
    console = Console(width=80, record=True)
    render(result, console)
    line = next(line for line in console.export_text().splitlines() if "best val accuracy at epoch" in line)
    assert at in (1.0, 2.0) and line.split("│")[2].strip() == str(int(at)) and "%" not in line


def test_keys_read_as_words():
    assert words("final_accuracy") == "final accuracy"
    assert words("lr-find.suggested_lr") == "lr-find: suggested LR"
    assert words("steps_to_100pct") == "steps to 100%"


def test_terminal_tables_use_words_and_readable_numbers_but_json_keeps_keys():
    result = Result("overfit-small", Verdict(), metrics={"final_accuracy": 1.0, "lr": 0.05, "initial_loss": 1.0986122886681098})
    console = Console(width=80, record=True)
    render(result, console)
    text = console.export_text()
    assert "final accuracy" in text and "100%" in text and "5e-2" in text and "1.099" in text
    assert "final_accuracy 1," not in text
    assert json.loads(result.to_json())["metrics"]["final_accuracy"] == 1.0


def test_codes_and_values_are_not_cut_at_80_columns():
    verdict = Verdict()
    verdict.add("vanishing-activations", "fail", "activations collapse with depth " * 4, "use Kaiming init " * 6)
    console = Console(width=80, record=True)
    render(Result("probe", verdict, metrics={"median_update_ratio": 0.00123456}), console)
    text = console.export_text()
    assert "vanishing-activations" in text and "…" not in text


def test_recipes_written_for_people_have_no_float_noise():
    from nndiag.formatting import recipe_yaml

    text = recipe_yaml({"optim": {"lr": 0.09999999999999999, "weight_decay": 1e-4}, "train": {"epochs": 3}})
    assert "lr: 0.1\n" in text and "0.0999999" not in text and "epochs: 3" in text
