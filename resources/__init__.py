"""Dagster resources, one set per environment; `resources_for(settings)` is the only switch."""

from __future__ import annotations

from lakehouse.settings import LakehouseSettings
from resources.lakehouse import LakehouseResource
from resources.spark import SparkResource


def resources_for(settings: LakehouseSettings) -> dict:
    """The resources of `settings.environment`: both environments share the keys, so assets never branch."""
    return {
        "lakehouse": LakehouseResource.from_settings(settings),
        "spark": SparkResource.from_settings(settings),
    }


__all__ = ["LakehouseResource", "SparkResource", "resources_for"]
