"""Planted faults for the check-loss and overfit-small tests (used as recipe `target`s)."""

from __future__ import annotations

import torch
from torch import nn


def scaled_last_layer(scale: float = 20.0, hidden: int = 64, inputs: int = 2, classes: int = 3) -> nn.Module:
    """A ReLU MLP whose output layer starts `scale` times too large."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, classes))
    with torch.no_grad():
        model[-1].weight.mul_(scale)
        model[-1].bias.mul_(scale)
    return model


class SoftmaxOutput(nn.Module):
    """The classic bug: softmax in front of a loss that expects logits."""

    def __init__(self, hidden: int = 64):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(x), dim=1)


def scaled_spiral(scale: float = 1000.0):
    """The spiral with inputs multiplied by `scale` (unnormalised data)."""
    from nndiag.zoo.datasets import spiral

    (x, y), _ = spiral()
    return (x * scale, y), None


def spiral_with_nan():
    from nndiag.zoo.datasets import spiral

    (x, y), _ = spiral()
    x[::7] = float("nan")
    return (x, y), None


def leaky_labels(n: int = 300, classes: int = 3):
    """Inputs that contain the one-hot label (a leak)."""
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, classes, (n,), generator=g)
    x = torch.cat([nn.functional.one_hot(y, classes).float(), torch.randn(n, 2, generator=g)], dim=1)
    return (x, y), None


def label_reader(classes: int = 3) -> nn.Module:
    """A "pretrained" model that reads the leaked label: not an untrained model."""
    model = nn.Linear(classes + 2, classes)
    with torch.no_grad():
        model.weight.zero_()
        model.weight[:, :classes] = 5 * torch.eye(classes)
        model.bias.zero_()
    return model
