"""check-data: every rule on data that must trigger it and on healthy data that must not; labels the model
cannot score are a finding of every command, never a crash."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

import nndiag
from nndiag.diagnostics import check_data as cd
from nndiag.zoo.datasets import digits


def codes(result) -> dict[str, str]:
    return {f.code: f.severity for f in result.findings}


@pytest.fixture(scope="module")
def digit_data():
    (x, y), _ = digits(flatten=True)
    x = (x - x.mean(0)) / x.std(0).clamp_min(1e-6)
    return x[:1200], y[:1200], x[1200:], y[1200:]


def mlp(outputs: int = 10) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, outputs))


def test_healthy_digits_raise_nothing_above_info(digit_data):
    x, y, xv, yv = digit_data
    result = nndiag.check_data((x, y), mlp(), val=(xv, yv))
    assert result.status == "pass", result.findings
    assert result.metrics["knn_accuracy"] > 0.9 and result.metrics["val_in_train"] == 0
    assert result.metrics["majority_baseline_acc"] == pytest.approx(max(torch.bincount(y).tolist()) / len(y))


def test_nan_inputs_and_targets_are_counted_and_located(digit_data):
    x, y, _, _ = digit_data
    bad = x.clone()
    bad[[7, 40, 41]] = float("nan")
    result = nndiag.check_data((bad, y))
    (finding,) = [f for f in result.findings if f.code == "non-finite-data"]
    assert finding.severity == "fail" and finding.evidence["examples_affected"] == 3 and finding.evidence["first_indices"] == [7, 40, 41]
    target = torch.randn(100)
    target[5] = float("inf")
    regression = nndiag.check_data((torch.randn(100, 3), target))
    assert [f.evidence["where"] for f in regression.findings if f.code == "non-finite-data"] == ["targets"]


def test_labels_one_to_c_with_c_outputs_fail_everywhere_without_a_crash(digit_data):
    x, y, _, _ = digit_data
    shifted = y + 1  # 1..10 for a model with 10 outputs
    result = nndiag.check_data((x, shifted), mlp())
    finding = next(f for f in result.findings if f.code == "labels-out-of-range")
    assert finding.severity == "fail" and finding.evidence["values"] == [10] and "shifted by one" in finding.message
    for check in (nndiag.check_loss, nndiag.overfit_small, nndiag.probe):  # each stops with the same finding
        found = check(mlp(), (x, shifted))
        assert found.status == "fail" and [f.code for f in found.findings] == ["labels-out-of-range"]
    fine = nndiag.check_data((x, y), mlp())
    assert "labels-out-of-range" not in codes(fine)


def test_labels_from_one_without_a_model_leave_class_zero_missing(digit_data):
    x, y, _, _ = digit_data
    assert codes(nndiag.check_data((x, y + 1))).get("missing-classes") == "warn"
    assert "missing-classes" not in codes(nndiag.check_data((x, y)))


def test_a_majority_class_is_reported_as_the_baseline(digit_data):
    x, y, _, _ = digit_data
    skewed = torch.where(torch.arange(len(y)) % 10 == 0, y, torch.zeros_like(y))
    result = nndiag.check_data((x, skewed))
    assert codes(result)["class-imbalance"] == "info" and result.metrics["majority_baseline_acc"] > 0.85
    assert "class-imbalance" not in codes(nndiag.check_data((x, y)))


def test_validation_inside_training_is_found(digit_data):
    x, y, xv, yv = digit_data
    leaked = nndiag.check_data((x, y), mlp(), val=(x[:100], y[:100]))
    assert codes(leaked)["train-val-overlap"] == "warn" and leaked.metrics["val_in_train"] == 100
    assert "train-val-overlap" not in codes(nndiag.check_data((x, y), mlp(), val=(xv, yv)))


class Repeating(Dataset):
    """A Dataset whose __getitem__ ignores most of its index."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, modulo: int):
        self.x, self.y, self.modulo = x, y, modulo

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.x[i % self.modulo], self.y[i % self.modulo]


def test_a_dataset_that_repeats_items_has_few_distinct_examples(digit_data):
    x, y, _, _ = digit_data
    result = nndiag.check_data(Repeating(x, y, modulo=20))
    assert codes(result)["few-distinct-examples"] == "fail" and result.metrics["distinct_examples"] == 20
    assert codes(nndiag.check_data(Repeating(x, y, modulo=500)))["few-distinct-examples"] == "warn"
    assert "few-distinct-examples" not in codes(nndiag.check_data(Repeating(x, y, modulo=len(x))))


def test_sparse_inputs_are_small_by_nature_but_large_counts_are_still_unscaled():
    g = torch.Generator().manual_seed(0)
    words = torch.randint(0, 20_000, (500, 5), generator=g)
    bag = torch.zeros(500, 20_000).scatter_(1, words, 1.0)  # bag of words: RMS 0.016, 99.97% zeros
    y = (words[:, 0] % 2).long()
    assert "inputs-not-normalized" not in codes(nndiag.check_data((bag, y)))
    assert codes(nndiag.check_data((bag * 1000, y)))["inputs-not-normalized"] == "warn"  # counts in the thousands
    assert codes(nndiag.check_data((torch.randn(500, 8, generator=g) * 1e-3, y)))["inputs-not-normalized"] == "warn"


def test_tabular_data_of_few_categorical_features_repeats_by_nature():
    """Three binary features allow 8 distinct rows: 1,000 rows of them are not a Dataset returning the same item."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 2, (1000, 3), generator=g).float()
    y = (x.sum(1) > 1).long()
    assert "few-distinct-examples" not in codes(nndiag.check_data((x, y)))
    repeated = torch.randn(20, 3, generator=g).repeat(50, 1)  # continuous values, 20 rows over and over: the bug
    assert codes(nndiag.check_data((repeated, y)))["few-distinct-examples"] == "fail"


def test_a_loader_sorted_by_class_gives_class_poor_batches(digit_data):
    x, y, _, _ = digit_data
    order = torch.argsort(y, stable=True)
    dataset = TensorDataset(x[order], y[order])
    sorted_loader = DataLoader(dataset, batch_size=32, shuffle=False)
    assert codes(nndiag.check_data(sorted_loader, mlp()))["unshuffled-batches"] == "warn"
    shuffled = DataLoader(dataset, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0))
    assert "unshuffled-batches" not in codes(nndiag.check_data(shuffled, mlp()))


def test_constant_features_warn_only_when_nearly_all_are(digit_data):
    x, y, _, _ = digit_data
    zeroed = x.clone()
    zeroed[:, 1:] = 0.0
    assert codes(nndiag.check_data((zeroed, y)))["constant-features"] == "warn"
    raw, _ = digits(flatten=True)[0]
    assert codes(nndiag.check_data((raw[:1200], y)))["constant-features"] == "info"  # digits' always-blank corner pixels


def test_the_input_scale_moved_here_from_check_loss(digit_data):
    x, y, _, _ = digit_data
    assert codes(nndiag.check_data((x * 1000 + 500, y)))["inputs-not-normalized"] == "warn"
    assert "inputs-not-normalized" not in codes(nndiag.check_data((x, y)))
    assert "inputs-not-normalized" not in codes(nndiag.check_loss(mlp(), (x * 1000 + 500, y)))


def test_advice_on_your_own_data_names_your_code_with_or_without_a_model(digit_data):
    x, y, _, _ = digit_data
    for result in (nndiag.check_data((x * 1000 + 500, y)), nndiag.check_data((x * 1000 + 500, y), model=mlp())):
        advice = next(f.advice for f in result.findings if f.code == "inputs-not-normalized")
        assert "data.normalize" not in advice and "Dataset" in advice, advice


def test_labels_shuffled_apart_from_their_inputs_look_random(digit_data):
    x, y, _, _ = digit_data
    shuffled = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(1))]
    result = nndiag.check_data((x, shuffled))
    assert codes(result)["labels-look-random"] == "warn", result.metrics
    assert "labels-look-random" not in codes(nndiag.check_data((x, y)))
    tokens = nndiag.check_data((torch.randint(0, 50, (400, 8)), torch.randint(0, 3, (400,))))
    assert "labels-look-random" not in codes(tokens)  # token ids have no distance to test: not judged


def test_decide_is_pure_and_reads_only_its_facts():
    facts = {
        "examples": 100,
        "input_nonfinite": 0,
        "input_nonfinite_first": [],
        "target_nonfinite": 0,
        "target_nonfinite_first": [],
        "classes": 3,
        "labels": True,
        "class_counts": [50, 50, 0],
        "majority_class": 0,
        "majority_share": 0.5,
        "out_of_range": None,
        "distinct": 100,
        "hashed": 100,
    }
    assert [f.code for f in cd.decide(facts).findings] == ["missing-classes", "class-imbalance"]
    assert cd.decide({**facts, "class_counts": [50, 30, 20], "majority_share": 0.5 - 1e-9}).findings == []


def test_check_data_on_a_recipe_from_the_cli(cli, write_recipe, tmp_path):
    from conftest import SPIRAL_MLP

    result = cli("check-data", write_recipe(SPIRAL_MLP), "--json", "--out", tmp_path / "out")
    verdict = json.loads(result.stdout)
    assert result.exit_code == 0 and verdict["command"] == "check-data" and verdict["metrics"]["classes"] == 3
    assert (tmp_path / "out" / "check_data.csv").is_file()


def test_a_recipe_whose_model_has_too_few_outputs_fails_with_the_finding(cli, write_recipe, tmp_path):
    from conftest import SPIRAL_MLP

    (tmp_path / "small_model.py").write_text(
        "from torch import nn\ndef build():\n    return nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 2))\n"
    )
    path = write_recipe({**SPIRAL_MLP, "model": {"target": "small_model:build"}})  # the spiral has 3 classes
    for command in ("check-data", "check-loss", "train"):
        result = cli(command, path, "--json", "--no-plots", "--out", tmp_path / command)
        verdict = json.loads(result.stdout)
        assert result.exit_code == 1 and "labels-out-of-range" in [f["code"] for f in verdict["findings"]], (command, result.output)


@pytest.mark.parametrize(
    "rms,feature,warned",
    [(50.0, 2.0, True), (0.001, 0.01, True), (1.0, 500.0, True), (0.4, 1.0, False)],  # the last: pixels in [0, 1] are fine
)
def test_the_input_scale_rule(rms, feature, warned):
    facts = {
        "examples": 100,
        "input_nonfinite": 0,
        "input_nonfinite_first": [],
        "target_nonfinite": 0,
        "target_nonfinite_first": [],
        "distinct": 100,
        "hashed": 100,
        "inputs": {"rms": rms, "mean": 0.0, "std": rms, "features": 4, "constant_features": 0, "max_feature_scale": feature},
    }
    assert ("inputs-not-normalized" in cd.decide(facts).codes) is warned
