"""Shared fixtures: tiny recipes on tiny data, written to a temporary folder, and an in-process CLI."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent

# A small, healthy recipe: a Kaiming ReLU MLP on the 3-class spiral. Tests copy and modify it.
SPIRAL_MLP: dict[str, Any] = {
    "name": "spiral-mlp",
    "seed": 0,
    "device": "cpu",
    "data": {"name": "spiral", "args": {"classes": 3, "points_per_class": 100}},
    "model": {"name": "mlp", "args": {"hidden": [64], "activation": "relu", "init": "kaiming"}},
    "loss": "cross_entropy",
    "optim": {"name": "adam", "lr": 0.01},
    "train": {"batch_size": 32, "epochs": 3},
}

# A healthy digits recipe (10 classes, inputs standardised).
DIGITS_MLP: dict[str, Any] = {
    "name": "digits-mlp",
    "seed": 0,
    "device": "cpu",
    "data": {"name": "digits", "normalize": True},
    "model": {"name": "mlp", "args": {"hidden": [64], "activation": "relu", "init": "kaiming"}},
    "loss": "cross_entropy",
    "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
    "train": {"batch_size": 64, "epochs": 3},
}


@pytest.fixture(autouse=True)
def _one_thread() -> Any:
    """The tests' models are tiny: one torch thread is faster than two contending ones (CI has 2 cores)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _runs_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run folders of every test go to a temporary directory, never into the repo."""
    monkeypatch.setenv("NNDIAG_RUNS", str(tmp_path / "runs"))


def integrations_example(heading: str) -> str:
    """The first python code block after `heading` in docs/integrations.md (the page's example, marked
    `<!-- by: tests/test_integrations_*.py -->`: those tests run it with the frameworks installed)."""
    text = (Path(__file__).resolve().parent.parent / "docs" / "integrations.md").read_text()
    after = text[text.index(heading) :]
    start = after.index("```python\n") + len("```python\n")
    return after[start : after.index("```\n", start)]


def recipe_dict(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A deep copy of `base` with dotted-key changes, e.g. recipe_dict(SPIRAL_MLP, **{"optim.lr": 1e-8})."""
    from nndiag.config.recipe import set_path

    raw = copy.deepcopy(base)
    for key, value in changes.items():
        set_path(raw, key, value)
    return raw


@pytest.fixture
def write_recipe(tmp_path: Path) -> Callable[..., Path]:
    """write_recipe(dict_or_yaml_text, name="recipe.yaml") -> path of the file in a temp folder."""

    def write(content: dict[str, Any] | str, name: str = "recipe.yaml") -> Path:
        path = tmp_path / name
        path.write_text(content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False))
        return path

    return write


@pytest.fixture
def build() -> Callable[..., Any]:
    """build(recipe_dict) -> a built Experiment (no file needed)."""

    def make(raw: dict[str, Any]) -> Any:
        from nndiag.config.recipe import parse_recipe
        from nndiag.training.experiment import Experiment

        return Experiment.build(parse_recipe(copy.deepcopy(raw)))

    return make


@pytest.fixture
def cli() -> Callable[..., Any]:
    """cli("check-loss", path, "--json") -> click Result (exit_code, stdout, stderr), run in-process."""
    from typer.testing import CliRunner

    from nndiag.cli import app

    runner = CliRunner()

    def invoke(*args: Any) -> Any:
        return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)

    return invoke
