"""The one clock the layers stamp rows with (tests pass their own `now`)."""

from datetime import datetime, timezone


def utcnow() -> datetime:
    return datetime.now(timezone.utc)
