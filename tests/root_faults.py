"""Planted faults with a known root cause (recipe `target`s for test_root_cause and test_babysit)."""

from __future__ import annotations

import torch
from torch import nn


def dead_relu(hidden: int = 64, inputs: int = 2, classes: int = 3, bias: float = -100.0) -> nn.Module:
    """A Kaiming ReLU MLP whose hidden layer starts with a large negative bias: every ReLU is dead at init."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, classes))
    nn.init.kaiming_normal_(model[1].weight)
    with torch.no_grad():
        model[1].bias.fill_(bias)
    return model


def scaled_head(scale: float = 100.0, hidden: int = 256, inputs: int = 2, classes: int = 3) -> nn.Module:
    """A healthy two-hidden-layer Kaiming ReLU MLP whose output layer starts `scale` times too large."""
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, classes)
    )
    for layer in model:
        if isinstance(layer, nn.Linear):
            nn.init.kaiming_normal_(layer.weight)
            nn.init.zeros_(layer.bias)
    with torch.no_grad():
        model[-1].weight.mul_(scale)
    return model
