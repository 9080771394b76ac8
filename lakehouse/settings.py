"""The one place where the environment is chosen.

Everything environment-specific (where the landing zone is, which Iceberg catalog, which Spark master,
which SQL engine) is derived from `LakehouseSettings`, built from environment variables by `load_settings()`.
Nothing else in the code base reads `LAKEHOUSE_*` variables.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path


class Environment(str, Enum):
    LOCAL = "local"
    AWS = "aws"


# Iceberg catalog name inside Spark and pyiceberg; tables are addressed as `<namespace>.<table>`.
CATALOG_NAME = "lakehouse"
NAMESPACES = ("bronze", "silver", "gold")
DEFAULT_QUARANTINE_MAX_RATE = {"post": 0.05, "comment": 0.35}


def _rates(value: str | None) -> dict[str, float]:
    """`0.1` (every entity) or `post=0.05,comment=0.35`."""
    rates = dict(DEFAULT_QUARANTINE_MAX_RATE)
    for item in filter(None, (value or "").split(",")):
        key, sep, rate = item.partition("=")
        if sep:
            rates[key.strip()] = float(rate)
        else:
            rates = {k: float(key) for k in rates}
    return rates


@dataclass(frozen=True)
class LakehouseSettings:
    environment: Environment = Environment.LOCAL
    # Local data root: landing zone, Iceberg warehouse, catalog database, Dagster home.
    home: Path = Path(".lakehouse")
    # Spark master: `local[*]` in the run process, or a cluster URL (`spark://host:7077`).
    spark_master: str = "local[*]"
    # 3g keeps a 3M-row build under 4 GB of peak memory (JVM heap + off-heap + Python) at no time cost (bench/).
    spark_driver_memory: str = "3g"
    # None: 4 in local mode (two cores, small shuffles); on a cluster Spark's default with adaptive coalescing.
    spark_shuffle_partitions: int | None = None
    spark_quick_jit: str = "auto"  # C1-only JIT for the driver: auto (small sensor batches) | on | off
    extra_spark_conf: dict[str, str] = field(default_factory=dict)
    # AWS: Glue 5.0 and EMR 7 bring Iceberg and the AWS SDK (their jobs set LAKEHOUSE_ICEBERG_PROVIDED=true);
    # any other Spark (the Dagster run process running the checks) fetches them as packages.
    iceberg_provided: bool = False
    # AWS mode (filled in by the AWS issue; kept here so the switch stays in one place).
    s3_bucket: str | None = None
    s3_prefix: str = ""
    aws_region: str | None = None
    glue_warehouse: str | None = None
    aws_endpoint: str | None = None  # one endpoint for S3, Glue and Athena (a moto server in tests); None: AWS
    athena_workgroup: str = "primary"
    athena_output_location: str | None = None  # s3://... for query results; default: <bucket>/athena-results/
    # Where the Spark steps run: in_process (the run's own session) | subprocess | glue (jobs through Pipes).
    compute: str = "in_process"
    glue_job_name: str | None = None
    # The landing-zone sensor: how often it looks, how many files one run ingests.
    sensor_interval_seconds: int = 5
    sensor_batch_size: int = 200
    sensor_max_runs_per_tick: int = 25
    # Silver's quarantine_rate checks warn above this share of a batch's rows. Real SocialGrep comment
    # exports quarantine ~27% for an empty sentiment (the meirl sample), so comments get more room.
    quarantine_max_rate: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_QUARANTINE_MAX_RATE))

    @property
    def home_abs(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def landing_root(self) -> Path:
        """Laid out like the S3 input bucket: `input/post/`, `input/comment/`."""
        return self.home_abs / "landing"

    @property
    def warehouse_path(self) -> Path:
        return self.home_abs / "warehouse"

    @property
    def catalog_db_path(self) -> Path:
        return self.home_abs / "catalog.db"

    @property
    def warehouse_uri(self) -> str:
        """Where Iceberg data and metadata files go: a folder locally, S3 on AWS."""
        if self.environment is Environment.LOCAL:
            return self.warehouse_path.as_uri()
        return self.glue_warehouse or f"s3://{self.s3_bucket}/warehouse"

    @property
    def athena_results_uri(self) -> str:
        return self.athena_output_location or f"s3://{self.s3_bucket}/athena-results/"

    @property
    def dagster_home(self) -> Path:
        return self.home_abs / "dagster"


def load_settings(env: dict[str, str] | None = None) -> LakehouseSettings:
    """Build settings from `LAKEHOUSE_*` environment variables (defaults: the embedded local lakehouse)."""
    env = dict(os.environ if env is None else env)
    environment = Environment(env.get("LAKEHOUSE_ENV", Environment.LOCAL.value).lower())
    extra = {}
    # LAKEHOUSE_SPARK_CONF="k1=v1,k2=v2" lets an operator tune Spark without code changes.
    for item in filter(None, env.get("LAKEHOUSE_SPARK_CONF", "").split(",")):
        key, _, value = item.partition("=")
        extra[key.strip()] = value.strip()
    return LakehouseSettings(
        environment=environment,
        home=Path(env.get("LAKEHOUSE_HOME", ".lakehouse")),
        spark_master=env.get("LAKEHOUSE_SPARK_MASTER", "local[*]"),
        spark_driver_memory=env.get("LAKEHOUSE_SPARK_DRIVER_MEMORY", "3g"),
        spark_shuffle_partitions=(int(env["LAKEHOUSE_SPARK_SHUFFLE_PARTITIONS"])
                                  if env.get("LAKEHOUSE_SPARK_SHUFFLE_PARTITIONS") else None),
        spark_quick_jit=env.get("LAKEHOUSE_SPARK_QUICK_JIT", "auto").lower(),
        extra_spark_conf=extra,
        iceberg_provided=env.get("LAKEHOUSE_ICEBERG_PROVIDED", "").lower() in ("1", "true", "yes"),
        s3_bucket=env.get("LAKEHOUSE_S3_BUCKET"),
        s3_prefix=env.get("LAKEHOUSE_S3_PREFIX", ""),
        aws_region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION"),
        glue_warehouse=env.get("LAKEHOUSE_GLUE_WAREHOUSE"),
        aws_endpoint=env.get("LAKEHOUSE_AWS_ENDPOINT") or env.get("LAKEHOUSE_S3_ENDPOINT"),
        athena_workgroup=env.get("LAKEHOUSE_ATHENA_WORKGROUP", "primary"),
        athena_output_location=env.get("LAKEHOUSE_ATHENA_OUTPUT"),
        compute=env.get("LAKEHOUSE_COMPUTE", "in_process"),
        glue_job_name=env.get("LAKEHOUSE_GLUE_JOB"),
        sensor_interval_seconds=int(env.get("LAKEHOUSE_SENSOR_INTERVAL", "5")),
        sensor_batch_size=int(env.get("LAKEHOUSE_SENSOR_BATCH_SIZE", "200")),
        sensor_max_runs_per_tick=int(env.get("LAKEHOUSE_SENSOR_MAX_RUNS_PER_TICK", "25")),
        quarantine_max_rate=_rates(env.get("LAKEHOUSE_QUARANTINE_MAX_RATE")),
    )
