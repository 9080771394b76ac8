"""The landing zone as an injected resource: a local folder, or an S3 bucket through dagster-aws."""

from __future__ import annotations

import dagster as dg
from dagster_aws.s3 import S3Resource

from lakehouse.landing import LandingZone, LocalLandingZone, S3LandingZone


class LandingZoneResource(dg.ConfigurableResource):
    """Where raw files land. Subclasses pick the storage; the sensor and Bronze only call `zone()`."""

    def zone(self) -> LandingZone:
        raise NotImplementedError


class LocalLandingZoneResource(LandingZoneResource):
    """A folder laid out like the input bucket (the embedded default)."""

    root: str

    def zone(self) -> LandingZone:
        zone = LocalLandingZone(self.root)
        zone.ensure_layout()
        return zone


class S3LandingZoneResource(LandingZoneResource):
    """An S3 bucket and prefix; the client comes from dagster-aws (standard credential chain)."""

    bucket: str
    prefix: str = ""
    s3: S3Resource

    def zone(self) -> LandingZone:
        return S3LandingZone(self.s3.get_client(), self.bucket, self.prefix)
