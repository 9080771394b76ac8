"""A run that dies mid-way (SIGKILL: the OOM killer, a reboot) never stops the lakehouse: the next run, started
from the command line with no manual step, ends the dead run, frees its pool slot, repairs what it left, and the
tables equal what uninterrupted runs give."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from lakehouse import tables
from lakehouse.catalog import catalog_for
from lakehouse.contracts import Entity
from lakehouse.generator import generate
from lakehouse.landing import LocalLandingZone
from lakehouse.query import QueryEngine
from lakehouse.settings import load_settings
from tests import expected as exp
from tests.test_end_to_end import assert_gold_matches

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
MATERIALIZE = ["dagster", "asset", "materialize", "-m", "lakehouse_assets.definitions", "--select", "*"]


class Landed:
    """Lands small generated batches (a new seed each: new ids, some repeated) and remembers every file."""

    def __init__(self, home: Path, scratch: Path, posts: int = 80, comments: int = 240):
        self.zone, self.scratch, self.sizes = LocalLandingZone(home / "landing"), scratch, (posts, comments)
        self.posts: list[Path] = []
        self.comments: list[Path] = []

    def land(self, seed: int) -> None:
        files = generate(self.scratch / f"gen{seed}", posts=self.sizes[0], comments=self.sizes[1], files=1,
                         seed=seed, days=2, subreddits=2, repeat_share=0.1, id_offset=seed * 1000)
        for path in files.posts:
            self.zone.land(path, Entity.POST)
            self.posts.append(path)
        for path in files.comments:
            self.zone.land(path, Entity.COMMENT)
            self.comments.append(path)


def test_runs_killed_in_each_layer_leave_nothing_stuck(tmp_path):
    home = tmp_path / "lh"
    env = {**os.environ, "LAKEHOUSE_HOME": str(home), "DAGSTER_HOME": str(home / "dagster")}
    subprocess.run([str(BIN / "lakehouse"), "init"], env=env, check=True, capture_output=True)
    assert "default_limit: 1" in (home / "dagster" / "dagster.yaml").read_text()  # one slot: a dead run blocks
    landed = Landed(home, tmp_path)
    land_more, posts, comments = landed.land, landed.posts, landed.comments

    killed = []
    for seed, point in enumerate(("bronze", "silver", "gold"), start=1):
        land_more(seed)
        marker = tmp_path / f"stopped-{point}"
        proc = subprocess.Popen([sys.executable, "-m", "tests.killable", point, str(marker), *MATERIALIZE], env=env,
                                cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 400
        while not marker.exists():
            assert proc.poll() is None, f"the run ended before reaching {point}"
            assert time.monotonic() < deadline, f"the run never reached {point}"
            time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGKILL)  # the run and its Spark JVM, with no chance to clean up
        proc.wait()
        with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
            [run] = [r for r in instance.get_runs(limit=1)]
            assert run.status == dg.DagsterRunStatus.STARTED  # what a killed run leaves behind
            killed.append(run.run_id)

    land_more(4)
    # Before: this waited forever ("Step blocked by limit for pool lakehouse").
    done = subprocess.run([str(BIN / MATERIALIZE[0]), *MATERIALIZE[1:]], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        statuses = {r.run_id: r.status for r in instance.get_runs()}
        assert [statuses[r] for r in killed] == [dg.DagsterRunStatus.FAILURE] * 3
        assert not instance.event_log_storage.get_concurrency_run_ids()  # no slot held by anyone
    settings = load_settings({"LAKEHOUSE_HOME": str(home)})
    q = QueryEngine(catalog_for(settings))
    records = sum(1 for _ in exp.read_rows(posts)) + sum(1 for _ in exp.read_rows(comments))
    bronze = q.sql("SELECT (SELECT count(*) FROM bronze.posts) + (SELECT count(*) FROM bronze.comments)").fetchall()
    assert bronze == [(records,)]  # nothing ingested twice, nothing lost
    assert_gold_matches(settings, exp.expected_gold(posts, comments))


# `python -m lakehouse.job --step bronze` as it runs on another host (an EMR step without Pipes): the writer id names
# that host, and the job stops dead between its Bronze append and the ingestion log, for the test to kill it there.
FOREIGN_JOB = """
import sys, time
from pathlib import Path
from lakehouse import bronze_layer, writers
writers.HOST = sys.argv[1]
real_write_log = bronze_layer.write_log

def write_log(spark, rows):
    if rows and rows[0]["status"] != "rolled_back":
        Path(sys.argv[2]).write_text("appended")
        time.sleep(3600)
    return real_write_log(spark, rows)

bronze_layer.write_log = write_log
from lakehouse.job import main
sys.exit(main(["--step", "bronze", "--entity", "post"]))
"""


def test_a_job_killed_on_another_host_stops_holding_silver_once_its_lease_expires(spark, lakehouse, tmp_path):
    """The job appended its batch and was killed before logging it. While it lived it renewed its lease, and
    Silver waited for the batch; killed, its lease runs out, `lakehouse status` stops naming it, and the next run
    rolls the batch back and ingests the file once. Before, a writer on another host was alive for ever: Silver and
    Gold never advanced again."""
    from lakehouse import bronze_layer, silver_layer, writers
    from lakehouse_assets import status
    from tests.test_exactly_once import land, posts, rows_per_file, wait_until

    zone = lakehouse
    ttl = 6
    key = land(zone, "emr.csv", posts("e1", "e2", "e3"))
    marker = tmp_path / "appended"
    job = subprocess.Popen([sys.executable, "-c", FOREIGN_JOB, "ip-10-0-3-7.ec2.internal", str(marker)], cwd=REPO,
                           env={**os.environ, "LAKEHOUSE_WRITER_LEASE_SECONDS": str(ttl)},
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until(lambda: marker.exists() or job.poll() is not None, 400, "the job appended its batch")
        assert job.poll() is None, "the job ended before appending"
        [batch] = bronze_layer.unsettled_batches(tables.snapshots(spark, "bronze.posts"), [])
        assert batch.writer.startswith("proc:ip-10-0-3-7.ec2.internal:")
        time.sleep(ttl + 1)  # alive by its renewals alone
        assert writers.default_liveness(batch.writer)
        result = bronze_layer.ingest_bronze(spark, zone, Entity.POST)
        assert [(f.key, f.status) for f in result.files] == [(key, "skipped")] and not result.rolled_back_batches
        assert silver_layer.update_silver(spark, Entity.POST).bronze_rows == 0
        [held] = status.collect(catalog_for(load_settings()), None)["entities"]["post"]["silver_held_back_by"]
        assert (held["writer"], held["batch_id"]) == (batch.writer, batch.batch_id) and "lease_until" in held

        os.killpg(job.pid, signal.SIGKILL)  # the job and its Spark JVM
        job.wait()
        wait_until(lambda: not writers.default_liveness(batch.writer), ttl + 5, "its lease expired")
        assert status.collect(catalog_for(load_settings()), None)["entities"]["post"]["silver_held_back_by"] == []
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait()
    result = bronze_layer.ingest_bronze(spark, zone, Entity.POST)
    assert result.rolled_back_batches == [batch.batch_id] and [(f.key, f.status) for f in result.files] == [
        (key, "loaded")]
    assert rows_per_file(spark) == {"emr.csv": 3}
    assert silver_layer.update_silver(spark, Entity.POST).inserted == 3
