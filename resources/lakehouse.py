"""The lakehouse resource: where the lakehouse lives, its Iceberg catalog (for Python readers) and its SQL engine."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from lakehouse.settings import DEFAULT_QUARANTINE_MAX_RATE, Environment, LakehouseSettings


class LakehouseResource(dg.ConfigurableResource):
    """Environment, data root and AWS locations; the catalog and the query engine are derived from them.

    No credentials here: on AWS they come from the standard chain (environment, profile, instance or task role).
    """

    environment: str = Environment.LOCAL.value
    home: str = ".lakehouse"
    s3_bucket: str | None = None
    aws_region: str | None = None
    aws_endpoint: str | None = None
    glue_warehouse: str | None = None
    athena_workgroup: str = "primary"
    athena_output_location: str | None = None
    # The quarantine_rate checks warn when more than this share of a batch's rows is quarantined, per entity.
    quarantine_max_rate: dict[str, float] = dict(DEFAULT_QUARANTINE_MAX_RATE)
    snapshot_retention_hours: int = 168  # table maintenance's time-travel window

    @classmethod
    def from_settings(cls, settings: LakehouseSettings) -> "LakehouseResource":
        return cls(
            environment=settings.environment.value, home=str(settings.home_abs), s3_bucket=settings.s3_bucket,
            aws_region=settings.aws_region, aws_endpoint=settings.aws_endpoint,
            glue_warehouse=settings.glue_warehouse, athena_workgroup=settings.athena_workgroup,
            athena_output_location=settings.athena_output_location,
            quarantine_max_rate=settings.quarantine_max_rate,
            snapshot_retention_hours=settings.snapshot_retention_hours,
        )

    @property
    def settings(self) -> LakehouseSettings:
        return LakehouseSettings(
            environment=Environment(self.environment), home=Path(self.home), s3_bucket=self.s3_bucket,
            aws_region=self.aws_region, aws_endpoint=self.aws_endpoint, glue_warehouse=self.glue_warehouse,
            athena_workgroup=self.athena_workgroup, athena_output_location=self.athena_output_location,
            quarantine_max_rate=dict(self.quarantine_max_rate),
            snapshot_retention_hours=self.snapshot_retention_hours,
        )

    def catalog(self):
        """pyiceberg's view of the catalog Spark writes to (SQLite locally, Glue on AWS)."""
        from lakehouse.catalog import catalog_for

        return catalog_for(self.settings)
