"""A local worker process of `nndiag search --workers N`: `python -m nndiag.diagnostics.search_workers SPEC_JSON`.

SPEC_JSON holds the resolved recipe, its source path and the search options. The worker builds the
experiment, joins the study and runs trials until the chosen stages are done. It prints nothing on
success; Ctrl-C (SIGINT) releases its running trial so that a re-run does it again.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    import torch

    from nndiag.config.recipe import parse_recipe
    from nndiag.diagnostics.search import Search, SearchOptions
    from nndiag.errors import BadInput
    from nndiag.training.experiment import Experiment

    spec = json.loads(argv[0])
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
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
