"""Exactly-once ingestion: which landed file versions the ingestion log has already settled.

The log (`bronze.ingestion_log`, written by the Bronze step after its data commit) is the final word; the
sensor's cursor only remembers what it has asked for recently, so losing it costs a duplicate request that
the Bronze step turns away, never a duplicate row.

The log is append-only: an operator's retraction is a new row for the same (batch, file version), so the history
stays readable. What holds now for a (batch, file version) is its latest row (`current`).
"""

from __future__ import annotations

import logging
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol, TypeVar

from lakehouse.contracts import INGESTION_LOG, Entity
from lakehouse.landing import LandedFile, LandingZone

LOADED, REJECTED, ROLLED_BACK, RETRACTED = "loaded", "rejected", "rolled_back", "retracted"
# A settled version is not ingested again by itself: loaded, refused, or taken out by an operator (who can ask
# for it again: `lakehouse reprocess`). A rolled-back batch's files were never settled.
SETTLED = (LOADED, REJECTED, RETRACTED)
T = TypeVar("T")
_ETAG_THREADS = 4
_LOG_FIELDS = ("entity", "source_uri", "source_etag", "source_size", "source_modified_at", "batch_id", "status",
               "ingested_at")
log = logging.getLogger(__name__)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _get(row: Any, name: str) -> Any:
    return row[name] if isinstance(row, dict) else getattr(row, name)


def current(rows: Iterable[T]) -> list[T]:
    """The latest row of each (batch, file version), oldest first: what holds now, retractions applied."""
    latest: dict[tuple, T] = {}
    for row in sorted(rows, key=lambda r: _get(r, "ingested_at") or datetime.min):
        latest[(_get(row, "batch_id"), _get(row, "source_uri"), _get(row, "source_etag"))] = row
    return list(latest.values())


@dataclass(frozen=True)
class LogEntry:
    entity: str
    source_uri: str
    source_etag: str
    source_size: int
    source_modified_at: datetime | None
    batch_id: str
    status: str
    # Records Bronze's scan found bytes that are not UTF-8 in (None: logged before it counted them).
    invalid_utf8_records: int | None = None
    ingested_at: datetime | None = None


def _micros(ts: datetime | None) -> int | None:
    if ts is None:
        return None
    if ts.tzinfo is None:  # Spark and Arrow hand back naive UTC
        ts = ts.replace(tzinfo=timezone.utc)
    return (ts - _EPOCH) // timedelta(microseconds=1)  # exact: float seconds can be a microsecond off


class Settled(Protocol):
    """What the sensor asks of the ingestion log: `IngestionIndex` (rows in memory) or `SettledIndex` (a file)."""

    def has_version(self, uri: str, etag: str) -> bool: ...

    def settled(self, file: LandedFile, with_etag: Callable[[LandedFile], LandedFile]) -> bool: ...


class IngestionIndex:
    """Lookups over the settled rows of the ingestion log."""

    def __init__(self, entries: Iterable[LogEntry]):
        self.versions: set[tuple[str, str]] = set()
        self.stats: set[tuple[str, int, int | None]] = set()
        self.batches: dict[str, str] = {}
        for e in entries:
            self.batches.setdefault(e.batch_id, e.status)
            if e.status in SETTLED:
                self.versions.add((e.source_uri, e.source_etag))
                self.stats.add((e.source_uri, e.source_size, _micros(e.source_modified_at)))

    def has_version(self, uri: str, etag: str) -> bool:
        return (uri, etag) in self.versions

    def _known_by_stats(self, file: LandedFile) -> bool:
        return file.etag is None and (file.uri, file.size, _micros(file.modified_at)) in self.stats

    def settled(self, file: LandedFile, with_etag: Callable[[LandedFile], LandedFile]) -> bool:
        """True when this version of the file was loaded, rejected or retracted before.

        A local file whose size and modification time match a logged version is not hashed again; a touched
        file (new mtime, same bytes) is hashed and recognised by its etag.
        """
        return self._known_by_stats(file) or (file.uri, with_etag(file).etag) in self.versions

    def pending(self, zone: LandingZone, files: Iterable[LandedFile]) -> list[LandedFile]:
        """The unsettled versions among `files`, with their etags (in the order given)."""
        unknown = [f for f in files if not self._known_by_stats(f)]
        if sum(f.etag is None for f in unknown) > 1:
            # Local files are hashed side by side: hashlib lets go of the GIL while it hashes (a full load's
            # 780 MB took 2.2 s one file after another, on one of the two cores). S3 lists its etags.
            with ThreadPoolExecutor(_ETAG_THREADS, thread_name_prefix="etag") as pool:
                unknown = list(pool.map(zone.with_etag, unknown))
        else:
            unknown = [zone.with_etag(f) for f in unknown]
        return [f for f in unknown if (f.uri, f.etag) not in self.versions]


def read_log(catalog, entity: Entity | None = None) -> list[LogEntry]:
    """The ingestion log through pyiceberg (no Spark), for the sensor."""
    from pyiceberg.exceptions import NoSuchTableError
    from pyiceberg.expressions import AlwaysTrue, EqualTo

    try:
        table = catalog.load_table(INGESTION_LOG.identifier)
    except NoSuchTableError:
        return []
    scan = table.scan(selected_fields=_LOG_FIELDS, row_filter=EqualTo("entity", entity.value) if entity else AlwaysTrue())
    return current(LogEntry(**row) for row in scan.to_arrow().to_pylist())


def unsettled_writers(catalog, entity: Entity) -> set[str | None]:
    """Writers of Bronze appends the ingestion log does not know yet, read through pyiceberg (no Spark).

    What a Dagster run hands a Spark step running elsewhere (a Pipes or Glue job), with the instance's word on
    which of them are gone, because the job cannot ask the instance itself."""
    from pyiceberg.exceptions import NoSuchTableError

    from lakehouse.contracts import BRONZE

    try:
        table = catalog.load_table(BRONZE[entity].identifier)
    except NoSuchTableError:
        return set()
    known = {e.batch_id for e in read_log(catalog, entity)}
    writers: set[str | None] = set()
    snap = table.current_snapshot()
    while snap is not None:
        summary = snap.summary
        batch = summary["lakehouse.batch-id"] if summary else None
        if summary and summary.operation.value == "append" and batch and batch not in known:
            writers.add(summary["lakehouse.writer"])
        snap = table.snapshot_by_id(snap.parent_snapshot_id) if snap.parent_snapshot_id else None
    return writers


class SettledIndex:
    """The ingestion log's current rows, kept in a SQLite file and brought up to date from the log's appends.

    The sensor asks, each tick, whether a handful of file versions are settled; reading the whole log for that made
    a tick grow with everything ever landed (4.4 s at 100,000 files, issue 15). The index remembers the log
    snapshot it has read up to and reads only the rows appended since (Iceberg's incremental append scan), so a
    tick costs one metadata read plus the new rows. It is a cache of the log, never the word on it: when the file
    is lost, the log is a different table, or its history no longer leads back to the remembered snapshot (a
    rollback, expired snapshots, anything but appends and compactions), it is rebuilt from the whole log.
    """

    SCHEMA = """
        CREATE TABLE IF NOT EXISTS log (
            batch_id TEXT NOT NULL, uri TEXT NOT NULL, etag TEXT NOT NULL, size INTEGER, modified_us INTEGER,
            status TEXT NOT NULL, ingested_us INTEGER, PRIMARY KEY (batch_id, uri, etag));
        CREATE INDEX IF NOT EXISTS log_version ON log (uri, etag);
        CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
    """
    # What holds for a (batch, version) is its latest row: a row replaces the one kept only if not older.
    UPSERT = """
        INSERT INTO log VALUES (?, ?, ?, ?, ?, ?, ?)
        ON CONFLICT (batch_id, uri, etag) DO UPDATE SET size = excluded.size, modified_us = excluded.modified_us,
            status = excluded.status, ingested_us = excluded.ingested_us
        WHERE coalesce(excluded.ingested_us, 0) >= coalesce(log.ingested_us, 0)
    """
    _SETTLED_SQL = f"status IN ({', '.join(repr(s) for s in SETTLED)})"

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(self.SCHEMA)
        self.rows_read = 0  # log rows the last refresh read (what a tick costs)
        self.rebuilt = False
        self._stats: set[tuple] | None = None

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "SettledIndex":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def _upsert(self, rows) -> int:
        """Rows of the log (an Arrow table), oldest first, so that the latest of a (batch, version) is kept."""
        import pyarrow.compute as pc

        rows = rows.sort_by([("ingested_at", "ascending")])
        micros = [pc.cast(rows[c], "int64").to_pylist() for c in ("source_modified_at", "ingested_at")]
        self.db.executemany(self.UPSERT, zip(*(rows[c].to_pylist() for c in (
            "batch_id", "source_uri", "source_etag", "source_size")), micros[0], rows["status"].to_pylist(), micros[1]))
        return rows.num_rows

    def refresh(self, catalog) -> "SettledIndex":
        """Read what the log appended since the last refresh (all of it when the index cannot be trusted)."""
        from pyiceberg.exceptions import NoSuchTableError

        self.rows_read, self.rebuilt = 0, False
        try:
            table = catalog.load_table(INGESTION_LOG.identifier)
        except NoSuchTableError:
            table = None
        current = table.current_snapshot() if table is not None else None
        uuid = str(table.metadata.table_uuid) if table is not None else ""
        known, same_table = self._meta("snapshot_id"), self._meta("table_uuid") == uuid
        if same_table and known == (str(current.snapshot_id) if current is not None else ""):
            return self
        since = int(known) if known and same_table and self._appends_since(table, int(known)) else None
        self.db.execute("BEGIN IMMEDIATE")
        try:
            if since is None:
                self.db.execute("DELETE FROM log")
                self.rebuilt = True
                if current is not None:
                    self.rows_read = self._upsert(table.scan(selected_fields=_LOG_FIELDS).to_arrow())
            else:
                scan = table.incremental_append_scan(from_snapshot_id_exclusive=since,
                                                     to_snapshot_id_inclusive=current.snapshot_id,
                                                     selected_fields=_LOG_FIELDS)
                self.rows_read = self._upsert(scan.to_arrow())
            self.db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                                [("table_uuid", uuid), ("snapshot_id", str(current.snapshot_id) if current else "")])
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        if self.rebuilt:
            log.info("settled index %s rebuilt from the whole ingestion log: %d rows", self.path, self.rows_read)
        return self

    @staticmethod
    def _appends_since(table, snapshot_id: int) -> bool:
        """True when the log's history leads back to `snapshot_id` through appends and compactions only."""
        snap = table.current_snapshot()
        while snap is not None and snap.snapshot_id != snapshot_id:
            operation = snap.summary.operation.value if snap.summary else None
            if operation not in ("append", "replace"):  # replace: compaction, the same rows in other files
                return False
            snap = table.snapshot_by_id(snap.parent_snapshot_id) if snap.parent_snapshot_id else None
        return snap is not None

    def has_version(self, uri: str, etag: str) -> bool:
        return self.db.execute(f"SELECT 1 FROM log WHERE uri = ? AND etag = ? AND {self._SETTLED_SQL} LIMIT 1",
                               (uri, etag)).fetchone() is not None

    def load_stats(self) -> None:
        """Read every settled (uri, size, mtime) at once: for a tick that lists the whole folder, one scan of the
        index costs less than a query per file (100,000 files: ~1 s of queries)."""
        self._stats = set(self.db.execute(f"SELECT uri, size, modified_us FROM log WHERE {self._SETTLED_SQL}"))

    def settled(self, file: LandedFile, with_etag: Callable[[LandedFile], LandedFile]) -> bool:
        """As `IngestionIndex.settled`: a local file matching a settled version's size and mtime is not hashed."""
        if file.etag is None:
            stats = (file.uri, file.size, _micros(file.modified_at))
            if self._stats is not None:
                if stats in self._stats:
                    return True
            elif self.db.execute(f"SELECT 1 FROM log WHERE uri = ? AND size = ? AND modified_us IS ? AND "
                                 f"{self._SETTLED_SQL} LIMIT 1", stats).fetchone() is not None:
                return True
        return self.has_version(file.uri, with_etag(file).etag)

    def count(self) -> int:
        return self.db.execute("SELECT count(*) FROM log").fetchone()[0]
