"""Bronze: the step that ingests landed files as received (with ingestion metadata and the ingestion log), and
the checks of what it ingested. No Dagster here, so an AWS job runs the same step; the asset is
lakehouse_assets/bronze.py, the pure transforms lakehouse/transforms/bronze.py, the contracts lakehouse/contracts.py.

The step is idempotent (see CONVENTIONS.md): it may be re-run after a crash at any point and the tables end up the
same as if it had run once. Each check returns a `CheckOutcome` (lakehouse/checks.py).
"""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from lakehouse import checks, tables
from lakehouse.checks import CheckOutcome
from lakehouse.clock import utcnow
from lakehouse.contracts import BRONZE, INGESTION_LOG, SOURCE_HEADERS, Entity
from lakehouse.ingestion import LOADED, REJECTED, ROLLED_BACK, IngestionIndex, LogEntry, current
from lakehouse.landing import LandedFile, LandingZone, check_key, unreadable_name
from lakehouse.transforms import bronze as bronze_tf
from lakehouse.writers import Liveness, default_liveness, process_writer

log = logging.getLogger(__name__)


# --- the step -------------------------------------------------------------------------------------------------

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


# The whole log as of one snapshot, oldest first: read again only once something was logged. Two snapshots, not
# more: the log grows with every file ever landed, and only the latest one and the one just before it (a thread
# still reading while another logs) are asked for.
_LOG_AT = tables.SnapshotMemo(2)


def log_history(spark: SparkSession, entity: Entity) -> list[dict]:
    """Every row of the entity's ingestion log, every column (a few rows per file version: small), oldest first."""
    snapshot = tables.snapshot_id(spark, INGESTION_LOG.identifier)
    if snapshot is None:
        return []
    rows = _LOG_AT.get(snapshot, lambda: sorted(
        (r.asDict() for r in tables.at_snapshot(spark, INGESTION_LOG.identifier, snapshot).collect()),
        key=lambda r: r["ingested_at"]))
    return [dict(r) for r in rows if r["entity"] == entity.value]


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
        _delete_batch(spark, table, batch)
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


# Spark packs small files into one read task while the bytes of the task stay under its split size, each file
# counting its size plus this "open cost". An open cost above any split size closes the task after every file.
_OWN_PARTITION_OPEN_COST = str(1 << 50)


@contextlib.contextmanager
def files_own_partitions(spark: SparkSession):
    """While inside, every file a read plans gets a read task (partition) of its own: its rows are numbered by
    their position in the task (bronze_tf.to_bronze). The setting is the session's, which the plan reads when
    the write runs; `bronze_metadata` checks every file is numbered 1..n."""
    key = "spark.sql.files.openCostInBytes"
    before = spark.conf.get(key, None)
    spark.conf.set(key, _OWN_PARTITION_OPEN_COST)
    try:
        yield
    finally:
        spark.conf.unset(key) if before is None else spark.conf.set(key, before)


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
    candidates: list[tuple[LandedFile, bronze_tf.HeaderCheck]] = []
    for f in pending:
        if f.refusal is not None:  # the landing zone will not read it (a symbolic link out of it, a loop)
            result.files.append(FileOutcome(f.key, REJECTED, reason=f.refusal.reason, message=f.refusal.message))
            continue
        if why := unreadable_name(f.key):
            result.files.append(FileOutcome(f.key, REJECTED, reason="unreadable_name", message=why))
            continue
        check = bronze_tf.check_header(landing.read_head(f), entity)
        if check.ok:
            candidates.append((f, check))
        else:
            result.files.append(FileOutcome(f.key, REJECTED, reason=check.reason, message=check.message))
    if candidates:
        scans = _append_while_scanning(spark, landing, table, entity, candidates, result.batch_id, now, writer)
        # Count what was committed, not what was meant to be.
        counts: dict[str, tuple[int, int]] = {}
        for r in committed_files(spark, table, result.batch_id):
            n, bad = counts.get(r._source_uri, (0, 0))
            counts[r._source_uri] = (n + r.rows, bad + r.malformed)
        taken = _taken_meanwhile(spark, entity, result.batch_id, alive, log_snapshot, entries)
        # A problem of one file stays with that file: its rows are taken out of the batch again, and it is logged
        # as rejected with what differed, so the other files go on and Bronze's gates never fail for it.
        taken_out = {}
        for f, _ in candidates:
            scan, n = scans[f], counts.get(f.uri, (0, 0))[0]
            if (f.uri, f.etag) in taken:
                taken_out[f] = (scan, SKIPPED, "another run took this file version first")
            elif scan.reason:
                taken_out[f] = (scan, scan.reason, scan.message)
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
        in_batch = [f for f in taken_out if f.uri in counts]  # files with rows in the batch (a retry leaves some out)
        if in_batch:
            _delete_batch(spark, table, result.batch_id, [f.uri for f in in_batch])
        for f, (scan, reason, message) in taken_out.items():
            status, reason = (SKIPPED, None) if reason == SKIPPED else (REJECTED, reason)
            result.files.append(FileOutcome(f.key, status, reason=reason, message=message,
                                            source_records=scan.records))
        accepted = [(f, check, scans[f]) for f, check in candidates if f not in taken_out]
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


def _scan(landing: LandingZone, f: LandedFile) -> bronze_tf.FileScan:
    with landing.open(f) as stream:
        return bronze_tf.scan_records(stream)


def _first_loaded(spark: SparkSession, entity: Entity, files: list[LandedFile]) -> dict[tuple[str, str], datetime]:
    """When each of these file versions was first loaded, for those loaded before (a retracted version an operator
    reprocesses). Its rows get that time again as `_ingested_at`, their place in Silver's version order (the latest
    ingestion wins): taking a retraction back puts every table back as it was, where a new time would make an old
    export newer than the files that came after it."""
    wanted = {(f.uri, f.etag) for f in files}
    first: dict[tuple[str, str], datetime] = {}
    for r in log_history(spark, entity):  # oldest first
        if r["status"] == LOADED and (version := (r["source_uri"], r["source_etag"])) in wanted:
            first.setdefault(version, r["ingested_at"])
    return first


def _writer(spark: SparkSession, table: str, entity: Entity, files: list[tuple[LandedFile, bronze_tf.HeaderCheck]],
            batch_id: str, now: datetime, writer: str):
    """The Spark write that appends the files' rows to Bronze as one batch (one commit) when it is `.append()`ed."""
    # One read per distinct header: columns are matched by name, unknown ones kept as schema drift.
    by_header: dict[tuple[str, ...], list[LandedFile]] = {}
    for f, check in files:
        by_header.setdefault(check.columns, []).append(f)
    raw = None
    for header, group in by_header.items():
        part = bronze_tf.read_csv(spark, [f.read_location for f in group], entity, header)
        raw = part if raw is None else raw.unionByName(part)
    paths = _spark_file_paths(spark, [f for f, _ in files])
    batch = bronze_tf.to_bronze(raw, paths, batch_id, now, entity, files_own_partitions=True)
    if first_loaded := _first_loaded(spark, entity, [f for f, _ in files]):
        ingested_at = F.col("_ingested_at")
        for (uri, etag), first in first_loaded.items():
            # pyspark reads the log's time back as naive local time: given to Spark as the instant it names.
            ingested_at = F.when((F.col("_source_uri") == uri) & (F.col("_source_etag") == etag),
                                 F.lit(first.astimezone(timezone.utc))).otherwise(ingested_at)
        batch = batch.withColumn("_ingested_at", ingested_at)
    return (
        batch.writeTo(table)
        # A batch has one `_ingested_at` (and a reprocessed version its first load's), so one partition or a few:
        # Iceberg's default hash distribution for a partitioned table would shuffle every raw row of the batch to
        # one task, and its local sort by partition would copy every row once more, before writing it.
        .option("distribution-mode", "none").option("fanout-enabled", "true")
        .option(f"snapshot-property.{tables.BATCH_ID_PROPERTY}", batch_id)
        .option(f"snapshot-property.{tables.WRITER_PROPERTY}", writer)
    )


def _append_while_scanning(
    spark: SparkSession, landing: LandingZone, table: str, entity: Entity,
    files: list[tuple[LandedFile, bronze_tf.HeaderCheck]], batch_id: str, now: datetime, writer: str,
) -> dict[LandedFile, bronze_tf.FileScan]:
    """Append the files to Bronze while Python's strict parser counts their records beside Spark's read.

    The scan is single-threaded Python (9 s of a 3M-row full load) and Spark's read of a sensor's one file keeps
    one core of two busy, so the two run side by side; the caller takes a file the scan rejects out of the
    batch again, as it does a file whose counts differ. Should Spark's read fail on a file the scan rejects
    (a quote never closed makes the rest of the file one field), the append goes again without the rejected
    files. Returns every file's scan.
    """
    # The write is planned before the scan starts: the scan holds the GIL, and each of the planning's Py4J
    # calls would wait for it (6.9 s of planning behind a 7 s scan of 2M comments). The append is one call.
    write = _writer(spark, table, entity, files, batch_id, now, writer)
    pool = ThreadPoolExecutor(1, thread_name_prefix="bronze-scan")
    futures = {f: pool.submit(_scan, landing, f) for f, _ in files}
    try:
        try:
            with files_own_partitions(spark):
                write.append()
        except Exception:
            rejected = {f for f, future in futures.items() if future.result().reason}
            if not rejected:
                raise
            log.warning("Spark could not read a batch holding %d files the CSV scan rejects; appending the "
                        "other %d files without them", len(rejected), len(files) - len(rejected), exc_info=True)
            rest = [(f, check) for f, check in files if f not in rejected]
            if rest:
                with files_own_partitions(spark):
                    _writer(spark, table, entity, rest, batch_id, now, writer).append()
        try:
            scans = {f: future.result() for f, future in futures.items()}
        except BaseException:
            # A file could not be read to the end (an S3 error, a replaced object): nothing of the batch stays.
            _drop_batch(spark, table, batch_id)
            raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return scans


def _delete_batch(spark: SparkSession, table: str, batch_id: str, uris: list[str] | None = None) -> None:
    """Delete a batch's rows from a Bronze table (only those of the files `uris`, when given). The values are
    parameters: a file name is data, never SQL text."""
    args = {"batch": batch_id} | {f"uri{i}": uri for i, uri in enumerate(uris or [])}
    files = f" AND _source_uri IN ({', '.join(f':uri{i}' for i in range(len(uris)))})" if uris else ""
    spark.sql(f"DELETE FROM {table} WHERE _batch_id = :batch{files}", args=args)


def _drop_batch(spark: SparkSession, table: str, batch_id: str) -> None:
    """Take a batch's rows out of Bronze again when its step fails before logging it."""
    try:
        _delete_batch(spark, table, batch_id)
    except Exception:  # the run fails anyway; the next run rolls the orphaned batch back (roll_back_orphans)
        log.exception("could not take batch %s out of %s again", batch_id, table)


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


# --- the checks -----------------------------------------------------------------------------------------------

def latest_batch(entries: list[dict], statuses: tuple[str, ...] = (LOADED, REJECTED)) -> tuple[str | None, list[dict]]:
    settled = [e for e in entries if e["status"] in statuses]
    if not settled:
        return None, []
    batch = settled[-1]["batch_id"]
    return batch, [e for e in settled if e["batch_id"] == batch]


def bronze_header(spark: SparkSession, entity: Entity) -> CheckOutcome:
    """The latest batch's files match the header contract: none rejected, no unknown columns (schema drift)."""
    entries = log_rows(spark, entity)
    batch, files = latest_batch(entries)
    rejected = [f for f in files if f["status"] == REJECTED]
    drift = [f for f in files if f["extra_columns"]]
    reasons = sorted({f["reason"] for f in rejected if f["reason"]})
    parts = []
    if rejected:
        parts.append(f"{len(rejected)} of {len(files)} files rejected ({', '.join(reasons)}); they stay in the landing zone")
    if drift:
        parts.append(f"{len(drift)} files carry columns the contract does not know (kept in _extra_columns)")
    return CheckOutcome(
        passed=not rejected and not drift,
        summary="; ".join(parts) or f"all {len(files)} files of the latest batch match the contract",
        metrics={
            "batch_id": batch or "none",
            "files_in_batch": len(files),
            "rejected_in_batch": len(rejected),
            "drift_files_in_batch": len(drift),
            "rejected_all_time": sum(1 for e in entries if e["status"] == REJECTED),
        },
        sample=[
            {"file": f["source_uri"], "status": f["status"], "reason": f["reason"] or "schema_drift",
             "detail": f["message"] or ", ".join(f["extra_columns"] or [])}
            for f in (rejected + drift)[:checks.SAMPLE_ROWS]
        ],
        sample_columns=["file", "status", "reason", "detail"],
        fingerprint=json.dumps([batch, sorted(f["source_uri"] for f in rejected + drift)]),
    )


def _in_flight(spark: SparkSession, table: str, entries: list[dict], alive: Liveness) -> list[Unsettled]:
    """Batches another live run has appended to Bronze and not logged yet: theirs to settle, not a fault."""
    return [u for u in unsettled_batches(tables.snapshots(spark, table), entries) if alive(u.writer)]


# Per file of a batch, as committed: the step's own count and both checks of the batch read it, from one pass.
_BATCH_FILES = tables.SnapshotMemo(16)


def committed_files(spark: SparkSession, table: str, batch_id: str) -> list:
    """Per (file, version) of one Bronze batch in the table now: its rows, malformed rows, first and last row
    number, distinct row numbers, and rows missing their ingestion time or row number. One pass over the batch
    (its files are pruned by their stats) per snapshot of the table."""
    snapshot = tables.snapshot_id(spark, table)
    if snapshot is None:
        return []
    return _BATCH_FILES.get((table, snapshot, batch_id), lambda: _count_batch(spark, table, snapshot, batch_id))


def _count_batch(spark: SparkSession, table: str, snapshot: int, batch_id: str) -> list:
    row = F.col("_source_row")
    # Distinct row numbers exactly, without shuffling every row: a bitmap of the numbers per file and bucket of
    # 32,768 numbers, counted and summed. A countDistinct of the same column took 3x as long (2.8 s against 0.9 s
    # over 2M comments in 4 files): Spark expands every row for it and shuffles them all by (file, number).
    per_bucket = (
        tables.at_snapshot(spark, table, snapshot).where(F.col("_batch_id") == batch_id)
        .groupBy("_source_uri", "_source_etag", F.expr("bitmap_bucket_number(_source_row)").alias("_bucket"))
        .agg(
            F.count("*").alias("rows"),
            F.count("_raw_record").alias("malformed"),
            F.min(row).alias("first_row"),
            F.max(row).alias("last_row"),
            # bitmap_construct_agg skips nulls, as countDistinct does.
            F.expr("bitmap_count(bitmap_construct_agg(bitmap_bit_position(_source_row)))").alias("distinct_rows"),
            F.sum(F.when(F.col("_ingested_at").isNull() | row.isNull(), 1).otherwise(0)).alias("incomplete"),
        )
    )
    return (
        per_bucket.groupBy("_source_uri", "_source_etag")
        .agg(
            F.sum("rows").alias("rows"),
            F.sum("malformed").alias("malformed"),
            F.min("first_row").alias("first_row"),
            F.max("last_row").alias("last_row"),
            F.sum("distinct_rows").alias("distinct_rows"),
            F.sum("incomplete").alias("incomplete"),
        )
        .collect())


def bronze_row_counts(spark: SparkSession, entity: Entity, alive: Liveness = default_liveness) -> CheckOutcome:
    """Bronze holds the records an independent parser counted in each loaded file; parse errors counted.

    The latest batch is recounted from the table per file; earlier batches by what the log recorded when they
    were committed, and the whole table by its total against the log's (rows of batches another live run has
    not logged yet aside).
    """
    table = BRONZE[entity].identifier
    entries = log_rows(spark, entity)
    in_flight = _in_flight(spark, table, entries, alive)
    loaded = [e for e in entries if e["status"] == LOADED]
    batch, batch_files = latest_batch(entries, (LOADED,))
    # The latest batch is re-counted from the table itself; earlier ones by what was committed at the time.
    actual = {(r._source_uri, r._source_etag): r.rows for r in committed_files(spark, table, batch)} if batch else {}
    mismatched = []
    for e in loaded:
        rows = actual.get((e["source_uri"], e["source_etag"]), 0) if e["batch_id"] == batch else e["rows"]
        if e["source_records"] is not None and rows != e["source_records"]:
            mismatched.append({"file": e["source_uri"], "batch_id": e["batch_id"], "bronze_rows": rows,
                               "records_in_file": e["source_records"]})
    bronze_rows = tables.total_records(spark, table) - sum(u.rows for u in in_flight)
    logged_rows = sum(e["rows"] for e in loaded)
    passed = not mismatched and bronze_rows == logged_rows
    summary = (
        f"{len(mismatched)} files where Bronze's rows differ from the records in the file" if mismatched
        else f"Bronze holds {bronze_rows:,} rows but the ingestion log accounts for {logged_rows:,}" if not passed
        else f"{bronze_rows:,} Bronze rows = the records of {len(loaded)} loaded files"
    )
    return CheckOutcome(
        passed=passed,
        summary=summary,
        metrics={
            "bronze_rows": bronze_rows,
            "logged_rows": logged_rows,
            "records_in_files": sum(e["source_records"] or 0 for e in loaded),
            "files_checked": sum(1 for e in loaded if e["source_records"] is not None),
            "malformed_rows": sum(e["malformed_rows"] for e in loaded),
            "malformed_rows_in_batch": sum(e["malformed_rows"] for e in batch_files),
            "invalid_utf8_records": sum(e["invalid_utf8_records"] or 0 for e in loaded),
            "mismatched_files": len(mismatched),
            "in_flight_batches": len(in_flight),
        },
        sample=mismatched[:checks.SAMPLE_ROWS],
        sample_columns=["file", "batch_id", "bronze_rows", "records_in_file"],
        # The same files off by the same counts, and the table off the log by the same number: the same failure.
        fingerprint=json.dumps([sorted(json.dumps(m, sort_keys=True, default=str) for m in mismatched),
                                bronze_rows - logged_rows]),
    )


def bronze_metadata(spark: SparkSession, entity: Entity, alive: Liveness = default_liveness) -> CheckOutcome:
    """Every Bronze row names its file, version, row and batch: rows numbered 1..n per file, batches all logged
    (or still being written by a live run)."""
    table = BRONZE[entity].identifier
    entries = log_rows(spark, entity)
    statuses = {e["batch_id"]: e["status"] for e in entries}
    in_flight = {u.batch_id for u in _in_flight(spark, table, entries, alive)}
    # Every append to Bronze carries its batch id; each must be settled in the log (or rolled back), unless a
    # live run is still writing it.
    unlogged = [
        s.summary.get(tables.BATCH_ID_PROPERTY, "(none)") for s in tables.snapshots(spark, table)
        if s.operation == "append" and s.summary.get(tables.BATCH_ID_PROPERTY) not in statuses
        and s.summary.get(tables.BATCH_ID_PROPERTY) not in in_flight
    ]
    batch, files = latest_batch(entries, (LOADED,))
    expected = {(f["source_uri"], f["source_etag"]) for f in files}
    bad = []
    rows = 0
    if batch:
        for r in committed_files(spark, table, batch):
            rows += r.rows
            numbered = r.first_row == 1 and r.last_row == r.rows == r.distinct_rows
            if not numbered or r.incomplete or (r._source_uri, r._source_etag) not in expected:
                bad.append({"file": r._source_uri, "rows": r.rows, "first_row": r.first_row, "last_row": r.last_row,
                            "distinct_rows": r.distinct_rows, "in_log": (r._source_uri, r._source_etag) in expected})
    passed = not bad and not unlogged
    return CheckOutcome(
        passed=passed,
        summary=(
            f"{len(bad)} files with gaps, repeats or unknown origin; {len(unlogged)} unlogged appends" if not passed
            else f"{rows:,} rows of the latest batch numbered 1..n in {len(files)} logged files"
        ),
        metrics={"batch_id": batch or "none", "rows_in_batch": rows, "files_in_batch": len(files),
                 "bad_files": len(bad), "unlogged_appends": len(unlogged), "in_flight_batches": len(in_flight)},
        sample=bad[:checks.SAMPLE_ROWS],
        sample_columns=["file", "rows", "first_row", "last_row", "distinct_rows", "in_log"],
        fingerprint=json.dumps([sorted(json.dumps(b, sort_keys=True, default=str) for b in bad), sorted(unlogged)]),
    )
