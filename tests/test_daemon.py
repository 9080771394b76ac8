"""Event-driven end to end: the real Dagster daemon runs the sensor; files landed in the folder reach Gold."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import dagster as dg
import pytest

from lakehouse.contracts import Entity
from lakehouse.generator import generate
from lakehouse.landing import LocalLandingZone
from lakehouse.catalog import catalog_for
from lakehouse.query import QueryEngine
from lakehouse.settings import load_settings
from tests import expected as exp
from resources.runs import WORKER_TAG
from tests.daemon import BIN, DagsterServices

pytestmark = pytest.mark.slow

RUNS = """{ runsOrError(filter: {tags: [{key: "dagster/sensor_name", value: "landing_zone_sensor"}]}) {
  ... on Runs { results { runId status tags { key value } } } } }"""
SENSOR = """{ sensorOrError(sensorSelector: {repositoryName: "__repository__", repositoryLocationName: "lakehouse",
  sensorName: "landing_zone_sensor"}) { ... on Sensor { name sensorState { status ticks(limit: 5) { status } } } } }"""


def gold_query(home, sql):
    """The query, or None while a table it names does not exist yet."""
    try:
        return QueryEngine(catalog_for(load_settings({"LAKEHOUSE_HOME": str(home)}))).sql(sql).fetchall()
    except Exception:  # noqa: BLE001 - tables appear during the first run
        return None


def _run_in_step(instance: dg.DagsterInstance, step: str) -> dg.DagsterRun | None:
    """The sensor's run that is executing `step` now, if any."""
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]), limit=5):
        events = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_START)
        if any(e.step_key == step for e in events):
            return run
    return None


def _kill_with_children(pid: int) -> None:
    """SIGKILL a process and its children (the run worker and its Spark JVM), as the OOM killer would."""
    children = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as fh:
            children += [int(c) for c in fh.read().split()]
    for p in [pid, *children]:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_files_landed_reach_gold_by_themselves(tmp_path):
    home = tmp_path / "lh"
    zone = LocalLandingZone(home / "landing")
    files = generate(tmp_path / "gen", posts=300, comments=900, files=1, seed=11, days=3, subreddits=3,
                     repeat_share=0)
    want = exp.expected_gold(files.posts, files.comments)
    want_posts = sum(v["posts"] for v in want["subreddit_daily"].values())
    want_comments = sum(v["comments"] for v in want["subreddit_daily"].values())

    with DagsterServices(home) as dagster:
        zone.ensure_layout()
        zone.land(files.posts[0], Entity.POST)
        zone.land(files.comments[0], Entity.COMMENT)
        dagster.wait(
            lambda: gold_query(home, "SELECT sum(posts), sum(comments) FROM gold.subreddit_daily")
            == [(want_posts, want_comments)],
            timeout=300, what="Gold to hold the landed rows",
        )
        # The sensor started the warm engine, and the runs attached to it.
        engine = json.loads(subprocess.run([str(BIN / "lakehouse"), "engine", "status"], env=dagster.env,
                                           capture_output=True, text=True, check=True).stdout)
        assert engine["running"], engine
        engagement = dict(gold_query(home, "SELECT post_id, comments FROM gold.post_engagement"))
        assert engagement == {k: v["comments"] for k, v in want["post_engagement"].items()}

        # A new version of the posts file (scores changed) updates Silver in place: no duplicate ids.
        new_version = exp.bump_scores(files.posts[0], tmp_path / files.posts[0].name, delta=500)
        zone.land(new_version, Entity.POST)
        want_scores = {k: int(v["score"]) + 500 for k, v in want["posts"].items()}
        dagster.wait(
            lambda: dict(gold_query(home, "SELECT post_id, score FROM gold.posts") or []) == want_scores,
            timeout=300, what="Gold posts to show the new scores",
        )
        assert gold_query(home, "SELECT count(*), count(DISTINCT id) FROM silver.posts") == [(300, 300)]
        assert gold_query(home, "SELECT sum(posts) FROM gold.subreddit_daily") == [(300,)]

        # The same bytes landed again: no new run, nothing changes.
        runs_before = len(dagster.graphql(RUNS)["runsOrError"]["results"])
        zone.land(new_version, Entity.POST)
        time.sleep(8)  # several sensor ticks at a 2 s interval
        # Gold shows the scores before the run's Gold checks finish: wait for the runs to end.
        dagster.wait(
            lambda: all(r["status"] in ("SUCCESS", "FAILURE", "CANCELED")
                        for r in dagster.graphql(RUNS)["runsOrError"]["results"]),
            timeout=300, what="the sensor's runs to finish",
        )
        runs = dagster.graphql(RUNS)["runsOrError"]["results"]
        assert len(runs) == runs_before
        assert all(r["status"] == "SUCCESS" for r in runs)
        runs_before_kill = len(runs)
        assert gold_query(home, "SELECT count(*) FROM bronze.posts") == [(600,)]

        # A run killed mid-way (SIGKILL in Silver): nothing stuck, the sensor asks again, the file lands once.
        big = generate(tmp_path / "big", posts=20_000, comments=0, files=1, seed=12, days=3, subreddits=3,
                       repeat_share=0, id_offset=50_000)
        zone.land(big.posts[0], Entity.POST)
        with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
            run = dagster.wait(lambda: _run_in_step(instance, "silver_posts"), timeout=300, what="a run in Silver")
            worker = dagster.wait(lambda: instance.get_run_by_id(run.run_id).tags.get(WORKER_TAG), timeout=30,
                                  what="the run's worker tag")
            _kill_with_children(int(worker.split(":")[2]))
            dagster.wait(lambda: gold_query(home, "SELECT sum(posts) FROM gold.subreddit_daily") == [(20_300,)],
                         timeout=400, what="the killed run's file to reach Gold through a new run")
            assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
        # The killed run was attached to the engine: the engine cancelled its jobs and went on serving.
        after = json.loads(subprocess.run([str(BIN / "lakehouse"), "engine", "status"], env=dagster.env,
                                          capture_output=True, text=True, check=True).stdout)
        assert after["running"] and after["pid"] == engine["pid"], (engine, after)
        assert "died while attached" in (home / "engine" / "engine.log").read_text()
        assert gold_query(home, "SELECT count(*), count(DISTINCT _source_row) FROM bronze.posts "
                                "WHERE _source_uri LIKE '%-s12-%'") == [(20_000, 20_000)]  # once, not twice

        # The UI shows the sensor running, its ticks, and the runs it started.
        runs = dagster.graphql(RUNS)["runsOrError"]["results"]
        assert len(runs) == runs_before_kill + 2  # the killed run and the one that redid its file
        sensor = dagster.graphql(SENSOR)["sensorOrError"]
        assert sensor["name"] == "landing_zone_sensor" and sensor["sensorState"]["status"] == "RUNNING"
        assert sensor["sensorState"]["ticks"]
        assert {t["value"] for r in runs for t in r["tags"] if t["key"] == "lakehouse/entity"} == {"post", "comment"}
