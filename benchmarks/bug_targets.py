"""The data, models and losses of the bug corpus (benchmarks/bug_corpus.py), written the way people write the bug,
each with a switch for its fixed twin. Recipes name them as targets ("benchmarks.bug_targets:digits"); the corpus's
plain PyTorch loop calls them directly.

Every data function takes `part`: "fit" returns (train, val) as a recipe's data target does; "test" returns a clean
held-out (X, y) pair the plain loop scores on, never touched by a bug.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

SPLIT = (1000, 397, 400)  # digits: train / val / test examples (a fixed seeded permutation of the 1,797)


@functools.lru_cache(maxsize=None)
def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    try:
        from nndiag.zoo.datasets import digits as load
    except ImportError:  # nndiag before its layout by layer (the corpus runs the previous version too)
        from nndiag.data import digits as load  # type: ignore[no-redef]

    (x, y), _ = load(flatten=True)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    x, y = x[order], y[order]
    mean, std = x[: SPLIT[0]].mean(0), x[: SPLIT[0]].std(0).clamp_min(1e-6)
    return (x - mean) / std, y


def _raw_stats() -> tuple[torch.Tensor, torch.Tensor]:
    try:
        from nndiag.zoo.datasets import digits as load
    except ImportError:
        from nndiag.data import digits as load  # type: ignore[no-redef]
    (x, _), _ = load(flatten=True)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    x = x[order][: SPLIT[0]] * 16
    return x.std(0).clamp_min(1e-6), x.mean(0)


_RAW_STD, _RAW_MEAN = _raw_stats()


def _parts() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    x, y = _digits()
    a, b = SPLIT[0], SPLIT[0] + SPLIT[1]
    return {"train": (x[:a], y[:a]), "val": (x[a:b], y[a:b]), "test": (x[b:], y[b:])}


class Repeating(Dataset):
    """A Dataset whose __getitem__ takes its index modulo a small number (the bug: a cache keyed on i % k)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, modulo: int):
        self.x, self.y, self.modulo = x, y, modulo

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i % self.modulo], self.y[i % self.modulo]


def _inputs(bug: str, x: torch.Tensor) -> torch.Tensor:
    """The bugs of preprocessing, which reach every split (the test split too): unnormalized, constant; and raw (the
    pixels 0..16 as scikit-learn ships them, not standardised: no bug, a scale BatchNorm must track)."""
    if bug == "unnormalized":
        return x * 1000 + 500
    if bug == "raw":
        return x * _RAW_STD + _RAW_MEAN
    if bug == "constant":
        x = x.clone()
        x[:, 1:] = 0.0
    return x


def digits(bug: str = "none", part: str = "fit", train_size: int = SPLIT[0]) -> Any:
    """The 8x8 digits, standardised, 10 classes. Bugs: nan (a few rows NaN), shifted (labels 1..10), shuffled (labels
    permuted apart from the inputs), overlap (validation drawn from the training set), repeated (a Dataset that returns
    20 items over and over), unnormalized (pixels x1000 + 500), constant (all but one feature zeroed)."""
    parts = _parts()
    if part == "test":
        x, y = parts["test"]
        return _inputs(bug, x), y
    (x, y), (xv, yv) = parts["train"], parts["val"]
    x, y = _inputs(bug, x[:train_size].clone()), y[:train_size].clone()
    xv = _inputs(bug, xv)
    if bug == "nan":
        x[torch.arange(0, len(x), 50)] = float("nan")
    elif bug == "shifted":
        y, yv = y + 1, yv + 1
    elif bug == "shuffled":
        y = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(1))]
    elif bug == "overlap":
        xv, yv = x[: len(xv) // 2], y[: len(yv) // 2]
    elif bug == "repeated":
        return Repeating(x, y, modulo=20), (xv, yv)
    elif bug not in ("none", "unnormalized", "constant", "raw"):
        raise ValueError(f"unknown bug {bug!r}")
    return (x, y), (xv, yv)


def regression(bug: str = "none", part: str = "fit") -> Any:
    """A regression task an MLP can learn without memorising it: 64 inputs that mix 4 latent factors (inputs of low
    intrinsic dimension, as images and sensor data have), target sin(h1) + h2 / 2 of two projections of the factors plus
    noise 0.1; (B,) float targets, SPLIT's sizes. (An earlier target, a linear function of the digits' pixels with 1%
    noise, was memorised by this MLP: train MSE under the noise floor and 10x below val, which nndiag rightly called
    overfitting, so it was no healthy control.) Bug: nan_labels (every 40th training target NaN)."""
    mix = torch.Generator().manual_seed(3)
    a, b = torch.randn(4, 64, generator=mix) / 2, torch.randn(4, 2, generator=mix)

    def make(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        gen = torch.Generator().manual_seed(seed)
        z = torch.randn(n, 4, generator=gen)
        x = z @ a + 0.1 * torch.randn(n, 64, generator=gen)
        h = z @ b
        return x / 1.5, torch.sin(h[:, 0]) + 0.5 * h[:, 1] + 0.1 * torch.randn(n, generator=gen)

    if part == "test":
        return make(SPLIT[2], 12)
    (x, y), (xv, yv) = make(SPLIT[0], 10), make(SPLIT[1], 11)
    if bug == "nan_labels":
        y = y.clone()
        y[torch.arange(0, len(y), 40)] = float("nan")
    return (x, y), (xv, yv)


def rare_nines(bug: str = "none", part: str = "fit", noise: float = 2.5) -> Any:
    """Is it a 9? 10% positives, inputs blurred by noise: a model can learn it, or settle for always saying no.
    (No bug in the data: the fixed twin weights the loss by class, see `weighted_ce`.)"""
    parts = _parts()
    gen = torch.Generator().manual_seed(5)

    def make(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        noisy = x + noise * torch.randn(x.shape, generator=gen)
        return noisy, (y == 9).long()

    if part == "test":
        return make(*parts["test"])
    return make(*parts["train"]), make(*parts["val"])


# -- models -------------------------------------------------------------------------------------------


class Detached(nn.Module):
    def __init__(self, detach: bool = True, hidden: int = 64, outputs: int = 10):
        super().__init__()
        self.features, self.head, self.detach = nn.Linear(64, hidden), nn.Linear(hidden, outputs), detach

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.features(x))
        return self.head(h.detach() if self.detach else h)


class FunctionalDropout(nn.Module):
    def __init__(self, bug: bool = True, hidden: int = 128):
        super().__init__()
        self.a, self.b, self.bug, self.dropout = nn.Linear(64, hidden), nn.Linear(hidden, 10), bug, nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.a(x))
        return self.b(F.dropout(h, 0.5, training=True) if self.bug else self.dropout(h))


class BatchMixing(nn.Module):
    """Subtracts the batch mean in forward (a "normalisation" over dim 0, also at evaluation)."""

    def __init__(self, bug: bool = True):
        super().__init__()
        self.a, self.b, self.bug = nn.Linear(64, 64), nn.Linear(64, 10), bug

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.a(x))
        return self.b(h - h.mean(dim=0, keepdim=True) if self.bug else h)


def mlp(bug: str = "none", outputs: int = 10, hidden: int = 64) -> nn.Module:
    """A ReLU MLP 64 -> hidden -> hidden -> outputs. Bugs: frozen (the hidden layers' requires_grad switched off),
    relu_last (a ReLU after the last layer), softmax_last, zero_hidden (hidden weights initialised to zeros),
    bn_momentum0 (BatchNorm with momentum=0: its running statistics never move), dead (every ReLU dead: biases -10),
    tiny_init (6 layers at std 0.01), huge_tanh (tanh at std 1), head_x100 (the last layer's weights x100)."""
    layers: list[nn.Module] = [nn.Linear(64, hidden)]
    if bug in ("bn_momentum0", "bn"):
        layers.append(nn.BatchNorm1d(hidden, momentum=0.0 if bug == "bn_momentum0" else 0.1))
    layers += [nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, outputs)]
    if bug == "tiny_init":
        layers = (
            [nn.Linear(64, hidden), nn.ReLU()]
            + [m for _ in range(5) for m in (nn.Linear(hidden, hidden), nn.ReLU())]
            + [nn.Linear(hidden, outputs)]
        )
    if bug == "huge_tanh":
        layers = [nn.Linear(64, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, outputs)]
    model = nn.Sequential(*layers)
    linears = [m for m in model if isinstance(m, nn.Linear)]
    if bug == "frozen":
        for m in linears[:-1]:
            m.requires_grad_(False)
    elif bug == "relu_last":
        model.append(nn.ReLU())
    elif bug == "softmax_last":
        model.append(nn.Softmax(dim=1))
    elif bug == "zero_hidden":
        nn.init.zeros_(linears[0].weight)
        nn.init.zeros_(linears[1].weight)
    elif bug == "dead":
        for m in linears[:-1]:
            nn.init.constant_(m.bias, -10.0)
    elif bug == "tiny_init":
        for m in linears:
            nn.init.normal_(m.weight, std=0.01)
            nn.init.zeros_(m.bias)
    elif bug == "huge_tanh":
        for m in linears:
            nn.init.normal_(m.weight, std=1.0)
    elif bug == "head_x100":
        with torch.no_grad():
            linears[-1].weight.mul_(100.0)
    elif bug not in ("none", "bn", "bn_momentum0"):
        raise ValueError(f"unknown bug {bug!r}")
    return model


def detached(bug: str = "none") -> nn.Module:
    return Detached(detach=bug == "detach")


def functional_dropout(bug: str = "none") -> nn.Module:
    return FunctionalDropout(bug=bug == "dropout_eval")


def batch_mixing(bug: str = "none") -> nn.Module:
    return BatchMixing(bug=bug == "batch_mix")


def cnn(bug: str = "none") -> nn.Module:
    """A small CNN with BatchNorm and dropout on the 8x8 digits (a healthy control)."""
    return nn.Sequential(
        nn.Unflatten(1, (1, 8, 8)),
        nn.Conv2d(1, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.Flatten(),
        nn.Dropout(0.2),
        nn.Linear(512, 10),
    )


def pretrained_mlp(bug: str = "none") -> nn.Module:
    """An MLP already trained on the digits for 200 steps (fine-tuning from it is a healthy control)."""
    torch.manual_seed(0)
    model = mlp()
    (x, y) = _parts()["train"]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for i in range(200):
        rows = torch.randint(0, len(x), (64,), generator=torch.Generator().manual_seed(i))
        optimizer.zero_grad()
        F.cross_entropy(model(x[rows]), y[rows]).backward()
        optimizer.step()
    return model


# -- losses -------------------------------------------------------------------------------------------


def mse_broadcast(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The bug: (B, 1) outputs against (B,) targets broadcast to (B, B)."""
    return ((outputs - targets) ** 2).mean()


def mse_aligned(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return ((outputs.squeeze(-1) - targets) ** 2).mean()


def ce_sum(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(outputs, targets, reduction="sum")


def ce_mean(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(outputs, targets)


def weighted_ce(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy weighted by inverse class frequency (10% positives: weight 9 on class 1)."""
    return F.cross_entropy(outputs, targets, weight=torch.tensor([1.0, 9.0], device=outputs.device))
