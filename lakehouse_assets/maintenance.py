"""Table maintenance: compaction, manifest rewrites and snapshot expiry (lakehouse/maintenance.py), in the
`lakehouse` pool so it never runs beside a run that writes. The tables that grew are done when they grew (the
table_growth sensor, sensors/table_growth.py); every table nightly."""

from datetime import timedelta

import dagster as dg
from pydantic import Field

from lakehouse import maintenance
from lakehouse.markdown import markdown_table
from lakehouse_assets.bronze import POOL
from resources import LakehouseResource, SparkResource


class MaintenanceConfig(dg.Config):
    retention_hours: int = Field(default=0, description="history kept for time travel; 0: "
                                 "LAKEHOUSE_SNAPSHOT_RETENTION_HOURS (snapshots a mark needs are always kept)")
    compact: bool = Field(default=True, description="compact small data files and rewrite manifests")
    min_input_files: int = Field(default=maintenance.MIN_INPUT_FILES, description="compact a partition once it "
                                 "holds this many small files")
    tables: list[str] = Field(default=[], description="the tables to maintain, e.g. ['silver.posts']; none: all "
                              "(an unknown name fails the run)")
    remove_orphans: bool = Field(default=True, description="delete files no snapshot references (left by failed "
                                 "commits, older than three days): a listing of every table's folder")


@dg.op(pool=POOL, description="Compact small files, rewrite manifests, expire old snapshots of every table.")
def maintain_tables(context: dg.OpExecutionContext, config: MaintenanceConfig, spark: SparkResource,
                    lakehouse: LakehouseResource) -> dg.Output[list]:
    hours = config.retention_hours or lakehouse.snapshot_retention_hours
    done = [m.summary() for m in maintenance.maintain(spark.spark_session, timedelta(hours=hours),
                                                       compact=config.compact,
                                                       remove_orphans=config.remove_orphans,
                                                       min_input_files=config.min_input_files,
                                                       only=config.tables or None)]
    context.log.info(f"maintained {len(done)} tables, history kept {hours} h")
    columns = ["table", "data_files_before", "data_files_after", "snapshots_before", "snapshots_after",
               "rewritten_manifests", "kept_for_marks"]
    return dg.Output(done, metadata={
        "tables": dg.MetadataValue.md(markdown_table(done, columns)),
        "data_files_after": sum(m["data_files_after"] for m in done),
        "snapshots_after": sum(m["snapshots_after"] for m in done),
    })


@dg.job(description="Table maintenance: compaction, manifest rewrites, snapshot expiry (lakehouse maintain).")
def table_maintenance():
    maintain_tables()


defs = dg.Definitions(
    jobs=[table_maintenance],
    schedules=[
        dg.ScheduleDefinition(
            name="table_maintenance_nightly",
            job=table_maintenance,
            cron_schedule="47 3 * * *",  # after the nightly full checks; the orphan listing once a day
            default_status=dg.DefaultScheduleStatus.RUNNING,
        ),
    ],
)
