"""A local worker process of `nndiag search --workers N`: `python -m nndiag.diagnostics.search_workers SPEC_JSON`.

SPEC_JSON holds the resolved recipe, its source path and the search options. The worker builds the
experiment, joins the study and runs trials until the chosen stages are done. It prints nothing on
success; Ctrl-C (SIGINT) releases its running trial so that a re-run does it again, and ends it quietly:
the first SIGINT interrupts, any later one (the terminal's and the parent's arrive together) is ignored, so
that no KeyboardInterrupt lands in the middle of releasing the trial or in an atexit callback. The parent
starts it with SIGINT ignored until this module installs that handler.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any


def _interrupt_once(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGINT, _interrupt_once)


def main(argv: list[str]) -> int:
    """Run the worker; exit 0 when done, 2 on bad input, 130 on Ctrl-C (also while still importing torch)."""
    try:
        return work(json.loads(argv[0]))
    except KeyboardInterrupt:
        return 130


def work(spec: dict[str, Any]) -> int:
    import torch

    from nndiag.config.recipe import parse_recipe
    from nndiag.diagnostics.search import Search, SearchOptions
    from nndiag.errors import BadInput
    from nndiag.training.experiment import Experiment

    if os.environ.get("NNDIAG_THREADS"):
        torch.set_num_threads(int(os.environ["NNDIAG_THREADS"]))  # share the cores with the other workers
    options = spec["options"]
    options["stages"] = tuple(options["stages"])
    try:
        recipe = parse_recipe(spec["recipe"], source=Path(spec["source"]) if spec["source"] else None)
        Search(Experiment.build(recipe), SearchOptions(**options)).work()
    except BadInput as exc:
        print(f"nndiag search worker {os.getpid()}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
