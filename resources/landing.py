"""The landing zone as an injected resource: a local folder, or an S3 bucket through dagster-aws."""

from __future__ import annotations

import functools

import dagster as dg

from lakehouse.events import EventQueue
from lakehouse.landing import LandingZone, LocalLandingZone, S3LandingZone


class LandingZoneResource(dg.ConfigurableResource):
    """Where raw files land. Subclasses pick the storage; the sensor and Bronze only call `zone()`."""

    def zone(self) -> LandingZone:
        raise NotImplementedError

    def queue(self) -> EventQueue | None:
        """The queue of the zone's ObjectCreated events, when it has one; None: the sensor lists the zone."""
        return None


class LocalLandingZoneResource(LandingZoneResource):
    """A folder laid out like the input bucket (the embedded default)."""

    root: str

    def zone(self) -> LandingZone:
        zone = LocalLandingZone(self.root)
        zone.ensure_layout()
        return zone


class S3LandingZoneResource(LandingZoneResource):
    """An S3 bucket and prefix; the client comes from dagster-aws (standard credential chain).

    dagster-aws's `S3Resource` is built when the zone is asked for, not nested as a field: importing dagster-aws
    costs every local run process ~1.7 s, and only AWS mode needs it."""

    bucket: str
    prefix: str = ""
    region_name: str | None = None
    endpoint_url: str | None = None  # an S3-compatible endpoint other than AWS (a test server, a VPC endpoint)
    queue_url: str | None = None  # the SQS queue the bucket sends its ObjectCreated events to
    dead_letter_url: str | None = None

    def zone(self) -> LandingZone:
        return S3LandingZone(_client("s3", self.region_name, self.endpoint_url), self.bucket, self.prefix)

    def queue(self) -> EventQueue | None:
        if not self.queue_url:
            return None
        client = _client("sqs", self.region_name, self.endpoint_url)
        return EventQueue(client, self.queue_url, self.bucket, self.prefix, self.dead_letter_url)


@functools.lru_cache(maxsize=8)
def _client(service: str, region: str | None, endpoint: str | None):
    """One boto3 client per service and place in a process (they are thread-safe, and credentials from a role
    refresh themselves): building one loads botocore's endpoint and service models, ~0.25 s, which was most of a
    sensor tick on the event path (bench/sensor_ticks.py --queue). S3's through dagster-aws, as before."""
    if service == "s3":
        from dagster_aws.s3 import S3Resource

        return S3Resource(region_name=region, endpoint_url=endpoint).get_client()
    import boto3

    return boto3.client(service, region_name=region, endpoint_url=endpoint)
