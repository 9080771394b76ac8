"""Silver: Bronze rows typed, cleaned and MERGEd one row per id; rows breaking the contract quarantined."""

import dagster as dg

from lakehouse import clock, operations, silver_layer
from lakehouse.checks import held_message
from lakehouse.contracts import BRONZE, QUARANTINE, SILVER, Entity
from lakehouse.settings import load_settings
from lakehouse_assets.bronze import POOL, dead_writers
from lakehouse_assets.metadata import (
    Check, evaluate_checks, layer_checks, markdown_table, rebuilding, record_refresh, selected, table_metadata,
)
from resources import ComputeResource, LakehouseResource, SparkResource
from resources.runs import liveness


def silver_checks(entity: Entity) -> list[Check]:
    """Silver is typed, unique and complete; these gate Gold (blocking), the quarantine rate only warns."""
    key = dg.AssetKey(["silver", entity.plural])
    quarantine_key = dg.AssetKey(["silver", f"{entity.plural}_quarantine"])

    def values(spark, full, alive):  # one scan answers both value checks
        return silver_layer.silver_values(spark, entity, clock.utcnow(), full)

    checks = [
        Check(key, "primary_key_unique", f"Every {entity.value} id is present and appears once.",
              lambda spark, full, alive: silver_layer.silver_primary_key(spark, entity, full=full), blocking=True),
        Check(key, "types_and_ranges",
              "Columns exactly as documented; timestamps between Reddit's launch and now; required values present"
              + ("; sentiment in [-1, 1]." if entity is Entity.COMMENT else "."),
              values, blocking=True, part=0),
    ]
    if entity is Entity.COMMENT:
        checks.append(Check(key, "post_id_parsed", "Every comment's post_id is the post id in its permalink.",
                            values, blocking=True, part=1))
    checks += [
        Check(key, "bronze_reconciled",
              "Every Bronze row Silver has read is in Silver, in quarantine, or an older version of an id.",
              lambda spark, full, alive: silver_layer.bronze_reconciled(spark, entity, full=full), blocking=True),
        Check(quarantine_key, "quarantine_rate",
              "The share of the latest batch quarantined stays under LAKEHOUSE_QUARANTINE_MAX_RATE (warns).",
              lambda spark, full, alive: silver_layer.quarantine_rate(
                  spark, entity, load_settings().quarantine_max_rate[entity.value]),
              severity=dg.AssetCheckSeverity.WARN),
    ]
    return layer_checks(checks)


def silver_asset(entity: Entity) -> dg.AssetsDefinition:
    silver, quarantine = SILVER[entity], QUARANTINE[entity]
    bronze_key = dg.AssetKey(["bronze", entity.plural])
    silver_key = dg.AssetKey(["silver", entity.plural])
    quarantine_key = dg.AssetKey(["silver", f"{entity.plural}_quarantine"])
    checks = silver_checks(entity)

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
        check_specs=[c.spec for c in checks],
        can_subset=True,  # the nightly full pass runs the checks alone
        pool=POOL,
    )
    def _silver(context: dg.AssetExecutionContext, spark: SparkResource, compute: ComputeResource,
                lakehouse: LakehouseResource):
        """MERGE the Bronze rows Silver has not read, quarantine what breaks the contract, then check it."""
        if selected(context, silver_key, quarantine_key):
            yield from _update(context, spark, compute, lakehouse)
        yield from evaluate_checks(context, spark.spark_session, checks)

    def _update(context, spark, compute, lakehouse):
        alive = liveness(context.instance)
        wanted = context.selected_asset_keys
        if compute.remote:
            extras = {"dead_writers": dead_writers(lakehouse, entity, alive), "rebuild": rebuilding(context)}
            yield from (r for r in compute.run_step(context, "silver", entity, extras=extras).get_results()
                        if not isinstance(r, dg.MaterializeResult) or r.asset_key in wanted)
            return
        session = spark.spark_session
        if rebuilding(context):
            result = operations.rebuild_silver(session, entity, alive=alive)
            record_refresh(session, context, silver.identifier,
                           {"rows": result.inserted, "quarantined": result.quarantined,
                            "bronze_snapshot": result.to_snapshot})
        else:
            result = silver_layer.update_silver(session, entity, alive=alive)
            if result.held:  # a Bronze gate failed and stands: this run did not evaluate it, so Silver waits
                raise dg.Failure(
                    description=held_message(silver.identifier, BRONZE[entity].identifier, result.held,
                                                    result.to_snapshot),
                    metadata={"held_by": ", ".join(h["check"] for h in result.held),
                              "bronze_snapshot": str(result.to_snapshot)})
        context.log.info(
            f"{BRONZE[entity].identifier} snapshots ({result.from_snapshot}, {result.to_snapshot}]: "
            f"{result.bronze_rows} rows -> {result.inserted} inserted, {result.updated} updated, "
            f"{result.unchanged} unchanged, {result.duplicates_collapsed} duplicates collapsed, "
            f"{result.quarantined} quarantined"
        )
        if silver_key in wanted:
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
        if quarantine_key in wanted:
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

defs = dg.Definitions(assets=[silver_posts, silver_comments])
