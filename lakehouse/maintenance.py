"""Table maintenance: what keeps a lakehouse fed by micro-batches as fast after 1,000 runs as after one.

Every run adds snapshots, manifests and small data files to the tables it writes, and Iceberg keeps them all until
told otherwise. Per table, with Iceberg's own Spark procedures:
1. `rewrite_data_files`: small data files compacted (bin-pack), once a table has enough of them.
2. `rewrite_manifests`: one manifest per partition spec instead of one per commit.
3. `expire_snapshots`: snapshots older than the retention leave the history, with the files only they held.
4. `remove_orphan_files`: files no snapshot references (a commit that failed), older than three days.

What must never expire: a snapshot an incremental mark names (Silver's position in Bronze, the Silver snapshot a
Gold table last read, a check's verified position), and a Bronze batch the ingestion log has not settled yet. The
incremental code walks the history from a mark to the current snapshot, so the whole chain from the oldest such
snapshot on stays: `older_than` is the earlier of the retention cutoff and that snapshot's time. Marks are found
by value (every `lakehouse.*` property holding a snapshot id of the table), so a new kind of mark is protected
without a change here. Should a mark's snapshot be gone anyway (an expiry by hand), the step that reads it falls
back to one full pass (tested).

When: a micro-batch sensor adds ~30 files per batch to each day-partitioned table it writes, and each costs every
later run a read (bench/results/2026-12-01-warm-runs.md: 651 files against 31 made a run's executor CPU 1.4-1.7x),
so the clock is the wrong trigger. The `table_growth` sensor compacts a table once `compact_after_files` data files
were added since its last maintenance (`grown`), only the tables that grew; a nightly schedule does them all.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from pyspark.sql import SparkSession

from lakehouse import tables
from lakehouse.contracts import ALL_TABLES, BRONZE
from lakehouse.errors import UserError
from lakehouse.settings import CATALOG_NAME

log = logging.getLogger(__name__)

# Compact once a table (partition) has this many files smaller than 3/4 of the target size.
MIN_INPUT_FILES = 8
TARGET_FILE_BYTES = 128 * 2**20
MIN_MANIFESTS = 8  # a manifest per commit adds up; below this, a rewrite is a commit for nothing
RETAIN_LAST = 5  # snapshots always kept, however young the table
ORPHAN_AGE = timedelta(days=3)  # files this old that no snapshot names are left by failed commits
_NUMBER = re.compile(r"-?\d{6,}")


@dataclass
class TableMaintenance:
    table: str
    data_files_before: int = 0
    data_files_after: int = 0
    rewritten_files: int = 0
    added_files: int = 0
    rewritten_manifests: int = 0
    snapshots_before: int = 0
    snapshots_after: int = 0
    expired_data_files: int = 0
    orphan_files: int = 0
    kept_for_marks: list[int] = field(default_factory=list)

    def summary(self) -> dict:
        return {k: v for k, v in vars(self).items() if k != "kept_for_marks"} | {
            "kept_for_marks": len(self.kept_for_marks)}


def marked_snapshots(spark: SparkSession) -> set[int]:
    """Every number a mark holds (marks are snapshot ids, or JSON holding them): the check marks kept as `lakehouse.*`
    table properties, the step marks, and the snapshot that carries each table's step marks (expired, the step
    would make a full pass)."""
    found: set[int] = set()
    for contract in ALL_TABLES:
        step = tables.step_marks(spark, contract.identifier)
        values = [v for k, v in tables.table_properties(spark, contract.identifier).items()
                  if k.startswith("lakehouse.")] + list(step.values.values())
        for value in values:
            found.update(int(n) for n in _NUMBER.findall(value if isinstance(value, str) else json.dumps(value)))
        if step.carrier is not None:
            found.add(step.carrier)
    return found


def _unsettled(spark: SparkSession, table: str, lineage: list[tables.Snapshot]) -> set[int]:
    """Bronze appends the ingestion log has not settled (their writer may still log them, or they are rolled back)."""
    from lakehouse import bronze_layer

    for entity, contract in BRONZE.items():
        if contract.identifier == table:
            return {u.snapshot_id for u in bronze_layer.unsettled_batches(lineage, bronze_layer.log_entries(spark, entity))}
    return set()


def _data_files(spark: SparkSession, table: str) -> int:
    # The snapshot summary's running total: metadata, not a Spark job over the table's `files`.
    snap = tables.current_snapshot(spark, table)
    return int(snap.summary.get("total-data-files", 0)) if snap else 0


def maintain_table(spark: SparkSession, table: str, retention: timedelta, marks: set[int],
                   now: datetime | None = None, compact: bool = True, remove_orphans: bool = True,
                   min_input_files: int = MIN_INPUT_FILES, retain_last: int = RETAIN_LAST) -> TableMaintenance:
    """Compact, rewrite manifests and expire one table's history, keeping what the marks need."""
    result = TableMaintenance(table)
    if tables.current_snapshot(spark, table) is None:
        return result
    result.data_files_before = _data_files(spark, table)
    now = now or datetime.now(timezone.utc)
    call = f"CALL {CATALOG_NAME}.system"
    if compact:
        row = spark.sql(
            f"{call}.rewrite_data_files(table => '{table}', options => map("
            f"'min-input-files', '{min_input_files}', 'target-file-size-bytes', '{TARGET_FILE_BYTES}', "
            "'partial-progress.enabled', 'false'))").first()
        result.rewritten_files, result.added_files = row.rewritten_data_files_count, row.added_data_files_count
        if spark.sql(f"SELECT count(*) AS n FROM {table}.manifests").first().n >= MIN_MANIFESTS:
            row = spark.sql(f"{call}.rewrite_manifests(table => '{table}')").first()
            result.rewritten_manifests = row.rewritten_manifests_count
    history = tables.snapshots(spark, table)  # the table's metadata, no Spark job
    result.snapshots_before = len(history)
    protected = (marks & {snap.snapshot_id for snap in history}) | _unsettled(spark, table, history)
    result.kept_for_marks = sorted(protected)
    now_ms = now.timestamp() * 1000
    cutoff_ms = now_ms - retention.total_seconds() * 1000
    if protected:  # the chain from the oldest marked snapshot to the current one stays whole
        cutoff_ms = min(cutoff_ms, min(snap.timestamp_ms for snap in history if snap.snapshot_id in protected))
    # The procedure costs seconds even when it has nothing to do: ask the snapshot list first.
    if len(history) > retain_last and any(snap.timestamp_ms < cutoff_ms for snap in history[:-retain_last]):
        cutoff = datetime.fromtimestamp(cutoff_ms / 1000, timezone.utc).replace(tzinfo=None)
        row = spark.sql(
            f"{call}.expire_snapshots(table => '{table}', older_than => TIMESTAMP '{cutoff.isoformat(sep=' ')}', "
            f"retain_last => {retain_last})").first()
        result.expired_data_files = row.deleted_data_files_count
        result.snapshots_after = len(tables.snapshots(spark, table))
    else:
        result.snapshots_after = len(history)
    if remove_orphans:
        orphans_before = now.replace(tzinfo=None) - ORPHAN_AGE
        result.orphan_files = len(spark.sql(
            f"{call}.remove_orphan_files(table => '{table}', older_than => TIMESTAMP "
            f"'{orphans_before.isoformat(sep=' ')}')").collect())
    result.data_files_after = _data_files(spark, table)
    return result


@dataclass(frozen=True)
class TableState:
    data_files: int
    snapshot_id: int | None  # changes with every commit: names the state where counts can repeat


def table_states(catalog) -> dict[str, TableState]:
    """Each existing table's data files and current snapshot, from the snapshot's summary (pyiceberg: metadata
    only, no Spark, no listing)."""
    from pyiceberg.exceptions import NoSuchTableError

    states = {}
    for contract in ALL_TABLES:
        try:
            snap = catalog.load_table(contract.identifier).current_snapshot()
        except NoSuchTableError:
            continue
        files = int(snap.summary.additional_properties.get("total-data-files", 0)) if snap else 0
        states[contract.identifier] = TableState(files, snap.snapshot_id if snap else None)
    return states


def data_file_counts(catalog) -> dict[str, int]:
    """Each existing table's data files now (see `table_states`)."""
    return {table: state.data_files for table, state in table_states(catalog).items()}


def grown(counts: dict[str, int], baseline: dict[str, int], after_files: int) -> list[str]:
    """The tables with `after_files` or more data files beyond their count after their last maintenance (a table
    never maintained counts from zero)."""
    return [t for t, n in counts.items() if n - baseline.get(t, 0) >= after_files]


def table_names(names: list[str] | None) -> list[str]:
    """The tables asked for, in maintenance order; all when none are named; an unknown name fails loudly."""
    known = [contract.identifier for contract in ALL_TABLES]
    unknown = sorted(set(names or ()) - set(known))
    if unknown:
        raise UserError(f"no such table: {', '.join(unknown)} (the tables are {', '.join(known)})")
    return [t for t in known if not names or t in names]


def maintain(spark: SparkSession, retention: timedelta, compact: bool = True, remove_orphans: bool = True,
             now: datetime | None = None, min_input_files: int = MIN_INPUT_FILES,
             retain_last: int = RETAIN_LAST, only: list[str] | None = None) -> list[TableMaintenance]:
    """Maintain the lakehouse tables, or `only` those named (run in the `lakehouse` pool: never beside a run that
    writes)."""
    names = table_names(only)
    tables.ensure_tables(spark)
    marks = marked_snapshots(spark)
    done = []
    for table in names:
        result = maintain_table(spark, table, retention, marks, now=now, compact=compact,
                                remove_orphans=remove_orphans, min_input_files=min_input_files,
                                retain_last=retain_last)
        log.info("maintained %s: %s", table, result.summary())
        done.append(result)
    return done
