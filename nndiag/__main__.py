"""`python -m nndiag` is the same as the `nndiag` console script."""

from nndiag.cli import main

main()
