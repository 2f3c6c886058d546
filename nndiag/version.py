"""nndiag's version, in one place: `nndiag --version`, `nndiag.__version__` (pyproject.toml says the same; a test holds them equal).

May import: nothing of nndiag.
"""

__version__ = "0.3.0"
