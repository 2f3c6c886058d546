"""Small benchmark problems (no download): different data, optimizers, activations and depths."""

from __future__ import annotations

import copy
from typing import Any

PROBLEMS: dict[str, dict[str, Any]] = {
    "spiral-mlp-sgd": {
        "name": "spiral-mlp-sgd", "seed": 0, "device": "cpu",
        "data": {"name": "spiral", "args": {"classes": 3, "points_per_class": 200}},
        "model": {"name": "mlp", "args": {"hidden": [100], "activation": "relu", "init": "kaiming"}},
        "loss": "cross_entropy", "optim": {"name": "sgd", "lr": 0.1},
        "train": {"batch_size": 32},
    },
    "digits-mlp-adam-tanh": {
        "name": "digits-mlp-adam-tanh", "seed": 0, "device": "cpu",
        "data": {"name": "digits", "normalize": True},
        "model": {"name": "mlp", "args": {"hidden": [64, 64], "activation": "tanh", "init": "xavier"}},
        "loss": "cross_entropy", "optim": {"name": "adam", "lr": 1e-3},
        "train": {"batch_size": 64},
    },
    "digits-cnn-sgdm": {
        "name": "digits-cnn-sgdm", "seed": 0, "device": "cpu",
        "data": {"name": "digits"},
        "model": {"name": "cnn", "args": {"channels": [16, 32], "activation": "relu", "init": "kaiming", "batchnorm": True}},
        "loss": "cross_entropy", "optim": {"name": "sgd", "lr": 0.01, "momentum": 0.9},
        "train": {"batch_size": 64},
    },
    "mnist1d-mlp4-rmsprop": {
        "name": "mnist1d-mlp4-rmsprop", "seed": 0, "device": "cpu",
        "data": {"name": "mnist1d", "args": {"num_samples": 4000}},
        "model": {"name": "mlp", "args": {"hidden": [128, 128, 128, 128], "activation": "gelu", "init": "kaiming"}},
        "loss": "cross_entropy", "optim": {"name": "rmsprop", "lr": 1e-3},
        "train": {"batch_size": 64},
    },
}


def build(name: str, **changes: Any) -> Any:
    """A built Experiment for problem `name`."""
    from nndiag.experiment import Experiment
    from nndiag.recipe import parse_recipe, set_path

    raw = copy.deepcopy(PROBLEMS[name])
    for key, value in changes.items():
        set_path(raw, key, value)
    return Experiment.build(parse_recipe(raw))
