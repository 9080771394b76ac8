"""The nightly full quality pass: every asset check over whole tables, not only what changed since it passed."""

import dagster as dg

from lakehouse_assets.metadata import CHECK_SCOPE_TAG

full_quality_checks = dg.define_asset_job(
    "full_quality_checks",
    selection=dg.AssetSelection.all_asset_checks(),
    description="Every asset check over whole tables (sensor runs check what changed since a check last passed).",
    tags={CHECK_SCOPE_TAG: "full"},
)

defs = dg.Definitions(
    jobs=[full_quality_checks],
    schedules=[
        dg.ScheduleDefinition(
            job=full_quality_checks,
            cron_schedule="0 3 * * *",  # nightly, when no files usually land
            default_status=dg.DefaultScheduleStatus.RUNNING,
        )
    ],
)
