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


# --------------------------------------------------------------------------------------------
# search: validation metric against each hyperparameter
# --------------------------------------------------------------------------------------------


@drawer("search")
def _search_axes(result: Result, folder: Path) -> list[Path]:
    """One panel per searched parameter: validation metric vs value (log x for log parameters), coarse and fine marked."""
    frame = result.tables.get("search")
    if frame is None or frame.empty:
        return []
    params = [c for c in frame.columns if "." in c]
    metric = "val_acc" if frame["val_acc"].notna().any() else "val_loss"
    log_params = set(result.metrics.get("log_params", []))
    plt = pyplot()
    fig, axes = plt.subplots(1, len(params), figsize=(4.2 * len(params), 3.6), squeeze=False)
    markers = {"coarse": ("o", "tab:blue"), "fine": ("^", "tab:orange")}
    for ax, param in zip(axes[0], params):
        for stage, (marker, color) in markers.items():
            part = frame[frame["stage"] == stage]
            ok = part[part["status"] == "complete"]
            bad = part[part["status"] != "complete"]
            x = ok[param] if ok[param].dtype != object else ok[param].astype(str)
            ax.plot(x, ok[metric], marker, color=color, alpha=0.75, label=f"{stage}")
            if len(bad):
                low = frame[metric].min() if frame[metric].notna().any() else 0
                xb = bad[param] if bad[param].dtype != object else bad[param].astype(str)
                ax.plot(xb, [low] * len(bad), "x", color="tab:red", label=f"{stage} diverged/failed")
        best = result.metrics.get("best_params", {}).get(param)
        if isinstance(best, (int, float)):
            ax.axvline(best, color="k", ls=":", lw=1)
        space = result.metrics.get("space", {}).get(param)
        if isinstance(space, list) and len(space) == 2 and all(isinstance(v, (int, float)) for v in space):
            ax.set_xlim(space[0] / 1.5 if param in log_params else space[0], space[1] * 1.5 if param in log_params else space[1])
        if param in log_params:
            ax.set_xscale("log")
        ax.set_xlabel(param)
        ax.set_ylabel(metric)
    handles, labels = axes[0][0].get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    axes[0][0].legend(unique.values(), unique.keys(), fontsize=8)
    fig.suptitle(f"search: {metric} per trial ({result.status})")
    return [save(fig, folder / "search.png")]
