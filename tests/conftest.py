"""Shared fixtures: one lakehouse home and one Spark session (with the real Iceberg catalog) per test session.

Spark's catalog settings are fixed when its session starts, so every test shares one data root; the
`lakehouse` fixture empties it (drops the tables, clears the landing zone) before each test that asks.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "socialgrep-meirl"
# The suite runs on two xdist workers, a file per worker at a time (pyproject.toml): the files that take longest
# (real processes: Pipes jobs, the daemon, a cluster, the CLI) go first, so both workers finish together.
SLOWEST_FIRST = ("test_pipes.py", "test_daemon.py", "test_cluster.py", "test_operations.py", "test_engine.py", "test_cli.py",
                 "test_maintenance.py", "test_recovery.py", "test_end_to_end.py", "test_checks.py", "test_bad_input.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(scope="session", autouse=True)
def lakehouse_env(tmp_path_factory):
    """Isolate the developer's own lakehouse and Dagster home from the tests."""
    home = tmp_path_factory.mktemp("lakehouse")
    saved = {k: os.environ.get(k) for k in ("LAKEHOUSE_HOME", "LAKEHOUSE_ENV", "DAGSTER_HOME",
                                            "LAKEHOUSE_SPARK_QUICK_JIT", "LAKEHOUSE_ENGINE",
                                            "LAKEHOUSE_LANDING_WATCH")}
    os.environ["LAKEHOUSE_HOME"] = str(home)
    os.environ["LAKEHOUSE_ENV"] = "local"
    # Test data is small: the short-lived JVMs the tests start (the CLI's, the daemon's runs, Pipes jobs) start
    # with the quick C1-only JIT, which finishes a small batch sooner (CONVENTIONS.md, measured trade-offs). The
    # worker's own session (the `spark` fixture) is not one of them: see there.
    os.environ["LAKEHOUSE_SPARK_QUICK_JIT"] = "on"
    # Runs start their own driver unless a test wants the warm engine (tests/test_engine.py, the daemon test):
    # a sensor would otherwise leave an engine behind for every temporary lakehouse.
    os.environ["LAKEHOUSE_ENGINE"] = "off"
    # Sensor tests land a file and tick at once: they list the folder each tick. A file notification reaches the
    # watch a moment later (watchdog holds inotify events half a second to pair moves), which the watch's own tests
    # and the daemon test (as deployed) wait for.
    os.environ["LAKEHOUSE_LANDING_WATCH"] = "off"
    os.environ.pop("DAGSTER_HOME", None)
    yield home
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def settings(lakehouse_env):
    from lakehouse.settings import load_settings

    return load_settings()


@pytest.fixture(scope="session")
def spark(settings):
    from dataclasses import replace

    from lakehouse import class_cache
    from lakehouse.spark import get_spark

    # bin/setup builds the driver's class archive; a bare `pytest` builds it here, before any driver starts, so the
    # JVMs the tests start map it (one worker builds; the other goes on without it meanwhile).
    class_cache.build(settings)
    # One JVM serves every in-process run of a worker for the whole suite: like the warm engine, it is long-lived,
    # and the full JIT wins once warm (bench/small_runs.py, bench/results/2026-12-02-suite-and-startup.md: a warm
    # whole-graph run on test data 33.5-38.9 s against 48.0-54.1 s with C1 only; the first run 15 s slower).
    session = get_spark(replace(settings, spark_quick_jit="off"))
    yield session
    session.stop()


@pytest.fixture
def lakehouse(spark, settings):
    """An empty lakehouse: no tables, an empty landing zone. Yields the landing zone."""
    return empty_lakehouse(spark, settings)


def empty_lakehouse(spark, settings):
    """Drop every table and clear the landing zone; returns the (empty) landing zone."""
    from lakehouse import tables
    from lakehouse.landing import LocalLandingZone
    from lakehouse.settings import NAMESPACES

    for ns in NAMESPACES:
        if spark.sql(f"SHOW NAMESPACES LIKE '{ns}'").count():
            for row in spark.sql(f"SHOW TABLES IN {ns}").collect():
                spark.sql(f"DROP TABLE {ns}.{row.tableName} PURGE")
    tables.forget_ensured(spark)
    shutil.rmtree(settings.landing_root, ignore_errors=True)
    zone = LocalLandingZone(settings.landing_root)
    zone.ensure_layout()
    return zone


def dead_writer() -> str:
    """The Bronze writer id of a process that has exited (read while it ran: its start time names that process),
    as a run killed between the Bronze append and the log write leaves behind."""
    import subprocess

    from lakehouse.writers import process_writer

    child = subprocess.Popen(["sleep", "0.5"])
    writer = process_writer(child.pid)
    child.wait()
    return writer


@pytest.fixture
def meirl() -> Path:
    """The real SocialGrep sample from ../shared, when this checkout has it beside it."""
    if not (SHARED_DATA / "posts.csv").exists():
        pytest.skip("the real sample ../shared/data/socialgrep-meirl is not beside this checkout")
    return SHARED_DATA


@pytest.fixture(scope="session")
def moto_endpoint():
    """A real moto server (S3, Glue, Athena over HTTP) on loopback, with test credentials in the environment."""
    from moto.server import ThreadedMotoServer

    from lakehouse.standalone import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    yield f"http://127.0.0.1:{port}"
    server.stop()
    for k, v in saved.items():
        os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
