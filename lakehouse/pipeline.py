"""The layer steps: read -> pure transform -> write. No Dagster here, so an AWS job can run the same steps.

Each step is idempotent (see CONVENTIONS.md): it may be re-run after a crash at any point and the tables end
up the same as if it had run once.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field, fields
from typing import Callable
from datetime import datetime, timezone
from concurrent.futures import ThreadPoolExecutor
from functools import reduce

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from lakehouse import tables
from lakehouse.errors import UserError
from lakehouse.contracts import (
    BRONZE, GOLD, GOLD_SUBREDDIT_DAILY_PARTS, INGESTION_LOG, QUARANTINE, SILVER, SOURCE_HEADERS, Entity,
)
from lakehouse.ingestion import LOADED, REJECTED, ROLLED_BACK, IngestionIndex, LogEntry, current
from lakehouse.writers import Liveness, default_liveness, process_writer
from lakehouse.landing import LandedFile, LandingZone, check_key
from lakehouse.spark import in_this_thread_context
from lakehouse.transforms import bronze as bronze_tf
from lakehouse.transforms import gold as gold_tf
from lakehouse.transforms import silver as silver_tf

log = logging.getLogger(__name__)



def utcnow() -> datetime:
    return datetime.now(timezone.utc)


# --- Bronze ---------------------------------------------------------------------------------------------------


# The per-file table shown in Bronze's materialisation metadata.
FILE_COLUMNS = ["key", "status", "rows", "source_records", "malformed_rows", "reason", "message"]


@dataclass
class FileOutcome:
    key: str
    status: str
    rows: int = 0
    malformed_rows: int = 0
    reason: str | None = None
    message: str | None = None
    source_records: int | None = None
    invalid_utf8_records: int | None = None
    extra_columns: list[str] = field(default_factory=list)


@dataclass
class BronzeResult:
    entity: Entity
    batch_id: str
    files: list[FileOutcome] = field(default_factory=list)
    already_ingested: int = 0
    rolled_back_batches: list[str] = field(default_factory=list)
    snapshot_id: int | None = None

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)

    @property
    def malformed_rows(self) -> int:
        return sum(f.malformed_rows for f in self.files)

    @property
    def rejected(self) -> list[FileOutcome]:
        return [f for f in self.files if f.status == REJECTED]


def log_history(spark: SparkSession, entity: Entity) -> list[dict]:
    """Every row of the entity's ingestion log, every column (a few rows per file version: small), oldest first."""
    rows = spark.table(INGESTION_LOG.identifier).where(F.col("entity") == entity.value).collect()
    return sorted((r.asDict() for r in rows), key=lambda r: r["ingested_at"])


def log_rows(spark: SparkSession, entity: Entity) -> list[dict]:
    """What holds now for each (batch, file version) of the entity: its latest log row (retractions applied)."""
    return current(log_history(spark, entity))


def log_entries(spark: SparkSession, entity: Entity) -> list[LogEntry]:
    """The log as the ingestion bookkeeping reads it."""
    names = [f.name for f in fields(LogEntry)]
    return [LogEntry(**{n: r[n] for n in names}) for r in log_rows(spark, entity)]


def write_log(spark: SparkSession, rows: list[dict]) -> None:
    """Append rows (dicts keyed by column name; absent columns are null) to the ingestion log."""
    if rows:
        names = INGESTION_LOG.names
        data = [tuple(r.get(n) for n in names) for r in rows]
        spark.createDataFrame(data, tables.spark_schema(spark, INGESTION_LOG)).writeTo(INGESTION_LOG.identifier).append()


@dataclass(frozen=True)
class Unsettled:
    """A Bronze append the ingestion log does not know: in flight (its writer alive) or orphaned (gone)."""

    batch_id: str
    writer: str | None
    snapshot_id: int
    rows: int


def unsettled_batches(lineage: list[tables.Snapshot], entries: list) -> list[Unsettled]:
    """Bronze appends (oldest first) of batches with no row in the ingestion log (snapshot summaries only).

    `entries`: the log's rows (`LogEntry`s or dicts)."""
    known = {e["batch_id"] if isinstance(e, dict) else e.batch_id for e in entries}
    return [
        Unsettled(batch, s.summary.get(tables.WRITER_PROPERTY), s.snapshot_id, int(s.summary.get("added-records", 0)))
        for s in lineage
        if s.operation == "append" and (batch := s.summary.get(tables.BATCH_ID_PROPERTY)) and batch not in known
    ]


def _versions_in(spark: SparkSession, table: str, batches: list[str]) -> set[tuple[str, str]]:
    """The file versions these Bronze batches hold rows of."""
    if not batches:
        return set()
    rows = spark.table(table).where(F.col("_batch_id").isin(batches)).select("_source_uri", "_source_etag").distinct()
    return {(r._source_uri, r._source_etag) for r in rows.collect()}


def roll_back_orphans(
    spark: SparkSession, entity: Entity, entries: list[LogEntry] | None = None, alive: Liveness = default_liveness,
    writer: str | None = None,
) -> list[str]:
    """Delete Bronze rows of batches that were appended, never recorded in the ingestion log, and whose writer
    is gone.

    A run that dies between the Bronze append and the log write leaves such a batch; its files are still
    "not ingested" by the log, so they will be ingested again and must not be counted twice. A batch whose
    writer is still alive is another run's, in flight: it is left alone.
    """
    table = BRONZE[entity].identifier
    entries = log_entries(spark, entity) if entries is None else entries
    orphans = [u.batch_id for u in unsettled_batches(tables.snapshots(spark, table), entries) if not alive(u.writer)]
    now = utcnow()
    for batch in orphans:
        files = (
            spark.table(table).where(F.col("_batch_id") == batch)
            .groupBy("_source_uri", "_source_etag").count().collect()
        )
        spark.sql(f"DELETE FROM {table} WHERE _batch_id = '{batch}'")
        base = {"entity": entity.value, "source_size": 0, "batch_id": batch, "status": ROLLED_BACK, "rows": 0,
                "malformed_rows": 0, "ingested_at": now, "actor": writer}
        write_log(
            spark,
            [
                base | {"source_uri": f._source_uri, "source_etag": f._source_etag,
                        "message": f"{f['count']} rows of an unrecorded batch deleted (its writer is gone); "
                                   "the file is ingested again"}
                for f in files
            ]
            # Record the batch even when its rows were already gone, so it is not looked at again.
            or [base | {"source_uri": "", "source_etag": "", "message": "empty unrecorded batch"}],
        )
        log.warning("rolled back unrecorded Bronze batch %s of %s (%d files)", batch, table, len(files))
    return orphans


def pending_files(
    spark: SparkSession,
    landing: LandingZone,
    entity: Entity,
    keys: list[str] | None = None,
    entries: list[LogEntry] | None = None,
    reprocess: bool = False,
) -> tuple[list[LandedFile], int]:
    """Landed file versions the ingestion log has not settled, and how many were skipped as settled.

    With `keys` (a sensor's batch) only those files are looked at; without, the whole entity prefix. With
    `reprocess`, the named versions are taken again when the log holds them only as rejected or retracted (an
    operator asks for it); a loaded version must be retracted first.
    """
    entries = log_entries(spark, entity) if entries is None else entries
    index = IngestionIndex(entries)
    if keys is None:
        if reprocess:
            raise ValueError("reprocess names the files to take again")
        listed = list(landing.list_files(entity))
    else:
        listed = []
        for key in keys:
            check_key(key, entity)  # a key from run config must name a file of this entity's prefix
            try:
                listed.append(landing.describe(key))
            except (FileNotFoundError, KeyError) as exc:  # deleted since it was requested
                if reprocess:
                    raise FileNotFoundError(f"{key} is not in the landing zone: land it again to reprocess it") from exc
                log.warning("requested file %s is gone: %s", key, exc)
    if reprocess:
        loaded = {(e.source_uri, e.source_etag) for e in entries if e.status == LOADED}
        for f in listed:
            if (f.uri, f.etag) in loaded:
                raise ValueError(f"{f.key} (etag {f.etag}) is loaded: retract it before reprocessing it")
        return listed, 0
    pending = index.pending(landing, listed)
    return pending, len(listed) - len(pending)


def _spark_file_paths(spark: SparkSession, files: list[LandedFile]) -> DataFrame:
    """Map each file to the path string Spark reports in `_metadata.file_path` for it."""
    jvm, conf = spark._jvm, spark._jsc.hadoopConfiguration()

    def qualified(location: str) -> str:
        path = jvm.org.apache.hadoop.fs.Path(location)
        uri = path.getFileSystem(conf).makeQualified(path).toUri().toString()
        return bronze_tf.LOCAL_FILE_PREFIX.sub("file:///", uri)

    rows = [(qualified(f.read_location), f.uri, f.etag) for f in files]
    return spark.createDataFrame(rows, "_file_path string, uri string, etag string")


def _loaded_note(entity: Entity, rows: int, check: bronze_tf.HeaderCheck, scan: bronze_tf.FileScan) -> str:
    """What a data engineer should know about a file that loaded."""
    notes = []
    if rows == 0:
        notes.append("header only: no records")
    if check.extra:
        notes.append(f"schema drift: columns {list(check.extra)} are not in the contract; kept in _extra_columns")
    if check.columns != SOURCE_HEADERS[entity] and not check.extra:
        notes.append("columns in a different order; matched by name")
    if scan.invalid_utf8_records:
        notes.append(f"{scan.invalid_utf8_records} records hold bytes that are not UTF-8 (Silver quarantines them)")
    if scan.truncated:
        notes.append("the file ends inside its last record (interrupted upload?); that record is malformed")
    return "; ".join(notes)


SKIPPED = "skipped"  # a file version another live run took first (not logged: the other run logs it)


def ingest_bronze(
    spark: SparkSession,
    landing: LandingZone,
    entity: Entity,
    keys: list[str] | None = None,
    now: datetime | None = None,
    writer: str | None = None,
    alive: Liveness = default_liveness,
    reprocess: bool = False,
) -> BronzeResult:
    """Append every landed, not yet ingested file version of `entity` to Bronze as one batch.

    Exactly once does not rest on one run at a time: batches of writers that are gone are rolled back, batches
    of live writers are left alone, and when two overlapping runs take the same file version, the one whose
    append comes first in Bronze's history keeps it (`writer`, `alive`: lakehouse/writers.py).
    """
    tables.ensure_tables(spark)
    writer = writer or process_writer()
    result = BronzeResult(entity=entity, batch_id=uuid.uuid4().hex)
    table = BRONZE[entity].identifier
    log_snapshot = tables.snapshot_id(spark, INGESTION_LOG.identifier)
    entries = log_entries(spark, entity)
    result.rolled_back_batches = roll_back_orphans(spark, entity, entries, alive, writer)
    if result.rolled_back_batches:
        entries = log_entries(spark, entity)
        log_snapshot = tables.snapshot_id(spark, INGESTION_LOG.identifier)
    pending, result.already_ingested = pending_files(spark, landing, entity, keys, entries, reprocess)
    # Versions another live run has appended and not logged yet are that run's.
    in_flight = [u.batch_id for u in unsettled_batches(tables.snapshots(spark, table), entries) if alive(u.writer)]
    theirs = _versions_in(spark, table, in_flight)
    for f in [f for f in pending if (f.uri, f.etag) in theirs]:
        result.files.append(FileOutcome(f.key, SKIPPED, message="another run is ingesting this file version"))
    pending = [f for f in pending if (f.uri, f.etag) not in theirs]
    now = now or utcnow()
    accepted: list[tuple[LandedFile, bronze_tf.HeaderCheck, bronze_tf.FileScan]] = []
    for f in pending:
        check = bronze_tf.check_header(landing.read_head(f), entity)
        if not check.ok:
            result.files.append(FileOutcome(f.key, REJECTED, reason=check.reason, message=check.message))
            continue
        with landing.open(f) as stream:
            scan = bronze_tf.scan_records(stream)
        if scan.reason:
            result.files.append(FileOutcome(f.key, REJECTED, reason=scan.reason, message=scan.message,
                                            source_records=scan.records))
        else:
            accepted.append((f, check, scan))
    if accepted:
        # One read per distinct header: columns are matched by name, unknown ones kept as schema drift.
        by_header: dict[tuple[str, ...], list[LandedFile]] = {}
        for f, check, _ in accepted:
            by_header.setdefault(check.columns, []).append(f)
        raw = None
        for header, group in by_header.items():
            part = bronze_tf.read_csv(spark, [f.read_location for f in group], entity, header)
            raw = part if raw is None else raw.unionByName(part)
        files = _spark_file_paths(spark, [f for f, _, _ in accepted])
        batch = bronze_tf.to_bronze(raw, files, result.batch_id, now, entity)
        (batch.writeTo(table)
         .option(f"snapshot-property.{tables.BATCH_ID_PROPERTY}", result.batch_id)
         .option(f"snapshot-property.{tables.WRITER_PROPERTY}", writer)
         .append())
        # Count what was committed, not what was meant to be: the batch's files are pruned by their stats.
        written = (
            spark.table(table).where(F.col("_batch_id") == result.batch_id)
            .groupBy("_source_uri").agg(F.count("*").alias("n"), F.count("_raw_record").alias("bad"))
            .collect()
        )
        counts = {r._source_uri: (r.n, r.bad) for r in written}
        taken = _taken_meanwhile(spark, entity, result.batch_id, alive, log_snapshot, entries)
        # A problem of one file stays with that file: its rows are taken out of the batch again, and it is logged
        # as rejected with what differed, so the other files go on and Bronze's gates never fail for it.
        taken_out = {}
        for f, _, scan in accepted:
            n = counts.get(f.uri, (0, 0))[0]
            if (f.uri, f.etag) in taken:
                taken_out[f] = (scan, SKIPPED, "another run took this file version first")
            elif not landing.unchanged(f):
                # Spark read the file after it was checked and counted: another version's rows would sit under
                # this version's etag. The new version comes next time.
                taken_out[f] = (scan, "changed_during_ingestion", (
                    "the file was replaced while it was being ingested; its rows were taken out again and the "
                    "new version will be ingested as a new file"))
            elif n != scan.records:
                taken_out[f] = (scan, "record_count_mismatch", (
                    f"Spark read {n:,} rows but the independent CSV parser counts {scan.records:,} records in "
                    "the file; its rows were taken out of Bronze again (see docs/quality.md, Whole files)"))
        if taken_out:
            uris = ", ".join("'" + f.uri.replace("'", "''") + "'" for f in taken_out)
            spark.sql(f"DELETE FROM {table} WHERE _batch_id = '{result.batch_id}' AND _source_uri IN ({uris})")
            for f, (scan, reason, message) in taken_out.items():
                status, reason = (SKIPPED, None) if reason == SKIPPED else (REJECTED, reason)
                result.files.append(FileOutcome(f.key, status, reason=reason, message=message,
                                                source_records=scan.records))
            accepted = [a for a in accepted if a[0] not in taken_out]
        for f, check, scan in accepted:
            n, bad = counts.get(f.uri, (0, 0))
            result.files.append(FileOutcome(
                f.key, LOADED, rows=n, malformed_rows=bad, message=_loaded_note(entity, n, check, scan) or None,
                source_records=scan.records, invalid_utf8_records=scan.invalid_utf8_records,
                extra_columns=list(check.extra),
            ))
    by_key = {f.key: f for f in pending}
    write_log(
        spark,
        [
            {
                "entity": entity.value, "source_uri": by_key[o.key].uri, "source_etag": by_key[o.key].etag,
                "source_size": by_key[o.key].size, "source_modified_at": by_key[o.key].modified_at,
                "batch_id": result.batch_id, "status": o.status, "rows": o.rows,
                "malformed_rows": o.malformed_rows, "message": o.message, "ingested_at": now, "reason": o.reason,
                "source_records": o.source_records, "invalid_utf8_records": o.invalid_utf8_records,
                "extra_columns": o.extra_columns or None, "actor": writer,
            }
            for o in result.files if o.status != SKIPPED
        ],
    )
    snap = tables.current_snapshot(spark, table)
    result.snapshot_id = snap.snapshot_id if snap else None
    return result


def _taken_meanwhile(
    spark: SparkSession, entity: Entity, batch_id: str, alive: Liveness, log_snapshot: int | None,
    entries: list[LogEntry],
) -> set[tuple[str, str]]:
    """File versions another run took while this batch was being appended: loaded since the log was read, or
    held by a live batch appended before this one. Bronze's history orders the appends, so of two overlapping
    runs exactly one keeps a version."""
    table = BRONZE[entity].identifier
    if tables.snapshot_id(spark, INGESTION_LOG.identifier) != log_snapshot:
        entries = log_entries(spark, entity)  # someone logged meanwhile
    lineage = tables.snapshots(spark, table)
    earlier = []
    for u in unsettled_batches(lineage, entries):
        if u.batch_id == batch_id:
            break
        if alive(u.writer):
            earlier.append(u.batch_id)
    return {(e.source_uri, e.source_etag) for e in entries if e.status == LOADED} | _versions_in(spark, table, earlier)


# --- Silver ---------------------------------------------------------------------------------------------------


@dataclass
class SilverResult:
    entity: Entity
    bronze_rows: int = 0
    quarantined: int = 0
    duplicates_collapsed: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    from_snapshot: int | None = None
    to_snapshot: int | None = None
    reasons: dict[str, int] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return bool(self.inserted or self.updated or self.quarantined)


def loaded_files(spark: SparkSession, entries: list[LogEntry]) -> DataFrame:
    """(batch, file, version) of every file the ingestion log records as loaded, to semi-join Bronze rows with.

    Per file, not per batch: a batch may hold rejected files, and a file taken out of a batch again (replaced
    while it was read) is still in the data files an incremental read of that append returns.
    """
    rows = sorted({(e.batch_id, e.source_uri, e.source_etag) for e in entries if e.status == LOADED}) or [("", "", "")]
    return F.broadcast(spark.createDataFrame(rows, "_batch_id string, _source_uri string, _source_etag string"))


def bronze_rows(
    spark: SparkSession, entity: Entity, start: int | None, end: int, entries: list[LogEntry]
) -> DataFrame:
    """Bronze rows appended in snapshots (start, end] (start None: all up to end) of files the log loaded."""
    reader = spark.read.format("iceberg")
    reader = (
        reader.option("start-snapshot-id", str(start)).option("end-snapshot-id", str(end))
        if start is not None
        else reader.option("snapshot-id", str(end))
    )
    return reader.load(BRONZE[entity].identifier).join(
        loaded_files(spark, entries), ["_batch_id", "_source_uri", "_source_etag"], "left_semi"
    )


def utf8_suspects(entries: list[LogEntry]) -> list[str]:
    """Files Bronze's scan found bytes that are not UTF-8 in (or loaded before it counted them)."""
    return sorted({e.source_uri for e in entries if e.status == LOADED
                   and (e.invalid_utf8_records is None or e.invalid_utf8_records > 0)})


def bronze_range(
    spark: SparkSession, entity: Entity, silver_table: str | None, alive: Liveness = default_liveness
) -> tuple[int | None, int | None, list[LogEntry]]:
    """The Bronze snapshots Silver has not processed: (exclusive start, inclusive end, the log's entries).
    With no `silver_table`: every Bronze snapshot (start None), for a rebuild.

    The range stops before the first batch the ingestion log has not settled whose writer is still alive, so a
    batch that is still being written is never skipped past. A dead writer's batch will never be logged (it is
    rolled back), and its rows are never read (only files the log loaded are): the range goes past it.
    """
    bronze_table = BRONZE[entity].identifier
    entries = log_entries(spark, entity)
    lineage = tables.snapshots(spark, bronze_table)
    in_flight = {u.snapshot_id for u in unsettled_batches(lineage, entries) if alive(u.writer)}
    mark = tables.watermark(spark, silver_table, bronze_table) if silver_table else None
    ids = [s.snapshot_id for s in lineage]
    start = int(mark) if mark is not None and int(mark) in ids else None
    if mark is not None and start is None:
        log.warning("watermark %s of %s is not in %s's lineage; re-reading all of it", mark, silver_table, bronze_table)
    end = start
    for snap in lineage[ids.index(start) + 1 if start is not None else 0 :]:
        if snap.snapshot_id in in_flight:
            break
        end = snap.snapshot_id
    return start, end, entries


# Silver's version order (silver_tf.latest_per_id) as a MERGE condition: a row is replaced only by a newer version
# with other values, so overlapping runs can commit in any order and Silver still ends at each id's latest version.
NEWER_VERSION = ("s._row_hash <> t._row_hash AND struct(s._ingested_at, s._source_uri, s._source_row) "
                 "> struct(t._ingested_at, t._source_uri, t._source_row)")


def update_silver(
    spark: SparkSession, entity: Entity, now: datetime | None = None, alive: Liveness = default_liveness
) -> SilverResult:
    """Type, clean and MERGE the Bronze rows Silver has not seen; quarantine the rows that break the contract."""
    tables.ensure_tables(spark)
    silver_table, quarantine_table = SILVER[entity].identifier, QUARANTINE[entity].identifier
    bronze_table = BRONZE[entity].identifier
    start, end, entries = bronze_range(spark, entity, silver_table, alive)
    result = SilverResult(entity, from_snapshot=start, to_snapshot=end)
    if end is None or end == start:
        return result
    bronze = bronze_rows(spark, entity, start, end, entries)
    now = now or utcnow()
    typed = silver_tf.typed(bronze, entity, now, utf8_suspects(entries)).persist()
    try:
        # One pass for the totals and the reason codes.
        stats = typed.groupBy(F.col("reasons")[0].alias("r")).count().collect()
        result.bronze_rows = sum(r["count"] for r in stats)
        result.reasons = {r.r: r["count"] for r in stats if r.r is not None}
        result.quarantined = sum(result.reasons.values())
        if result.quarantined:
            quarantined = silver_tf.quarantine_rows(typed, entity, now)
            tables.retrying(quarantine_table, lambda: tables.insert_new(
                spark, quarantine_table, quarantined, ["_source_uri", "_source_etag", "_source_row"]))
        latest = silver_tf.to_silver(typed, entity, utcnow())
        current = tables.keys_present(
            spark.table(silver_table).select("id", F.col("_row_hash").alias("_current_hash")), latest, ["id"],
            small_source=result.bronze_rows <= tables.BROADCAST_KEYS_MAX,
        )
        state = (
            F.when(F.col("_current_hash").isNull(), "inserted")
            .when(F.col("_current_hash") != F.col("_row_hash"), "updated")
            .otherwise("unchanged")
        )
        compared = latest.join(current, "id", "left").withColumn("_state", state).persist()
        try:
            ops = {r._state: r["count"] for r in compared.groupBy("_state").count().collect()}
            result.inserted, result.updated = ops.get("inserted", 0), ops.get("updated", 0)
            result.unchanged = ops.get("unchanged", 0)
            result.duplicates_collapsed = result.bronze_rows - result.quarantined - sum(ops.values())
            # New and changed ids in one validated MERGE: an overlapping run that committed first makes it fail
            # and try again (it never appends an id twice), and NEWER_VERSION never lets an older version win.
            if result.inserted or result.updated:
                changed = compared.where(F.col("_state") != "unchanged").drop("_current_hash", "_state")
                small = result.inserted + result.updated <= tables.BROADCAST_KEYS_MAX
                tables.retrying(silver_table, lambda: tables.upsert(
                    spark, silver_table, changed, ["id"], small_source=small, update_if=NEWER_VERSION,
                    stamp="_updated_at"))
        finally:
            compared.unpersist()
    finally:
        typed.unpersist()
    tables.set_watermarks(spark, silver_table, {bronze_table: str(end)})
    return result


# --- Gold -----------------------------------------------------------------------------------------------------


@dataclass
class GoldResult:
    table: str
    rows_written: int = 0
    rows_deleted: int = 0
    full_rebuild: bool = False
    watermarks: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Changes:
    """Silver rows changed since a Gold table last read them: (watermark, high-water] in `_updated_at` micros.

    Read at one Silver snapshot, so the high-water and the rows agree while other runs commit to Silver.
    """

    table: str
    since: int | None
    until: int | None
    snapshot_id: int | None = None

    @property
    def pending(self) -> bool:
        return self.until is not None and self.since != self.until

    def table_rows(self, spark: SparkSession) -> DataFrame:
        """The whole table, at the snapshot the changes were read from."""
        return tables.at_snapshot(spark, self.table, self.snapshot_id) if self.snapshot_id else spark.table(self.table)

    def rows(self, spark: SparkSession) -> DataFrame:
        df = self.table_rows(spark)
        if self.since is not None:
            df = df.where(F.col("_updated_at") > F.timestamp_micros(F.lit(self.since)))
        return df.where(F.col("_updated_at") <= F.timestamp_micros(F.lit(self.until)))


def changes_since(spark: SparkSession, silver_table: str, since: int | str | None) -> Changes:
    """Silver rows changed after `since` (micros; None: every row) up to Silver's latest change."""
    snap = tables.current_snapshot(spark, silver_table)
    if snap is None:
        return Changes(silver_table, int(since) if since else None, None)
    return Changes(silver_table, int(since) if since else None, _high_water(spark, silver_table, snap.snapshot_id),
                   snap.snapshot_id)


# A snapshot never changes, so neither does its latest `_updated_at`: read once per process, though a run's Gold
# steps and their checks ask for the same Silver snapshot's a dozen times. (Snapshot ids are random 64-bit
# numbers: a table dropped and created again does not meet its old ids.)
_HIGH_WATER: dict[tuple[str, int], int | None] = {}


def _high_water(spark: SparkSession, table: str, snapshot_id: int) -> int | None:
    key = (table, snapshot_id)
    if key not in _HIGH_WATER:
        if len(_HIGH_WATER) >= 1024:
            _HIGH_WATER.clear()
        # Answered from file statistics (Iceberg aggregate push-down), not by scanning the table.
        _HIGH_WATER[key] = (tables.at_snapshot(spark, table, snapshot_id)
                            .select(F.unix_micros(F.max("_updated_at")).alias("m")).first().m)
    return _HIGH_WATER[key]


def silver_changes(spark: SparkSession, gold_table: str, silver_table: str) -> Changes:
    return changes_since(spark, silver_table, tables.watermark(spark, gold_table, silver_table))


ENTITY_GOLD = {"posts": (Entity.POST, "post_id"), "comments": (Entity.COMMENT, "comment_id")}


def _entity_gold(table_key: str) -> tuple[Entity, str]:
    return _named(ENTITY_GOLD, table_key, "Gold entity table")


def update_gold_entity(spark: SparkSession, table_key: str, now: datetime | None = None) -> GoldResult:
    """Upsert changed Silver posts or comments into `gold.posts` / `gold.comments`; drop the ones Silver lost."""
    tables.ensure_tables(spark)
    # Another run writing the same table first: read again and recompute (Gold is derived, each attempt is whole).
    return tables.retrying(GOLD[table_key].identifier, lambda: _update_gold_entity(spark, table_key, now))


def _update_gold_entity(spark: SparkSession, table_key: str, now: datetime | None) -> GoldResult:
    entity, key = _entity_gold(table_key)
    gold_table, silver_table = GOLD[table_key].identifier, SILVER[entity].identifier
    base = tables.snapshot_id(spark, gold_table)
    marks = tables.table_properties(spark, gold_table)
    read_mark = marks.get(tables.READ_SNAPSHOT_PREFIX + silver_table)
    # Without the Silver snapshot it last read (a table Gold wrote before it kept one, or one that has since left
    # Silver's history), Gold cannot tell what Silver lost since: one full pass.
    if read_mark is not None and _lineage_after(spark, silver_table, read_mark) is None:
        log.warning("%s: the Silver snapshot it last read (%s) is no longer in %s's history; one full pass",
                    gold_table, read_mark, silver_table)
        read_mark = None
    since = marks.get(tables.WATERMARK_PREFIX + silver_table) if read_mark else None
    changes = changes_since(spark, silver_table, since)
    removed = _removed_rows(spark, changes, read_mark)
    result = GoldResult(gold_table, full_rebuild=changes.since is None)
    if not changes.pending and removed is None:
        return result
    build = gold_tf.posts if entity is Entity.POST else gold_tf.comments
    out = build(changes.rows(spark), now or utcnow()).persist()
    # Ids Gold holds that Silver no longer does: taken out since Gold last read Silver, or, on a full pass,
    # every Gold id Silver lacks.
    if changes.since is None:
        gone = _held_but_absent(spark, gold_table, [key], changes.table_rows(spark).select(F.col("id").alias(key)))
    else:
        gone = removed.select(F.col("id").alias(key)).persist() if removed is not None else None
    try:
        result.rows_written = out.count()
        result.rows_deleted = gone.count() if gone is not None else 0
        tables.expect_unchanged(spark, gold_table, base)
        if result.rows_written:
            tables.upsert(spark, gold_table, out, [key], small_source=result.rows_written <= tables.BROADCAST_KEYS_MAX)
        if result.rows_deleted:
            tables.merge(spark, gold_table, gone, [key], "WHEN MATCHED THEN DELETE")
    finally:
        for df in (out, gone):
            if df is not None:
                df.unpersist()
    result.watermarks = {changes.table: str(changes.until)} if changes.until is not None else {}
    tables.set_watermarks(spark, gold_table, result.watermarks,
                          read_snapshots={changes.table: changes.snapshot_id} if changes.snapshot_id else None)
    return result


def _lineage_after(spark: SparkSession, table: str, mark: str | None) -> list[tables.Snapshot] | None:
    """The table's snapshots after `mark`, oldest first (None: no mark, or it left the table's history)."""
    lineage = tables.snapshots(spark, table)
    ids = [s.snapshot_id for s in lineage]
    if mark is None or int(mark) not in ids:
        return None
    return lineage[ids.index(int(mark)) + 1:]


def _removed_rows(spark: SparkSession, changes: Changes, mark: str | None) -> DataFrame | None:
    """Rows Silver held at `mark` (the snapshot Gold last read) and holds no more: an operator's retraction took
    them out. None when no snapshot since removed rows (snapshot summaries say so: no scan)."""
    later = _lineage_after(spark, changes.table, mark)
    if not later or not any(int(s.summary.get("deleted-records", 0)) > int(s.summary.get("added-records", 0))
                            for s in later):
        return None
    now = changes.table_rows(spark).select("id")
    return tables.at_snapshot(spark, changes.table, int(mark)).join(now, "id", "left_anti")


def _as_last_read(spark: SparkSession, changes: Changes, mark: str | None) -> DataFrame | None:
    """The changed Silver rows as of `mark`, the Silver snapshot last read (None: that snapshot is gone).

    A changed row can move an aggregate key (a comment re-dated or re-parented): its old key must be recomputed
    too, or the old group keeps counting it.
    """
    later = _lineage_after(spark, changes.table, mark)
    if later is None:
        return None
    if all(s.operation == "append" for s in later):
        # Only new rows since (no MERGE, no delete): nothing had a key before. Spark answers this without a scan.
        return changes.rows(spark).where(F.lit(False))
    ids = changes.rows(spark).select("id")
    # The snapshot summaries bound how many rows changed since: a small batch filters by broadcast.
    added = sum(int(s.summary.get("added-records", 0)) for s in later)
    return tables.at_snapshot(spark, changes.table, int(mark)).join(
        F.broadcast(ids) if added <= tables.BROADCAST_KEYS_MAX else ids, "id", "left_semi")


def _aggregate_keys(table_key: str, posts: list[DataFrame], comments: list[DataFrame]) -> DataFrame:
    """The aggregate keys that these Silver post and comment rows fall under."""
    if table_key == "subreddit_daily":
        frames = [df.select("subreddit_id", "created_date") for df in posts + comments]
    else:
        frames = [df.select(F.col("id").alias("post_id")) for df in posts] + [df.select("post_id") for df in comments]
    return reduce(DataFrame.unionByName, frames).distinct()


AGGREGATE_KEYS = {"subreddit_daily": ["subreddit_id", "activity_date"], "post_engagement": ["post_id"]}


def _held_but_absent(spark: SparkSession, gold_table: str, merge_keys: list[str], present: DataFrame,
                     recomputed: DataFrame | None = None) -> DataFrame | None:
    """Keys Gold holds (among `recomputed`; on a full pass, all of them) that `present` (what Silver gives now)
    lacks: a subreddit-day everything moved out of, a post or comment an operator retracted. Persisted and
    counted before the upsert, because it may read Gold itself."""
    if recomputed is not None:
        # Both sides are persisted by the caller: the anti-join is small and cheap to evaluate twice.
        absent = recomputed.join(present.select(*merge_keys), merge_keys, "left_anti")
        if absent.isEmpty():
            return absent
        # A recomputed key Gold never held (the comments of a post that has not arrived) is no deletion: only the
        # keys Gold has are deleted, so nothing is counted, or committed, for the others.
        return spark.table(gold_table).select(*merge_keys).join(absent, merge_keys, "left_semi").persist()
    snap = tables.current_snapshot(spark, gold_table)
    if not snap or not int(snap.summary.get("total-records", 0)):
        return None
    held = spark.table(gold_table).select(*merge_keys)
    return held.join(present.select(*merge_keys), merge_keys, "left_anti").persist()


def update_gold_aggregate(spark: SparkSession, table_key: str, now: datetime | None = None) -> GoldResult:
    """Recompute `subreddit_daily` or `post_engagement` for the keys changed Silver rows touch, before and after."""
    _named(AGGREGATE_KEYS, table_key, "Gold aggregate")
    tables.ensure_tables(spark)
    return tables.retrying(GOLD[table_key].identifier, lambda: _update_gold_aggregate(spark, table_key, now))


def _update_gold_aggregate(spark: SparkSession, table_key: str, now: datetime | None) -> GoldResult:
    gold_table = GOLD[table_key].identifier
    daily = table_key == "subreddit_daily"
    base = tables.snapshot_id(spark, gold_table)
    posts_t, comments_t = SILVER[Entity.POST].identifier, SILVER[Entity.COMMENT].identifier
    marks = tables.table_properties(spark, gold_table)  # watermarks and read snapshots: one metadata load
    post_changes = changes_since(spark, posts_t, marks.get(tables.WATERMARK_PREFIX + posts_t))
    comment_changes = changes_since(spark, comments_t, marks.get(tables.WATERMARK_PREFIX + comments_t))
    changes = (post_changes, comment_changes)
    removed = {c.table: r for c in changes
               if (r := _removed_rows(spark, c, marks.get(tables.READ_SNAPSHOT_PREFIX + c.table))) is not None}
    # A Silver snapshot last read that has left Silver's history (expired, rolled back): what Silver lost since
    # cannot be told, so everything is recomputed, even with no new change.
    expired = [c.table for c in changes if (m := marks.get(tables.READ_SNAPSHOT_PREFIX + c.table)) is not None
               and _lineage_after(spark, c.table, m) is None]
    parts_base = tables.snapshot_id(spark, PARTS) if daily else None
    parts_astray = daily and not _parts_agree(spark, marks.get(PARTS_MARK), gold_table, base, parts_base)
    if parts_astray and base is not None:
        log.warning("%s: it or its parts table was written since it was last combined from them (%s, now %s); "
                    "one full pass rebuilds both", gold_table, marks.get(PARTS_MARK), parts_mark(parts_base, base))
    if not any(c.pending for c in changes) and not removed and not expired and not parts_astray:
        return GoldResult(gold_table, full_rebuild=any(c.since is None for c in changes))
    # Posts keep their post_engagement key (their id); everything else can move.
    movable = changes if daily else (comment_changes,)
    before = {c.table: _as_last_read(spark, c, marks.get(tables.READ_SNAPSHOT_PREFIX + c.table))
              for c in movable if c.pending and c.since is not None}
    # No watermark, or the Silver version last read is gone (rolled back, expired): recompute everything.
    full = (any(c.since is None for c in changes) or any(b is None for b in before.values()) or bool(expired)
            or parts_astray)
    result = GoldResult(gold_table, full_rebuild=full)
    posts, comments = post_changes.table_rows(spark), comment_changes.table_rows(spark)
    keys = None
    if not full:
        keys = _aggregate_keys(
            table_key,
            [post_changes.rows(spark)] + [f[posts_t] for f in (before, removed) if posts_t in f],
            [comment_changes.rows(spark)] + [f[comments_t] for f in (before, removed) if comments_t in f],
        ).persist()
        if not daily:
            posts = posts.join(keys.withColumnRenamed("post_id", "id"), "id", "left_semi")
            comments = comments.join(keys, "post_id", "left_semi")
    merge_keys = AGGREGATE_KEYS[table_key]
    loaded_at = now or utcnow()
    parts = parts_change = None
    if daily:
        # Only the sources that changed are read from Silver; the other's sums come from the parts table.
        changed = {e for e, c in ((Entity.POST, post_changes), (Entity.COMMENT, comment_changes))
                   if full or c.pending or c.table in removed}
        parts, parts_change = _parts_for(spark, {Entity.POST: posts, Entity.COMMENT: comments}, changed, keys,
                                           parts_base, loaded_at)
        out = gold_tf.subreddit_daily_from_parts(parts, loaded_at).persist()
    else:
        out = gold_tf.post_engagement(posts, comments, loaded_at).persist()
    recomputed = None if keys is None else keys.withColumnRenamed("created_date", "activity_date")
    gone = _held_but_absent(spark, gold_table, merge_keys, out, recomputed)
    try:
        result.rows_written = out.count()
        result.rows_deleted = gone.count() if gone is not None else 0
        tables.expect_unchanged(spark, gold_table, base)

        def write_gold() -> None:
            if result.rows_written:
                tables.upsert(spark, gold_table, out, merge_keys,
                              small_source=result.rows_written <= tables.BROADCAST_KEYS_MAX)
            if result.rows_deleted:
                tables.merge(spark, gold_table, gone, merge_keys, "WHEN MATCHED THEN DELETE")

        also = {}
        if daily:
            # Two tables, two commits, made side by side (each is mostly waiting on planning and the catalog). A run
            # that dies before the marks leaves either table at a snapshot they do not name: the next run rebuilds.
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="parts") as pool:
                parts_done = pool.submit(in_this_thread_context(spark, commit_parts), spark, parts,
                                         parts_change, parts_base)
                write_gold()
                parts_snapshot = parts_done.result()
            also[PARTS_MARK] = parts_mark(parts_snapshot, tables.snapshot_id(spark, gold_table))
        else:
            write_gold()
    finally:
        for df in (gone, out, parts, keys):
            if df is not None:
                df.unpersist()
    result.watermarks = {c.table: str(c.until) for c in changes if c.until is not None}
    tables.set_watermarks(spark, gold_table, result.watermarks,
                          read_snapshots={c.table: c.snapshot_id for c in changes if c.snapshot_id is not None},
                          also=also)
    return result


PARTS = GOLD_SUBREDDIT_DAILY_PARTS.identifier
PARTS_KEYS = ["subreddit_id", "activity_date", "source"]
# On gold.subreddit_daily: the parts table's snapshot its rows were combined from, and its own snapshot then.
# Either table written since by anything else (a run that died between the parts' commit and the marks, older
# code, a hand edit) and the parts are not trusted: one full pass rebuilds both.
PARTS_MARK = "lakehouse.parts-snapshot"


def parts_mark(parts_snapshot: int | str | None, gold_snapshot: int | None) -> str:
    return f"{parts_snapshot}@{gold_snapshot}"


def _parts_agree(spark: SparkSession, mark: str | None, gold_table: str, gold_snapshot: int | None,
                 parts_snapshot: int | None) -> bool:
    """Whether Gold and its parts are as the last run left them: the mark names their current snapshots, or ones
    after which only maintenance committed (compaction and manifest rewrites, `replace`, change no row)."""
    if mark == parts_mark(parts_snapshot, gold_snapshot):
        return True
    marked = (mark or "").split("@")
    return len(marked) == 2 and all(
        _only_rewritten_since(spark, table, m, current)
        for table, m, current in ((PARTS, marked[0], parts_snapshot), (gold_table, marked[1], gold_snapshot)))


def _only_rewritten_since(spark: SparkSession, table: str, mark: str, current: int | None) -> bool:
    if mark == str(current):
        return True
    if not mark.lstrip("-").isdigit():  # "none": another writer came between
        return False
    later = _lineage_after(spark, table, mark)
    return later is not None and all(s.operation == "replace" for s in later)


def _parts_for(
    spark: SparkSession, silver: dict[Entity, DataFrame], changed: set[Entity], keys: DataFrame | None,
    parts_base: int | None, loaded_at: datetime,
) -> tuple[DataFrame, DataFrame | None]:
    """The parts of the subreddit-days `keys` names (None: every day): recomputed from Silver for the `changed`
    sources, read from the parts table (at `parts_base`) for the others; persisted. Also the MERGE source that
    brings the parts table there (None: replace it whole): every recomputed (day, source), with its new part or,
    gone, a null `items`."""
    if keys is None:
        return gold_tf.all_daily_parts(silver[Entity.POST], silver[Entity.COMMENT], loaded_at).persist(), None
    days = keys.withColumnRenamed("created_date", "activity_date")
    by_day = ["subreddit_id", "activity_date"]
    # The date list lets Iceberg prune partitions (and the parts table's files) before the key join.
    dates = [r.created_date for r in keys.select("created_date").distinct().collect()]
    frames = []
    for entity in Entity:
        if entity in changed:
            rows = silver[entity].where(F.col("created_date").isin(dates)).join(
                F.broadcast(keys), ["subreddit_id", "created_date"], "left_semi")
            frames.append(gold_tf.daily_parts(rows, entity, loaded_at))
        elif parts_base is not None:
            held = tables.at_snapshot(spark, PARTS, parts_base).where(
                (F.col("source") == entity.value) & F.col("activity_date").isin(dates))
            frames.append(held.join(F.broadcast(days), by_day, "left_semi"))
    parts = reduce(DataFrame.unionByName, frames).persist()
    sources = spark.createDataFrame([(e.value,) for e in Entity if e in changed], "source string")
    slots = days.crossJoin(F.broadcast(sources))
    change = slots.join(parts, PARTS_KEYS, "left").select(*GOLD_SUBREDDIT_DAILY_PARTS.names)
    return parts, change


def commit_parts(spark: SparkSession, parts: DataFrame, change: DataFrame | None, base: int | None) -> str:
    """Bring the parts table to `parts` in one commit; the snapshot to record as the one Gold was combined from
    ("none" when another writer's commit came between: the next run then rebuilds the parts)."""
    tables.expect_unchanged(spark, PARTS, base)
    if change is None:
        tables.replace_all(spark, PARTS, parts, base)
    else:
        tables.merge(spark, PARTS, change, PARTS_KEYS,
                     "WHEN MATCHED AND s.items IS NULL THEN DELETE WHEN MATCHED THEN UPDATE SET * "
                     "WHEN NOT MATCHED AND s.items IS NOT NULL THEN INSERT *")
    snap = tables.current_snapshot(spark, PARTS)
    if snap is None or snap.snapshot_id == base:
        return str(base)  # nothing to change: still the parts Gold agrees with
    return str(snap.snapshot_id) if snap.parent_id == base else "none"


def gold_update(table_key: str) -> Callable[[SparkSession, str], GoldResult]:
    """How a Gold table is updated from Silver; an unknown table name fails, naming the tables there are."""
    updates = {key: update_gold_entity for key in ENTITY_GOLD} | {key: update_gold_aggregate for key in AGGREGATE_KEYS}
    return _named(updates, table_key, "Gold table")


def _named(known: dict, name: str, what: str):
    try:
        return known[name]
    except KeyError:
        raise UnknownTable(f"no {what} {name!r}; there are: {', '.join(sorted(known))}") from None


class UnknownTable(UserError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]
