"""A class-data archive (AppCDS) for the local Spark driver JVM: a cold driver is ready about a third sooner.

A driver JVM loads and verifies some 20,000 classes (Spark, Iceberg, Parquet, Jackson) before its first result,
every time one starts: a run without the warm engine, the engine itself, a Pipes job, a CLI command. Java 17 can
map those classes from an archive instead (JEP 350, dynamic CDS). The archive is written by a JVM that ran the
pipeline once (`build`: the whole graph on a tiny generated sample in a temporary lakehouse, then the JVM dumps
what it loaded as it exits), and every later driver maps it (`driver_options`).

The archive's name is a fingerprint of the Java installation and of every jar on the driver's class path: a new
JVM or jar means a new archive, never a stale one. The JVM checks the archive again when it maps it, and runs
without it (silently: the options turn its CDS log off) if it does not match; a wrong archive costs time, never a
result. One archive is built at a time (a lock file naming its builder); `bin/setup` builds it, and a driver that
finds none starts a build in the background (`start_building`).

    python -m lakehouse.class_cache [--rebuild]       # what `lakehouse class-cache` runs
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lakehouse.settings import Environment, LakehouseSettings, load_settings
from lakehouse.writers import process_alive, process_writer

log = logging.getLogger(__name__)
# The JVM's own CDS messages (a mismatch, the classes it skips while dumping) go to stdout: not for users' logs.
QUIET = "-Xlog:cds=off -Xlog:cds+dynamic=off"
MIN_ARCHIVE_BYTES = 1 << 20  # a dump that ended early leaves a stub, not an archive


def _stat(path: Path) -> list:
    st = path.stat()
    return [str(path), st.st_size, int(st.st_mtime)]


def _java() -> Path | None:
    """The java that spark-submit starts (JAVA_HOME's, else the one on PATH), resolved through its links."""
    java_home = os.environ.get("JAVA_HOME")
    java = Path(java_home) / "bin" / "java" if java_home else (Path(w) if (w := shutil.which("java")) else None)
    return java.resolve() if java and java.exists() else None


@functools.lru_cache(maxsize=16)
def fingerprint(spark_jars: str) -> str | None:
    """What an archive must have been dumped with: the JVM and every jar on the driver's class path (Spark's own
    jars and `spark.jars`). None when the JVM or Spark's jars cannot be found (then there is no archive)."""
    from pyspark.find_spark_home import _find_spark_home

    java = _java()
    jars_dir = Path(_find_spark_home()) / "jars"
    if java is None or not jars_dir.is_dir():
        return None
    libjvm = java.parent.parent / "lib" / "server" / "libjvm.so"
    basis = [_stat(java), *([_stat(libjvm)] if libjvm.exists() else []),
             *[_stat(j) for j in sorted(jars_dir.glob("*.jar"))],
             *[_stat(Path(j)) if Path(j).exists() else [j] for j in spark_jars.split(",") if j]]
    return hashlib.sha256(json.dumps(basis).encode()).hexdigest()[:16]


def archive_path(settings: LakehouseSettings, spark_jars: str) -> Path | None:
    if settings.class_cache != "on" or settings.environment is not Environment.LOCAL:
        return None
    fp = fingerprint(spark_jars)
    return settings.class_cache_dir.expanduser() / f"spark-driver-{fp}.jsa" if fp else None


def driver_options(settings: LakehouseSettings, spark_jars: str) -> str:
    """JVM options that map the archive for a driver with these jars; "" while there is none."""
    path = archive_path(settings, spark_jars)
    if path is None or not path.exists():
        return ""
    return f"-XX:SharedArchiveFile={path} {QUIET}"


def _jars(settings: LakehouseSettings) -> str:
    from lakehouse.spark import spark_conf

    return spark_conf(settings).get("spark.jars", "")


# --- building ---------------------------------------------------------------------------------------------------

def _being_built(lock: Path) -> bool:
    """Whether the process a build lock names still runs (a lock without a name yet counts as abandoned)."""
    try:
        return process_alive(lock.read_text().strip()) is not False
    except (OSError, ValueError):  # no lock, or no (whole) name in it yet
        return False


def _lock(path: Path) -> bool:
    """Take the build lock (a file naming this process); a lock whose process is gone is taken over."""
    lock = path.with_suffix(".lock")
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if _being_built(lock):
                return False
            lock.unlink(missing_ok=True)  # its builder died (or had not written its name yet): take it over
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(process_writer())
        return True
    return False


def build(settings: LakehouseSettings, rebuild: bool = False, timeout: float = 900) -> Path | None:
    """Build the archive for these settings' driver (if missing, or `rebuild`); None if another process is
    building it or there is none to build. Takes one to two minutes: a cold pipeline run and the dump."""
    path = archive_path(settings, _jars(settings))
    if path is None or (path.exists() and not rebuild):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    if not _lock(path):
        return None
    part = path.with_name(f"{path.name}.{os.getpid()}.part")
    try:
        with tempfile.TemporaryDirectory(prefix="lakehouse-class-cache-") as scratch:
            # The caller's settings (its jars, its Spark settings), in a lakehouse of its own.
            env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
            env.update(LAKEHOUSE_HOME=scratch, LAKEHOUSE_CLASS_CACHE="off", LAKEHOUSE_ENGINE="off",
                       LAKEHOUSE_SPARK_QUICK_JIT="on",  # which JIT does not change what is loaded; C1 is quicker
                       LAKEHOUSE_ENV="local", LAKEHOUSE_SPARK_MASTER="local[*]",
                       _LAKEHOUSE_CLASS_CACHE_DUMP=str(part))
            started = time.monotonic()
            done = subprocess.run([sys.executable, "-m", "lakehouse.class_cache", "--train"], env=env,
                                  capture_output=True, text=True, timeout=timeout)
            if done.returncode != 0 or not part.exists() or part.stat().st_size < MIN_ARCHIVE_BYTES:
                log.warning("the driver's class archive was not built (exit %s): %s", done.returncode,
                            done.stderr[-2000:])
                return None
            os.replace(part, path)
            log.info("built %s (%.0f MB) in %.0f s", path, path.stat().st_size / 2**20, time.monotonic() - started)
            return path
    finally:
        part.unlink(missing_ok=True)
        path.with_suffix(".lock").unlink(missing_ok=True)


def start_building(settings: LakehouseSettings) -> None:
    """Build the archive in the background when a driver starts without one (this driver goes on without it)."""
    path = archive_path(settings, _jars(settings))
    if path is None or path.exists():
        return
    if _being_built(path.with_suffix(".lock")):
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".log"), "ab") as out:
        subprocess.Popen([sys.executable, "-m", "lakehouse.class_cache"], stdout=out, stderr=out,
                         stdin=subprocess.DEVNULL, start_new_session=True)


def _train(dump: str) -> None:
    """The JVM that dumps the archive: the whole pipeline, its checks and maintenance on a tiny sample, so the
    archive holds the classes every step loads; then the JVM exits (the dump happens at exit)."""
    from dataclasses import replace
    from datetime import timedelta

    from lakehouse import bronze_layer, gold_layer, job, maintenance, silver_layer
    from lakehouse.clock import utcnow
    from lakehouse.contracts import GOLD, Entity
    from lakehouse.generator import generate
    from lakehouse.landing import LocalLandingZone
    from lakehouse.spark import end_gateway, get_spark, spark_conf

    settings = load_settings()
    options = spark_conf(settings).get("spark.driver.extraJavaOptions", "")
    conf = {"spark.driver.extraJavaOptions": f"{options} -XX:ArchiveClassesAtExit={dump} {QUIET}".strip()}
    settings = replace(settings, extra_spark_conf={**settings.extra_spark_conf, **conf})
    zone = LocalLandingZone(settings.landing_root)
    zone.ensure_layout()
    files = generate(settings.home_abs / "sample", posts=40, comments=120, files=1, seed=1, days=2, subreddits=2)
    zone.land(files.posts[0], Entity.POST)
    zone.land(files.comments[0], Entity.COMMENT)
    spark = get_spark(settings)
    for step, entity, table in job.plan_all():
        job.run_step(spark, settings, step, entity, table)
    for entity in Entity:
        bronze_layer.bronze_row_counts(spark, entity)
        silver_layer.silver_primary_key(spark, entity, full=True)
        silver_layer.silver_values(spark, entity, utcnow(), full=True)
        silver_layer.bronze_reconciled(spark, entity, full=True)
    for key in GOLD:
        gold_layer.gold_reconciled(spark, key, full=True)
    maintenance.maintain(spark, timedelta(hours=settings.snapshot_retention_hours), min_input_files=2)
    gateway = spark.sparkContext._gateway
    spark.stop()
    end_gateway(gateway, timeout=300)  # the dump is written as the JVM exits


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m lakehouse.class_cache")
    parser.add_argument("--rebuild", action="store_true", help="build it again even if it exists")
    parser.add_argument("--train", action="store_true", help=argparse.SUPPRESS)  # the dumping JVM's process
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s class-cache %(levelname)s %(message)s")
    if args.train:
        _train(os.environ["_LAKEHOUSE_CLASS_CACHE_DUMP"])
        return 0
    settings = load_settings()
    path = build(settings, rebuild=args.rebuild)
    print(json.dumps({"archive": str(path) if path else None, "enabled": settings.class_cache == "on"}))
    return 0 if path or settings.class_cache != "on" else 1


if __name__ == "__main__":
    sys.exit(main())
