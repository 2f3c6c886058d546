"""nndiag: the babysitting recipe for neural-network training, as a command-line experiment runner.

Importing this package is cheap on purpose: it must not import torch, so that `nndiag --help`
starts fast. Heavy modules (engine, data, models, diagnostics) are imported by the commands that
need them.
"""

__version__ = "0.1.0"
