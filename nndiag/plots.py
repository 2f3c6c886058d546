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
