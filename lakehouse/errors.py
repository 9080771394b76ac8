"""Mistakes in what a user asked for (a name, a key, a target): one clear line, never a traceback."""


class UserError(Exception):
    """The request cannot be done as asked; the message says what to give instead (the CLI prints it, exit 2)."""
