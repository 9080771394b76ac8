"""The lakehouse resource: where the landing zone, the catalog and the query engine are, per environment."""

from __future__ import annotations

import dagster as dg

from lakehouse.landing import LandingZone, LocalLandingZone
from lakehouse.settings import Environment, LakehouseSettings, load_settings


class LakehouseResource(dg.ConfigurableResource):
    """Settings of one lakehouse: its environment and data root. Everything else is derived from them."""

    environment: str = Environment.LOCAL.value
    home: str = ".lakehouse"

    @classmethod
    def from_settings(cls, settings: LakehouseSettings) -> "LakehouseResource":
        return cls(environment=settings.environment.value, home=str(settings.home_abs))

    @property
    def settings(self) -> LakehouseSettings:
        return load_settings({"LAKEHOUSE_ENV": self.environment, "LAKEHOUSE_HOME": self.home})

    def landing_zone(self) -> LandingZone:
        settings = self.settings
        if settings.environment is Environment.LOCAL:
            zone = LocalLandingZone(settings.landing_root)
            zone.ensure_layout()
            return zone
        raise NotImplementedError("the S3 landing zone arrives with the AWS issue (#5)")
