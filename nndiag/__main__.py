"""`python -m nndiag` is the same as the `nndiag` console script.

May import: nndiag.cli.
"""

from nndiag.cli import main

main()
