"""Spark session configuration for each environment.

`spark_conf(settings)` is the single source of Spark settings; the Dagster resource, the CLI, the tests and
an AWS job entry point all build their session from it, so the transformations see the same catalog everywhere.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
from pathlib import Path
from typing import Callable, TypeVar

from lakehouse import class_cache
from lakehouse.settings import CATALOG_NAME, Environment, LakehouseSettings

ICEBERG_RUNTIME_JAR = "iceberg-spark-runtime-3.5_2.12-1.10.2.jar"
# Maven coordinates, for machines that can reach Maven Central instead of the PyPI jar bundle.
ICEBERG_PACKAGE = "org.apache.iceberg:iceberg-spark-runtime-3.5_2.12:1.10.2"
ICEBERG_AWS_PACKAGE = "org.apache.iceberg:iceberg-aws-bundle:1.10.2"
SQLITE_JDBC_PACKAGE = "org.xerial:sqlite-jdbc:3.46.1.3"
# Debian's libxerial-sqlite-jdbc-java ships the driver without its native library (that is in -jni).
DEBIAN_SQLITE_JDBC_JAR = Path("/usr/share/java/sqlite-jdbc.jar")
DEBIAN_JNI_DIR = Path("/usr/lib/x86_64-linux-gnu/jni")
T = TypeVar("T")
log = logging.getLogger(__name__)


def iceberg_runtime_jar() -> Path | None:
    """The Iceberg Spark runtime jar shipped inside the `snowpark-connect-deps-iceberg` wheel, if installed."""
    try:
        import snowpark_connect_deps_iceberg as deps
    except ImportError:
        return None
    jar = Path(deps.__file__).parent / "jars" / ICEBERG_RUNTIME_JAR
    return jar if jar.exists() else None


def _local_catalog_conf(settings: LakehouseSettings) -> dict[str, str]:
    prefix = f"spark.sql.catalog.{CATALOG_NAME}"
    return {
        prefix: "org.apache.iceberg.spark.SparkCatalog",
        f"{prefix}.type": "jdbc",
        f"{prefix}.uri": f"jdbc:sqlite:{settings.catalog_db_path}",
        f"{prefix}.warehouse": settings.warehouse_path.as_uri(),
        f"{prefix}.jdbc.schema-version": "V1",
        # SQLite allows one writer: one pooled connection per JVM, WAL so readers never block the writer,
        # and a busy timeout so a second process (another run, pyiceberg) waits instead of failing.
        f"{prefix}.clients": "1",
        f"{prefix}.jdbc.journal_mode": "WAL",
        f"{prefix}.jdbc.busy_timeout": "60000",
        # Other processes commit too (Pipes jobs, a second run): read each table's current metadata, not a
        # copy cached for 30 s.
        f"{prefix}.cache-enabled": "false",
    }


def _glue_catalog_conf(settings: LakehouseSettings) -> dict[str, str]:
    prefix = f"spark.sql.catalog.{CATALOG_NAME}"
    conf = {
        prefix: "org.apache.iceberg.spark.SparkCatalog",
        f"{prefix}.catalog-impl": "org.apache.iceberg.aws.glue.GlueCatalog",
        f"{prefix}.io-impl": "org.apache.iceberg.aws.s3.S3FileIO",
        f"{prefix}.warehouse": settings.warehouse_uri,
    }
    if settings.aws_region:
        conf[f"{prefix}.client.region"] = settings.aws_region
    if settings.aws_endpoint:  # an S3/Glue-compatible endpoint other than AWS (a test server, a VPC endpoint)
        conf |= {f"{prefix}.glue.endpoint": settings.aws_endpoint, f"{prefix}.s3.endpoint": settings.aws_endpoint,
                 f"{prefix}.s3.path-style-access": "true"}
    return conf


def _jar_conf(settings: LakehouseSettings) -> dict[str, str]:
    if settings.environment is Environment.AWS:
        if settings.iceberg_provided:
            return {}  # Glue 5.0 / EMR 7 bundle Iceberg and the AWS SDK.
        # Elsewhere (the Dagster run process, which runs the checks) Spark needs the Iceberg runtime and its AWS
        # bundle (S3FileIO, GlueCatalog) from Maven.
        return {"spark.jars.packages": f"{ICEBERG_PACKAGE},{ICEBERG_AWS_PACKAGE}"}
    jars, packages = [], []
    iceberg = iceberg_runtime_jar()
    (jars.append(str(iceberg)) if iceberg else packages.append(ICEBERG_PACKAGE))
    sqlite_jar = settings.sqlite_jdbc_jar or DEBIAN_SQLITE_JDBC_JAR
    conf: dict[str, str] = {}
    if sqlite_jar.exists():
        jars.append(str(sqlite_jar))
        if DEBIAN_JNI_DIR.exists():
            conf["spark.executor.extraJavaOptions"] = f"-Djava.library.path={DEBIAN_JNI_DIR}"
    else:
        packages.append(SQLITE_JDBC_PACKAGE)
    if jars:
        conf["spark.jars"] = ",".join(jars)
    if packages:
        conf["spark.jars.packages"] = ",".join(packages)
    return conf


# Short runs on two cores: the optimising JIT (C2) spends more CPU compiling than it saves on a small batch,
# so C1 alone finishes sooner; on a large batch C2's code wins (measured: CONVENTIONS.md). The Spark resource
# adds this per run ("auto": when the sensor's batch is small); LAKEHOUSE_SPARK_QUICK_JIT=on|off forces it.
QUICK_JIT_OPTION = "-XX:TieredStopAtLevel=1"
# A driver that lives for a run (or a test worker's suite) collects with the throughput collector: on two busy
# cores G1's concurrent threads cost more CPU than its short pauses save (bench/results/2026-12-02-snapshot-memo.md:
# whole-graph runs on test data ~7% sooner). The warm engine keeps G1, which gives free heap back when idle
# (engine.engine_conf).
THROUGHPUT_GC_OPTION = "-XX:+UseParallelGC"


def _driver_java_options(settings: LakehouseSettings, spark_jars: str) -> str:
    options = [THROUGHPUT_GC_OPTION]
    if archive := class_cache.driver_options(settings, spark_jars):
        options.append(archive)
    if DEBIAN_JNI_DIR.exists():
        options.append(f"-Djava.library.path={DEBIAN_JNI_DIR}")
    if settings.spark_quick_jit == "on":  # forced for every session ("auto" is the Spark resource's per-run choice)
        options.append(QUICK_JIT_OPTION)
    return " ".join(options)


def spark_conf(settings: LakehouseSettings) -> dict[str, str]:
    """All Spark settings for `settings.environment`; `settings.extra_spark_conf` wins over the defaults."""
    conf = {
        "spark.app.name": "lakehouse",
        "spark.master": settings.spark_master,
        "spark.sql.extensions": "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions",
        "spark.sql.defaultCatalog": CATALOG_NAME,
        "spark.sql.session.timeZone": "UTC",
        "spark.ui.showConsoleProgress": "false",
        "spark.log.level": "WARN",
    }
    partitions = settings.spark_shuffle_partitions or (4 if settings.spark_master.startswith("local") else None)
    if partitions:
        conf["spark.sql.shuffle.partitions"] = str(partitions)
    if settings.environment is Environment.LOCAL:
        conf.update(_local_catalog_conf(settings))
        conf.update(
            {
                "spark.driver.memory": settings.spark_driver_memory,
                # The driver is the only JVM in local mode; the UI costs start-up time and memory.
                "spark.ui.enabled": "false",
                "spark.driver.host": "127.0.0.1",
                "spark.driver.bindAddress": "127.0.0.1",
                "spark.sql.warehouse.dir": str(settings.home_abs / "spark-warehouse"),
            }
        )
    else:
        conf.update(_glue_catalog_conf(settings))
    conf.update(_jar_conf(settings))
    options = _driver_java_options(settings, conf.get("spark.jars", ""))
    if settings.environment is Environment.LOCAL and options:
        conf["spark.driver.extraJavaOptions"] = options
    conf.update(settings.extra_spark_conf)
    return conf


def get_spark(settings: LakehouseSettings):
    """Get (or create) this process's Spark session; outside Dagster (CLI, tests, AWS job entry point)."""
    from pyspark.sql import SparkSession

    builder = SparkSession.builder
    for key, value in spark_conf(settings).items():
        builder = builder.config(key, value)
    settings.home_abs.mkdir(parents=True, exist_ok=True)
    class_cache.start_building(settings)
    return builder.getOrCreate()


def end_gateway(gateway, timeout: float = 60) -> None:
    """Close a pyspark gateway and wait for its JVM to exit (killed when it does not within `timeout`)."""
    process = getattr(gateway, "proc", None)
    with contextlib.suppress(Exception):
        gateway.shutdown()
    if process is None:  # not ours to end (a gateway this process attached to)
        return
    with contextlib.suppress(OSError):
        process.stdin.close()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        log.warning("the driver JVM (pid %d) did not exit within %d s: killing it", process.pid, timeout)
        process.kill()
        process.wait()


def in_this_thread_context(spark, fn: Callable[..., T]) -> Callable[..., T]:
    """`fn` for another thread, with this thread's Spark local properties (the run's job group, which the warm
    engine cancels when the run dies) and its active session (a run on the engine has a session of its own)."""
    from pyspark.util import inheritable_thread_target

    target = inheritable_thread_target(fn)

    def run(*args, **kwargs) -> T:
        spark._jvm.org.apache.spark.sql.SparkSession.setActiveSession(spark._jsparkSession)
        return target(*args, **kwargs)

    return run
