"""What a diagnostic returns: numbers (tables), a verdict over them, and key metrics.

Diagnostics never print or write; a Result saves itself (`save`: the run folder) and draws itself (`plot`)
through nndiag.output, and `to_dict` is the one verdict object (`verdict_object`) every way in writes.

May import: nndiag.findings, nndiag.formatting, nndiag.output.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from nndiag.findings import Verdict
from nndiag.formatting import jsonable


@dataclass
class Result:
    """What every diagnostic returns, from the CLI and from Python alike.

    `status` (pass | warn | fail), `findings` (each with code, severity, message, advice, evidence),
    `metrics` (the `--json` metrics), `table` (the main CSV as a DataFrame; all of them in `tables`),
    `plot()` (a matplotlib Figure), `save(folder)` (the CLI's run folder), `to_json()` (exactly the
    object `--json` prints). Nothing is printed or written until asked. In a notebook it shows itself.
    """

    command: str  # the CLI command, e.g. "check-loss"
    verdict: Verdict
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)  # name -> frame, written as <name>.csv; the first is the main one
    metrics: dict[str, Any] = field(default_factory=dict)  # key numbers: the JSON "metrics" and the terminal summary
    context: dict[str, str] = field(default_factory=dict)  # what ran: data, model, device (for reports)
    recipe: dict[str, Any] | None = None  # the resolved recipe, written to the run folder
    extra_files: dict[str, str | bytes] = field(
        default_factory=dict
    )  # name -> files to write as-is: text (a recipe with the suggestion applied) or bytes (best.pt weights)
    name: str = "run"  # names the default run folder: runs/<name>/<command>-<timestamp>/
    source: str = "python"  # what ran: the recipe path (the JSON "recipe" key), or "python" for the user's own objects
    outputs: dict[str, Any] = field(default_factory=dict)  # the files written by save() (the JSON "outputs")

    @property
    def status(self) -> str:
        return self.verdict.status

    @property
    def findings(self) -> list[Any]:
        return self.verdict.findings

    @property
    def exit_code(self) -> int:
        return self.verdict.exit_code

    @property
    def table(self) -> pd.DataFrame | None:
        """The main table (the first CSV a run folder gets), or None."""
        return next(iter(self.tables.values()), None)

    def to_dict(self) -> dict[str, Any]:
        """The verdict object (`verdict_object`): command, recipe, status, findings, metrics, outputs."""
        return verdict_object(
            self.command, self.source, self.status, [f.to_dict() for f in self.verdict.findings], self.metrics, self.outputs
        )

    def to_json(self, indent: int | None = None) -> str:
        """Exactly the JSON object `--json` prints."""
        import json

        return json.dumps(self.to_dict(), indent=indent)

    def save(self, folder: str | Path | None = None, plots: bool = True) -> Path:
        """Write the run folder (CSVs, resolved recipe, summary.json, PNG plots) to `folder`
        (default: runs/<name>/<command>-<timestamp>/); return the folder."""
        from nndiag.output import files

        path = files.run_folder(self.name, self.command, Path(folder) if folder is not None else None)
        files.write_run(self, path, plots=plots)
        return path

    def plot(self) -> Any:
        """The command's figure as a matplotlib Figure (the first one when it draws several), or None."""
        from nndiag.output import plots

        drawn = plots.figures(self)
        for _, extra in drawn[1:]:
            plots.pyplot().close(extra)
        return drawn[0][1] if drawn else None

    def __repr__(self) -> str:
        codes = ", ".join(f"{f.severity}:{f.code}" for f in self.findings) or "no findings"
        return f"<nndiag {self.command}: {self.status} ({codes})>"

    def _repr_markdown_(self) -> str:
        """The notebook view: status, findings with their advice, key numbers."""
        lines = [f"**nndiag {self.command}: {self.status.upper()}**", ""]
        if self.findings:
            lines += ["| severity | code | what we saw | what to do |", "|---|---|---|---|"]
            lines += [f"| {f.severity} | `{f.code}` | {_cell(f.message)} | {_cell(f.advice)} |" for f in self.findings]
        else:
            lines.append("No problems found.")
        numbers = [(k, v) for k, v in self.metrics.items() if not isinstance(v, (dict, list))]
        if numbers:
            lines += ["", "| metric | value |", "|---|---|"] + [f"| {k} | {_cell(str(jsonable(v)))} |" for k, v in numbers]
        return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def verdict_object(
    command: str, recipe: str, status: str, findings: list[dict[str, Any]], metrics: dict[str, Any], outputs: dict[str, Any], **more: Any
) -> dict[str, Any]:
    """The one verdict object every way in writes (`--json`, summary.json): command, recipe (what ran: the recipe
    path, or "python"), status (pass | warn | fail), findings (code, severity, message, advice, evidence), metrics,
    outputs (the files written), then `more` (a run of several steps adds root_causes and steps). Plain JSON values."""
    return jsonable(
        {"command": command, "recipe": recipe, "status": status, "findings": findings, "metrics": metrics, "outputs": outputs, **more}
    )
