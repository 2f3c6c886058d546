"""Files of a run: the run folder, atomic writes (a CSV is never half written), summary.json, and the
plain JSON and YAML forms of numbers and recipes.

`write_run(result, folder)` writes everything one Result holds: its CSV tables, the resolved recipe,
extra files, PNG figures (nndiag.output.plots) and summary.json (the `--json` object, `result.to_dict()`).
Results are read by duck typing: this module sits below nndiag.result and never imports it.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from nndiag.errors import BadInput
from nndiag.formatting import recipe_yaml, safe_name

_UMASK = os.umask(0)
os.umask(_UMASK)


def run_folder(recipe_name: str, command: str, out: Path | None = None, root: Path | None = None) -> Path:
    """`--out DIR` if given, else runs/<recipe name>/<command>-<timestamp>/ (never reused).

    The `runs` root can be moved with the NNDIAG_RUNS environment variable.
    """
    if out is not None:
        if out.exists() and not out.is_dir():
            raise BadInput(f"{out} exists and is not a folder", where="--out")
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BadInput(f"cannot create the folder {out}: {exc.strerror}", where="--out") from None
        return out
    root = root or Path(os.environ.get("NNDIAG_RUNS", "runs"))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = root / safe_name(recipe_name) / f"{command}-{stamp}"
    folder, n = base, 1
    while True:
        try:
            folder.mkdir(parents=True, exist_ok=False)
            return folder
        except FileExistsError:
            n += 1
            folder = base.with_name(f"{base.name}-{n}")
        except OSError as exc:
            raise BadInput(f"cannot create the run folder {folder}: {exc.strerror}") from None


def atomic_write_text(path: Path, text: str | bytes) -> None:
    """Write `text` (or bytes) to `path` so that readers see the old file or the new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp creates 0600; give results the usual permissions
    try:
        with os.fdopen(fd, "wb" if isinstance(text, bytes) else "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_csv(frame: Any, path: Path) -> Path:
    atomic_write_text(path, frame.to_csv(index=False))
    return path


def write_run(result: Any, folder: Path, plots: bool = True) -> dict[str, Any]:
    """Write every file of a run into `folder`; record them in `result.outputs`; return the JSON verdict."""
    outputs: dict[str, Any] = {"folder": str(folder), "csv": {}}
    for name, frame in result.tables.items():
        outputs["csv"][name] = str(write_csv(frame, folder / f"{name}.csv"))
    if result.recipe is not None:
        path = folder / "recipe.yaml"
        atomic_write_text(path, f"# resolved recipe of this run (from {result.source})\n" + recipe_yaml(result.recipe))
        outputs["recipe"] = str(path)
    for name, text in result.extra_files.items():
        path = folder / name
        atomic_write_text(path, text)
        outputs[name] = str(path)
    if plots:
        from nndiag.output import plots as plotting

        drawn = plotting.draw(result, folder)
        if drawn:
            outputs["plots"] = [str(p) for p in drawn]
    outputs["summary"] = str(folder / "summary.json")
    result.outputs = outputs
    verdict = result.to_dict()
    write_summary(folder, verdict)
    return verdict


def write_summary(folder: Path, verdict: dict[str, Any]) -> Path:
    """summary.json in `folder`: the verdict object, as `--json` prints it (indented)."""
    path = folder / "summary.json"
    atomic_write_text(path, json.dumps(verdict, indent=2) + "\n")
    return path
