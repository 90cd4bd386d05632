"""The one exception type the CLI turns into a clean one-line message (no traceback)."""


class UserError(Exception):
    """Bad input or set-up the user can fix; the message names the file/thing and the problem."""
