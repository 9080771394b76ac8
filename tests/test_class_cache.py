"""The driver's class-data archive (lakehouse/class_cache.py): a driver JVM maps Spark's classes from it, an archive
that does not fit costs nothing but time, and each JVM and jar set has an archive of its own."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from lakehouse import class_cache
from lakehouse.settings import SettingsError, load_settings
from lakehouse.spark import spark_conf
from tests.conftest import dead_writer

REPO = Path(__file__).resolve().parents[1]
A_DRIVER = """
from lakehouse import tables
from lakehouse.settings import load_settings
from lakehouse.spark import get_spark
spark = get_spark(load_settings())
tables.ensure_tables(spark)
print(spark.sql("SELECT count(*) FROM silver.posts").first()[0])
"""


def start_driver(tmp_path: Path, name: str, **env: str) -> list[str]:
    """Start a driver (tables created, one query) and return the JVM's class-loading log."""
    log = tmp_path / f"{name}-classes.log"
    done = subprocess.run([sys.executable, "-c", A_DRIVER], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "LAKEHOUSE_HOME": str(tmp_path / name), **env,
                               # read by the JVM on top of the driver's own options
                               "JAVA_TOOL_OPTIONS": f"-Xlog:class+load=info:file={log}"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "0"
    return [line for line in log.read_text().splitlines() if " org.apache.spark.SparkContext " in line]


def test_a_driver_maps_spark_from_the_archive_and_one_that_does_not_fit_costs_nothing(settings, tmp_path):
    archive = class_cache.build(settings)  # built by bin/setup (or by the first driver that found none)
    assert archive is not None and archive.exists(), "the archive is missing and another process is building it"
    options = spark_conf(settings)["spark.driver.extraJavaOptions"]
    assert f"-XX:SharedArchiveFile={archive}" in options

    (line,) = start_driver(tmp_path, "with")
    assert "source: shared objects file (top)" in line  # the dynamic archive, not the jar

    # An archive that is not one (a dump cut short, a file from elsewhere): the JVM runs from the jars.
    broken = tmp_path / "cache"
    broken.mkdir()
    (broken / archive.name).write_bytes(b"\0" * 4096)
    (line,) = start_driver(tmp_path, "broken", LAKEHOUSE_CLASS_CACHE_DIR=str(broken))
    assert "shared objects file" not in line and "spark-core" in line

    off = replace(settings, class_cache="off")
    assert "SharedArchiveFile" not in spark_conf(off).get("spark.driver.extraJavaOptions", "")


def test_each_jvm_and_jar_set_has_an_archive_of_its_own(settings, tmp_path):
    jar = tmp_path / "extra.jar"
    jar.write_bytes(b"one")
    first = class_cache.archive_path(settings, str(jar))
    assert first is not None and first.parent == settings.class_cache_dir.expanduser()
    assert class_cache.archive_path(settings, str(jar)) == first  # the same jars: the same archive
    class_cache.fingerprint.cache_clear()
    jar.write_bytes(b"other")  # an upgraded jar
    assert class_cache.archive_path(settings, str(jar)) != first
    assert class_cache.archive_path(settings, "") != first
    assert class_cache.archive_path(replace(settings, class_cache="off"), "") is None


def test_one_build_at_a_time_and_a_dead_builders_lock_is_taken_over(tmp_path):
    target = tmp_path / "spark-driver-x.jsa"
    lock = target.with_suffix(".lock")
    lock.write_text(dead_writer())  # a builder that was killed
    assert class_cache._lock(target)  # taken over
    assert lock.read_text().strip() != ""
    assert not class_cache._lock(target)  # held by this (live) process: a second builder stays out
    lock.unlink()
    assert class_cache._lock(target)


def test_the_setting_is_validated():
    with pytest.raises(SettingsError, match="LAKEHOUSE_CLASS_CACHE='sometimes'"):
        load_settings({"LAKEHOUSE_CLASS_CACHE": "sometimes"})
    custom = load_settings({"LAKEHOUSE_CLASS_CACHE_DIR": "/srv/cache"})
    assert custom.class_cache == "on" and custom.class_cache_dir == Path("/srv/cache")
    assert load_settings({"XDG_CACHE_HOME": "/x"}).class_cache_dir == Path("/x/lakehouse")
