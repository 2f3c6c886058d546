"""PNG figures, one drawer per command, where a picture says more than a table.

matplotlib is imported lazily with the non-interactive Agg backend, so plotting works on machines
without a display and costs nothing when a command draws nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from nndiag.result import Result

# command -> drawer(result, folder) returning the paths it wrote
DRAWERS: dict[str, Callable[[Result, Path], list[Path]]] = {}


def drawer(command: str) -> Callable[[Callable[[Result, Path], list[Path]]], Callable[[Result, Path], list[Path]]]:
    def register(fn: Callable[[Result, Path], list[Path]]) -> Callable[[Result, Path], list[Path]]:
        DRAWERS[command] = fn
        return fn

    return register


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def draw(result: Result, folder: Path) -> list[Path]:
    fn = DRAWERS.get(result.command)
    return fn(result, folder) if fn else []


def save(fig: Any, path: Path) -> Path:
    """Save atomically (temporary file, then rename) and close the figure."""
    import os

    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    pyplot().close(fig)
    os.replace(tmp, path)
    return path


@drawer("overfit-small")
def _overfit_small(result: Result, folder: Path) -> list[Path]:
    frame = result.tables.get("overfit_small")
    if frame is None or frame.empty:
        return []
    plt = pyplot()
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax_loss.plot(frame["step"], frame["loss"], ".", ms=3, alpha=0.5, label="batch loss")
    evaluated = frame.dropna(subset=["subset_loss"])
    ax_loss.plot(evaluated["step"], evaluated["subset_loss"], "-", label="loss on the whole subset")
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("loss")
    ax_loss.legend()
    ax_acc.plot(evaluated["step"], evaluated["subset_acc"], "-")
    ax_acc.set_ylim(-0.02, 1.02)
    ax_acc.set_xlabel("step")
    ax_acc.set_ylabel("training accuracy on the subset")
    fig.suptitle(f"overfit-small: {result.status}")
    return [save(fig, folder / "overfit_small.png")]


# -- lr-find (issue 3) ------------------------------------------------------------------------


@drawer("lr-find")
def _lr_find(result: Result, folder: Path) -> list[Path]:
    """Loss vs LR (log x) with the suggestion and the range marked; or the candidates' curves."""
    plt = pyplot()
    m = result.metrics
    frame = result.tables.get("lr_find")
    if frame is not None and not frame.empty:
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.plot(frame["lr"], frame["loss"], ".", ms=3, alpha=0.4, label="loss")
        ax.plot(frame["lr"], frame["smoothed_loss"], "-", label="smoothed loss (EMA)")
        if m.get("lr_min") and m.get("lr_max"):
            ax.axvspan(m["lr_min"], m["lr_max"], color="tab:green", alpha=0.12, label=f"range {m['lr_min']:.2g} - {m['lr_max']:.2g}")
        if m.get("suggested_lr"):
            ax.axvline(m["suggested_lr"], color="tab:green", ls="--", label=f"suggested {m['suggested_lr']:.3g}")
        if m.get("lr_diverged"):
            ax.axvline(m["lr_diverged"], color="tab:red", ls=":", label=f"diverged {m['lr_diverged']:.2g}")
        finite = frame["smoothed_loss"].dropna()
        if len(finite):
            lo, first = float(finite.min()), float(finite.iloc[0])
            top = max(first, lo) + 0.5 * abs(first - lo) + 1e-12
            ax.set_ylim(lo - 0.1 * (top - lo) - 1e-12, top)
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("training loss")
        ax.legend(fontsize=8)
        ax.set_title(f"lr-find: {result.status}")
        return [save(fig, folder / "lr_find.png")]
    curves = result.tables.get("lr_candidate_curves")
    if curves is None or curves.empty:
        return []
    fig, ax = plt.subplots(figsize=(7, 4))
    for lr, part in curves.groupby("lr"):
        ax.plot(part["step"], part["loss"], "-", lw=1, label=f"lr {lr:g}")
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("batch loss")
    ax.legend(fontsize=8)
    ax.set_title(f"lr-find candidates: {result.status}")
    return [save(fig, folder / "lr_candidates.png")]
