"""The lakehouse resource: the settings of one lakehouse and its Iceberg catalog (for Python readers)."""

from __future__ import annotations

import dagster as dg

from lakehouse.settings import DEFAULT_QUARANTINE_MAX_RATE, Environment, LakehouseSettings, load_settings


class LakehouseResource(dg.ConfigurableResource):
    """Environment and data root; the catalog and the query engine are derived from them."""

    environment: str = Environment.LOCAL.value
    home: str = ".lakehouse"
    # The quarantine_rate checks warn when more than this share of a batch's rows is quarantined, per entity.
    quarantine_max_rate: dict[str, float] = dict(DEFAULT_QUARANTINE_MAX_RATE)

    @classmethod
    def from_settings(cls, settings: LakehouseSettings) -> "LakehouseResource":
        return cls(environment=settings.environment.value, home=str(settings.home_abs),
                   quarantine_max_rate=settings.quarantine_max_rate)

    @property
    def settings(self) -> LakehouseSettings:
        return load_settings({"LAKEHOUSE_ENV": self.environment, "LAKEHOUSE_HOME": self.home})

    def catalog(self):
        """pyiceberg's view of the catalog Spark writes to."""
        from lakehouse.query import local_catalog

        if self.settings.environment is not Environment.LOCAL:
            raise NotImplementedError("the Glue catalog is configured by the AWS issue (#5)")
        return local_catalog(self.settings)
