"""Iceberg table I/O through Spark: creating tables from contracts, upserts, snapshots and watermarks."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from lakehouse.contracts import ALL_TABLES, TableContract
from lakehouse.settings import CATALOG_NAME, NAMESPACES

log = logging.getLogger(__name__)

TABLE_PROPERTIES = {
    "format-version": "2",
    "write.parquet.compression-codec": "zstd",
    # Copy-on-write keeps readers (pyiceberg, DuckDB, Athena) on plain data files with no delete files.
    "write.merge.mode": "copy-on-write",
    "write.update.mode": "copy-on-write",
    "write.delete.mode": "copy-on-write",
    # Small tables, frequent commits: keep metadata from piling up.
    "write.metadata.delete-after-commit.enabled": "true",
    "write.metadata.previous-versions-max": "50",
}
# Where each table keeps the position of its upstream it has processed up to (see CONVENTIONS.md).
WATERMARK_PREFIX = "lakehouse.watermark."
# ... and the snapshot of that upstream it read: the aggregates look up what changed rows were before.
READ_SNAPSHOT_PREFIX = "lakehouse.read-snapshot."
BATCH_ID_PROPERTY = "lakehouse.batch-id"
# Who appended a Bronze batch (lakehouse/writers.py): a batch is rolled back only when its writer is gone.
WRITER_PROPERTY = "lakehouse.writer"
# How often a commit that lost a race with another writer (Iceberg's optimistic concurrency) is tried again.
COMMIT_ATTEMPTS = 5


class Conflict(RuntimeError):
    """Another writer committed to the table after this statement read it (Iceberg validation failed)."""


def is_conflict(exc: Exception) -> bool:
    text = str(exc)
    return any(name in text for name in ("ValidationException", "CommitFailedException",
                                         "Found conflicting files", "Cannot commit"))


# Tables are ensured once per driver JVM, not once per session: every run on the warm engine is a session (and a
# process) of its own, and ensuring every table is ~30 catalog operations. What a JVM has ensured is a system
# property of that JVM, one key per table naming the catalog and the table's DDL: another lakehouse home or a
# changed contract is ensured again.
_ENSURED_PROPERTY = "lakehouse.tables-ensured"


def _ensured_key(spark: SparkSession, contract: TableContract) -> str:
    catalog = f"spark.sql.catalog.{CATALOG_NAME}"
    basis = "|".join([spark.conf.get(f"{catalog}.uri", ""), spark.conf.get(f"{catalog}.warehouse", ""),
                      contract.create_ddl(TABLE_PROPERTIES)])
    return hashlib.sha1(basis.encode()).hexdigest()[:16]


def forget_ensured(spark: SparkSession) -> None:
    """Forget which tables exist (after tables were dropped behind the driver's back, as tests do)."""
    spark._jvm.java.lang.System.clearProperty(_ENSURED_PROPERTY)


def ensure_tables(spark: SparkSession, contracts: tuple[TableContract, ...] = ALL_TABLES) -> None:
    """Create namespaces and tables that do not exist yet; once per driver JVM (every step calls it)."""
    system = spark._jvm.java.lang.System
    ensured = set(filter(None, (system.getProperty(_ENSURED_PROPERTY) or "").split(",")))
    todo = [(c, key) for c in contracts if (key := _ensured_key(spark, c)) not in ensured]
    if not todo:
        return
    for ns in NAMESPACES:
        spark.sql(f"CREATE NAMESPACE IF NOT EXISTS {ns}")
    for contract, key in todo:
        spark.sql(contract.create_ddl(TABLE_PROPERTIES))
        _evolve(spark, contract)
        ensured.add(key)
    system.setProperty(_ENSURED_PROPERTY, ",".join(sorted(ensured)))


def _evolve(spark: SparkSession, contract: TableContract) -> None:
    """Bring a table created by an older contract up to date in place (Iceberg schema evolution, no rewrite):
    columns added since are added (nullable) where the contract puts them, and a column the contract now
    allows to be null drops its NOT NULL."""
    fields = {f.name: f for f in spark.table(contract.identifier).schema.fields}
    previous = None
    for column in contract.columns:
        if column.name not in fields:
            if not column.nullable:
                raise ValueError(f"{contract.identifier}: required column {column.name} cannot be added to existing rows")
            where = f" AFTER `{previous}`" if previous else " FIRST"
            spark.sql(f"ALTER TABLE {contract.identifier} ADD COLUMN {column.ddl()}{where}")
        elif column.nullable and not fields[column.name].nullable:
            spark.sql(f"ALTER TABLE {contract.identifier} ALTER COLUMN `{column.name}` DROP NOT NULL")
        previous = column.name


def spark_schema(spark: SparkSession, contract: TableContract) -> StructType:
    """The contract as a Spark schema, nullability included (Iceberg refuses nullable data for required columns)."""
    ddl = ", ".join(f"`{c.name}` {c.type}" for c in contract.columns)
    parsed = StructType.fromJson(json.loads(spark._jvm.org.apache.spark.sql.types.StructType.fromDDL(ddl).json()))
    for f, c in zip(parsed.fields, contract.columns):
        f.nullable = c.nullable
    return parsed


@dataclass(frozen=True)
class Snapshot:
    snapshot_id: int
    parent_id: int | None
    operation: str
    summary: dict[str, str]
    timestamp_ms: int = 0  # when it was committed


def iceberg_table(spark: SparkSession, table: str):
    """The table's Java Iceberg object from Spark's own catalog, refreshed: metadata without a Spark job."""
    # Named with its catalog: outside `spark.sql` (another thread, no active session) the default catalog is
    # Spark's own, not the lakehouse's.
    name = table if table.startswith(f"{CATALOG_NAME}.") else f"{CATALOG_NAME}.{table}"
    jtable = spark._jvm.org.apache.iceberg.spark.Spark3Util.loadIcebergTable(spark._jsparkSession, name)
    jtable.refresh()
    return jtable


def _from_json(snap: dict) -> Snapshot:
    summary = dict(snap.get("summary", {}))
    operation = summary.pop("operation", None)
    return Snapshot(snap["snapshot-id"], snap.get("parent-snapshot-id"), operation, summary, snap.get("timestamp-ms", 0))


def _metadata(spark: SparkSession, table: str) -> dict:
    # One call for the whole table metadata as JSON: walking snapshot objects over Py4J costs ~40 calls a snapshot,
    # seconds once a table has a few hundred.
    jtable = iceberg_table(spark, table)
    return json.loads(spark._jvm.org.apache.iceberg.TableMetadataParser.toJson(jtable.operations().current()))


def _lineage(metadata: dict) -> list[Snapshot]:
    by_id = {snap["snapshot-id"]: _from_json(snap) for snap in metadata.get("snapshots", [])}
    lineage, current = [], metadata.get("current-snapshot-id")
    current = None if current in (None, -1) else current
    while current is not None and current in by_id:
        lineage.append(by_id[current])
        current = by_id[current].parent_id
    return lineage[::-1]


def snapshots(spark: SparkSession, table: str) -> list[Snapshot]:
    """The table's current lineage, oldest first (metadata only, no data read)."""
    return _lineage(_metadata(spark, table))


def current_snapshot(spark: SparkSession, table: str) -> Snapshot | None:
    jsnap = iceberg_table(spark, table).currentSnapshot()
    if jsnap is None:
        return None
    # As JSON in one Py4J call: reading the summary map entry by entry costs two round trips an entry.
    return _from_json(json.loads(spark._jvm.org.apache.iceberg.SnapshotParser.toJson(jsnap)))


def total_records(spark: SparkSession, table: str) -> int:
    """Row count from the current snapshot's summary: no data read."""
    snap = current_snapshot(spark, table)
    return int(snap.summary.get("total-records", 0)) if snap else 0


def table_properties(spark: SparkSession, table: str) -> dict[str, str]:
    # As JSON in one Py4J call (Iceberg's own mapper), not entry by entry: a table carries a dozen marks.
    props = iceberg_table(spark, table).properties()
    return json.loads(spark._jvm.org.apache.iceberg.util.JsonUtil.mapper().writeValueAsString(props))


# --- a step's marks: they travel in the commit of the data they describe -----------------------------------------
#
# A step's marks (its watermarks, the source snapshots it read, its own extras) are one JSON object in the summary
# of the snapshot that wrote the data (MARKS_PROPERTY): data and marks commit together or not at all, there is no
# second commit for them, and a rollback of the table takes its marks back with its rows. A commit that does not
# carry marks (a retraction, compaction, a hand edit) leaves the last ones standing.

MARKS_PROPERTY = "lakehouse.marks"
STEP_MARK_PREFIXES = (WATERMARK_PREFIX, READ_SNAPSHOT_PREFIX, "lakehouse.parts-snapshot")


@dataclass(frozen=True)
class Marks:
    values: dict[str, str]
    carrier: int | None = None  # the snapshot whose commit carried them; None: none does (see `step_marks`)


def step_marks(spark: SparkSession, table: str) -> Marks:
    """The marks of the newest snapshot in the table's lineage that carries any (one metadata read).

    When no snapshot carries any (a table its step never wrote, or whose carrying snapshot was expired or rolled
    back by hand): the marks an older version of the lakehouse kept as table properties, or none, and the step
    makes one full pass."""
    metadata = _metadata(spark, table)
    for snap in reversed(_lineage(metadata)):
        raw = snap.summary.get(MARKS_PROPERTY)
        if raw is not None:
            return Marks(json.loads(raw), snap.snapshot_id)
    props = metadata.get("properties", {})
    return Marks({k: v for k, v in props.items() if k.startswith(STEP_MARK_PREFIXES)})


def watermark(spark: SparkSession, table: str, source: str) -> str | None:
    return step_marks(spark, table).values.get(WATERMARK_PREFIX + source)


def marks_after(
    spark: SparkSession, table: str, marks: dict[str, str], read_snapshots: dict[str, int] | None = None,
    also: dict[str, str] | None = None,
) -> dict[str, str]:
    """The table's marks once it has processed its sources up to `marks` (and, if given, read them at the
    snapshots `read_snapshots`; `also`: further marks of the step): the current ones with these moved."""
    values = dict(step_marks(spark, table).values)
    values.update({WATERMARK_PREFIX + k: v for k, v in marks.items()})
    values.update({READ_SNAPSHOT_PREFIX + k: str(v) for k, v in (read_snapshots or {}).items()})
    values.update(also or {})
    return values


def _marks_json(values: dict[str, str]) -> str:
    return json.dumps(values, sort_keys=True, separators=(",", ":"))


def ensure_marked(spark: SparkSession, table: str, values: dict[str, str]) -> None:
    """Make `values` the table's marks: already so when the step's data commit carried them; else (nothing to
    write, or a run whose write was interrupted) a commit that changes no row carries them."""
    metadata = _metadata(spark, table)
    lineage = _lineage(metadata)
    if not (lineage and lineage[-1].summary.get(MARKS_PROPERTY) == _marks_json(values)):
        append = iceberg_table(spark, table).newAppend()  # no files: a snapshot that changes no row
        append.set(MARKS_PROPERTY, _marks_json(values))
        append.commit()
    # Marks an older version kept as table properties are carried now: dropped, so that they can never stand in
    # for the carried ones (were those expired by hand).
    unset_properties(spark, table, [k for k in metadata.get("properties", {}) if k.startswith(STEP_MARK_PREFIXES)])


def set_watermarks(
    spark: SparkSession, table: str, marks: dict[str, str], read_snapshots: dict[str, int] | None = None,
    also: dict[str, str] | None = None,
) -> None:
    """Move the table's marks with no data to commit beside them (operators' tools and tests)."""
    ensure_marked(spark, table, marks_after(spark, table, marks, read_snapshots, also))


class _Call:
    """`write` as a java.util.concurrent.Callable, remembering what it raised (py4j wraps it on the way back)."""

    def __init__(self, write: Callable[[], Any]):
        self.write, self.error = write, None

    def call(self):
        try:
            self.write()
        except BaseException as exc:
            self.error = exc
            raise
        return None

    class Java:
        implements = ["java.util.concurrent.Callable"]


def carrying_marks(spark: SparkSession, values: dict[str, str] | None, write: Callable[[], Any]) -> None:
    """Run `write` so that the Iceberg commits it makes on this thread carry `values` (Iceberg's CommitMetadata:
    the Spark SQL statements it runs come back into `write` on this same thread, over pyspark's pinned-thread
    gateway, so no callback server is involved)."""
    if not values:
        write()
        return
    from py4j.clientserver import ClientServer

    gateway = spark.sparkContext._gateway
    if not isinstance(gateway, ClientServer):  # PYSPARK_PIN_THREAD=false: calls back through a callback server
        from pyspark.java_gateway import ensure_callback_server_started
        ensure_callback_server_started(gateway)
    jvm = spark._jvm
    props = jvm.java.util.HashMap()
    props.put(MARKS_PROPERTY, _marks_json(values))
    call = _Call(write)
    try:
        jvm.org.apache.iceberg.spark.CommitMetadata.withCommitProperties(
            props, call, jvm.java.lang.Class.forName("java.lang.RuntimeException"))
    except Exception:
        if call.error is not None:
            raise call.error from None  # what `write` raised, as if it ran here (a commit conflict stays one)
        raise


def at_snapshot(spark: SparkSession, table: str, snapshot_id: int) -> DataFrame:
    """The table as it was at one snapshot (Iceberg time travel)."""
    return spark.sql(f"SELECT * FROM {table} VERSION AS OF {int(snapshot_id)}")


class SnapshotMemo:
    """Values read from a table at one snapshot, computed once per process. A snapshot never changes, so neither
    does what is read from it, though a run's steps and their checks (two threads) ask for the same ones a dozen
    times. (Snapshot ids are random 64-bit numbers: a table dropped and created again does not meet its old ids.)"""

    def __init__(self, size: int):
        self.size = size
        self.values: dict = {}
        self.locks: dict = {}
        self.guard = threading.Lock()

    def get(self, key, read: Callable[[], Any]) -> Any:
        with self.guard:
            lock = self.locks.setdefault(key, threading.Lock())
        with lock:  # a second thread asking for the same key waits for the first one's read
            with self.guard:
                if key in self.values:
                    return self.values[key]
            value = read()
            with self.guard:
                if len(self.values) >= self.size:
                    self.values.clear()
                    self.locks = {key: lock}
                self.values[key] = value
            return value


_LATEST = SnapshotMemo(1024)


def latest_micros(spark: SparkSession, table: str, snapshot_id: int, column: str) -> int | None:
    """The latest value of timestamp `column` in `table` at `snapshot_id`, in micros (None: no rows)."""
    # Answered from file statistics (Iceberg aggregate push-down), not by scanning the table.
    return _LATEST.get((table, snapshot_id, column), lambda: at_snapshot(spark, table, snapshot_id).select(
        F.unix_micros(F.max(column)).alias("m")).first().m)


def set_properties(spark: SparkSession, table: str, props: dict[str, str | None]) -> None:
    """Set table properties, removing those given as None, in one metadata-only commit (no new snapshot, no data
    rewritten): they change together or not at all.

    Through Iceberg's Java API, never SQL text: a value is stored exactly as given, whatever it holds (an
    operator's reason with quotes, backslashes, newlines), where `ALTER TABLE ... SET TBLPROPERTIES` would have it
    parsed and unescaped by Spark. The commit retries by itself on the table as it is when another writer
    committed meanwhile. Nothing is left holding the old properties: readers load the table from the catalog
    (`iceberg_table` refreshes it), and where the catalog caches tables (AWS) this commit went through the cached
    table itself.
    """
    if not props:
        return
    update = iceberg_table(spark, table).updateProperties()
    for key, value in props.items():
        if value is None:
            update.remove(key)
        else:
            update.set(key, value)
    update.commit()


def unset_properties(spark: SparkSession, table: str, keys: Iterable[str]) -> None:
    """Remove table properties (an absent one is no error), in one metadata-only commit."""
    set_properties(spark, table, dict.fromkeys(keys))


def merge(spark: SparkSession, table: str, source: DataFrame, keys: list[str], clause: str,
          marks: dict[str, str] | None = None) -> None:
    """`MERGE INTO table USING source ON keys <clause>` through a temporary view; its commit carries `marks`.

    Copy-on-write MERGE validates at commit that no other writer added or removed data since it read the table
    (Iceberg's serializable isolation); losing that race raises `Conflict`, and nothing was committed.
    """
    view = f"_merge_{uuid.uuid4().hex[:8]}"
    source.createOrReplaceTempView(view)
    on = " AND ".join(f"t.`{k}` = s.`{k}`" for k in keys)
    try:
        carrying_marks(spark, marks, lambda: spark.sql(f"MERGE INTO {table} t USING {view} s ON {on} {clause}"))
    except Exception as exc:  # py4j wraps Iceberg's exceptions
        if is_conflict(exc):
            raise Conflict(f"{table}: another writer committed first") from exc
        raise
    finally:
        spark.catalog.dropTempView(view)


def snapshot_id(spark: SparkSession, table: str) -> int | None:
    snap = current_snapshot(spark, table)
    return snap.snapshot_id if snap else None


def expect_unchanged(spark: SparkSession, table: str, since: int | None) -> None:
    """Raise `Conflict` when another writer committed to `table` after this step read it at `since`.

    A step that derives what it writes from what it read (Gold from Silver) starts again rather than write over a
    newer result; the MERGE's own validation covers the rest of the way to its commit."""
    if snapshot_id(spark, table) != since:
        raise Conflict(f"{table} changed since it was read")


def retrying(what: str, attempt_once, attempts: int = COMMIT_ATTEMPTS):
    """Run `attempt_once()` again while it loses commit races (`Conflict`); each attempt re-reads the table."""
    for attempt in range(1, attempts + 1):
        try:
            return attempt_once()
        except Conflict:
            if attempt == attempts:
                raise
            log.warning("%s lost a commit race (attempt %d of %d); trying again", what, attempt, attempts)
            time.sleep(0.2 * attempt)


# Up to this many source rows, the table's keys are filtered by a broadcast of the source's keys before the
# join: an incremental batch then reads the key columns once and shuffles only its own rows, not the table.
BROADCAST_KEYS_MAX = 200_000


def keys_present(target: DataFrame, source: DataFrame, keys: list[str], small_source: bool) -> DataFrame:
    """`target` restricted to the keys `source` holds."""
    if not small_source:
        return target
    return target.join(F.broadcast(source.select(*keys).distinct()), keys, "left_semi")


def upsert(
    spark: SparkSession, table: str, source: DataFrame, keys: list[str], small_source: bool = False,
    update_if: str | None = None, stamp: str | None = None, marks: dict[str, str] | None = None,
) -> None:
    """MERGE `source` into `table` by `keys` (source holds one row per key) in one commit, which carries `marks`.

    One MERGE, not an append of new keys beside a MERGE of present ones: a plain append is never validated, so
    two overlapping runs could both append the same new key. `update_if` (SQL over `t.` and `s.`) limits which
    present rows are replaced. `stamp` names a timestamp column set to the statement's own time: a MERGE that
    commits was planned after every commit before it (else its validation fails), so stamps follow commit order
    and a reader tracking changes by that column misses none. `small_source` (at most BROADCAST_KEYS_MAX rows)
    broadcasts the source, so the table's keys are joined without a shuffle.
    """
    source = F.broadcast(source) if small_source else source
    values = {c: ("current_timestamp()" if c == stamp else f"s.`{c}`") for c in source.columns}
    update = "UPDATE SET " + ", ".join(f"t.`{c}` = {v}" for c, v in values.items())
    insert = f"INSERT ({', '.join(f'`{c}`' for c in values)}) VALUES ({', '.join(values.values())})"
    matched = f"WHEN MATCHED AND ({update_if}) THEN {update}" if update_if else f"WHEN MATCHED THEN {update}"
    merge(spark, table, source, keys, f"{matched} WHEN NOT MATCHED THEN {insert}", marks)


def replace_all(spark: SparkSession, table: str, rows: DataFrame, read_at: int | None,
                marks: dict[str, str] | None = None, properties: dict[str, str] | None = None) -> None:
    """Replace every row of `table` in one commit (readers see the old table or the new, never half of it),
    which carries `marks` (and `properties` in its summary), failing with `Conflict` if another writer committed
    since the snapshot `read_at` (None: since the table was created)."""
    writer = rows.writeTo(table).option("isolation-level", "serializable")
    if marks:
        writer = writer.option(f"snapshot-property.{MARKS_PROPERTY}", _marks_json(marks))
    for key, value in (properties or {}).items():
        writer = writer.option(f"snapshot-property.{key}", value)
    if read_at is not None:
        writer = writer.option("validate-from-snapshot-id", str(read_at))
    try:
        writer.overwrite(F.lit(True))
    except Exception as exc:  # py4j wraps Iceberg's exceptions
        if is_conflict(exc):
            raise Conflict(f"{table}: another writer committed while it was being replaced") from exc
        raise


WRITE_ID_PROPERTY = "lakehouse.write-id"


def holds_no_rows(snapshot: Snapshot | None) -> bool:
    return snapshot is None or int(snapshot.summary.get("total-records", 0)) == 0


def fill_empty(spark: SparkSession, table: str, rows: DataFrame, read_at: Snapshot | None,
               marks: dict[str, str] | None = None) -> int:
    """Write `rows` into `table`, which held no rows at `read_at`, in one commit carrying `marks`; returns how
    many rows it wrote, from the commit's summary (no counting pass).

    A first load's shortcut past a MERGE: with nothing in the table there is nothing to match, so the MERGE's join
    and the step's comparison with the table's versions are pure cost. The commit is validated like the MERGE's
    (serializable, from `read_at`): when another writer committed meanwhile it raises `Conflict` and writes
    nothing, and the caller takes its MERGE path against what that writer left.
    """
    if not holds_no_rows(read_at):
        raise ValueError(f"{table} holds rows at snapshot {read_at.snapshot_id}: MERGE into it instead")
    write_id = uuid.uuid4().hex
    replace_all(spark, table, rows, read_at.snapshot_id if read_at else None, marks, {WRITE_ID_PROPERTY: write_id})
    for snap in reversed(snapshots(spark, table)):
        if snap.summary.get(WRITE_ID_PROPERTY) == write_id:
            return int(snap.summary.get("added-records", 0))
    raise RuntimeError(f"{table}: the commit of write {write_id} is not in the table's history")


def insert_new(spark: SparkSession, table: str, source: DataFrame, keys: list[str]) -> None:
    """Insert rows whose keys are not in `table` yet (an idempotent append).

    The matched clause rewrites a present row with itself: it keeps the statement a copy-on-write MERGE, which
    Iceberg validates against overlapping writers (an insert-only MERGE would be a plain, unvalidated append).
    """
    merge(spark, table, source, keys, "WHEN MATCHED THEN UPDATE SET * WHEN NOT MATCHED THEN INSERT *")
