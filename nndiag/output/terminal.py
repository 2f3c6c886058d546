"""What people read in the terminal: a Result's key numbers, its command's own view (a curve, a table),
its findings and the verdict, drawn with Rich on the console given. Results are read by duck typing
(this module sits below nndiag.result).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
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


@dataclass
class Column:
    """A column of a `fitted` table."""

    header: str
    justify: str = "right"
    drop: int = 0  # 0: always shown; otherwise left out, highest first, when the table is wider than the console
    style: str | None = None
    wrap: bool = False  # words (a list of numbers) may go on several lines, at spaces; never a word cut


def fitted(title: str, columns: list[Column], rows: list[list[str]], console: Console, styles: list[str | None] | None = None) -> Table:
    """A table whose numbers, codes and header words are never cut or split, whatever the console's width (80
    columns included): every column is as wide as its longest cell (a header longer than its cells goes on two
    lines, at a space); when that is wider than the console, `wrap` columns narrow to their longest word first,
    then the columns with a `drop` rank are left out, the highest first, and the title names them. Cells may hold
    Rich markup."""
    widths = [max([_cell_len(row[i]) for row in rows] or [0]) for i in range(len(columns))]
    headers = [_header(c.header, w) for c, w in zip(columns, widths)]
    widths = [max(w, *(len(line) for line in h.split("\n"))) for w, h in zip(widths, headers)]
    least = [max([len(h) for h in headers[i].split()] + [_longest_word(row[i]) for row in rows]) for i in range(len(columns))]
    needed = [least[i] if c.wrap else widths[i] for i, c in enumerate(columns)]  # the narrowest each column can be
    keep = list(range(len(columns)))
    for rank in sorted({c.drop for c in columns if c.drop}, reverse=True):
        if _table_width([needed[i] for i in keep]) <= console.width:
            break
        keep = [i for i in keep if columns[i].drop != rank]
    room = console.width - _table_width([needed[i] for i in keep])
    for i in (i for i in keep if columns[i].wrap):  # what is left goes to the wrapping columns, up to their full width
        grant = max(0, min(room, widths[i] - needed[i]))
        widths[i], room = needed[i] + grant, room - grant
    left_out = [columns[i].header for i in range(len(columns)) if i not in keep]
    table = Table(title=title + (f" (left out at this width: {', '.join(left_out)})" if left_out else ""), title_justify="left")
    for i in keep:
        c = columns[i]
        if c.wrap:
            table.add_column(headers[i], justify=c.justify, width=widths[i], style=c.style)  # type: ignore[arg-type]
        else:
            table.add_column(headers[i], justify=c.justify, no_wrap=True, min_width=widths[i], style=c.style)  # type: ignore[arg-type]
    for n, row in enumerate(rows):
        table.add_row(*[row[i] for i in keep], style=styles[n] if styles else None)
    return table


def _table_width(widths: list[int]) -> int:
    return sum(widths) + 3 * len(widths) + 1  # a border before each column and after the last, one space either side of a cell


def _longest_word(cell: str) -> int:
    from rich.text import Text

    return max((len(w) for w in Text.from_markup(cell).plain.split()), default=0)


def _cell_len(cell: str) -> int:
    from rich.text import Text

    return Text.from_markup(cell).cell_len


def _header(text: str, width: int) -> str:
    """A header wider than its cells, on two lines at the space nearest its middle."""
    if len(text) <= width or " " not in text:
        return text
    spaces = [i for i, c in enumerate(text) if c == " "]
    cut = min(spaces, key=lambda i: abs(i - len(text) / 2))
    return text[:cut] + "\n" + text[cut + 1 :]


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
    several = frame["run"].nunique() > 1
    names = run_names([str(r) for r in frame["run"].unique()], width=max(12, console.width - 60)) if several else {}
    parts = []  # 60: the other columns at their usual widths (series, x, first, a short curve, last) and the borders
    for (run, series), part in frame.groupby(["run", "series"], sort=False):
        if series == "train_loss" and (frame[(frame["run"] == run)]["series"] == "train_loss_dense").any():
            continue
        raw = part["value"].tolist()
        line = [s if math.isfinite(v) else v for s, v in zip(part["smooth"].tolist(), raw)]
        x = f"{part['x_name'].iloc[0]} {fmt(float(part['x'].iloc[0]))}-{fmt(float(part['x'].iloc[-1]))}"
        first, last = fmt(float(raw[0]), str(series)), fmt(float(raw[-1]), str(series))  # accuracies as percentages
        parts.append((names.get(str(run), ""), labels.get(series, series), x, first, line, last))
    columns = [
        Column("run", "left"),
        Column("series", "left"),
        Column("x", "left"),
        Column("first"),
        Column("curve", "left"),
        Column("last"),
    ]
    if not several:
        columns, parts = columns[1:], [p[1:] for p in parts]
    fixed = [max(len(c.header), *(len(p[i]) for p in parts)) for i, c in enumerate(columns) if c.header != "curve"]
    room = console.width - _table_width([*fixed, 0])  # the curve takes what is left, up to 28 characters
    spark = max(8, min(28, room))
    rows = [[*(p[:-2]), sparkline(p[-2], width=spark), p[-1]] for p in parts]
    console.print(fitted("curves (moving median; '!' = NaN/Inf)", columns, rows, console))


def run_names(labels: list[str], width: int = 32) -> dict[str, str]:
    """Several runs' labels as a table shows them, at most `width` characters where that keeps them apart: the
    folders they all start with left out, then the folders they all end with ('sweep-0/…' for
    sweep-0/lightning_logs/version_0), then the start of what is left ('…' + its end). Never two alike."""
    parts = [label.split("/") for label in labels]
    shared = 0
    while all(len(p) > shared + 1 for p in parts) and len({p[shared] for p in parts}) == 1:
        shared += 1
    parts = [p[shared:] for p in parts]
    names = ["/".join(p) for p in parts]
    if max(map(len, names)) > width:
        tail = 0
        while all(len(p) > tail + 1 for p in parts) and len({p[-1 - tail] for p in parts}) == 1:
            tail += 1
        if tail:
            names = ["/".join(p[:-tail]) + "/…" for p in parts]
    cut = [n if len(n) <= width else "…" + n[-(width - 1) :] for n in names]
    names = cut if len(set(cut)) == len(cut) else names
    return dict(zip(labels, names))


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
    columns = [
        Column("layer", "left", wrap=True),
        Column("module", "left", drop=1),
        Column("mean"),
        Column("std"),
        Column("saturated"),
        Column("dead"),
        Column("grad norm"),
        Column("update / weight"),
    ]
    rows, styles = [], []
    for row in shown.itertuples():
        styles.append("red" if row.layer in worst else ("dim" if row.kind in ("other", "norm") else None))
        rows.append(
            [
                escape(str(row.layer)),
                escape(str(row.module)),
                fmt(float(row.mean)),
                fmt(float(row.std)),
                _pct(row.frac_saturated),
                _pct(row.frac_dead),
                _num(row.grad_norm),
                _num(row.update_ratio),
            ]
        )
    title = f"probe: {len(layers)} layers ({len(shown)} shown; all in probe.csv); [red]red[/] = named by a finding"
    console.print(fitted(title, columns, rows, console, styles))


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
    columns = [
        Column("case", "left"),
        Column("init std"),
        Column("activation std, layer by layer", "left", wrap=True),
        Column("saturated"),
        Column("dead"),
        Column("verdict", "left"),
        Column("lecture", "left", drop=1),
        Column("agrees", "left", drop=1),
    ]
    rows = []
    for row in cases.itertuples():
        acts = layers[(layers["case"] == row.case) & layers["kind"].isin(["relu", "bounded", "activation"])]
        trail = " ".join(f"{s:.2g}" for s in acts["std"])
        match = (
            ""
            if row.matches_lecture is None or row.matches_lecture != row.matches_lecture
            else ("[green]✓[/]" if row.matches_lecture else "[red]✗[/]")
        )
        style = "green" if row.verdict == "well scaled" else "red"
        rows.append(
            [
                str(row.case),
                f"{row.init_std:.3g}",
                trail,
                _pct(row.max_frac_saturated),
                _pct(row.max_frac_dead),
                f"[{style}]{row.verdict}[/]",
                str(row.lecture_verdict),
                match,
            ]
        )
    console.print(fitted("weight-init experiment: std of each activation layer, and the verdict", columns, rows, console))


# search: the leaderboard
# --------------------------------------------------------------------------------------------

SEARCH_LEADERBOARD_ROWS = 10  # trials shown, best first


@view("search")
def _search_leaderboard(result: Result, console: Console) -> None:
    frame = result.tables.get("search")
    if frame is None or frame.empty:
        return
    metric = result.metrics.get("metric", "val_acc")  # what the search ranked by (search.metric, resolved)
    if "rank" in frame.columns:  # the search's own ranking (its `ranked`: ties broken on the other metric), then the rest
        ordered = frame.assign(_rank=frame["rank"].astype(float).fillna(math.inf)).sort_values("_rank", kind="stable")
    else:
        ordered = frame.assign(_ok=frame["status"] == "complete").sort_values(["_ok", metric], ascending=[False, metric != "val_acc"])
    params = [c for c in frame.columns if "." in c]
    columns = [Column("#"), Column("trial", "left")]
    columns += [Column(p.split(".")[-1].replace("_", " ")) for p in params]
    columns += [Column("val acc"), Column("val loss"), Column("train loss", drop=1), Column("epochs", drop=2)]
    columns += [Column("status", "left"), Column("s", drop=3)]
    style = {"complete": "green", "diverged": "yellow", "failed": "red"}
    rows = []
    for rank, (_, row) in enumerate(ordered.head(SEARCH_LEADERBOARD_ROWS).iterrows(), start=1):
        status = str(row["status"])
        rows.append(
            [
                str(rank),
                f"{row['stage']}#{int(row['slot'])}",
                *[fmt(_plain_value(row[p]), p) for p in params],
                fmt(float(row["val_acc"]), "val_acc"),
                fmt(float(row["val_loss"])),
                fmt(float(row["train_loss"])),
                str(int(row["epochs_run"])),
                f"[{style.get(status, 'white')}]{status}[/]",
                f"{float(row['seconds']):.1f}",
            ]
        )
    title = f"search: leaderboard (best {min(SEARCH_LEADERBOARD_ROWS, len(frame))} of {len(frame)} trials by {metric}"
    title += ", ties by val_loss)" if metric == "val_acc" else ")"
    console.print(fitted(title, columns, rows, console))
    if result.metrics.get("best_params"):
        best = ", ".join(f"{k}={fmt(v, k)}" for k, v in result.metrics["best_params"].items())
        console.print(f"best: {best}  ->  best_recipe.yaml (nndiag train best_recipe.yaml)")


def _plain_value(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value
