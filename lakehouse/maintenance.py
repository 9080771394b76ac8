"""Table maintenance: what keeps a lakehouse fed by micro-batches as fast after 1,000 runs as after one.

Every run adds snapshots, manifests and small data files to the tables it writes, and Iceberg keeps them all until
told otherwise. Per table, with Iceberg's own Spark actions (what its procedures call; values are passed as values,
never written into SQL text, and the table is one of the contracts'):
1. `rewriteDataFiles`: small data files compacted (bin-pack), once a table has enough of them.
2. `rewriteManifests`: one manifest per partition spec instead of one per commit.
3. `expireSnapshots`: snapshots older than the retention leave the history, with the files only they held.
4. `deleteOrphanFiles`: files no snapshot references (a commit that failed), older than three days.

What must never expire: a snapshot an incremental mark names (Silver's position in Bronze, the Silver snapshot a
Gold table last read, a check's verified position), and a Bronze batch the ingestion log has not settled yet. The
incremental code walks the lineage from a mark to the current snapshot, so the whole chain from the oldest such
snapshot on stays, and expiry names the snapshots it takes (`expirable`): those of the lineage before it, not
those stamped before some time, since Iceberg lets a commit be stamped up to a minute before its parent. Marks are
found by value (every `lakehouse.*` property holding a snapshot id of the table), so a new kind of mark is
protected without a change here. Should a mark's snapshot be gone anyway (an expiry by hand), the step that reads
it falls back to one full pass (tested).

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


def expirable(metadata: dict, protected: set[int], cutoff_ms: float, retain_last: int) -> list[int]:
    """The snapshots expiry may take (a table's metadata JSON, `tables._metadata`), chosen by lineage.

    The steps read forward from a mark to the current snapshot through parent links, so the current lineage stays
    whole from the oldest of: a `protected` snapshot (one a mark names, an unsettled Bronze batch), the last
    `retain_last`, and the first stamped within the retention (after `cutoff_ms`). Only what comes before them all
    may go. Not by timestamp order: Iceberg accepts a commit stamped up to a minute before its parent (clocks a
    minute apart), and its own age rule, walking back from the head, stops at the first snapshot older than the
    cutoff and takes everything behind it, marked or not. Snapshots outside the current lineage (rolled back) go
    once older than the retention, unless another branch or tag holds them.
    """
    lineage = tables._lineage(metadata)
    keep_from = min([max(0, len(lineage) - retain_last)] + [
        i for i, snap in enumerate(lineage) if snap.snapshot_id in protected or snap.timestamp_ms >= cutoff_ms])
    by_id = {snap["snapshot-id"]: snap for snap in metadata.get("snapshots", [])}
    held = set()
    for name, ref in metadata.get("refs", {}).items():
        at = ref["snapshot-id"] if name != "main" else None
        while at in by_id and at not in held:
            held.add(at)
            at = by_id[at].get("parent-snapshot-id")
    in_lineage = {snap.snapshot_id for snap in lineage}
    return [snap.snapshot_id for snap in lineage[:keep_from] if snap.snapshot_id not in held] + [
        sid for sid, snap in by_id.items()
        if sid not in in_lineage and sid not in held and snap.get("timestamp-ms", 0) < cutoff_ms]


def _actions(spark: SparkSession):
    # Iceberg's Spark actions, what its procedures call: values go as values, never into SQL text.
    return spark._jvm.org.apache.iceberg.spark.actions.SparkActions.get(spark._jsparkSession)


def _count(spark: SparkSession, iterable) -> int:
    return spark._jvm.org.apache.iceberg.relocated.com.google.common.collect.Iterables.size(iterable)


def maintain_table(spark: SparkSession, table: str, retention: timedelta, marks: set[int],
                   now: datetime | None = None, compact: bool = True, remove_orphans: bool = True,
                   min_input_files: int = MIN_INPUT_FILES, retain_last: int = RETAIN_LAST) -> TableMaintenance:
    """Compact, rewrite manifests and expire one table's history (a contract's table), keeping what the marks
    need."""
    [table] = table_names([table])
    result = TableMaintenance(table)
    if tables.current_snapshot(spark, table) is None:
        return result
    result.data_files_before = _data_files(spark, table)
    now = now or datetime.now(timezone.utc)
    if compact:
        done = (_actions(spark).rewriteDataFiles(tables.iceberg_table(spark, table))
                .option("min-input-files", str(min_input_files))
                .option("target-file-size-bytes", str(TARGET_FILE_BYTES))
                .option("partial-progress.enabled", "false").execute())
        result.rewritten_files, result.added_files = done.rewrittenDataFilesCount(), done.addedDataFilesCount()
        jtable = tables.iceberg_table(spark, table)
        if jtable.currentSnapshot().allManifests(jtable.io()).size() >= MIN_MANIFESTS:
            result.rewritten_manifests = _count(spark, _actions(spark).rewriteManifests(jtable).execute()
                                                .rewrittenManifests())
    metadata = tables._metadata(spark, table)  # no Spark job
    history = tables._lineage(metadata)
    result.snapshots_before = len(history)
    protected = (marks & {snap.snapshot_id for snap in history}) | _unsettled(spark, table, history)
    result.kept_for_marks = sorted(protected)
    expire = expirable(metadata, protected, (now - retention).timestamp() * 1000, retain_last)
    # The action costs seconds even when it has nothing to do: the snapshot list is asked first.
    if expire:
        # Its age rule set to take nothing (every snapshot is younger than 1970): only the snapshots named go.
        action = _actions(spark).expireSnapshots(tables.iceberg_table(spark, table)).expireOlderThan(0)
        for snapshot_id in expire:
            action.expireSnapshotId(snapshot_id)
        result.expired_data_files = action.execute().deletedDataFilesCount()
        result.snapshots_after = len(tables.snapshots(spark, table))
    else:
        result.snapshots_after = len(history)
    if remove_orphans:
        orphans_before = int((now - ORPHAN_AGE).timestamp() * 1000)
        result.orphan_files = _count(spark, _actions(spark).deleteOrphanFiles(tables.iceberg_table(spark, table))
                                     .olderThan(orphans_before).execute().orphanFileLocations())
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
