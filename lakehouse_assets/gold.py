"""Gold: the warehouse tables, updated for the keys that changed in Silver."""

import dagster as dg
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from lakehouse import operations, pipeline, quality
from lakehouse.contracts import GOLD, SILVER, Entity
from lakehouse_assets.bronze import POOL
from lakehouse_assets.metadata import rebuilding, record_refresh, spark_check, table_metadata
from resources import ComputeResource, SparkResource

SILVER_POSTS = dg.AssetKey(["silver", "posts"])
SILVER_COMMENTS = dg.AssetKey(["silver", "comments"])
CHART_DAYS = 30
CHART_WIDTH = 40

DESCRIPTIONS = {
    "posts": "One row per post with exact types and title word tokens.",
    "comments": "One row per comment with exact types, body word tokens and decimal sentiment.",
    "subreddit_daily": "Per subreddit and day: posts, comments, sentiment mean/min/max, mean score, NSFW share.",
    "post_engagement": "Per post: comment count, mean comment sentiment, positive/negative shares, score.",
}
DEPS = {
    "posts": [SILVER_POSTS],
    "comments": [SILVER_COMMENTS],
    "subreddit_daily": [SILVER_POSTS, SILVER_COMMENTS],
    "post_engagement": [SILVER_POSTS, SILVER_COMMENTS],
}


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


def gold_asset(table_key: str) -> dg.AssetsDefinition:
    contract = GOLD[table_key]
    entity_table = table_key in ("posts", "comments")

    @dg.asset(
        key=["gold", table_key],
        deps=DEPS[table_key],
        group_name="gold",
        kinds={"spark", "iceberg"},
        description=DESCRIPTIONS[table_key],
        pool=POOL,
        metadata={
            "dagster/table_name": f"lakehouse.{contract.identifier}",
            "dagster/column_schema": dg.TableSchema(
                columns=[dg.TableColumn(c.name, c.type, description=c.doc) for c in contract.columns]
            ),
        },
    )
    def _gold(
        context: dg.AssetExecutionContext, spark: SparkResource, compute: ComputeResource
    ) -> dg.MaterializeResult:
        if compute.remote:
            extras = {"rebuild": rebuilding(context)}
            return compute.run_step(context, "gold", table=table_key, extras=extras).get_materialize_result()
        session = spark.spark_session
        if rebuilding(context):
            result = operations.rebuild_gold(session, table_key)
            record_refresh(session, context, contract.identifier,
                           {"rows": result.rows_written, "watermarks": result.watermarks})
        else:
            update = pipeline.update_gold_entity if entity_table else pipeline.update_gold_aggregate
            result = update(session, table_key)
        context.log.info(
            f"{contract.identifier}: {result.rows_written} rows written, {result.rows_deleted} deleted"
            f"{' (full build)' if result.full_rebuild else ''}; watermarks {result.watermarks or 'unchanged'}"
        )
        extra = {"rows_written": result.rows_written, "rows_deleted": result.rows_deleted,
                 "full_rebuild": result.full_rebuild}
        if table_key == "subreddit_daily":
            extra["daily_activity"] = dg.MetadataValue.md(activity_chart(session))
        return dg.MaterializeResult(metadata=table_metadata(session, contract, **extra))

    return _gold


def gold_checks(table_key: str) -> list[dg.AssetChecksDefinition]:
    """Gold is complete by database standards: the documented schema, numbers that add up to Silver, up to date."""
    key = dg.AssetKey(["gold", table_key])
    contract = GOLD[table_key]
    sources = [SILVER[Entity.POST if k == SILVER_POSTS else Entity.COMMENT].identifier for k in DEPS[table_key]]

    return [
        spark_check(key, "schema_matches_contract",
                    "Column names, order, types and nullability exactly as in docs/tables.md.",
                    lambda spark, full, alive: quality.schema_matches(spark, contract)),
        spark_check(key, "reconciles_with_silver", "Per key, Gold's rows and counts equal what Silver holds.",
                    lambda spark, full, alive: quality.gold_reconciled(spark, table_key, full=full)),
        spark_check(key, "fresh", "Gold has read every Silver change (its watermarks reach Silver's latest update).",
                    lambda spark, full, alive: quality.gold_freshness(spark, table_key, sources),
                    severity=dg.AssetCheckSeverity.WARN),
    ]


gold_assets = [gold_asset(k) for k in GOLD]

defs = dg.Definitions(assets=gold_assets, asset_checks=[c for k in GOLD for c in gold_checks(k)])
