"""Materialisation metadata shared by every layer: row count, schema, preview, Iceberg snapshot."""

# No `from __future__ import annotations`: Dagster reads the check function's annotations at definition time.
from typing import Any, Callable

import dagster as dg
from pyspark.sql import SparkSession

from lakehouse import tables
from lakehouse.contracts import TableContract
from lakehouse.markdown import markdown_table
from lakehouse.quality import CheckOutcome
from lakehouse.settings import CATALOG_NAME
from resources import SparkResource

PREVIEW_ROWS = 5
# Runs tagged `lakehouse/check_scope=full` (the nightly `full_quality_checks` job) make every check look at
# whole tables; otherwise the expensive checks look at what changed since they last passed.
CHECK_SCOPE_TAG = "lakehouse/check_scope"


def full_scope(context: dg.AssetCheckExecutionContext) -> bool:
    return context.run.tags.get(CHECK_SCOPE_TAG) == "full"


def column_schema(contract: TableContract) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name=c.name,
                type=c.type,
                description=c.doc,
                constraints=dg.TableColumnConstraints(nullable=c.nullable),
            )
            for c in contract.columns
        ]
    )


def preview(spark: SparkSession, contract: TableContract, order_by: str | None = None) -> str:
    df = spark.table(contract.identifier)
    if order_by:
        df = df.orderBy(order_by)
    rows = [r.asDict() for r in df.limit(PREVIEW_ROWS).collect()]
    business = [c for c in contract.names if not c.startswith("_")][:10]
    return markdown_table(rows, business)


def table_metadata(spark: SparkSession, contract: TableContract, **extra: Any) -> dict[str, Any]:
    """What a user wants to see for any Iceberg table after a materialisation."""
    snap = tables.current_snapshot(spark, contract.identifier)
    meta: dict[str, Any] = {
        "dagster/table_name": f"{CATALOG_NAME}.{contract.identifier}",
        "dagster/row_count": int(snap.summary.get("total-records", 0)) if snap else 0,
        "dagster/column_schema": column_schema(contract),
        "snapshot_id": str(snap.snapshot_id) if snap else "none",
        "data_files": int(snap.summary.get("total-data-files", 0)) if snap else 0,
        "preview": dg.MetadataValue.md(preview(spark, contract)),
    }
    meta.update(extra)
    return meta


def check_result(
    context: dg.AssetCheckExecutionContext | dg.OpExecutionContext,
    outcome: CheckOutcome,
    severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR,
    check_name: str | None = None,
    asset_key: dg.AssetKey | None = None,
) -> dg.AssetCheckResult:
    """An `AssetCheckResult` with the outcome's counts and offending rows; a failure is also logged in the run."""
    metadata: dict[str, Any] = {"summary": outcome.summary, **outcome.metrics}
    if outcome.sample:
        metadata["offending_rows"] = dg.MetadataValue.md(markdown_table(outcome.sample, outcome.sample_columns))
    if not outcome.passed:
        name = check_name or "check"
        log = context.log.error if severity is dg.AssetCheckSeverity.ERROR else context.log.warning
        log(f"{name} failed ({severity.value}): {outcome.summary}")
    return dg.AssetCheckResult(
        passed=outcome.passed,
        severity=severity,
        description=outcome.summary,
        metadata=metadata,
        check_name=check_name,
        asset_key=asset_key,
    )


def spark_check(
    asset: dg.AssetKey,
    name: str,
    description: str,
    evaluate: Callable[[SparkSession, bool], CheckOutcome],
    *,
    blocking: bool = False,
    severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR,
) -> dg.AssetChecksDefinition:
    """An asset check whose outcome `evaluate(spark, full)` computes with the run's Spark session."""

    @dg.asset_check(asset=asset, name=name, description=description, blocking=blocking)
    def _check(context: dg.AssetCheckExecutionContext, spark: SparkResource) -> dg.AssetCheckResult:
        return check_result(context, evaluate(spark.spark_session, full_scope(context)), severity, check_name=name)

    return _check
