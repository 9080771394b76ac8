"""Bronze: landed SocialGrep files appended to Iceberg as received, one batch per run."""

import dagster as dg

from lakehouse import bronze_layer, operations
from lakehouse.contracts import BRONZE, Entity
from lakehouse_assets.metadata import (
    REASON_TAG, REQUESTED_BY_TAG, Check, evaluate_checks, layer_checks, markdown_table, selected, table_metadata,
)
from lakehouse.ingestion import unsettled_writers
from lakehouse.writers import Liveness
from resources import ComputeResource, LakehouseResource, LandingZoneResource, SparkResource
from resources.runs import liveness, writer_of

# Runs touching the same tables queue behind each other (Iceberg commits and watermarks assume one writer).
POOL = "lakehouse"


class BronzeConfig(dg.Config):
    """Which landed files to ingest; empty means every landed file version not yet in the ingestion log."""

    keys: list[str] = []
    # An operator's `lakehouse reprocess`: take the named versions again although the log holds them as rejected
    # or retracted (a loaded version must be retracted first).
    reprocess: bool = False


def dead_writers(lakehouse: LakehouseResource, entity: Entity, alive: Liveness) -> list[str | None]:
    """Writers of unlogged Bronze batches that the instance knows are gone: what a Spark step running as a job
    may roll back (it cannot ask the instance itself)."""
    return sorted((w for w in unsettled_writers(lakehouse.catalog(), entity) if not alive(w)), key=str)


def bronze_checks(entity: Entity) -> list[Check]:
    """Bronze keeps everything raw: the contract's header, every record of every file, complete lineage.

    The blocking ones are gates: a failure holds Silver where it is on every path (a catch-up run, a hand-made
    materialisation, a job outside Dagster) until a later evaluation passes or an operator accepts it."""
    key = dg.AssetKey(["bronze", entity.plural])
    return layer_checks([
        Check(key, "header_matches_contract",
              "The latest batch's files have the contract's header; rejected files and new columns warn.",
              lambda spark, full, alive: bronze_layer.bronze_header(spark, entity), severity=dg.AssetCheckSeverity.WARN),
        Check(key, "rows_match_file",
              "Bronze rows per file equal the records an independent CSV parser counts; parse errors counted.",
              lambda spark, full, alive: bronze_layer.bronze_row_counts(spark, entity, alive), blocking=True,
              gate=True),
        Check(key, "ingestion_metadata_complete",
              "Every row names its file, version, row (1..n, no gaps) and a batch the ingestion log settled.",
              lambda spark, full, alive: bronze_layer.bronze_metadata(spark, entity, alive), blocking=True,
              gate=True),
    ])


def bronze_asset(entity: Entity) -> dg.AssetsDefinition:
    contract = BRONZE[entity]
    key = dg.AssetKey(["bronze", entity.plural])
    checks = bronze_checks(entity)

    @dg.multi_asset(
        name=f"bronze__{entity.plural}",  # the op name run configs address (the sensor, `lakehouse reprocess`)
        specs=[dg.AssetSpec(
            key,
            group_name="bronze",
            kinds={"spark", "iceberg"},
            description=f"Raw {entity.value} rows as received, all strings, with source file, row number and batch.",
            metadata={"dagster/table_name": f"lakehouse.{contract.identifier}"},
        )],
        check_specs=[c.spec for c in checks],
        can_subset=True,  # the nightly full pass runs the checks alone
        pool=POOL,
    )
    def _bronze(
        context: dg.AssetExecutionContext, config: BronzeConfig, spark: SparkResource, landing: LandingZoneResource,
        compute: ComputeResource, lakehouse: LakehouseResource,
    ):
        """Append the landed files not yet ingested to Bronze, then check it."""
        if selected(context, key):
            yield _ingest(context, config, spark, landing, compute, lakehouse)
        yield from evaluate_checks(context, spark.spark_session, checks)

    def _ingest(context, config, spark, landing, compute, lakehouse) -> dg.MaterializeResult:
        alive = liveness(context.instance)
        if compute.remote:
            extras = {"keys": config.keys, "reprocess": config.reprocess,
                      "dead_writers": dead_writers(lakehouse, entity, alive)}
            return compute.run_step(context, "bronze", entity, extras=extras).get_materialize_result()
        session = spark.spark_session
        result = bronze_layer.ingest_bronze(session, landing.zone(), entity, keys=config.keys or None,
                                        writer=writer_of(context), alive=alive, reprocess=config.reprocess)
        if config.reprocess:
            tags = context.run.tags
            operations.record(session, "reprocess", ", ".join(config.keys), tags.get(REQUESTED_BY_TAG) or "launchpad",
                              tags.get(REASON_TAG), {"files": [vars(f) for f in result.files]}, context.run_id)
        for outcome in result.rejected:
            context.log.error(f"rejected {outcome.key}: [{outcome.reason}] {outcome.message}")
        files = [vars(f) for f in result.files]
        context.log.info(
            f"batch {result.batch_id}: {len(result.files)} files, {result.rows} rows "
            f"({result.already_ingested} landed files already ingested)"
        )
        return dg.MaterializeResult(
            asset_key=key,
            metadata=table_metadata(
                session,
                contract,
                batch_id=result.batch_id,
                batch_rows=result.rows,
                batch_files=len(result.files),
                malformed_rows=result.malformed_rows,
                rejected_files=len(result.rejected),
                already_ingested_files=result.already_ingested,
                rolled_back_batches=len(result.rolled_back_batches),
                files=dg.MetadataValue.md(
                    markdown_table(files, bronze_layer.FILE_COLUMNS)
                    if files else "no new files"
                ),
            )
        )

    return _bronze


bronze_posts = bronze_asset(Entity.POST)
bronze_comments = bronze_asset(Entity.COMMENT)

defs = dg.Definitions(assets=[bronze_posts, bronze_comments])
