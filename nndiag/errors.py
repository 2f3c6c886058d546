"""The one exception type that means "the user gave us bad input" (exit code 2, no traceback)."""


class BadInput(Exception):
    """Bad input from the user: a recipe key, a file, a flag value.

    The message is shown to the user as one paragraph, so it must name the key path or file and
    say what was expected. The CLI turns it into exit code 2 without a traceback.
    """

    def __init__(self, message: str, *, where: str | None = None):
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)
