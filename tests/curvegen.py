"""Synthetic loss curves of every kind the `curves` rules know, with realistic noise (for tests)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from nndiag.diagnostics.curves import Curves

KINDS = (
    "healthy",
    "overfitting",
    "overfitting-gap",
    "underfitting",
    "still-improving",
    "diverged-nan",
    "diverged-blowup",
    "plateau",
    "flat",
    "noisy",
    "lr-too-low",
    "lr-too-high",
    "bad-init",
)


def _decay(u: np.ndarray, start: float, floor: float, tau: float) -> np.ndarray:
    return floor + (start - floor) * np.exp(-u / tau)


def train_curve(kind: str, n: int, rng: np.random.Generator, start: float = 2.3, noise: float = 1.0) -> np.ndarray:
    """A training-loss curve of `n` points; `noise` scales the minibatch noise (epoch averages: ~0.25)."""
    u = np.linspace(0, 1, n)
    eps = noise * rng.standard_normal(n)
    mild = np.exp(0.12 * eps)  # mild multiplicative minibatch noise
    if kind in ("healthy", "overfitting", "overfitting-gap", "diverged-nan"):
        y = _decay(u, start, 0.05 * start, 0.12) * mild
        if kind == "diverged-nan":
            y[int(0.7 * n) :] = np.nan
        return y
    if kind == "underfitting" or kind == "plateau":
        return _decay(u, start, 0.7 * start, 0.05) * np.exp(0.03 * eps)
    if kind == "flat":
        return start * np.exp(0.03 * eps)
    if kind == "still-improving":  # a fast phase, then a steady decline that has not levelled off
        return start * (0.6 * np.exp(-u / 0.05) + 0.4 * (1 - 0.9 * u)) * mild
    if kind == "diverged-blowup":
        y = _decay(u, start, 0.1 * start, 0.1)
        grow = u > 0.6
        y[grow] = y[grow] * np.exp(6 * (u[grow] - 0.6))
        return y * mild
    if kind == "noisy":
        return np.abs(_decay(u, start, 0.3 * start, 0.15) + 0.3 * start * eps)
    if kind == "lr-too-low":
        return start * (1 - 0.3 * u) * np.exp(0.02 * eps)
    if kind == "lr-too-high":
        return _decay(u, start, 0.45 * start, 0.02) * np.exp(0.25 * eps)
    if kind == "bad-init":
        y = np.where(u < 0.3, start, _decay(np.clip(u - 0.3, 0, None), start, 0.05 * start, 0.05))
        return y * np.exp(0.03 * eps)
    raise ValueError(kind)


def make(kind: str, n: int, seed: int = 0, epochs: int | None = None) -> Curves:
    """Step-level training loss of n points; with `epochs`, also epoch-level train/val loss and accuracy."""
    rng = np.random.default_rng(seed)
    dense = pd.Series(train_curve(kind, n, rng), index=np.arange(1, n + 1, dtype=float), name="train_loss")
    if not epochs:
        return Curves(x="step", dense=dense)
    e = np.arange(1, epochs + 1, dtype=float)
    u = (e - 1) / (epochs - 1)
    train = pd.Series(train_curve(kind, epochs, np.random.default_rng(seed + 1000), noise=0.25), index=e)
    if kind in (
        "healthy",
        "still-improving",
        "diverged-nan",
        "diverged-blowup",
        "lr-too-low",
        "lr-too-high",
        "noisy",
        "bad-init",
        "plateau",
        "flat",
    ):
        clean = train_curve(kind, epochs, np.random.default_rng(seed + 2000), noise=0.0)
        val = clean * 1.08 * np.exp(0.03 * rng.standard_normal(epochs))
    elif kind == "overfitting":
        val = _decay(u, 2.3, 0.3, 0.12) + 1.2 * np.clip(u - 0.45, 0, None) ** 2 * 2.3
        val = val * np.exp(0.03 * rng.standard_normal(epochs))
    elif kind == "overfitting-gap":
        val = _decay(u, 2.3, 0.6, 0.12) * np.exp(0.03 * rng.standard_normal(epochs))
    elif kind == "underfitting":
        val = train.to_numpy() * 1.03 * np.exp(0.02 * rng.standard_normal(epochs))
    else:
        raise ValueError(kind)
    val_s = pd.Series(val, index=e)
    train_acc = np.clip(1 - 0.9 * np.exp(-u / 0.15), 0, 1) if kind != "underfitting" else 0.4 + 0.05 * u
    if kind == "overfitting-gap":
        val_acc = 0.8 - 0.7 * np.exp(-u / 0.15)
    elif kind == "underfitting":
        val_acc = train_acc - 0.01
    else:
        val_acc = train_acc - 0.02
    fit = {"train_loss": train, "val_loss": val_s, "train_acc": pd.Series(train_acc, index=e), "val_acc": pd.Series(val_acc, index=e)}
    return Curves(x="step", dense=dense, fit=fit, fit_x="epoch")
