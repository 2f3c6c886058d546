"""What people read in the terminal: a Result's key numbers, its command's own view (a curve, a table),
its findings and the verdict, drawn with Rich on the console given. Results are read by duck typing
(this module sits below nndiag.result).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from nndiag.formatting import number, words

Result = Any  # a nndiag.result.Result (duck-typed: tables, metrics, verdict, command, context)

STATUS_STYLE = {"pass": "bold green", "warn": "bold yellow", "fail": "bold red"}
SEVERITY_STYLE = {"info": "cyan", "warn": "yellow", "fail": "red"}

# command -> extra terminal view (a table, a compact curve) drawn after the summary.
VIEWS: dict[str, Callable[[Result, Console], None]] = {}


def view(command: str) -> Callable[[Callable[[Result, Console], None]], Callable[[Result, Console], None]]:
    """Register the extra terminal view of a command."""

    def register(fn: Callable[[Result, Console], None]) -> Callable[[Result, Console], None]:
        VIEWS[command] = fn
        return fn

    return register


# --------------------------------------------------------------------------------------------
# Terminal
# --------------------------------------------------------------------------------------------


def fmt(value: Any, key: str = "") -> str:
    """A number as a person wants to read it (see nndiag.formatting: % for accuracies, 3.16e-3 for LRs)."""
    return number(value, key)


def render(result: Result, console: Console, folder: Path | None = None) -> None:
    """The human view: what ran, key numbers, the command's own view, findings, and the verdict."""
    if result.context:
        console.print("  ".join(f"[dim]{k}:[/] {v}" for k, v in result.context.items()))
    if result.metrics:
        table = Table(title=f"{result.command}: key numbers", show_header=False, title_justify="left")
        table.add_column("metric", style="bold", no_wrap=True)
        table.add_column("value", justify="right", overflow="fold")
        for key, value in result.metrics.items():
            if not isinstance(value, (dict, list)):
                table.add_row(words(key), fmt(value, key))
        console.print(table)
    if result.command in VIEWS:
        VIEWS[result.command](result, console)
    render_findings(result, console)
    style = STATUS_STYLE[result.status]
    where = f"\nresults in {folder}" if folder else ""
    console.print(Panel(f"[{style}]{result.status.upper()}[/]  {result.command}{where}", expand=False))


def render_findings(result: Result, console: Console) -> None:
    findings = result.verdict.findings
    if not findings:
        console.print("[green]No problems found.[/]")
        return
    table = Table(title="findings", title_justify="left", show_lines=True)
    table.add_column("severity", no_wrap=True)  # a code is never cut, even at 80 columns (it is what scripts match on)
    table.add_column("code", style="bold", no_wrap=True, min_width=max(len(f.code) for f in findings))
    table.add_column("what we saw", overflow="fold")
    table.add_column("what to do", overflow="fold")
    for f in findings:
        table.add_row(
            f"[{SEVERITY_STYLE[f.severity]}]{f.severity}[/]", escape(f.code), escape(f.message), escape(f.advice)
        )  # "[run] ..." is text, not markup
    console.print(table)


def sparkline(values: list[float], width: int = 60) -> str:
    """A one-line curve of `values` (non-finite shown as '!'), resampled to `width` characters."""
    if not values:
        return ""
    blocks = "▁▂▃▄▅▆▇█"
    if len(values) > width:
        step = len(values) / width
        values = [values[int(i * step)] for i in range(width)]
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return "!" * len(values)
    lo, hi = min(finite), max(finite)
    span = hi - lo or 1.0
    return "".join(blocks[int((v - lo) / span * (len(blocks) - 1))] if math.isfinite(v) else "!" for v in values)


# --------------------------------------------------------------------------------------------
# curves / train: a compact terminal rendering of the curves
# --------------------------------------------------------------------------------------------


def _curve_rows(result: Result) -> Any:
    """The long curves table (run, series, x_name, x, value, smooth) that curves and train measured, or None."""
    return result.tables.get("curves")


@view("curves")
@view("train")
def _curves_view(result: Result, console: Console) -> None:
    frame = _curve_rows(result)
    if frame is None or frame.empty:
        return
    labels = {
        "train_loss_dense": "train loss",
        "train_loss": "train loss",
        "val_loss": "val loss",
        "train_acc": "train acc",
        "val_acc": "val acc",
    }
    table = Table(title="curves (moving median; '!' = NaN/Inf)", title_justify="left", show_header=True)
    for name in ("run", "series", "x", "first", "curve", "last"):
        table.add_column(name, justify="right" if name in ("first", "last") else "left")
    several = frame["run"].nunique() > 1
    for (run, series), part in frame.groupby(["run", "series"], sort=False):
        if series == "train_loss" and (frame[(frame["run"] == run)]["series"] == "train_loss_dense").any():
            continue
        raw = part["value"].tolist()
        line = [s if math.isfinite(v) else v for s, v in zip(part["smooth"].tolist(), raw)]
        table.add_row(
            str(run) if several else "",
            labels.get(series, series),
            f"{part['x_name'].iloc[0]} {fmt(float(part['x'].iloc[0]))}-{fmt(float(part['x'].iloc[-1]))}",
            fmt(float(raw[0])),
            sparkline(line, width=28),
            fmt(float(raw[-1])),
        )
    console.print(table)


# -- lr-find (issue 3) ------------------------------------------------------------------------


@view("lr-find")
def _lr_find_view(result: Result, console: Console) -> None:
    """The range-test curve as a sparkline with the suggestion marked, or the candidates table."""
    frame = result.tables.get("lr_find")
    m = result.metrics
    if frame is not None and not frame.empty:
        width = min(60, len(frame))
        line = sparkline(frame["smoothed_loss"].tolist(), width=width)
        lrs = frame["lr"].tolist()
        marker = [" "] * len(line)
        if m.get("suggested_lr") and len(lrs) > 1:
            step = len(lrs) / len(line)
            index = min(range(len(line)), key=lambda i: abs(math.log(lrs[min(int(i * step), len(lrs) - 1)]) - math.log(m["suggested_lr"])))
            marker[index] = "^"
        console.print(f"smoothed loss vs LR, {fmt(lrs[0], 'lr')} to {fmt(lrs[-1], 'lr')} (log scale):")
        console.print(f"  [cyan]{line}[/]")
        if m.get("suggested_lr"):
            console.print("  " + "".join(marker).rstrip() + f" suggested {fmt(m['suggested_lr'], 'lr')}")
    table_frame = result.tables.get("lr_candidates")
    if table_frame is not None and not table_frame.empty:
        table = Table(title="lr-find candidates", title_justify="left")
        for column in ("lr", "initial loss", "final loss", "drop", "outcome"):
            table.add_column(column, justify="right" if column != "outcome" else "left")
        style = {"drops": "green", "too-low": "yellow", "diverged": "red"}
        for row in table_frame.itertuples():
            table.add_row(
                fmt(row.lr, "lr"),
                fmt(row.initial_loss),
                fmt(row.final_loss),
                f"{row.relative_drop:.0%}" if math.isfinite(row.relative_drop) else "nan",
                f"[{style.get(row.outcome, 'white')}]{row.outcome}[/]",
            )
        console.print(table)
    trials = result.tables.get("lr_refine")
    if trials is not None and not trials.empty:
        table = Table(title=f"lr-find refine: {m.get('refine_steps')} iterations per trial LR", title_justify="left")
        for column in ("lr", "x range test", "final loss", "drop", "outcome", ""):
            table.add_column(column, justify="right" if column not in ("outcome", "") else "left")
        style = {"drops": "green", "too-low": "yellow", "diverged": "red"}
        for row in trials.itertuples():
            table.add_row(
                fmt(row.lr, "lr"),
                f"{row.factor:.3g}",
                fmt(row.final_loss),
                f"{row.relative_drop:.0%}" if math.isfinite(row.relative_drop) else "nan",
                f"[{style.get(row.outcome, 'white')}]{row.outcome}[/]",
                "[bold green]chosen[/]" if row.chosen else "",
            )
        console.print(table)
        if m.get("refined_lr") is None:
            console.print("no trial lowered the loss: see the unreliable-suggestion finding")
    if m.get("applied_recipe"):
        console.print(f"recipe with optim.lr = {fmt(m.get('applied_lr'), 'lr')} written: {m['applied_recipe']} (in the run folder)")


# probe (issue 4): per-layer table with the worst layers highlighted; the init experiment's cases
# --------------------------------------------------------------------------------------------

PROBE_MAX_ROWS = 30  # longer models show the flagged layers, the extremes and an even sample


@view("probe")
def _probe_view(result: Result, console: Console) -> None:
    cases = result.tables.get("probe_cases")
    if cases is not None and not cases.empty:
        _probe_cases_view(result, cases, console)
        return
    layers = result.tables.get("probe")
    if layers is None or layers.empty:
        return
    if layers["step"].nunique() > 1:
        layers = layers[layers["step"] == layers["step"].max()]
    worst = set(result.metrics.get("worst_layers") or [])
    shown = _probe_rows_to_show(layers, worst)
    table = Table(
        title=f"probe: {len(layers)} layers ({len(shown)} shown; all in probe.csv); [red]red[/] = named by a finding", title_justify="left"
    )
    for column, justify in (
        ("layer", "left"),
        ("module", "left"),
        ("mean", "right"),
        ("std", "right"),
        ("saturated", "right"),
        ("dead", "right"),
        ("grad norm", "right"),
        ("update/weight", "right"),
    ):
        table.add_column(column, justify=justify)
    for row in shown.itertuples():
        style = "red" if row.layer in worst else ("dim" if row.kind in ("other", "norm") else None)
        table.add_row(
            str(row.layer),
            str(row.module),
            fmt(float(row.mean)),
            fmt(float(row.std)),
            _pct(row.frac_saturated),
            _pct(row.frac_dead),
            _num(row.grad_norm),
            _num(row.update_ratio),
            style=style,
        )
    console.print(table)


def _probe_rows_to_show(layers: Any, worst: set[str]) -> Any:
    if len(layers) <= PROBE_MAX_ROWS:
        return layers
    keep = set(layers.index[layers["layer"].isin(worst)]) | {layers.index[0], layers.index[-1]}
    for column, largest in (("std", True), ("std", False), ("frac_saturated", True), ("frac_dead", True), ("update_ratio", True)):
        values = layers[column].dropna()
        if len(values):
            keep |= set((values.nlargest(2) if largest else values.nsmallest(2)).index)
    acts = layers[layers["kind"].isin(["relu", "bounded", "activation", "linear"])]
    step = max(1, len(acts) // max(1, PROBE_MAX_ROWS - len(keep)))
    keep |= set(acts.index[::step][: max(0, PROBE_MAX_ROWS - len(keep))])
    return layers.loc[sorted(keep)]


def _pct(value: Any) -> str:
    return "" if value is None or value != value else f"{float(value):.0%}"


def _num(value: Any) -> str:
    return "" if value is None or value != value else fmt(float(value))


def _probe_cases_view(result: Result, cases: Any, console: Console) -> None:
    layers = result.tables["probe"]
    table = Table(title="weight-init experiment: std of each activation layer, and the verdict", title_justify="left")
    for column in ("case", "init std", "activation std, layer by layer", "saturated", "dead", "verdict", "lecture", ""):
        table.add_column(column)
    for row in cases.itertuples():
        acts = layers[(layers["case"] == row.case) & layers["kind"].isin(["relu", "bounded", "activation"])]
        trail = " ".join(f"{s:.2g}" for s in acts["std"])
        match = (
            ""
            if row.matches_lecture is None or row.matches_lecture != row.matches_lecture
            else ("[green]✓[/]" if row.matches_lecture else "[red]✗[/]")
        )
        style = "green" if row.verdict == "well scaled" else "red"
        table.add_row(
            str(row.case),
            f"{row.init_std:.3g}",
            trail,
            _pct(row.max_frac_saturated),
            _pct(row.max_frac_dead),
            f"[{style}]{row.verdict}[/]",
            str(row.lecture_verdict),
            match,
        )
    console.print(table)


# search: the leaderboard
# --------------------------------------------------------------------------------------------

SEARCH_LEADERBOARD_ROWS = 10  # trials shown, best first


@view("search")
def _search_leaderboard(result: Result, console: Console) -> None:
    frame = result.tables.get("search")
    if frame is None or frame.empty:
        return
    metric = result.metrics.get("metric", "val_acc")  # what the search ranked by (search.metric, resolved)
    ranked = frame.assign(_ok=frame["status"] == "complete").sort_values(
        ["_ok", metric], ascending=[False, metric != "val_acc"], kind="stable"
    )
    params = [c for c in frame.columns if "." in c]
    table = Table(
        title=f"search: leaderboard (best {min(SEARCH_LEADERBOARD_ROWS, len(frame))} of {len(frame)} trials by {metric})",
        title_justify="left",
    )
    for column in ["#", "trial", *[p.split(".")[-1] for p in params], "val acc", "val loss", "train loss", "epochs", "status", "s"]:
        table.add_column(column.replace("_", " "), justify="left" if column in ("trial", "status") else "right", overflow="fold")
    style = {"complete": "green", "diverged": "yellow", "failed": "red"}
    for rank, (_, row) in enumerate(ranked.head(SEARCH_LEADERBOARD_ROWS).iterrows(), start=1):
        status = str(row["status"])
        table.add_row(
            str(rank),
            f"{row['stage']}#{int(row['slot'])}",
            *[fmt(_plain_value(row[p]), p) for p in params],
            fmt(float(row["val_acc"]), "val_acc"),
            fmt(float(row["val_loss"])),
            fmt(float(row["train_loss"])),
            str(int(row["epochs_run"])),
            f"[{style.get(status, 'white')}]{status}[/]",
            f"{float(row['seconds']):.1f}",
        )
    console.print(table)
    if result.metrics.get("best_params"):
        best = ", ".join(f"{k}={fmt(v, k)}" for k, v in result.metrics["best_params"].items())
        console.print(f"best: {best}  ->  best_recipe.yaml (nndiag train best_recipe.yaml)")


def _plain_value(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value
