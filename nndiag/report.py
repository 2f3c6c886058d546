"""Presenting a Result: the run folder (CSV, resolved recipe, summary.json, PNG plots), Rich tables
for people, and one JSON object for programs.

Files are written atomically (a temporary file, then a rename), so a CSV is never half written.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import yaml
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from nndiag.result import Result

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
# Files
# --------------------------------------------------------------------------------------------


def run_folder(recipe_name: str, command: str, out: Path | None = None, root: Path | None = None) -> Path:
    """`--out DIR` if given, else runs/<recipe name>/<command>-<timestamp>/ (never reused).

    The `runs` root can be moved with the NNDIAG_RUNS environment variable.
    """
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        return out
    root = root or Path(os.environ.get("NNDIAG_RUNS", "runs"))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = root / _safe(recipe_name) / f"{command}-{stamp}"
    folder, n = base, 1
    while True:
        try:
            folder.mkdir(parents=True, exist_ok=False)
            return folder
        except FileExistsError:
            n += 1
            folder = base.with_name(f"{base.name}-{n}")


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name) or "run"


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` so that readers see the old file or the new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_csv(frame: Any, path: Path) -> Path:
    atomic_write_text(path, frame.to_csv(index=False))
    return path


def jsonable(value: Any) -> Any:
    """Plain JSON values: non-finite floats become null, numpy/torch scalars become numbers."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


def summary(result: Result, recipe_path: str, outputs: dict[str, Any]) -> dict[str, Any]:
    """The verdict object of DESIGN.md §2: command, recipe, status, findings, metrics, outputs."""
    return jsonable(
        {
            "command": result.command,
            "recipe": recipe_path,
            "status": result.status,
            "findings": [f.to_dict() for f in result.verdict.findings],
            "metrics": result.metrics,
            "outputs": outputs,
        }
    )


def write_run(result: Result, folder: Path, recipe_path: str, plots: bool = True) -> dict[str, Any]:
    """Write every file of a run into `folder`; return the JSON verdict (with its outputs)."""
    outputs: dict[str, Any] = {"folder": str(folder), "csv": {}}
    for name, frame in result.tables.items():
        outputs["csv"][name] = str(write_csv(frame, folder / f"{name}.csv"))
    if result.recipe is not None:
        path = folder / "recipe.yaml"
        atomic_write_text(path, f"# resolved recipe of this run (from {recipe_path})\n" + yaml.safe_dump(jsonable(result.recipe), sort_keys=False))
        outputs["recipe"] = str(path)
    for name, text in result.extra_files.items():
        path = folder / name
        atomic_write_text(path, text)
        outputs[name] = str(path)
    if plots:
        from nndiag import plots as plotting

        drawn = plotting.draw(result, folder)
        if drawn:
            outputs["plots"] = [str(p) for p in drawn]
    outputs["summary"] = str(folder / "summary.json")
    verdict = summary(result, recipe_path, outputs)
    atomic_write_text(folder / "summary.json", json.dumps(verdict, indent=2) + "\n")
    return verdict


# --------------------------------------------------------------------------------------------
# Terminal
# --------------------------------------------------------------------------------------------


def fmt(value: Any) -> str:
    """A number as a person wants to read it."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value == 0:
            return "0"
        if abs(value) >= 1e5 or abs(value) < 1e-3:
            return f"{value:.3g}"
        return f"{value:.4g}"
    return str(value)


def render(result: Result, console: Console, folder: Path | None = None) -> None:
    """The human view: what ran, key numbers, the command's own view, findings, and the verdict."""
    if result.context:
        console.print("  ".join(f"[dim]{k}:[/] {v}" for k, v in result.context.items()))
    if result.metrics:
        table = Table(title=f"{result.command}: key numbers", show_header=False, title_justify="left")
        table.add_column("metric", style="bold")
        table.add_column("value", justify="right")
        for key, value in result.metrics.items():
            if not isinstance(value, (dict, list)):
                table.add_row(key, fmt(value))
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
    table.add_column("severity")
    table.add_column("code", style="bold")
    table.add_column("what we saw")
    table.add_column("what to do")
    for f in findings:
        table.add_row(f"[{SEVERITY_STYLE[f.severity]}]{f.severity}[/]", f.code, f.message, f.advice)
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
# search: the leaderboard
# --------------------------------------------------------------------------------------------

SEARCH_LEADERBOARD_ROWS = 10  # trials shown, best first


@view("search")
def _search_leaderboard(result: Result, console: Console) -> None:
    frame = result.tables.get("search")
    if frame is None or frame.empty:
        return
    metric = "val_loss" if "best_val_loss" in result.metrics and "best_val_acc" not in result.metrics else "val_acc"
    if metric == "val_acc" and frame["val_acc"].isna().all():
        metric = "val_loss"
    ranked = frame.assign(_ok=frame["status"] == "complete").sort_values(["_ok", metric], ascending=[False, metric != "val_acc"], kind="stable")
    params = [c for c in frame.columns if "." in c]
    table = Table(title=f"search: leaderboard (best {min(SEARCH_LEADERBOARD_ROWS, len(frame))} of {len(frame)} trials by {metric})", title_justify="left")
    for column in ["#", "trial", *[p.split(".")[-1] for p in params], "val_acc", "val_loss", "train_loss", "epochs", "status", "s"]:
        table.add_column(column, justify="left" if column in ("trial", "status") else "right", no_wrap=True)
    style = {"complete": "green", "diverged": "yellow", "failed": "red"}
    for rank, (_, row) in enumerate(ranked.head(SEARCH_LEADERBOARD_ROWS).iterrows(), start=1):
        status = str(row["status"])
        table.add_row(str(rank), f"{row['stage']}#{int(row['slot'])}", *[_short(_plain_value(row[p])) for p in params],
                      _short(float(row["val_acc"])), _short(float(row["val_loss"])), _short(float(row["train_loss"])), str(int(row["epochs_run"])),
                      f"[{style.get(status, 'white')}]{status}[/]", f"{float(row['seconds']):.1f}")
    console.print(table)
    if result.metrics.get("best_params"):
        best = ", ".join(f"{k}={fmt(v)}" for k, v in result.metrics["best_params"].items())
        console.print(f"best: {best}  ->  best_recipe.yaml (nndiag train best_recipe.yaml)")


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _plain_value(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value
