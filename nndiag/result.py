"""What a diagnostic returns: numbers (tables), a verdict over them, and key metrics.

Diagnostics never print or write; `report.py` turns a Result into CSV, JSON, plots and tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import math
from pathlib import Path
from typing import Any

import pandas as pd

from nndiag.findings import Verdict


@dataclass
class Result:
    command: str  # the CLI command, e.g. "check-loss"
    verdict: Verdict
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)  # name -> frame, written as <name>.csv; the first is the main one
    metrics: dict[str, Any] = field(default_factory=dict)  # key numbers: the JSON "metrics" and the terminal summary
    context: dict[str, str] = field(default_factory=dict)  # what ran: data, model, device (for reports)
    recipe: dict[str, Any] | None = None  # the resolved recipe, written to the run folder
    extra_files: dict[str, str | bytes] = field(default_factory=dict)  # name -> files to write as-is: text (a recipe with the suggestion applied) or bytes (best.pt weights)

    @property
    def status(self) -> str:
        return self.verdict.status


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
