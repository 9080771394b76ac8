"""Silver: Bronze rows typed, cleaned and MERGEd one row per id; rows breaking the contract quarantined."""

import dagster as dg

from lakehouse import operations, pipeline, quality
from lakehouse.contracts import BRONZE, QUARANTINE, SILVER, Entity
from lakehouse.settings import load_settings
from lakehouse_assets.bronze import POOL, dead_writers
from lakehouse_assets.metadata import (
    check_result, full_scope, markdown_table, rebuilding, record_refresh, register, spark_check, table_metadata,
)
from resources import ComputeResource, LakehouseResource, SparkResource
from resources.runs import liveness


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
    def _silver(context: dg.AssetExecutionContext, spark: SparkResource, compute: ComputeResource,
                lakehouse: LakehouseResource):
        alive = liveness(context.instance)
        if compute.remote:
            extras = {"dead_writers": dead_writers(lakehouse, entity, alive), "rebuild": rebuilding(context)}
            yield from compute.run_step(context, "silver", entity, extras=extras).get_results()
            return
        session = spark.spark_session
        if rebuilding(context):
            result = operations.rebuild_silver(session, entity, alive=alive)
            record_refresh(session, context, silver.identifier,
                           {"rows": result.inserted, "quarantined": result.quarantined,
                            "bronze_snapshot": result.to_snapshot})
        else:
            result = pipeline.update_silver(session, entity, alive=alive)
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

def silver_checks(entity: Entity) -> list[dg.AssetChecksDefinition]:
    """Silver is typed, unique and complete; these gate Gold (blocking), the quarantine rate only warns."""
    key = dg.AssetKey(["silver", entity.plural])
    quarantine_key = dg.AssetKey(["silver", f"{entity.plural}_quarantine"])

    primary_key = spark_check(
        key, "primary_key_unique", f"Every {entity.value} id is present and appears once.",
        lambda spark, full, alive: quality.silver_primary_key(spark, entity, full=full), blocking=True,
    )

    value_specs = [
        dg.AssetCheckSpec(
            "types_and_ranges", asset=key, blocking=True,
            description="Columns exactly as documented; timestamps between Reddit's launch and now; required values "
            "present" + ("; sentiment in [-1, 1]." if entity is Entity.COMMENT else "."),
        )
    ]
    if entity is Entity.COMMENT:
        value_specs.append(dg.AssetCheckSpec(
            "post_id_parsed", asset=key, blocking=True,
            description="Every comment's post_id is the post id in its permalink.",
        ))

    register(key, "types_and_ranges",
             lambda spark, full, alive: quality.silver_values(spark, entity, pipeline.utcnow(), full)[0])
    if entity is Entity.COMMENT:
        register(key, "post_id_parsed",
                 lambda spark, full, alive: quality.silver_values(spark, entity, pipeline.utcnow(), full)[1])

    @dg.multi_asset_check(specs=value_specs, name=f"silver_{entity.plural}_values")
    def _values(context: dg.AssetCheckExecutionContext, spark: SparkResource):
        # One scan of Silver answers both checks.
        session = spark.spark_session
        types, post_id = quality.silver_values(session, entity, pipeline.utcnow(), full=full_scope(context))
        yield check_result(context, types, check_name="types_and_ranges", asset_key=key, spark=session)
        if post_id is not None:
            yield check_result(context, post_id, check_name="post_id_parsed", asset_key=key, spark=session)

    reconciled = spark_check(
        key, "bronze_reconciled",
        "Every Bronze row Silver has read is in Silver, in quarantine, or an older version of an id.",
        lambda spark, full, alive: quality.bronze_reconciled(spark, entity, full=full), blocking=True,
    )

    register(quarantine_key, "quarantine_rate", lambda spark, full, alive: quality.quarantine_rate(
        spark, entity, load_settings().quarantine_max_rate[entity.value]))

    @dg.asset_check(
        asset=quarantine_key, name="quarantine_rate", blocking=False,
        description="The share of the latest batch quarantined stays under LAKEHOUSE_QUARANTINE_MAX_RATE (warns).",
    )
    def _rate(
        context: dg.AssetCheckExecutionContext, spark: SparkResource, lakehouse: LakehouseResource
    ) -> dg.AssetCheckResult:
        session = spark.spark_session
        outcome = quality.quarantine_rate(session, entity, lakehouse.quarantine_max_rate[entity.value])
        return check_result(context, outcome, dg.AssetCheckSeverity.WARN, check_name="quarantine_rate",
                            asset_key=quarantine_key, spark=session)

    return [primary_key, _values, reconciled, _rate]


defs = dg.Definitions(
    assets=[silver_posts, silver_comments],
    asset_checks=[check for e in Entity for check in silver_checks(e)],
)
