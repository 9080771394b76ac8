"""The Spark session resource: one lazily started session per run process, shared by every asset in the run."""

from __future__ import annotations

from dagster_pyspark import LazyPySparkResource

from lakehouse.settings import LakehouseSettings
from lakehouse.spark import spark_conf


class SparkResource(LazyPySparkResource):
    """dagster-pyspark's lazy session, configured from the lakehouse settings (local mode or a cluster URL).

    With the in-process executor all assets of a run share this process, so Spark starts once per run,
    and only when an asset actually needs it.
    """

    @classmethod
    def from_settings(cls, settings: LakehouseSettings) -> "SparkResource":
        settings.home_abs.mkdir(parents=True, exist_ok=True)
        return cls(spark_config=spark_conf(settings))
