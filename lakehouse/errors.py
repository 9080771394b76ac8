"""Mistakes in what a user asked for (a name, a key, a target): one clear line, never a traceback."""


class UserError(Exception):
    """The request cannot be done as asked; the message says what to give instead (the CLI prints it, exit 2)."""


def named(known: dict, name: str, what: str):
    """`known[name]`; an unknown name fails loudly, naming the ones there are (never a default)."""
    try:
        return known[name]
    except KeyError:
        raise UnknownTable(f"no {what} {name!r}; there are: {', '.join(sorted(known))}") from None


class UnknownTable(UserError, KeyError):
    """A table (or step, or check) name that is not one of ours."""

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]
