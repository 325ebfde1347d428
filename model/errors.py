"""The one exception type for problems with the user's input (see model.cli.main_guard)."""


class UserError(Exception):
    """A problem with the user's input: printed as one line, exit code 2, no traceback."""
