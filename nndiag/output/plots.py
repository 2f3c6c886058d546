"""PNG figures, one drawer per command, where a picture says more than a table.

matplotlib is imported lazily with the non-interactive Agg backend, so plotting works on machines
without a display and costs nothing when a command draws nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from nndiag.formatting import sci, words

Result = Any  # a nndiag.result.Result (duck-typed; this module sits below nndiag.result)

Figures = list[tuple[str, Any]]  # (file name, matplotlib Figure)

# command -> drawer(result) returning its figures, each with the file name it is saved under
DRAWERS: dict[str, Callable[[Result], Figures]] = {}


def drawer(command: str) -> Callable[[Callable[[Result], Figures]], Callable[[Result], Figures]]:
    def register(fn: Callable[[Result], Figures]) -> Callable[[Result], Figures]:
        DRAWERS[command] = fn
        return fn

    return register


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figures(result: Result) -> Figures:
    """The command's figures (none for commands that draw nothing)."""
    fn = DRAWERS.get(result.command)
    return fn(result) if fn else []


def draw(result: Result, folder: Path) -> list[Path]:
    """Save every figure of `result` into `folder` as PNG; return the paths."""
    return [save(fig, folder / name) for name, fig in figures(result)]


def percent(ax: Any) -> None:
    """Accuracies read as percentages on this axis (values in [0, 1])."""
    from matplotlib.ticker import PercentFormatter

    ax.yaxis.set_major_formatter(PercentFormatter(1.0))


def save(fig: Any, path: Path) -> Path:
    """Save atomically (temporary file, then rename) and close the figure."""
    import os

    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    pyplot().close(fig)
    os.replace(tmp, path)
    return path


@drawer("overfit-small")
def _overfit_small(result: Result) -> Figures:
    frame = result.tables.get("overfit_small")
    if frame is None or frame.empty:
        return []
    plt = pyplot()
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax_loss.plot(frame["step"], frame["loss"], ".", ms=3, alpha=0.5, label="batch loss")
    evaluated = frame[frame["evaluated"].astype(bool)]
    ax_loss.plot(evaluated["step"], evaluated["subset_loss"], "-", label="loss on the whole subset")
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("loss")
    ax_loss.legend()
    ax_acc.plot(evaluated["step"], evaluated["subset_acc"], "-")
    ax_acc.set_ylim(-0.02, 1.02)
    ax_acc.set_xlabel("step")
    ax_acc.set_ylabel("training accuracy on the subset")
    percent(ax_acc)
    fig.suptitle(f"overfit-small: {result.status}")
    return [("overfit_small.png", fig)]


# --------------------------------------------------------------------------------------------
# curves / train: the notes' picture -- raw points as a scatter, a moving median on top, train vs
# validation, accuracy beside the loss, findings annotated
# --------------------------------------------------------------------------------------------


def _curves_frame(result: Result) -> Any:
    """The long curves table (run, series, x_name, x, value, smooth) that curves and train measured, or None."""
    return result.tables.get("curves")


def _draw_run(result: Result, part: Any, run: str) -> Any:
    import math

    plt = pyplot()
    series = {name: g for name, g in part.groupby("series", sort=False)}
    has_acc = "train_acc" in series or "val_acc" in series
    dense = series.get("train_loss_dense")
    fit_loss = [n for n in ("train_loss", "val_loss") if n in series]
    same_axis = dense is None or not fit_loss or dense["x_name"].iloc[0] == series[fit_loss[0]]["x_name"].iloc[0]
    panels = ["dense"] if dense is not None else []
    if fit_loss and not (same_axis and dense is not None):
        panels.append("fit")
    elif fit_loss and dense is not None:
        panels = ["dense"]
    if has_acc:
        panels.append("acc")
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.8), squeeze=False)
    colors = {"train": "tab:blue", "val": "tab:orange"}
    axis_of: dict[str, Any] = {}
    for ax, panel in zip(axes[0], panels):
        if panel == "dense":
            g = dense
            ax.scatter(g["x"], g["value"], s=4, alpha=0.3, color=colors["train"], label="train loss (raw)")
            ax.plot(g["x"], g["smooth"], color=colors["train"], lw=1.8, label="train loss (moving median)")
            if same_axis and "val_loss" in series:
                v = series["val_loss"]
                ax.plot(v["x"], v["value"], "o-", ms=3, color=colors["val"], label="val loss")
            ax.set_xlabel(g["x_name"].iloc[0])
            axis_of[g["x_name"].iloc[0]] = ax
        elif panel == "fit":
            for name in fit_loss:
                g = series[name]
                who = "train" if name.startswith("train") else "val"
                if len(g) < 30:  # epoch-level: few points, draw them as they are
                    ax.plot(g["x"], g["value"], "o-", ms=3, color=colors[who], label=f"{who} loss")
                else:
                    ax.scatter(g["x"], g["value"], s=6, alpha=0.3, color=colors[who])
                    ax.plot(g["x"], g["smooth"], color=colors[who], lw=1.8, label=f"{who} loss (moving median)")
            ax.set_xlabel(series[fit_loss[0]]["x_name"].iloc[0])
            axis_of[series[fit_loss[0]]["x_name"].iloc[0]] = axis_of.get(series[fit_loss[0]]["x_name"].iloc[0], ax)
        else:
            for name in ("train_acc", "val_acc"):
                if name in series:
                    g = series[name]
                    who = name.split("_")[0]
                    ax.plot(g["x"], g["value"], "o-", ms=3, color=colors[who], label=f"{who} accuracy")
                    ax.set_xlabel(g["x_name"].iloc[0])
            ax.set_ylabel("accuracy")
            percent(ax)
        if panel != "acc":
            values = part[part["series"].isin(["train_loss_dense", "train_loss", "val_loss"])]["value"]
            finite = values[values.apply(lambda v: math.isfinite(v))]
            if len(finite) and finite.min() > 0 and finite.max() / finite.min() > 30:
                ax.set_yscale("log")
            ax.set_ylabel("loss")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    findings = [f for f in result.verdict.findings if f.evidence.get("run", run) == run]
    for f in findings:
        at, xname = f.evidence.get("at"), f.evidence.get("x")
        ax = axis_of.get(xname)
        if ax is not None and at is not None:
            ax.axvline(float(at), color="red" if f.severity == "fail" else "darkorange", ls="--", lw=1)
            ax.annotate(
                f.code, (float(at), 0.95), xycoords=("data", "axes fraction"), fontsize=8, color="red", rotation=90, va="top", ha="right"
            )
    fig.suptitle(f"{result.command}: {result.status}" + (f" ({run})" if run else ""))
    fig.tight_layout()  # no panel's labels over its neighbour's
    fig.text(0.01, -0.02, caption(findings, width=int(CAPTION_CHARS_PER_INCH * fig.get_figwidth())), fontsize=8, va="top")
    return fig


CAPTION_CHARS_PER_INCH = 15  # characters of an 8-point caption per inch of figure width (a little under what fits)


def caption(findings: list[Any], width: int) -> str:
    """The findings under a figure, every one whole: wrapped to `width` characters, each after the first line indented."""
    import textwrap

    if not findings:
        return "no problems found"
    lines = []
    for f in findings:
        lines += textwrap.wrap(f"{f.severity}: {f.code} -- {f.message}", width=width, subsequent_indent="    ")
    return "\n".join(lines)


@drawer("curves")
@drawer("train")
def _curves(result: Result) -> Figures:
    frame = _curves_frame(result)
    if frame is None or frame.empty:
        return []
    runs = list(dict.fromkeys(frame["run"]))
    drawn = []
    for i, run in enumerate(runs):
        name = "curves.png" if len(runs) == 1 else f"curves-{i + 1}-{''.join(c if c.isalnum() else '-' for c in run)}.png"
        drawn.append((name, _draw_run(result, frame[frame["run"] == run], run if len(runs) > 1 else "")))
    return drawn


# -- lr-find (issue 3) ------------------------------------------------------------------------


@drawer("lr-find")
def _lr_find(result: Result) -> Figures:
    """Loss vs LR (log x) with the suggestion and the range marked; or the candidates' curves."""
    plt = pyplot()
    m = result.metrics
    frame = result.tables.get("lr_find")
    if frame is not None and not frame.empty:
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.plot(frame["lr"], frame["loss"], ".", ms=3, alpha=0.4, label="loss")
        ax.plot(frame["lr"], frame["smoothed_loss"], "-", label="smoothed loss (EMA)")
        if m.get("lr_min") and m.get("lr_max"):
            ax.axvspan(m["lr_min"], m["lr_max"], color="tab:green", alpha=0.12, label=f"range {sci(m['lr_min'])} to {sci(m['lr_max'])}")
        if m.get("suggested_lr"):
            ax.axvline(m["suggested_lr"], color="tab:green", ls="--", label=f"suggested {sci(m['suggested_lr'])}")
        if m.get("range_test_lr") and m.get("range_test_lr") != m.get("suggested_lr"):
            ax.axvline(
                m["range_test_lr"],
                color="tab:gray",
                ls="--",
                lw=1,
                label=f"range test's pick {sci(m['range_test_lr'])} (refined by trial runs)",
            )
        if m.get("lr_diverged"):
            ax.axvline(m["lr_diverged"], color="tab:red", ls=":", label=f"diverged {sci(m['lr_diverged'])}")
        finite = frame["smoothed_loss"].dropna()
        if len(finite):
            lo, first = float(finite.min()), float(finite.iloc[0])
            top = max(first, lo) + 0.5 * abs(first - lo) + 1e-12
            ax.set_ylim(lo - 0.1 * (top - lo) - 1e-12, top)
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("training loss")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)  # beside the curve: it hides no point
        ax.set_title(f"lr-find: {result.status}")
        return [("lr_find.png", fig)]
    curves = result.tables.get("lr_candidate_curves")
    if curves is None or curves.empty:
        return []
    fig, ax = plt.subplots(figsize=(7, 4))
    for lr, part in curves.groupby("lr"):
        ax.plot(part["step"], part["loss"], "-", lw=1, label=f"LR {sci(lr)}")
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("batch loss")
    ax.legend(fontsize=8)
    ax.set_title(f"lr-find candidates: {result.status}")
    return [("lr_candidates.png", fig)]


# probe (issue 4): per-layer activation histograms, like the weight-init lecture's figures
# --------------------------------------------------------------------------------------------

PROBE_MAX_PANELS = 12  # histograms per row of the figure; deeper models show an even sample of layers


@drawer("probe")
def _probe(result: Result) -> Figures:
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
            ax.set_title(panel_title(str(row["layer"]), str(row["module"])) + f"\nmean {row['mean']:.2g} std {row['std']:.2g}", fontsize=7)
            if shared and len(span):
                ax.set_xlim(float(span["bin_left"].min()), float(span["bin_right"].max()))
            ax.tick_params(labelsize=6)
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label, fontsize=8)
    fig.suptitle(f"probe: activation histograms per layer ({result.status})", fontsize=10)
    fig.tight_layout()
    return [("probe.png", fig)]


PANEL_TITLE_CHARS = 24  # a 7-point title line that fits the width of one histogram panel (1.9 inches)


def panel_title(layer: str, module: str, width: int = PANEL_TITLE_CHARS) -> str:
    """A histogram panel's title that stays within its panel: the layer (and its class, unless the name has it), on at
    most two lines broken after a '.' or a space; a longer name loses its first parts ('…' + the rest)."""
    import re

    name = layer if f"({module})" in layer or layer == module else f"{layer} ({module})"
    pieces = re.findall(r"[^. ]+[. ]?", name)
    for start in range(max(1, len(pieces) - 1)):  # keep at least the last part of the layer's own name
        lines = _lines(["…"] * bool(start) + pieces[start:], width)
        if len(lines) <= 2 and all(len(line) <= width for line in lines):
            return "\n".join(lines)
    tail = "…" + name[-(2 * width - 1) :]  # one part longer than a line: cut it, on two lines
    return tail[:width] + "\n" + tail[width:]


def _lines(pieces: list[str], width: int) -> list[str]:
    lines = [""]
    for piece in pieces:
        if lines[-1] and len(lines[-1]) + len(piece.rstrip()) > width:
            lines.append("")
        lines[-1] += piece
    return [line.rstrip() for line in lines]


def _probe_panels(layers: Any) -> Any:
    """The activation layers to draw (nonlinearities, else Linear/Conv outputs), at most PROBE_MAX_PANELS."""
    acts = layers[layers["kind"].isin(["relu", "bounded", "activation"])]
    acts = acts if len(acts) else layers[layers["kind"] == "linear"]
    acts = acts if len(acts) else layers
    if len(acts) > PROBE_MAX_PANELS:
        step = (len(acts) - 1) / (PROBE_MAX_PANELS - 1)
        acts = acts.iloc[sorted({round(i * step) for i in range(PROBE_MAX_PANELS)})]
    return acts


# --------------------------------------------------------------------------------------------
# search: validation metric against each hyperparameter
# --------------------------------------------------------------------------------------------


@drawer("search")
def _search_axes(result: Result) -> Figures:
    """One panel per searched parameter: validation metric vs value (log x for log parameters), coarse and fine marked."""
    frame = result.tables.get("search")
    if frame is None or frame.empty:
        return []
    params = [c for c in frame.columns if "." in c]
    metric = result.metrics.get("metric", "val_acc")  # what the search ranked by (search.metric, resolved)
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
        ax.set_ylabel(words(metric))
        if metric == "val_acc":
            percent(ax)
    handles, labels = axes[0][0].get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    axes[0][0].legend(unique.values(), unique.keys(), fontsize=8)
    fig.suptitle(f"search: {metric} per trial ({result.status})")
    return [("search.png", fig)]
