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
# probe (issue 4): per-layer activation histograms, like the weight-init lecture's figures
# --------------------------------------------------------------------------------------------

PROBE_MAX_PANELS = 12  # histograms per row of the figure; deeper models show an even sample of layers


@drawer("probe")
def _probe(result: Result, folder: Path) -> list[Path]:
    hist = result.tables.get("probe_hist")
    layers = result.tables.get("probe")
    if hist is None or hist.empty or layers is None:
        return []
    if "case" in hist.columns:  # the init experiment: one row of panels per case
        groups = [(case, hist[hist["case"] == case], layers[layers["case"] == case]) for case in dict.fromkeys(hist["case"])]
    else:
        step = hist["step"].max()
        groups = [(f"step {step}" if step else "at the probed weights", hist[hist["step"] == step], layers[layers["step"] == step])]
    groups = [(label, h, _probe_panels(lay)) for label, h, lay in groups]
    cols = max(len(panels) for _, _, panels in groups)
    plt = pyplot()
    fig, axes = plt.subplots(len(groups), cols, figsize=(1.9 * cols + 0.6, 1.8 * len(groups) + 0.6), squeeze=False)
    shared = "case" in hist.columns  # the lecture's figures share the x-axis along a row, so a collapse shows
    for r, (label, h, panels) in enumerate(groups):
        span = h[h["layer"].isin(panels["layer"])]
        for c in range(cols):
            ax = axes[r][c]
            if c >= len(panels):
                ax.axis("off")
                continue
            row = panels.iloc[c]
            bins = h[h["layer"] == row["layer"]]
            ax.bar(bins["bin_left"], bins["count"], width=bins["bin_right"] - bins["bin_left"], align="edge", color="tab:blue")
            ax.set_title(f"{row['layer']} {row['module']}\nmean {row['mean']:.2g} std {row['std']:.2g}", fontsize=7)
            if shared and len(span):
                ax.set_xlim(float(span["bin_left"].min()), float(span["bin_right"].max()))
            ax.tick_params(labelsize=6)
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label, fontsize=8)
    fig.suptitle(f"probe: activation histograms per layer ({result.status})", fontsize=10)
    fig.tight_layout()
    return [save(fig, folder / "probe.png")]


def _probe_panels(layers: Any) -> Any:
    """The activation layers to draw (nonlinearities, else Linear/Conv outputs), at most PROBE_MAX_PANELS."""
    acts = layers[layers["kind"].isin(["relu", "bounded", "activation"])]
    acts = acts if len(acts) else layers[layers["kind"] == "linear"]
    acts = acts if len(acts) else layers
    if len(acts) > PROBE_MAX_PANELS:
        step = (len(acts) - 1) / (PROBE_MAX_PANELS - 1)
        acts = acts.iloc[sorted({round(i * step) for i in range(PROBE_MAX_PANELS)})]
    return acts
