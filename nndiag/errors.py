"""The one exception type that means "the user gave us bad input" (exit code 2, no traceback).

May import: nothing of nndiag (the bottom of the contract).
"""


class BadInput(ValueError):
    """Bad input from the user: a recipe key, a file, a flag value, a Python API argument.

    The message is shown to the user as one paragraph, so it must name the key path, file or
    argument (`where`) and say what was expected. The CLI turns it into exit code 2 without a
    traceback; the Python API raises it (catch it as nndiag.BadInput, or as ValueError).
    """

    def __init__(self, message: str, *, where: str | None = None):
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)
