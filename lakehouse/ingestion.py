"""Exactly-once ingestion: which landed file versions the ingestion log has already settled.

The log (`bronze.ingestion_log`, written by the Bronze step after its data commit) is the final word; the
sensor's cursor only remembers what it has asked for recently, so losing it costs a duplicate request that
the Bronze step turns away, never a duplicate row.

The log is append-only: an operator's retraction is a new row for the same (batch, file version), so the history
stays readable. What holds now for a (batch, file version) is its latest row (`current`).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, TypeVar

from lakehouse.contracts import INGESTION_LOG, Entity
from lakehouse.landing import LandedFile, LandingZone

LOADED, REJECTED, ROLLED_BACK, RETRACTED = "loaded", "rejected", "rolled_back", "retracted"
# A settled version is not ingested again by itself: loaded, refused, or taken out by an operator (who can ask
# for it again: `lakehouse reprocess`). A rolled-back batch's files were never settled.
SETTLED = (LOADED, REJECTED, RETRACTED)
T = TypeVar("T")
_ETAG_THREADS = 4


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
    return int(ts.timestamp() * 1_000_000)


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
    fields = ("entity", "source_uri", "source_etag", "source_size", "source_modified_at", "batch_id", "status",
              "ingested_at")
    scan = table.scan(selected_fields=fields, row_filter=EqualTo("entity", entity.value) if entity else AlwaysTrue())
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
