"""The one place where the environment is chosen.

Everything environment-specific (where the landing zone is, which Iceberg catalog, which Spark master,
which SQL engine) is derived from `LakehouseSettings`, built from environment variables by `load_settings()`.
Nothing else in the code base reads `LAKEHOUSE_*` variables.

Every setting is validated when it is read (definitions load, every `lakehouse` command, the job entry point):
a wrong value fails at start with the variable's name and the accepted values, never at the first run.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Callable, TypeVar


class Environment(str, Enum):
    LOCAL = "local"
    AWS = "aws"


# Iceberg catalog name inside Spark and pyiceberg; tables are addressed as `<namespace>.<table>`.
CATALOG_NAME = "lakehouse"
# `ops` holds the operator log (who retracted, reprocessed, accepted or rebuilt what, when and why).
NAMESPACES = ("bronze", "silver", "gold", "ops")
ENTITIES = ("post", "comment")  # contracts.Entity's values (settings import nothing of the project)
# Silver's quarantine_rate checks warn above this share of a batch's rows.
DEFAULT_QUARANTINE_MAX_RATE = {"post": 0.05, "comment": 0.05}
COMPUTE_MODES = ("in_process", "subprocess", "glue")
QUICK_JIT = ("auto", "on", "off")
ENGINE = ("auto", "off")
CLASS_CACHE = ("on", "off")
TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


class SettingsError(ValueError):
    """One or more `LAKEHOUSE_*` variables hold a value the lakehouse cannot run with."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid lakehouse settings:\n" + "\n".join(f"  - {p}" for p in problems))


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
    # The warm engine (lakehouse/engine.py): auto = runs attach to it when it runs, the sensor keeps it running
    # (local master, in-process compute); off = every run starts its own Spark session.
    engine: str = "auto"
    engine_idle_seconds: int = 1800  # the engine stops after this long without a run
    # Runs a driver serves before the engine replaces it (at an idle moment): what a run leaves in the JVM (Py4J
    # bindings of a killed run, class metadata, caches) is only freed with the JVM.
    engine_max_runs: int = 200
    # The engine driver's heap: routine micro-batches need far less than a full load, and the JVM grows to its
    # maximum over hundreds of runs whatever it needs; 2g keeps the whole tree (engine, daemon, code servers, run)
    # under 4 GB (bench/latency.py). Runs without the engine keep LAKEHOUSE_SPARK_DRIVER_MEMORY.
    engine_memory: str = "2g"
    # A class-data archive (AppCDS) for the local driver JVM: a cold driver starts and reaches its first results
    # about a third sooner (lakehouse/class_cache.py). Built once per Java and jar set, kept in the user's cache folder.
    class_cache: str = "on"
    class_cache_dir: Path = Path("~/.cache/lakehouse")
    # Table maintenance keeps this much history for time travel (snapshots an incremental mark needs stay longer).
    snapshot_retention_hours: int = 168
    # A table gets compacted (by the table_growth sensor) once this many data files were added since it last was:
    # a 10k-row posts batch adds ~30 (one per day it touches), and each small file costs every later run a read.
    compact_after_files: int = 200
    # The SQLite JDBC driver for Spark's local catalog (None: Debian's package, else Maven).
    sqlite_jdbc_jar: Path | None = None
    # AWS: Glue 5.0 and EMR 7 bring Iceberg and the AWS SDK (their jobs set LAKEHOUSE_ICEBERG_PROVIDED=true);
    # any other Spark (the Dagster run process running the checks) fetches them as packages.
    iceberg_provided: bool = False
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
    # AWS: the SQS queue the input bucket's ObjectCreated events go to (docs/aws.md). Set, the sensor reads the
    # queue each tick and lists the bucket only in a sweep every `sweep_interval_seconds`; unset, it lists each tick.
    sqs_queue_url: str | None = None
    sqs_dead_letter_url: str | None = None  # where messages of files the sensor gave up on go, with the cause
    sweep_interval_seconds: int = 3600
    # Local: the sensor learns what landed from the OS's file notifications (watchdog) and lists the folder only
    # once per process and every `sweep_interval_seconds`; off: it lists the folder every tick.
    landing_watch: str = "on"
    # A plain process writing Bronze from another host (a job on EMR without Pipes) holds a lease it renews every
    # third of this; one not renewed for this long is gone, and its unlogged batch is rolled back (lakehouse/writers.py).
    writer_lease_seconds: int = 300
    # Silver's quarantine_rate checks warn above this share of a batch's rows, per entity.
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
    def state_path(self) -> Path:
        """What the sensor keeps between ticks beside its cursor: the settled index (a cache of the log)."""
        return self.home_abs / "state"

    @property
    def sweep_request_path(self) -> Path:
        """`lakehouse sweep` leaves this file; the sensor's next tick takes it and sweeps in full."""
        return self.state_path / "sweep-requested"

    @property
    def dagster_home(self) -> Path:
        return self.home_abs / "dagster"


# --- reading and validating the environment ---------------------------------------------------------------------

T = TypeVar("T")
# Every variable the lakehouse reads; any other LAKEHOUSE_* variable is a typo and fails loudly.
KNOWN_VARIABLES = (
    "LAKEHOUSE_ENV", "LAKEHOUSE_HOME", "LAKEHOUSE_SPARK_MASTER", "LAKEHOUSE_SPARK_DRIVER_MEMORY",
    "LAKEHOUSE_SPARK_SHUFFLE_PARTITIONS", "LAKEHOUSE_SPARK_QUICK_JIT", "LAKEHOUSE_SPARK_CONF",
    "LAKEHOUSE_ENGINE", "LAKEHOUSE_ENGINE_IDLE_SECONDS", "LAKEHOUSE_ENGINE_MAX_RUNS", "LAKEHOUSE_ENGINE_MEMORY",
    "LAKEHOUSE_CLASS_CACHE", "LAKEHOUSE_CLASS_CACHE_DIR", "LAKEHOUSE_SNAPSHOT_RETENTION_HOURS",
    "LAKEHOUSE_COMPACT_AFTER_FILES", "LAKEHOUSE_SQLITE_JDBC_JAR", "LAKEHOUSE_ICEBERG_PROVIDED", "LAKEHOUSE_S3_BUCKET",
    "LAKEHOUSE_S3_PREFIX",
    "LAKEHOUSE_GLUE_WAREHOUSE", "LAKEHOUSE_AWS_ENDPOINT", "LAKEHOUSE_S3_ENDPOINT", "LAKEHOUSE_ATHENA_WORKGROUP",
    "LAKEHOUSE_ATHENA_OUTPUT", "LAKEHOUSE_COMPUTE", "LAKEHOUSE_GLUE_JOB", "LAKEHOUSE_SENSOR_INTERVAL",
    "LAKEHOUSE_SENSOR_BATCH_SIZE", "LAKEHOUSE_SENSOR_MAX_RUNS_PER_TICK", "LAKEHOUSE_QUARANTINE_MAX_RATE",
    "LAKEHOUSE_SQS_QUEUE_URL", "LAKEHOUSE_SQS_DEAD_LETTER_URL", "LAKEHOUSE_SWEEP_INTERVAL", "LAKEHOUSE_LANDING_WATCH",
    "LAKEHOUSE_WRITER_LEASE_SECONDS",
)
# local, local[4], local[*], local[4,2] (with retries), local-cluster[2,1,1024], spark://h:7077[,h2:7077], yarn,
# k8s://https://..., mesos://...
_SPARK_MASTER = re.compile(
    r"^(local(\[(\*|\d+)(,\d+)?\])?|local-cluster\[\d+,\d+,\d+\]|spark://[^\s,]+(,[^\s,]+)*|yarn|k8s://\S+|mesos://\S+)$"
)
_JVM_MEMORY = re.compile(r"^\d+[kmgtp]?$", re.IGNORECASE)
_SPARK_CONF_KEY = re.compile(r"^[A-Za-z][\w.\-]*$")
# Items of `k=v,k=v` are split at a comma followed by the next `key=`, so a value may hold commas (jar lists).
_CONF_SPLIT = re.compile(r",(?=\s*[A-Za-z][\w.\-]*=)")
# S3 bucket naming rules (3-63 characters, lowercase letters, digits, dots and hyphens).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")


class _Reader:
    """Reads variables from one environment mapping, collecting every problem before failing."""

    def __init__(self, env: dict[str, str]):
        self.env = env
        self.problems: list[str] = []

    def raw(self, name: str) -> str | None:
        value = self.env.get(name)
        return None if value is None or value.strip() == "" else value.strip()

    def fail(self, name: str, value: str, accepted: str) -> None:
        self.problems.append(f"{name}={value!r} is not valid: {accepted}")

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = (self.raw(name) or default).lower()
        if value not in choices:
            self.fail(name, value, f"use one of {', '.join(choices)}")
            return default
        return value

    def parsed(self, name: str, default: T, parse: Callable[[str], T], accepted: str) -> T:
        value = self.raw(name)
        if value is None:
            return default
        try:
            return parse(value)
        except (ValueError, TypeError):
            self.fail(name, value, accepted)
            return default

    def positive_int(self, name: str, default: int | None, maximum: int | None = None) -> int | None:
        def parse(v: str) -> int:
            n = int(v)
            if n < 1 or (maximum is not None and n > maximum):
                raise ValueError(v)
            return n

        bound = f" up to {maximum:,}" if maximum else ""
        return self.parsed(name, default, parse, f"use a whole number from 1{bound}")

    def matching(self, name: str, default: str | None, pattern: re.Pattern, accepted: str) -> str | None:
        value = self.raw(name)
        if value is None:
            return default
        if not pattern.match(value):
            self.fail(name, value, accepted)
            return default
        return value

    def flag(self, name: str) -> bool:
        value = (self.raw(name) or "").lower()
        if value not in TRUE + FALSE:
            self.fail(name, value, f"use one of {', '.join(t for t in TRUE + FALSE if t)}")
            return False
        return value in TRUE


def parse_spark_conf(value: str) -> dict[str, str]:
    """`k1=v1,k2=v2` (a value may hold commas: items split only where the next `key=` starts) or a JSON object."""
    if value.lstrip().startswith("{"):
        conf = json.loads(value)
        if not isinstance(conf, dict):
            raise ValueError("not a JSON object")
        items = [(str(k), v if isinstance(v, str) else json.dumps(v)) for k, v in conf.items()]
    else:
        items = []
        for item in _CONF_SPLIT.split(value):
            key, sep, val = item.partition("=")
            if not sep:
                raise ValueError(f"{item!r} has no '='")
            items.append((key.strip(), val.strip()))
    for key, _ in items:
        if not _SPARK_CONF_KEY.match(key):
            raise ValueError(f"{key!r} is not a Spark setting name")
    return dict(items)


def parse_quarantine_rates(value: str) -> dict[str, float]:
    """`0.1` (every entity) or `post=0.05,comment=0.1`; each a share between 0 and 1."""

    def share(text: str) -> float:
        rate = float(text)
        if not 0 <= rate <= 1:
            raise ValueError(text)
        return rate

    rates = dict(DEFAULT_QUARANTINE_MAX_RATE)
    items = [i.strip() for i in value.split(",") if i.strip()]
    if len(items) == 1 and "=" not in items[0]:
        return {k: share(items[0]) for k in rates}
    for item in items:
        key, sep, rate = item.partition("=")
        if not sep or key.strip() not in ENTITIES:
            raise ValueError(item)
        rates[key.strip()] = share(rate)
    return rates


def load_settings(env: dict[str, str] | None = None) -> LakehouseSettings:
    """Build and validate settings from `LAKEHOUSE_*` variables (defaults: the embedded local lakehouse).

    Raises `SettingsError` naming every variable that holds a value the lakehouse cannot run with.
    """
    env = dict(os.environ if env is None else env)
    read = _Reader(env)
    for name in sorted(k for k in env if k.startswith("LAKEHOUSE_") and k not in KNOWN_VARIABLES):
        close = difflib.get_close_matches(name, KNOWN_VARIABLES, n=1)
        read.problems.append(f"{name} is not a lakehouse setting" + (f" (did you mean {close[0]}?)" if close else "")
                             + "; see README.md, Configuration")
    environment = Environment(read.choice("LAKEHOUSE_ENV", Environment.LOCAL.value, tuple(e.value for e in Environment)))
    home = Path(read.raw("LAKEHOUSE_HOME") or ".lakehouse")
    if home.expanduser().exists() and not home.expanduser().is_dir():
        read.fail("LAKEHOUSE_HOME", str(home), "it names a file; give a folder (created when missing)")
    jar = read.raw("LAKEHOUSE_SQLITE_JDBC_JAR")
    if jar and not Path(jar).is_file():
        read.fail("LAKEHOUSE_SQLITE_JDBC_JAR", jar, "no such file; give the path of the SQLite JDBC driver jar")
    bucket = read.matching("LAKEHOUSE_S3_BUCKET", None, _BUCKET, "an S3 bucket name (3-63 lowercase letters, "
                           "digits, dots or hyphens), without s3://")
    if environment is Environment.AWS and bucket is None and read.raw("LAKEHOUSE_S3_BUCKET") is None:
        read.problems.append("LAKEHOUSE_S3_BUCKET is required when LAKEHOUSE_ENV=aws: the bucket of the landing "
                             "zone and the warehouse")
    s3_uri = re.compile(r"^s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/\S*)?$")
    # LAKEHOUSE_S3_ENDPOINT is the older name of LAKEHOUSE_AWS_ENDPOINT.
    endpoint = "LAKEHOUSE_AWS_ENDPOINT" if read.raw("LAKEHOUSE_AWS_ENDPOINT") else "LAKEHOUSE_S3_ENDPOINT"
    compute = read.choice("LAKEHOUSE_COMPUTE", "in_process", COMPUTE_MODES)
    glue_job = read.raw("LAKEHOUSE_GLUE_JOB")
    if compute == "glue":
        if environment is not Environment.AWS:
            read.problems.append("LAKEHOUSE_COMPUTE='glue' needs LAKEHOUSE_ENV=aws (Glue jobs read the Glue catalog)")
        if not glue_job:
            read.problems.append("LAKEHOUSE_COMPUTE='glue' needs LAKEHOUSE_GLUE_JOB: the Glue job that runs "
                                 "lakehouse.job (docs/aws.md)")
    sqs_url = re.compile(r"^https?://\S+/\d{12}/[\w-]{1,80}$|^https?://\S+/[\w-]{1,80}$")
    queue = read.matching("LAKEHOUSE_SQS_QUEUE_URL", None, sqs_url,
                          "an SQS queue URL, https://sqs.<region>.amazonaws.com/<account>/<name>")
    if read.raw("LAKEHOUSE_SQS_DEAD_LETTER_URL") and not read.raw("LAKEHOUSE_SQS_QUEUE_URL"):
        read.problems.append("LAKEHOUSE_SQS_DEAD_LETTER_URL is set without LAKEHOUSE_SQS_QUEUE_URL: it is where the "
                             "queue's messages go that the sensor gave up on")
    if queue and environment is not Environment.AWS:
        read.problems.append("LAKEHOUSE_SQS_QUEUE_URL needs LAKEHOUSE_ENV=aws: S3 events come from the input bucket; "
                             "a local landing folder is listed")
    settings = LakehouseSettings(
        environment=environment,
        home=home,
        spark_master=read.matching("LAKEHOUSE_SPARK_MASTER", "local[*]", _SPARK_MASTER,
                                   "use local, local[N], local[*], spark://host:port, yarn or k8s://..."),
        spark_driver_memory=read.matching("LAKEHOUSE_SPARK_DRIVER_MEMORY", "3g", _JVM_MEMORY,
                                          "a JVM memory size such as 3g or 3072m"),
        spark_shuffle_partitions=read.positive_int("LAKEHOUSE_SPARK_SHUFFLE_PARTITIONS", None, 100_000),
        spark_quick_jit=read.choice("LAKEHOUSE_SPARK_QUICK_JIT", "auto", QUICK_JIT),
        extra_spark_conf=read.parsed("LAKEHOUSE_SPARK_CONF", {}, parse_spark_conf,
                                     "use key=value pairs separated by commas (a value may hold commas) or a "
                                     'JSON object, e.g. spark.executor.cores=2,spark.jars=a.jar,b.jar or '
                                     '{"spark.jars": "a.jar,b.jar"}'),
        engine=read.choice("LAKEHOUSE_ENGINE", "auto", ENGINE),
        engine_idle_seconds=read.positive_int("LAKEHOUSE_ENGINE_IDLE_SECONDS", 1800, 7 * 86400),
        engine_max_runs=read.positive_int("LAKEHOUSE_ENGINE_MAX_RUNS", 200, 1_000_000),
        engine_memory=read.matching("LAKEHOUSE_ENGINE_MEMORY", "2g", _JVM_MEMORY, "a JVM memory size such as 2g or 2048m"),
        class_cache=read.choice("LAKEHOUSE_CLASS_CACHE", "on", CLASS_CACHE),
        class_cache_dir=Path(read.raw("LAKEHOUSE_CLASS_CACHE_DIR") or Path(read.raw("XDG_CACHE_HOME") or "~/.cache")
                             / "lakehouse"),
        snapshot_retention_hours=read.positive_int("LAKEHOUSE_SNAPSHOT_RETENTION_HOURS", 168, 24 * 3650),
        compact_after_files=read.positive_int("LAKEHOUSE_COMPACT_AFTER_FILES", 200, 10_000_000),
        sqlite_jdbc_jar=Path(jar) if jar else None,
        iceberg_provided=read.flag("LAKEHOUSE_ICEBERG_PROVIDED"),
        s3_bucket=bucket,
        s3_prefix=(read.raw("LAKEHOUSE_S3_PREFIX") or "").strip("/"),
        aws_region=read.raw("AWS_REGION") or read.raw("AWS_DEFAULT_REGION"),
        glue_warehouse=read.matching("LAKEHOUSE_GLUE_WAREHOUSE", None, s3_uri, "an s3://bucket/path URI"),
        aws_endpoint=read.matching(endpoint, None, re.compile(r"^https?://\S+$"), "an http(s):// URL"),
        athena_workgroup=read.raw("LAKEHOUSE_ATHENA_WORKGROUP") or "primary",
        athena_output_location=read.matching("LAKEHOUSE_ATHENA_OUTPUT", None, s3_uri, "an s3://bucket/path URI"),
        compute=compute,
        glue_job_name=glue_job,
        sensor_interval_seconds=read.positive_int("LAKEHOUSE_SENSOR_INTERVAL", 5, 3600),
        sensor_batch_size=read.positive_int("LAKEHOUSE_SENSOR_BATCH_SIZE", 200, 100_000),
        sensor_max_runs_per_tick=read.positive_int("LAKEHOUSE_SENSOR_MAX_RUNS_PER_TICK", 25, 1000),
        sqs_queue_url=queue,
        sqs_dead_letter_url=read.matching("LAKEHOUSE_SQS_DEAD_LETTER_URL", None, sqs_url, "an SQS queue URL"),
        sweep_interval_seconds=read.positive_int("LAKEHOUSE_SWEEP_INTERVAL", 3600, 7 * 86400),
        landing_watch=read.choice("LAKEHOUSE_LANDING_WATCH", "on", ("on", "off")),
        writer_lease_seconds=read.positive_int("LAKEHOUSE_WRITER_LEASE_SECONDS", 300, 86400),
        quarantine_max_rate=read.parsed(
            "LAKEHOUSE_QUARANTINE_MAX_RATE", dict(DEFAULT_QUARANTINE_MAX_RATE), parse_quarantine_rates,
            f"use a share between 0 and 1 (0.1) or per entity ({', '.join(f'{e}=0.05' for e in ENTITIES)})"),
    )
    if read.problems:
        raise SettingsError(read.problems)
    return settings
