"""The torch thread count a diagnostic runs with (nndiag.training.threads): chosen for the work, given with
--threads / threads=, reported, and handed back as found."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import SPIRAL_MLP, recipe_dict
from torch import nn

import nndiag
from nndiag.training import threads


def small_data(n: int = 64, features: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(n, features, generator=generator), torch.randint(0, 3, (n,), generator=generator)


def big_conv() -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    """64 channels on 32x32 images: 2 x 64 x 64 x 9 x 1,024 x 64 examples ~ 2.4G multiply-adds per batch of 64."""
    model = nn.Sequential(
        nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 3)
    )
    generator = torch.Generator().manual_seed(0)
    return model, (torch.randn(8, 64, 32, 32, generator=generator), torch.randint(0, 3, (8,), generator=generator))


def test_the_rule_is_one_thread_for_small_work_and_the_found_count_for_large():
    assert threads.decide(1e6, found=8).count == 1 and "small model" in threads.decide(1e6, found=8).reason
    assert threads.decide(threads.SMALL_WORK_MACS * 2, found=8).count == 8  # large work: torch's count
    assert threads.decide(threads.SMALL_WORK_MACS * 2, found=1).count == 1  # never above what was found (OMP_NUM_THREADS=1)
    assert threads.decide(None, found=4).count == 4  # the work could not be counted: torch's count stays


def test_forward_macs_counts_linear_and_conv_layers_per_training_batch(build):
    exp = build(recipe_dict(SPIRAL_MLP, **{"model.args.hidden": [64], "train.batch_size": 32}))
    assert threads.forward_macs(exp) == 32 * (2 * 64 + 64 * 3)  # spiral: 2 features -> 64 -> 3 classes
    model, data = big_conv()
    conv = nndiag.check_loss(model, data, batch_size=64, batches=1)  # the count is scaled to the batch size asked for
    exp = nndiag.api.experiment(model, data, batch_size=64)
    assert threads.forward_macs(exp) == 64 * (2 * 64 * 64 * 9 * 32 * 32 + 64 * 3)
    assert conv.metrics["threads"] == 1  # the tests' torch count is 1 (conftest): auto never goes above it


def test_a_small_model_runs_on_one_thread_and_the_count_is_handed_back():
    torch.set_num_threads(2)
    x, y = small_data()
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    result = nndiag.overfit_small(model, (x, y), steps=5)
    assert result.metrics["threads"] == 1 and result.context["threads"].startswith("1 (small model:")
    assert torch.get_num_threads() == 2  # the choice did not leak out of the call


def test_a_large_convolution_keeps_torchs_count():
    torch.set_num_threads(2)
    model, data = big_conv()
    result = nndiag.check_loss(model, data, batch_size=64, batches=1)
    assert result.metrics["threads"] == 2 and "torch's count" in result.context["threads"]
    assert torch.get_num_threads() == 2


def test_threads_given_win_and_are_handed_back_even_when_the_call_fails():
    torch.set_num_threads(2)
    x, y = small_data()
    model = nn.Sequential(nn.Linear(8, 3))
    result = nndiag.check_loss(model, (x, y), threads=3)
    assert result.metrics["threads"] == 3 and result.context["threads"] == "3 (given)"
    assert torch.get_num_threads() == 2
    with pytest.raises(nndiag.BadInput):
        nndiag.check_loss(model, (x[:, :5], y), threads=1)  # the model cannot score 5 features
    assert torch.get_num_threads() == 2
    for bad in (0, 1.5, True):
        with pytest.raises(nndiag.BadInput, match="threads"):
            nndiag.check_loss(model, (x, y), threads=bad)


def test_the_cli_prints_the_choice_on_stderr_and_reports_it_in_json(cli, write_recipe, tmp_path):
    path = write_recipe(SPIRAL_MLP)
    shown = cli("check-loss", path, "--out", tmp_path / "a")
    assert shown.exit_code == 0 and "torch threads: 1 (small model:" in shown.stderr and "torch threads:" not in shown.stdout
    given = cli("check-loss", path, "--threads", "2", "--json", "--out", tmp_path / "b")
    assert given.exit_code == 0 and json.loads(given.stdout)["metrics"]["threads"] == 2
    assert given.stderr == ""  # --json: nothing but the one object, and nothing on stderr either
    assert torch.get_num_threads() == 1


def test_search_reports_its_thread_count(tmp_path):
    raw = recipe_dict(SPIRAL_MLP, **{"search.space": {"optim.lr": {"low": 1e-3, "high": 1e-1, "log": True}}})
    found = nndiag.search(raw, trials=1, stages="coarse", storage=str(tmp_path / "j.log"), threads=2)
    assert found.metrics["threads"] == 2 and torch.get_num_threads() == 1
