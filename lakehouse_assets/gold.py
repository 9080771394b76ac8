"""Gold: the warehouse tables, updated for the keys that changed in Silver."""

import dagster as dg
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from lakehouse import gold_layer, operations, silver_layer
from lakehouse.contracts import GOLD
from lakehouse_assets.bronze import POOL
from lakehouse_assets.metadata import Check, evaluate_checks, layer_checks, rebuilding, record_refresh, selected, table_metadata
from resources import ComputeResource, SparkResource

CHART_DAYS = 30
CHART_WIDTH = 40


def activity_chart(spark: SparkSession, days: int = CHART_DAYS) -> str:
    """A bar chart of the last `days` days of activity (posts + comments), as Markdown."""
    rows = (
        spark.table(GOLD["subreddit_daily"].identifier)
        .groupBy("activity_date")
        .agg(F.sum("posts").alias("posts"), F.sum("comments").alias("comments"))
        .orderBy(F.col("activity_date").desc())
        .limit(days)
        .collect()
    )
    if not rows:
        return "no activity yet"
    peak = max(r.posts + r.comments for r in rows) or 1
    lines = []
    for r in sorted(rows, key=lambda r: r.activity_date):
        posts = round(CHART_WIDTH * r.posts / peak)
        comments = round(CHART_WIDTH * r.comments / peak)
        lines.append(f"{r.activity_date}  {'█' * posts}{'░' * comments}  {r.posts:,} posts, {r.comments:,} comments")
    return "Daily activity, all subreddits (█ posts, ░ comments)\n\n```\n" + "\n".join(lines) + "\n```"


def gold_checks(table_key: str) -> list[Check]:
    """Gold is complete by database standards: the documented schema, numbers that add up to Silver, up to date."""
    key = dg.AssetKey(["gold", table_key])
    table = gold_layer.gold_table(table_key)
    contract, sources = table.contract, table.source_tables
    return layer_checks([
        Check(key, "schema_matches_contract", "Column names, order, types and nullability exactly as in docs/tables.md.",
              lambda spark, full, alive: silver_layer.schema_matches(spark, contract)),
        Check(key, "reconciles_with_silver", "Per key, Gold's rows and counts equal what Silver holds.",
              lambda spark, full, alive: gold_layer.gold_reconciled(spark, table_key, full=full)),
        Check(key, "fresh", "Gold has read every Silver change (its watermarks reach Silver's latest update).",
              lambda spark, full, alive: gold_layer.gold_freshness(spark, table_key, sources),
              severity=dg.AssetCheckSeverity.WARN),
    ])


def gold_asset(table_key: str) -> dg.AssetsDefinition:
    table = gold_layer.gold_table(table_key)  # an unknown table fails here, naming the tables there are
    contract, update = table.contract, table.update
    key = dg.AssetKey(["gold", table_key])
    checks = gold_checks(table_key)

    @dg.multi_asset(
        name=f"gold__{table_key}",  # the step name it always had
        specs=[dg.AssetSpec(
            key,
            deps=[dg.AssetKey(["silver", e.plural]) for e in table.sources],
            group_name="gold",
            kinds={"spark", "iceberg"},
            description=table.description,
            metadata={
                "dagster/table_name": f"lakehouse.{contract.identifier}",
                "dagster/column_schema": dg.TableSchema(
                    columns=[dg.TableColumn(c.name, c.type, description=c.doc) for c in contract.columns]
                ),
            },
        )],
        check_specs=[c.spec for c in checks],
        can_subset=True,  # the nightly full pass runs the checks alone
        pool=POOL,
    )
    def _gold(context: dg.AssetExecutionContext, spark: SparkResource, compute: ComputeResource):
        """Update the Gold table for the Silver keys that changed since it last read them, then check it."""
        if selected(context, key):
            yield _update(context, spark, compute)
        yield from evaluate_checks(context, spark.spark_session, checks)

    def _update(context, spark, compute) -> dg.MaterializeResult:
        if compute.remote:
            extras = {"rebuild": rebuilding(context)}
            return compute.run_step(context, "gold", table=table_key, extras=extras).get_materialize_result()
        session = spark.spark_session
        if rebuilding(context):
            result = operations.rebuild_gold(session, table_key)
            record_refresh(session, context, contract.identifier,
                           {"rows": result.rows_written, "watermarks": result.watermarks})
        else:
            result = update(session, table_key)
        context.log.info(
            f"{contract.identifier}: {result.rows_written} rows written, {result.rows_deleted} deleted"
            f"{' (full build)' if result.full_rebuild else ''}; watermarks {result.watermarks or 'unchanged'}"
        )
        extra = {"rows_written": result.rows_written, "rows_deleted": result.rows_deleted,
                 "full_rebuild": result.full_rebuild}
        if table_key == "subreddit_daily":
            extra["daily_activity"] = dg.MetadataValue.md(activity_chart(session))
        return dg.MaterializeResult(asset_key=key, metadata=table_metadata(session, contract, **extra))

    return _gold


gold_assets = [gold_asset(k) for k in gold_layer.GOLD_TABLES]

defs = dg.Definitions(assets=gold_assets)
