"""Silver: Bronze rows typed, cleaned and MERGEd one row per id; rows breaking the contract quarantined."""

import dagster as dg
from pyspark.sql import functions as F

from lakehouse import pipeline
from lakehouse.contracts import BRONZE, QUARANTINE, SILVER, Entity
from lakehouse_assets.bronze import POOL
from lakehouse_assets.metadata import markdown_table, table_metadata
from resources import SparkResource


def silver_asset(entity: Entity) -> dg.AssetsDefinition:
    silver, quarantine = SILVER[entity], QUARANTINE[entity]
    bronze_key = dg.AssetKey(["bronze", entity.plural])
    silver_key = dg.AssetKey(["silver", entity.plural])
    quarantine_key = dg.AssetKey(["silver", f"{entity.plural}_quarantine"])

    @dg.multi_asset(
        name=f"silver_{entity.plural}",
        specs=[
            dg.AssetSpec(
                key,
                deps=[bronze_key],
                group_name="silver",
                kinds={"spark", "iceberg"},
                description=description,
                metadata={"dagster/table_name": f"lakehouse.{contract.identifier}"},
            )
            for key, contract, description in (
                (silver_key, silver,
                 f"Typed, cleaned {entity.value}s, one row per id (latest ingestion wins), ready for ML."),
                (quarantine_key, quarantine,
                 f"{entity.value.capitalize()} rows that break the Silver contract, as received, with reason codes."),
            )
        ],
        pool=POOL,
    )
    def _silver(context: dg.AssetExecutionContext, spark: SparkResource):
        session = spark.spark_session
        result = pipeline.update_silver(session, entity)
        context.log.info(
            f"{BRONZE[entity].identifier} snapshots ({result.from_snapshot}, {result.to_snapshot}]: "
            f"{result.bronze_rows} rows -> {result.inserted} inserted, {result.updated} updated, "
            f"{result.unchanged} unchanged, {result.duplicates_collapsed} duplicates collapsed, "
            f"{result.quarantined} quarantined"
        )
        yield dg.MaterializeResult(
            asset_key=silver_key,
            metadata=table_metadata(
                session,
                silver,
                bronze_rows_read=result.bronze_rows,
                inserted=result.inserted,
                updated=result.updated,
                unchanged=result.unchanged,
                duplicates_collapsed=result.duplicates_collapsed,
                bronze_snapshot=str(result.to_snapshot),
            ),
        )
        reasons = [{"reason": k, "rows": v} for k, v in sorted(result.reasons.items())]
        yield dg.MaterializeResult(
            asset_key=quarantine_key,
            metadata=table_metadata(
                session,
                quarantine,
                quarantined_this_run=result.quarantined,
                reasons=dg.MetadataValue.md(markdown_table(reasons, ["reason", "rows"]) if reasons else "none"),
            ),
        )

    return _silver


silver_posts = silver_asset(Entity.POST)
silver_comments = silver_asset(Entity.COMMENT)

def primary_key_check(entity: Entity) -> dg.AssetChecksDefinition:
    table = SILVER[entity].identifier

    @dg.asset_check(
        asset=dg.AssetKey(["silver", entity.plural]),
        name="primary_key_unique",
        description=f"Every {entity.value} id is present and appears once; Gold waits for this (blocking).",
        blocking=True,
    )
    def _check(spark: SparkResource) -> dg.AssetCheckResult:
        session = spark.spark_session
        row = session.table(table).agg(
            F.count("*").alias("rows"), F.countDistinct("id").alias("ids"), F.count("id").alias("non_null")
        ).first()
        duplicated = (
            session.table(table).groupBy("id").count().where("count > 1").orderBy(F.desc("count")).limit(5).collect()
        ) if row.rows != row.ids else []
        return dg.AssetCheckResult(
            passed=row.rows == row.ids == row.non_null,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "rows": row.rows,
                "distinct_ids": row.ids,
                "null_ids": row.rows - row.non_null,
                "duplicated_ids": dg.MetadataValue.md(
                    markdown_table([d.asDict() for d in duplicated], ["id", "count"]) if duplicated else "none"
                ),
            },
        )

    return _check


defs = dg.Definitions(
    assets=[silver_posts, silver_comments],
    asset_checks=[primary_key_check(e) for e in Entity],
)
