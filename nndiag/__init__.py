"""nndiag: the babysitting recipe for neural-network training, as a command-line experiment runner
and a Python API on your own model and data.

    import nndiag
    r = nndiag.check_data(loader, model)                               # or a recipe
    r = nndiag.check_loss(model, loader, loss="cross_entropy")
    r.status, r.findings, r.metrics, r.table, r.plot(), r.save("out/")
    with nndiag.watch(model, optimizer) as w: ...   # your own training loop (nndiag.integrations.loop)

Importing this package is cheap on purpose: it does not import torch (nor pandas), so that
`nndiag --help` starts fast; the functions import what they need when called.

May import: nndiag.api, nndiag.errors, nndiag.result, nndiag.version.
"""

from nndiag.api import babysit, check_data, check_loss, curves, lr_find, overfit_small, probe, search, train, watch
from nndiag.errors import BadInput
from nndiag.version import __version__

__all__ = [
    "BadInput",
    "Result",
    "__version__",
    "babysit",
    "check_data",
    "check_loss",
    "curves",
    "lr_find",
    "overfit_small",
    "probe",
    "search",
    "train",
    "watch",
]


def __getattr__(name: str):  # PEP 562: nndiag.Result without importing pandas up front
    if name == "Result":
        from nndiag.result import Result

        return Result
    raise AttributeError(f"module 'nndiag' has no attribute {name!r}")
