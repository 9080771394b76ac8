"""The warm engine (lakehouse/engine.py): runs attach to one long-lived Spark driver, each in a session of its own;
a run that crashes leaves the engine serving; without an engine (absent, stopped, restarted) runs start their own
driver and the tables come out the same."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lakehouse.settings import load_settings
from tests import expected as exp
from tests.test_end_to_end import assert_gold_matches
from tests.test_recovery import Landed

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
MATERIALIZE = [str(BIN / "dagster"), "asset", "materialize", "-m", "lakehouse_assets.definitions", "--select", "*"]


@pytest.fixture
def home(tmp_path):
    home = tmp_path / "lh"
    env = {**os.environ, "LAKEHOUSE_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"),
           "LAKEHOUSE_ENGINE": "auto", "LAKEHOUSE_ENGINE_IDLE_SECONDS": "300"}
    subprocess.run([str(BIN / "lakehouse"), "init"], env=env, check=True, capture_output=True)
    yield home, env
    subprocess.run([str(BIN / "lakehouse"), "engine", "stop"], env=env, capture_output=True)


def test_a_reused_pid_is_not_the_engine(tmp_path):
    """The engine's files name its process with its start time: a pid the system has given to another process
    since (here, this test's own pid with another start time) is neither attached to nor signalled."""
    from lakehouse import engine, writers

    settings = load_settings({"LAKEHOUSE_HOME": str(tmp_path)})
    folder = engine.engine_dir(settings)
    folder.mkdir(parents=True)
    stale = f"proc:{writers.HOST}:{os.getpid()}:1"

    def write(process: str) -> None:
        engine.Connection(pid=os.getpid(), port=1, secret="s", fingerprint="f", started_at=time.time(),
                          generation=1, process=process).write(settings)
        (folder / "engine.pid").write_text(process)

    write(stale)
    assert engine.Connection.read(settings) is None
    assert engine._starting_pid(settings) is None
    assert engine.stop(settings) is False  # and this process was not sent SIGTERM: the test goes on
    write(writers.process_writer())  # the same files naming this process as it is
    assert engine.Connection.read(settings).pid == os.getpid()
    assert engine._starting_pid(settings) == os.getpid()


def lakehouse_cli(env, *args) -> str:
    done = subprocess.run([str(BIN / "lakehouse"), *args], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def engine_status(env) -> dict:
    return json.loads(lakehouse_cli(env, "engine", "status"))


def materialize(env) -> str:
    done = subprocess.run(MATERIALIZE, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


def test_runs_share_the_engine_survive_a_crashed_run_and_fall_back_without_it(home, tmp_path):
    home, env = home
    landed = Landed(home, tmp_path, posts=60, comments=180)
    land, posts, comments = landed.land, landed.posts, landed.comments

    settings = load_settings({"LAKEHOUSE_HOME": str(home)})
    lakehouse_cli(env, "engine", "start")
    engine = engine_status(env)
    assert engine["running"] and engine["generation"] == 1

    # A run on the engine attaches (no driver of its own).
    land(1)
    assert f"a session on the warm engine (pid {engine['pid']}" in materialize(env)
    assert_gold_matches(settings, exp.expected_gold(posts, comments))
    # ... and its MERGEs carried their marks in their own commits there too (Iceberg calls back into the run).
    from lakehouse import tables
    from lakehouse.catalog import catalog_for
    for name in ("silver.posts", "silver.comments", "gold.post_engagement"):
        summary = catalog_for(settings).load_table(name).current_snapshot().summary
        assert summary.get(tables.MARKS_PROPERTY) is not None, name
        assert int(summary.get("added-records", "0")) > 0, name  # the rows' commit, not one for the marks alone

    # A run killed while attached (mid-Silver): the engine cancels what it left running and goes on serving.
    land(2)
    marker = tmp_path / "stopped-silver"
    proc = subprocess.Popen([sys.executable, "-m", "tests.killable", "silver", str(marker), "dagster", *MATERIALIZE[1:]],
                            env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "the run never reached Silver"
        time.sleep(0.3)
    assert list((home / "engine" / "leases").glob("*.json"))  # the run was attached when it died
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(3)
    after = engine_status(env)
    assert after["running"] and after["pid"] == engine["pid"] and after["attached"] == []
    assert "died while attached" in (home / "engine" / "engine.log").read_text()
    assert f"a session on the warm engine (pid {engine['pid']}" in materialize(env)  # repairs the dead run's batch
    assert_gold_matches(settings, exp.expected_gold(posts, comments))

    # No engine: the run starts its own driver and gives the same tables.
    lakehouse_cli(env, "engine", "stop")
    assert not engine_status(env)["running"]
    land(4)
    out = materialize(env)
    assert "no warm engine to attach to" in out and "warm engine (pid" not in out
    assert_gold_matches(settings, exp.expected_gold(posts, comments))

    # A new engine (what the sensor does when it finds none): the next session attaches to it and reads the
    # tables the runs before wrote, on the old engine and without one.
    lakehouse_cli(env, "engine", "start")
    restarted = engine_status(env)
    assert restarted["running"] and restarted["pid"] != engine["pid"]
    done = subprocess.run([sys.executable, "-c", READS_GOLD], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    want = exp.expected_gold(posts, comments)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"pid": restarted["pid"], "posts": len(want["posts"])}


READS_GOLD = """
import json, os
from lakehouse import engine
from lakehouse.settings import load_settings
from lakehouse.spark import spark_conf

settings = load_settings()
attached = engine.attach(settings, spark_conf(settings), "reader")
print(json.dumps({"pid": attached.connection.pid, "posts": attached.session.table("gold.posts").count()}))
attached.release()
"""


SESSIONS = """
import json, sys
from lakehouse import engine
from lakehouse.settings import load_settings
from lakehouse.spark import spark_conf

settings = load_settings()
conf = spark_conf(settings)
first = engine.attach(settings, conf, "one")
first.session.range(3).createOrReplaceTempView("mine")
first.session.conf.set("spark.sql.shuffle.partitions", "7")
second = engine.attach(settings, conf, "two")

# A step evaluates its checks (and Gold commits its parts) in other threads: they run in the run's job group
# (which the engine cancels when the run dies) and with the run's session, not the engine's own.
from concurrent.futures import ThreadPoolExecutor
from lakehouse.spark import in_this_thread_context

def seen(spark, full, alive):
    active = spark._jvm.org.apache.spark.sql.SparkSession.active()
    return spark.sparkContext.getLocalProperty("spark.jobGroup.id"), active.conf().get("spark.sql.shuffle.partitions")

with ThreadPoolExecutor(1) as pool:
    check_thread = pool.submit(in_this_thread_context(first.session, seen), first.session, False, None).result()
print(json.dumps({"second_sees_view": second.session.catalog.tableExists("mine"),
                  "second_partitions": second.session.conf.get("spark.sql.shuffle.partitions"),
                  "first_count": first.session.table("mine").count(),
                  "same_driver": first.session.sparkContext.applicationId == second.session.sparkContext.applicationId,
                  "check_thread": check_thread,
                  "collectors": [b.getName() for b in
                                 first.session._jvm.java.lang.management.ManagementFactory.getGarbageCollectorMXBeans()]}))
"""


def test_each_attached_run_has_its_own_session(home):
    home, env = home
    lakehouse_cli(env, "engine", "start")
    done = subprocess.run([sys.executable, "-c", SESSIONS], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    collectors = got.pop("collectors")
    assert got == {"second_sees_view": False, "second_partitions": "4", "first_count": 3, "same_driver": True,
                   "check_thread": ["two", "7"]}
    # The engine idles between runs and gives free heap back: G1 (periodic collections), not a run's collector.
    assert any(c.startswith("G1 ") for c in collectors), collectors


def collectors(spark) -> list[str]:
    return [b.getName() for b in spark._jvm.java.lang.management.ManagementFactory.getGarbageCollectorMXBeans()]


def test_a_driver_of_its_own_collects_for_throughput(spark):
    """A driver that lives for a run (or a test worker's suite) uses the throughput collector (lakehouse/spark.py);
    the engine's options ask for G1 instead, never for both (a JVM given both does not start)."""
    from lakehouse import engine
    from lakehouse.spark import THROUGHPUT_GC_OPTION

    assert any(c.startswith("PS ") for c in collectors(spark)), collectors(spark)
    options = engine.engine_conf(load_settings())["spark.driver.extraJavaOptions"].split()
    assert THROUGHPUT_GC_OPTION not in options and "-XX:+UseG1GC" in options


def test_an_engine_with_other_settings_is_not_used_and_an_idle_engine_stops(home):
    home, env = home
    lakehouse_cli(env, "engine", "start")
    other = {**env, "LAKEHOUSE_SPARK_SHUFFLE_PARTITIONS": "9"}
    done = subprocess.run([sys.executable, "-c", "from lakehouse import engine; from lakehouse.settings import "
                           "load_settings; from lakehouse.spark import spark_conf; s = load_settings(); "
                           "print(engine.attach(s, spark_conf(s), 'x') is None)"],
                          env=other, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "True", done.stderr[-2000:]
    # A run's own heap setting is for a driver of its own: it attaches, and works in the engine's heap
    # (LAKEHOUSE_ENGINE_MEMORY, 2g by default), which is bounded whatever the runs ask.
    bigger = {**env, "LAKEHOUSE_SPARK_DRIVER_MEMORY": "5g"}
    done = subprocess.run([sys.executable, "-c", "from lakehouse import engine; from lakehouse.settings import "
                           "load_settings; from lakehouse.spark import spark_conf; s = load_settings(); "
                           "a = engine.attach(s, spark_conf(s), 'x'); "
                           "print(a.session._jvm.java.lang.Runtime.getRuntime().maxMemory())"],
                          env=bigger, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert 1.5 * 2**30 < int(done.stdout.strip().splitlines()[-1]) <= 2 * 2**30
    lakehouse_cli(env, "engine", "stop")
    idle = {**env, "LAKEHOUSE_ENGINE_IDLE_SECONDS": "2"}
    lakehouse_cli(idle, "engine", "start")
    deadline = time.monotonic() + 60
    while engine_status(env)["running"]:
        assert time.monotonic() < deadline, "an idle engine kept running"
        time.sleep(1)
    assert "idle for 2 s: stopping" in (home / "engine" / "engine.log").read_text()


def test_the_engine_serves_the_embedded_default_only(home):
    home, env = home
    for extra in ({"LAKEHOUSE_SPARK_MASTER": "spark://127.0.0.1:7077"}, {"LAKEHOUSE_ENGINE": "off"},
                  {"LAKEHOUSE_COMPUTE": "subprocess"}):
        done = subprocess.run([str(BIN / "lakehouse"), "engine", "start"], env={**env, **extra},
                              capture_output=True, text=True)
        assert done.returncode == 2 and "embedded default only" in done.stderr, extra


SHORT_SESSIONS = 4
A_RUN = f"""
from lakehouse import engine
from lakehouse.settings import load_settings
from lakehouse.spark import spark_conf

settings = load_settings()
attached = engine.attach(settings, spark_conf(settings), "run")
assert attached.session.range(5).count() == 5
attached.release()
# Sessions far shorter than the engine's poll of the leases (once a second) count all the same.
for _ in range({SHORT_SESSIONS}):
    engine.attach(settings, spark_conf(settings), "run").release()
"""


def engine_jvms(pid: int) -> list[int]:
    """The engine process's child JVMs that have not exited (a zombie has: it only waits to be reaped)."""
    from lakehouse.writers import process_start

    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(c) for c in children if process_start(int(c)) is not None
            and Path(f"/proc/{c}/comm").read_text().strip() == "java"]


def test_a_recycled_engine_leaves_one_jvm(home):
    """Recycling the driver ends the old JVM: a soak that crossed a recycle ran two 2.7-3 GiB JVMs until the end."""
    home, env = home
    runs = 1 + SHORT_SESSIONS  # A_RUN's sessions: what 200 runs or a full heap lead to, after these
    env = {**env, "LAKEHOUSE_ENGINE_MAX_RUNS": str(runs)}
    lakehouse_cli(env, "engine", "start")
    engine = engine_status(env)
    assert engine["generation"] == 1 and len(engine_jvms(engine["pid"])) == 1
    done = subprocess.run([sys.executable, "-c", A_RUN], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    deadline = time.monotonic() + 120
    while engine_status(env).get("generation") != 2:  # the run was the driver's last: a new one serves next
        assert time.monotonic() < deadline, "the engine did not recycle"
        time.sleep(0.5)
    assert f"recycling the driver after {runs} runs" in (home / "engine" / "engine.log").read_text()
    assert len(engine_jvms(engine["pid"])) == 1, f"JVMs alive after the recycle: {engine_jvms(engine['pid'])}"
