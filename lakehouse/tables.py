"""Iceberg table I/O through Spark: creating tables from contracts, upserts, snapshots and watermarks."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession

from lakehouse.contracts import ALL_TABLES, TableContract
from lakehouse.settings import NAMESPACES

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
BATCH_ID_PROPERTY = "lakehouse.batch-id"


def ensure_tables(spark: SparkSession, contracts: tuple[TableContract, ...] = ALL_TABLES) -> None:
    """Create namespaces and tables that do not exist yet (idempotent, cheap when they do)."""
    for ns in NAMESPACES:
        spark.sql(f"CREATE NAMESPACE IF NOT EXISTS {ns}")
    for contract in contracts:
        spark.sql(contract.create_ddl(TABLE_PROPERTIES))


@dataclass(frozen=True)
class Snapshot:
    snapshot_id: int
    parent_id: int | None
    operation: str
    summary: dict[str, str]


def _lineage(spark: SparkSession, table: str, order: str) -> list[Snapshot]:
    rows = spark.sql(
        f"SELECT h.snapshot_id, h.parent_id, s.operation, s.summary FROM {table}.history h "
        f"JOIN {table}.snapshots s ON h.snapshot_id = s.snapshot_id "
        f"WHERE h.is_current_ancestor ORDER BY h.made_current_at {order}"
    ).collect()
    return [Snapshot(r.snapshot_id, r.parent_id, r.operation, dict(r.summary or {})) for r in rows]


def snapshots(spark: SparkSession, table: str) -> list[Snapshot]:
    """The table's current lineage, oldest first (metadata only, no data read)."""
    return _lineage(spark, table, "ASC")


def current_snapshot(spark: SparkSession, table: str) -> Snapshot | None:
    lineage = _lineage(spark, table, "DESC LIMIT 1")
    return lineage[0] if lineage else None


def table_properties(spark: SparkSession, table: str) -> dict[str, str]:
    return {r.key: r.value for r in spark.sql(f"SHOW TBLPROPERTIES {table}").collect()}


def watermark(spark: SparkSession, table: str, source: str) -> str | None:
    return table_properties(spark, table).get(WATERMARK_PREFIX + source)


def set_watermarks(spark: SparkSession, table: str, marks: dict[str, str]) -> None:
    """Record how far `table` has processed its sources.

    This is a separate commit from the data, so every step is written to be idempotent: a crash between the
    two re-processes the same input and changes nothing.
    """
    if marks:
        props = ", ".join(f"'{WATERMARK_PREFIX}{k}'='{v}'" for k, v in marks.items())
        spark.sql(f"ALTER TABLE {table} SET TBLPROPERTIES ({props})")


def temp_view(df: DataFrame, stem: str) -> str:
    name = f"_{stem}_{uuid.uuid4().hex[:8]}"
    df.createOrReplaceTempView(name)
    return name


def upsert(spark: SparkSession, table: str, source: DataFrame, keys: list[str]) -> None:
    """MERGE `source` into `table` by `keys`: update matches, insert the rest (source holds one row per key)."""
    view = temp_view(source, "upsert")
    on = " AND ".join(f"t.`{k}` = s.`{k}`" for k in keys)
    try:
        spark.sql(
            f"MERGE INTO {table} t USING {view} s ON {on} "
            f"WHEN MATCHED THEN UPDATE SET * WHEN NOT MATCHED THEN INSERT *"
        )
    finally:
        spark.catalog.dropTempView(view)


def insert_new(spark: SparkSession, table: str, source: DataFrame, keys: list[str]) -> None:
    """Insert rows whose keys are not in `table` yet (an idempotent append)."""
    view = temp_view(source, "insert")
    on = " AND ".join(f"t.`{k}` = s.`{k}`" for k in keys)
    try:
        spark.sql(f"MERGE INTO {table} t USING {view} s ON {on} WHEN NOT MATCHED THEN INSERT *")
    finally:
        spark.catalog.dropTempView(view)


def row_count(spark: SparkSession, table: str) -> int:
    """Row count from the current snapshot's summary (no data scan); exact for copy-on-write tables."""
    snap = current_snapshot(spark, table)
    return int(snap.summary.get("total-records", 0)) if snap else 0
