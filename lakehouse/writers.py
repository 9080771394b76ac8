"""Who wrote a Bronze batch, and whether that writer can still finish it.

Every Bronze append names its writer in the snapshot summary (`lakehouse.writer`). A batch appended but not yet
recorded in the ingestion log belongs to a writer that is either still working (another run, overlapping this
one: leave it alone) or gone (killed, out of memory, a reboot: roll it back and ingest its files again). Only the
writer's liveness tells the two apart, so correctness never depends on one run at a time.

Writers are `run:<dagster run id>` (the Dagster instance knows whether the run is alive: resources/runs.py) or
`proc:<host>:<pid>:<start>` for a plain process (the CLI, `python -m lakehouse.job`). A plain process on this
host is checked in the process table, the start time guarding against a reused pid. One on another host (a job on
EMR without Pipes) cannot be seen from here: while it lives it holds a lease (`hold_lease`), a small record under
the warehouse (`_lakehouse/leases/`: a folder locally, the bucket on AWS, wherever the tables' files are, so every
host that writes them reaches it) that it renews every third of `LAKEHOUSE_WRITER_LEASE_SECONDS`. A writer on
another host whose lease was not renewed for that long, or that holds none (it ended, or never took one), is gone.
The lease's age is read from the store's own clock (the file's or the object's modification time), so the
writer's clock does not count.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol
from urllib.parse import quote, urlparse

if TYPE_CHECKING:
    from lakehouse.settings import LakehouseSettings

log = logging.getLogger(__name__)
HOST = socket.gethostname()
# writer id -> whether it may still settle its batch; None stands for batches appended before writers were named.
Liveness = Callable[[str | None], bool]
LEASE_FOLDER = "_lakehouse/leases"  # under the warehouse


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
    """Liveness without a Dagster instance: a process on this host is checked, one on another host by its lease;
    a Dagster run may be alive (only the instance can tell: resources/runs.py).

    A batch with no writer named was appended before writers were recorded, when one run at a time was the rule:
    its writer is gone."""
    if writer is None:
        return False
    if writer.startswith("proc:"):
        alive = process_alive(writer)
        return lease_alive(writer) if alive is None else alive
    return True


# --- leases: liveness across hosts -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Lease:
    """A writer's lease as the store holds it: renewed at `renewed_at` (the store's clock), good for `ttl_seconds`."""

    writer: str
    renewed_at: float
    ttl_seconds: float
    started_at: float | None = None

    @property
    def expires_at(self) -> float:
        return self.renewed_at + self.ttl_seconds

    def alive(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) < self.expires_at


class LeaseStore(Protocol):
    def write(self, name: str, body: bytes) -> None: ...

    def read(self, name: str) -> tuple[bytes, float] | None:
        """The record and when it was last written (epoch seconds, the store's clock); None when there is none."""

    def delete(self, name: str) -> None: ...


class LocalLeases:
    """Leases as files in a folder (the local warehouse, or one every host mounts)."""

    def __init__(self, folder: Path):
        self.folder = folder

    def write(self, name: str, body: bytes) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        part = self.folder / f".{name}.{os.getpid()}.part"
        part.write_bytes(body)
        os.replace(part, self.folder / name)  # a reader never sees half a record; the rename sets its time

    def read(self, name: str) -> tuple[bytes, float] | None:
        try:
            path = self.folder / name
            return path.read_bytes(), path.stat().st_mtime
        except FileNotFoundError:
            return None

    def delete(self, name: str) -> None:
        (self.folder / name).unlink(missing_ok=True)


class S3Leases:
    """Leases as objects under the warehouse's S3 prefix; S3 stamps their time."""

    def __init__(self, client, bucket: str, prefix: str):
        self.client, self.bucket, self.prefix = client, bucket, prefix.strip("/")

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def write(self, name: str, body: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(name), Body=body, ContentType="application/json")

    def read(self, name: str) -> tuple[bytes, float] | None:
        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=self._key(name))
        except self.client.exceptions.NoSuchKey:
            return None
        return obj["Body"].read(), obj["LastModified"].timestamp()

    def delete(self, name: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(name))


_STORES: dict[tuple, LeaseStore] = {}
_STORES_LOCK = threading.Lock()


def lease_store(settings: "LakehouseSettings") -> LeaseStore:
    """Where leases live: `_lakehouse/leases/` under the warehouse (one store per place and process: on AWS it keeps
    its boto3 client)."""
    from lakehouse.settings import Environment

    key = (settings.environment, settings.warehouse_uri, settings.aws_region, settings.aws_endpoint)
    with _STORES_LOCK:
        store = _STORES.get(key)
        if store is None:
            if settings.environment is Environment.LOCAL:
                store = LocalLeases(settings.warehouse_path / LEASE_FOLDER)
            else:
                import boto3  # AWS mode only

                place = urlparse(settings.warehouse_uri)
                client = boto3.client("s3", region_name=settings.aws_region, endpoint_url=settings.aws_endpoint)
                store = S3Leases(client, place.netloc, f"{place.path.strip('/')}/{LEASE_FOLDER}".lstrip("/"))
            _STORES[key] = store
    return store


def lease_name(writer: str) -> str:
    return quote(writer, safe="") + ".json"


def read_lease(writer: str, settings: "LakehouseSettings | None" = None) -> Lease | None:
    """The writer's lease as the store holds it now; None when it holds none."""
    from lakehouse.settings import load_settings

    settings = settings or load_settings()
    found = lease_store(settings).read(lease_name(writer))
    if found is None:
        return None
    body, renewed_at = found
    try:
        record = json.loads(body)
        ttl, started = float(record["ttl_seconds"]), record.get("started_at")
    except (ValueError, KeyError, TypeError):  # unreadable: as long as this lakehouse's own setting allows
        ttl, started = float(settings.writer_lease_seconds), None
    return Lease(writer, renewed_at, ttl, started)


def lease_alive(writer: str, settings: "LakehouseSettings | None" = None) -> bool:
    """Whether a writer on another host holds a lease it has renewed in time. When the store cannot be read, the
    writer may be alive: its batch is left alone (rolled back later, never while it may still settle it)."""
    try:
        lease = read_lease(writer, settings)
    except Exception:  # noqa: BLE001 - any failure to read means "cannot tell"
        log.warning("cannot read the lease of writer %s; taking it for alive", writer, exc_info=True)
        return True
    return lease is not None and lease.alive()


class _Keeper:
    """Renews one writer's lease from a daemon thread every third of its time to live, until stopped."""

    def __init__(self, store: LeaseStore, writer: str, ttl: float):
        self.store, self.writer, self.ttl = store, writer, ttl
        self.name = lease_name(writer)
        self.started_at = time.time()
        self.renewed_at = 0.0  # when this process last renewed it (its own clock)
        self._stop = threading.Event()
        self.renew()  # before the writer appends anything: from its first commit on, other hosts see it alive
        self._thread = threading.Thread(target=self._run, name="writer-lease", daemon=True)
        self._thread.start()

    def renew(self) -> None:
        record = {"writer": self.writer, "host": HOST, "pid": os.getpid(), "ttl_seconds": self.ttl,
                  "started_at": self.started_at, "renewed_at": time.time()}
        self.store.write(self.name, json.dumps(record).encode())
        self.renewed_at = time.time()

    def _run(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                self.renew()
            except Exception:  # noqa: BLE001 - tried again at the next interval; other hosts see its age meanwhile
                log.warning("could not renew the lease of writer %s", self.writer, exc_info=True)

    def stop(self) -> None:
        """Stop renewing and give the lease up: the writer is gone from now on (its batches are settled or never
        will be)."""
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            self.store.delete(self.name)
        except Exception:  # noqa: BLE001 - it expires anyway
            log.warning("could not give up the lease of writer %s; it expires by itself", self.writer, exc_info=True)


_KEEPERS: dict[str, _Keeper] = {}
_KEEPERS_LOCK = threading.Lock()


def hold_lease(settings: "LakehouseSettings | None" = None, writer: str | None = None) -> str:
    """This process's writer id, with a lease held on it from now until the process exits (renewed in the
    background, given up at exit). Call it before the process appends to Bronze: a plain process on another host
    that holds no lease is taken for gone."""
    from lakehouse.settings import load_settings

    settings = settings or load_settings()
    writer = writer or process_writer()
    with _KEEPERS_LOCK:
        keeper = _KEEPERS.get(writer)
        if keeper is None:
            keeper = _Keeper(lease_store(settings), writer, float(settings.writer_lease_seconds))
            _KEEPERS[writer] = keeper
            atexit.register(keeper.stop)
    return writer


def release_lease(writer: str) -> None:
    """Give up a lease `hold_lease` took (at exit this happens by itself)."""
    with _KEEPERS_LOCK:
        keeper = _KEEPERS.pop(writer, None)
    if keeper is not None:
        atexit.unregister(keeper.stop)
        keeper.stop()
