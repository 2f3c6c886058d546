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


class CodeExited(RuntimeError):
    """The user's own code (a model's forward, a step, a loss, a dataset) raised SystemExit or GeneratorExit while
    a command was running it. Python would end the program quietly with that exit code (0 reads as a pass to CI),
    so the CLI reports it as a crash of the user's code instead: exit code 3, with the traceback."""

    def __init__(self, exc: BaseException):
        self.original = exc
        kind = type(exc).__name__
        code = f"({exc})" if str(exc) else "()"
        super().__init__(
            f"your code raised {kind}{code} while nndiag was running it; a model, step, loss or dataset must return "
            "or raise an exception, not end the program (the traceback above shows where)"
        )
