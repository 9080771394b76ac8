"""Dagster resources, one set per environment; `resources_for(settings)` is the only switch."""

from __future__ import annotations

from lakehouse.settings import Environment, LakehouseSettings
from resources.compute import ComputeResource
from resources.lakehouse import LakehouseResource
from resources.landing import LandingZoneResource, LocalLandingZoneResource, S3LandingZoneResource
from resources.query import QueryResource
from resources.spark import SparkResource


def landing_resource(settings: LakehouseSettings) -> LandingZoneResource:
    if settings.environment is Environment.AWS:
        return S3LandingZoneResource(
            bucket=settings.s3_bucket or "",
            prefix=settings.s3_prefix,
            region_name=settings.aws_region,
            endpoint_url=settings.aws_endpoint,
            queue_url=settings.sqs_queue_url,
            dead_letter_url=settings.sqs_dead_letter_url,
        )
    return LocalLandingZoneResource(root=str(settings.landing_root))


def resources_for(settings: LakehouseSettings) -> dict:
    """The resources of `settings.environment`: both environments share the keys, so assets never branch."""
    lakehouse = LakehouseResource.from_settings(settings)
    return {
        "lakehouse": lakehouse,
        "compute": ComputeResource(mode=settings.compute, glue_job_name=settings.glue_job_name,
                                   pipes_bucket=settings.s3_bucket, aws_region=settings.aws_region,
                                   aws_endpoint=settings.aws_endpoint),
        "landing": landing_resource(settings),
        "query": QueryResource(lakehouse=lakehouse),
        "spark": SparkResource.from_settings(settings),
    }


__all__ = [
    "ComputeResource", "LakehouseResource", "LandingZoneResource", "LocalLandingZoneResource", "QueryResource", "S3LandingZoneResource",
    "SparkResource", "landing_resource", "resources_for",
]
