"""Who wrote a Bronze batch, and whether that writer can still finish it.

Every Bronze append names its writer in the snapshot summary (`lakehouse.writer`). A batch appended but not yet
recorded in the ingestion log belongs to a writer that is either still working (another run, overlapping this
one: leave it alone) or gone (killed, out of memory, a reboot: roll it back and ingest its files again). Only the
writer's liveness tells the two apart, so correctness never depends on one run at a time.

Writers are `run:<dagster run id>` (the Dagster instance knows whether the run is alive) or
`proc:<host>:<pid>:<start>` for a plain process (the CLI, `python -m lakehouse.job`), checked on this host by the
process table, the start time guarding against a reused pid.
"""

from __future__ import annotations

import os
import socket
from typing import Callable

HOST = socket.gethostname()
# writer id -> whether it may still settle its batch; None stands for batches appended before writers were named.
Liveness = Callable[[str | None], bool]


def process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux /proc), or None when it is not running."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read().decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may hold spaces and parentheses: count fields after its closing parenthesis.
    fields = stat[stat.rindex(")") + 2:].split()
    return None if fields[0] == "Z" else fields[19]  # a zombie has exited: its parent has not reaped it yet


def process_writer(pid: int | None = None) -> str:
    pid = os.getpid() if pid is None else pid
    return f"proc:{HOST}:{pid}:{process_start(pid) or 0}"


def run_writer(run_id: str) -> str:
    return f"run:{run_id}"


def run_id_of(writer: str | None) -> str | None:
    return writer[4:] if writer and writer.startswith("run:") else None


def process_alive(writer: str) -> bool | None:
    """Whether a `proc:` writer still runs: None when it ran on another host (this one cannot tell)."""
    _, host, pid, start = writer.split(":", 3)
    if host != HOST:
        return None
    return process_start(int(pid)) == start


def default_liveness(writer: str | None) -> bool:
    """Liveness without a Dagster instance: a process on this host is checked; anything else may be alive.

    A batch with no writer named was appended before writers were recorded, when one run at a time was the rule:
    its writer is gone."""
    if writer is None:
        return False
    if writer.startswith("proc:"):
        alive = process_alive(writer)
        return True if alive is None else alive
    return True  # a Dagster run: only the instance can tell (see resources/runs.py)
