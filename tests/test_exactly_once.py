"""Exactly once by construction: runs that overlap on one entity never roll back each other's batches, never
ingest a file version twice, and Silver never holds an id twice, whatever the instance's concurrency settings."""

from __future__ import annotations

import threading

import dagster as dg
import pytest

from lakehouse import bronze_layer, silver_layer, tables
from lakehouse.contracts import SOURCE_HEADERS, Entity
from lakehouse.transforms import bronze as bronze_tf
from sensors.landing import downstream_of
from tests.conftest import dead_writer

pytestmark = pytest.mark.slow
HEADER = ",".join(SOURCE_HEADERS[Entity.POST]) + "\r\n"


def posts(*ids: str, score: int = 1) -> str:
    return HEADER + "".join(
        f"post,{i},2s5ti,meirl,false,1648771149,https://old.reddit.com/r/meirl/comments/{i}/x/,i.redd.it,"
        f"https://i.redd.it/{i}.jpg,,title {i},{score}\r\n" for i in ids)


def land(zone, name: str, text: str) -> str:
    key = f"input/post/{name}"
    path = zone.path_for(key)
    path.write_text(text, encoding="utf-8", newline="")
    return key


def rows_per_file(spark) -> dict[str, int]:
    return {r._source_uri.rsplit("/", 1)[-1]: r.n for r in
            spark.sql("SELECT _source_uri, count(*) AS n FROM bronze.posts GROUP BY 1").collect()}


def test_two_overlapping_runs_never_roll_back_or_repeat_each_other(spark, lakehouse, monkeypatch):
    """Run A appends its batch and stalls before logging it; a file lands; run B (no concurrency limit) runs the
    whole selection meanwhile. B leaves A's live batch alone and does not take A's file; A then finishes."""
    from lakehouse_assets.definitions import defs

    zone = lakehouse
    first = land(zone, "a.csv", posts("a1", "a2", "a3"))
    appended, release = threading.Event(), threading.Event()
    real_write_log = bronze_layer.write_log

    def stall_run_a(spark_, rows):
        if threading.current_thread().name == "run-a" and rows and rows[0]["status"] == "loaded":
            appended.set()
            assert release.wait(300), "run A was never released"
        return real_write_log(spark_, rows)

    monkeypatch.setattr(bronze_layer, "write_log", stall_run_a)
    job = defs.resolve_implicit_global_asset_job_def()
    instance = dg.DagsterInstance.ephemeral()  # no pool limit: steps of the two runs interleave freely
    results = {}

    def run(name: str, keys: list[str] | None) -> None:
        config = {"ops": {"bronze__posts": {"config": {"keys": keys}}}} if keys else None
        results[name] = job.execute_in_process(instance=instance, asset_selection=downstream_of(Entity.POST),
                                               run_config=config, raise_on_error=False)

    run_a = threading.Thread(target=run, args=("a", [first]), name="run-a")
    run_a.start()
    try:
        assert appended.wait(300), "run A never appended"
        land(zone, "b.csv", posts("b1", "b2"))
        run("b", None)  # every pending file: a.csv is pending for the log, but run A is ingesting it
        b = results["b"]
        assert b.success
        [bronze_b] = [e.materialization.metadata for e in b.get_asset_materialization_events()
                      if e.asset_key == dg.AssetKey(["bronze", "posts"])]
        assert bronze_b["rolled_back_batches"].value == 0
        files_b = bronze_b["files"].value
        assert "input/post/b.csv | loaded" in files_b and "input/post/a.csv | skipped" in files_b
        assert rows_per_file(spark) == {"a.csv": 3, "b.csv": 2}  # A's live batch is still there
        # Silver does not read past a batch that is still being written.
        assert spark.table("silver.posts").count() == 0
    finally:
        release.set()
        run_a.join(300)
    assert results["a"].success
    assert rows_per_file(spark) == {"a.csv": 3, "b.csv": 2}
    assert sorted(r.id for r in spark.table("silver.posts").collect()) == ["a1", "a2", "a3", "b1", "b2"]
    log = spark.sql("SELECT source_uri, status FROM bronze.ingestion_log").collect()
    assert sorted((r.source_uri.rsplit("/", 1)[-1], r.status) for r in log) == [("a.csv", "loaded"), ("b.csv", "loaded")]
    gold = spark.sql("SELECT sum(posts) AS p FROM gold.subreddit_daily").first().p
    assert gold == 5


def test_of_two_runs_appending_one_file_version_the_earlier_append_keeps_it(spark, lakehouse, monkeypatch):
    """Both runs pass every check before either appends; Bronze's history decides, and the file is there once."""
    zone = lakehouse
    key = land(zone, "same.csv", posts("s1", "s2"))
    ready, release = threading.Event(), threading.Event()
    real_to_bronze = bronze_tf.to_bronze

    def stall_before_append(*args, **kwargs):
        if threading.current_thread().name == "late":
            ready.set()
            assert release.wait(300)
        return real_to_bronze(*args, **kwargs)

    monkeypatch.setattr(bronze_tf, "to_bronze", stall_before_append)
    outcome = {}
    late = threading.Thread(name="late", target=lambda: outcome.update(late=bronze_layer.ingest_bronze(
        spark, zone, Entity.POST, keys=[key], writer="run:late", alive=lambda w: True)))
    late.start()
    assert ready.wait(300)
    early = bronze_layer.ingest_bronze(spark, zone, Entity.POST, keys=[key], writer="run:early", alive=lambda w: True)
    release.set()
    late.join(300)
    assert [(f.key, f.status, f.rows) for f in early.files] == [(key, "loaded", 2)]
    assert [(f.key, f.status) for f in outcome["late"].files] == [(key, "skipped")]
    assert rows_per_file(spark) == {"same.csv": 2}
    assert [r.status for r in spark.sql("SELECT status FROM bronze.ingestion_log").collect()] == ["loaded"]


def test_a_dead_writers_batch_is_rolled_back_and_a_live_ones_is_not(spark, lakehouse, monkeypatch):
    zone = lakehouse

    def crash(*_):
        raise RuntimeError("killed between the Bronze commit and the log write")

    # Two batches appended and never logged: one by a process that has exited, one by a run still going.
    with monkeypatch.context() as m:
        m.setattr(bronze_layer, "write_log", crash)
        for name, writer in (("a.csv", dead_writer()), ("b.csv", "run:still-running")):
            key = land(zone, name, posts(name[0] + "1"))
            with pytest.raises(RuntimeError):
                bronze_layer.ingest_bronze(spark, zone, Entity.POST, keys=[key], writer=writer, alive=lambda w: True)
    assert len(bronze_layer.unsettled_batches(tables.snapshots(spark, "bronze.posts"), [])) == 2

    running = {"run:still-running": True}

    def alive(writer):
        return running.get(writer, False)

    result = bronze_layer.ingest_bronze(spark, zone, Entity.POST, alive=alive)
    assert len(result.rolled_back_batches) == 1  # only the dead writer's
    assert sorted((f.key, f.status) for f in result.files) == [("input/post/a.csv", "loaded"),
                                                                ("input/post/b.csv", "skipped")]
    # The run dies after all: the next run rolls its batch back and ingests the file once.
    running["run:still-running"] = False
    result = bronze_layer.ingest_bronze(spark, zone, Entity.POST, alive=alive)
    assert len(result.rolled_back_batches) == 1 and [(f.key, f.status) for f in result.files] == [
        ("input/post/b.csv", "loaded")]
    assert rows_per_file(spark) == {"a.csv": 1, "b.csv": 1}


def test_a_merge_that_loses_a_commit_race_is_tried_again_and_adds_no_row_twice(spark, lakehouse, tmp_path):
    """Iceberg validates a copy-on-write MERGE against commits made while it ran: the loser fails (`Conflict`),
    commits nothing, and the retry sees the winner's rows."""
    import time
    from pathlib import Path

    from pyspark.sql import functions as F
    from pyspark.sql.types import StringType

    spark.sql("CREATE NAMESPACE IF NOT EXISTS silver")
    spark.sql("CREATE TABLE silver.race (id STRING, v STRING) USING iceberg TBLPROPERTIES "
              "('format-version'='2', 'write.merge.mode'='copy-on-write')")
    spark.sql("INSERT INTO silver.race VALUES ('a', 'old')")
    reading = tmp_path / "reading"

    @F.udf(StringType())
    def slowly(v):  # the loser's MERGE has read the table and is still computing its source
        Path(reading).touch()
        time.sleep(5)
        return v

    source = spark.createDataFrame([("a", "new"), ("b", "new")], "id string, v string").coalesce(1).select(
        "id", slowly("v").alias("v"))
    attempts = []

    def merge_once():
        attempts.append(len(attempts) + 1)
        tables.upsert(spark, "silver.race", source, ["id"])

    loser = threading.Thread(target=lambda: tables.retrying("silver.race", merge_once))
    loser.start()
    deadline = time.monotonic() + 120
    while not reading.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    # Another writer appends the same new key meanwhile (an append is never validated, so it always lands).
    spark.createDataFrame([("b", "winner")], "id string, v string").writeTo("silver.race").append()
    loser.join(180)
    assert attempts == [1, 2]  # lost once, then committed
    assert sorted((r.id, r.v) for r in spark.table("silver.race").collect()) == [("a", "new"), ("b", "new")]


def test_overlapping_silver_merges_keep_one_row_per_id_and_the_newest_version(spark, lakehouse):
    """Two Silver steps that read the same Bronze range commit one after the other: the second MERGE is
    validated against the first (no id appended twice) and an older version never replaces a newer one."""
    from pyspark.sql import functions as F

    zone = lakehouse
    land(zone, "v1.csv", posts("x1", "x2", score=1))
    bronze_layer.ingest_bronze(spark, zone, Entity.POST)
    silver_layer.update_silver(spark, Entity.POST)
    land(zone, "v2.csv", posts("x1", "x3", score=2))
    bronze_layer.ingest_bronze(spark, zone, Entity.POST)
    newer = spark.table("silver.posts").where("id = 'x1'").select("_ingested_at").first()._ingested_at
    # An older version of x1 arriving late (another run's stale MERGE) does not win, nor add a row.
    stale = spark.table("silver.posts").where("id = 'x1'").withColumn("score", F.lit(-5)).withColumn(
        "_row_hash", F.lit("stale")).withColumn("_ingested_at", F.lit(newer) - F.expr("INTERVAL 1 DAY"))
    silver_layer.update_silver(spark, Entity.POST)
    tables.upsert(spark, "silver.posts", stale, ["id"], update_if=silver_layer.NEWER_VERSION, stamp="_updated_at")
    rows = {r.id: r.score for r in spark.table("silver.posts").collect()}
    assert rows == {"x1": 2, "x2": 1, "x3": 2}


def test_the_ingestion_log_is_read_once_per_snapshot_and_again_after_every_write(spark, lakehouse):
    """The log is the final word on what was ingested: a read must see every row logged before it, though a run's
    steps and checks read it a dozen times (each read of an unchanged log costs no Spark job)."""
    from datetime import datetime, timezone

    tables.ensure_tables(spark)

    def row(uri: str, status: str) -> dict:
        return {"entity": "post", "source_uri": uri, "source_etag": "e", "source_size": 1, "batch_id": "b-" + uri,
                "status": status, "rows": 1, "malformed_rows": 0, "ingested_at": datetime.now(timezone.utc)}

    reads = iter(range(100))

    def jobs_for(read) -> tuple[list, int]:
        sc = spark.sparkContext
        group = f"log-read-{next(reads)}"
        sc.setJobGroup(group, group)
        try:
            return read(), len(sc.statusTracker().getJobIdsForGroup(group))
        finally:
            sc.setLocalProperty("spark.jobGroup.id", None)

    assert bronze_layer.log_history(spark, Entity.POST) == []
    bronze_layer.write_log(spark, [row("s3://in/a.csv", "loaded")])
    first, _ = jobs_for(lambda: bronze_layer.log_history(spark, Entity.POST))
    again, jobs = jobs_for(lambda: bronze_layer.log_history(spark, Entity.POST))
    assert [r["source_uri"] for r in first] == [r["source_uri"] for r in again] == ["s3://in/a.csv"]
    assert jobs == 0, "an unchanged log was read again"
    again[0]["status"] = "changed by a caller"  # what a caller does with its rows stays its own
    assert bronze_layer.log_history(spark, Entity.POST)[0]["status"] == "loaded"
    assert bronze_layer.log_history(spark, Entity.COMMENT) == []

    bronze_layer.write_log(spark, [row("s3://in/a.csv", "retracted"), row("s3://in/b.csv", "loaded")])
    after, jobs = jobs_for(lambda: bronze_layer.log_entries(spark, Entity.POST))
    assert jobs > 0
    assert sorted((e.source_uri, e.status) for e in after) == [("s3://in/a.csv", "retracted"),
                                                                ("s3://in/b.csv", "loaded")]


def test_a_steps_marks_travel_in_its_data_commit_and_roll_back_with_it(spark, lakehouse):
    """Silver's position in Bronze and Gold's in Silver are committed with the rows they describe: one commit per
    table per run, no window between rows and mark, and a table rolled back takes its mark back with its rows."""
    import json

    from lakehouse import gold_layer

    zone = lakehouse

    def commits(table: str) -> int:  # every metadata version, property-only commits included
        return spark.sql(f"SELECT count(*) FROM {table}.metadata_log_entries").first()[0]

    def carried(table: str) -> dict:
        return json.loads(tables.current_snapshot(spark, table).summary[tables.MARKS_PROPERTY])

    def run() -> dict[str, int]:
        bronze_layer.ingest_bronze(spark, zone, Entity.POST)
        before = {t: commits(t) for t in ("silver.posts", "gold.posts")}
        silver_layer.update_silver(spark, Entity.POST)
        gold_layer.update_gold_entity(spark, "posts")
        return {t: commits(t) - n for t, n in before.items()}

    land(zone, "v1.csv", posts("x1", "x2", score=1))
    bronze_layer.ingest_bronze(spark, zone, Entity.POST)
    silver_layer.update_silver(spark, Entity.POST)
    gold_layer.update_gold_entity(spark, "posts")
    first = tables.snapshot_id(spark, "silver.posts")

    land(zone, "v2.csv", posts("x1", "x3", score=2))
    assert run() == {"silver.posts": 1, "gold.posts": 1}  # the MERGE carried the marks: no second commit
    bronze_now = tables.snapshot_id(spark, "bronze.posts")
    assert carried("silver.posts") == {tables.WATERMARK_PREFIX + "bronze.posts": str(bronze_now)}
    assert int(tables.current_snapshot(spark, "silver.posts").summary["added-records"]) > 0  # the MERGE's own
    assert tables.watermark(spark, "silver.posts", "bronze.posts") == str(bronze_now)
    gold_marks = carried("gold.posts")
    assert gold_marks[tables.READ_SNAPSHOT_PREFIX + "silver.posts"] == str(tables.snapshot_id(spark, "silver.posts"))
    assert not [k for k in tables.table_properties(spark, "silver.posts") if k.startswith("lakehouse.watermark")]

    # Nothing new for Silver in a file (the same rows again): no rows to MERGE, the mark still moves, in one commit.
    land(zone, "v2-again.csv", posts("x3", score=2))
    assert run()["silver.posts"] == 1
    assert tables.watermark(spark, "silver.posts", "bronze.posts") == str(tables.snapshot_id(spark, "bronze.posts"))

    # An operator rolls Silver back to before v2: its position in Bronze goes back with its rows, so the next run
    # reads v2 again and Silver ends where it was, every id once.
    spark.sql(f"CALL lakehouse.system.rollback_to_snapshot('silver.posts', {first})")
    assert {r.id: r.score for r in spark.table("silver.posts").collect()} == {"x1": 1, "x2": 1}
    silver_layer.update_silver(spark, Entity.POST)
    assert sorted((r.id, r.score) for r in spark.table("silver.posts").collect()) == [("x1", 2), ("x2", 1), ("x3", 2)]


def test_marks_an_older_lakehouse_kept_as_table_properties_move_into_the_next_commit(spark, lakehouse):
    """An older lakehouse kept its marks as table properties: they hold until the first commit that carries marks,
    which takes them along and drops the properties; with no carrying snapshot left, there are no marks (a full
    pass), never stale ones."""
    spark.sql("CREATE NAMESPACE IF NOT EXISTS silver")
    spark.sql("CREATE TABLE silver.legacy_marks (id BIGINT) USING iceberg")
    spark.sql("INSERT INTO silver.legacy_marks VALUES (1)")
    unmarked = tables.snapshot_id(spark, "silver.legacy_marks")
    tables.set_properties(spark, "silver.legacy_marks", {tables.WATERMARK_PREFIX + "bronze.posts": "5"})
    assert tables.step_marks(spark, "silver.legacy_marks") == tables.Marks(
        {tables.WATERMARK_PREFIX + "bronze.posts": "5"}, None)

    tables.set_watermarks(spark, "silver.legacy_marks", {"bronze.comments": "7"})
    marks = tables.step_marks(spark, "silver.legacy_marks")
    assert marks.values == {tables.WATERMARK_PREFIX + "bronze.posts": "5", tables.WATERMARK_PREFIX + "bronze.comments": "7"}
    assert marks.carrier == tables.snapshot_id(spark, "silver.legacy_marks") != unmarked
    assert not [k for k in tables.table_properties(spark, "silver.legacy_marks") if k.startswith("lakehouse.")]
    tables.set_watermarks(spark, "silver.legacy_marks", {"bronze.comments": "7"})  # the same marks: no commit
    assert tables.snapshot_id(spark, "silver.legacy_marks") == marks.carrier

    # A commit that carries no marks (a hand edit) leaves them standing; rolled back past them, none are left.
    spark.sql("INSERT INTO silver.legacy_marks VALUES (2)")
    assert tables.step_marks(spark, "silver.legacy_marks") == marks
    spark.sql(f"CALL lakehouse.system.rollback_to_snapshot('silver.legacy_marks', {unmarked})")
    assert tables.step_marks(spark, "silver.legacy_marks") == tables.Marks({}, None)


def test_a_steps_checks_move_their_marks_on_a_table_in_one_commit(spark, lakehouse):
    """The checks a step evaluates move their marks together once all are evaluated (one commit per table, not one
    per check); a block that fails moves none, so the range is verified again next time."""
    from lakehouse import checks
    from lakehouse.checks import CheckOutcome

    spark.sql("CREATE NAMESPACE IF NOT EXISTS silver")
    spark.sql("CREATE TABLE silver.checked (id BIGINT) USING iceberg")

    def commits() -> int:
        return spark.sql("SELECT count(*) FROM silver.checked.metadata_log_entries").first()[0]

    def verified() -> dict:
        return {k: v for k, v in tables.table_properties(spark, "silver.checked").items()
                if k.startswith(checks.VERIFIED_PREFIX)}

    before = commits()
    with checks.marks_together(spark):
        checks.record_verified(spark, "silver.checked", "a", [CheckOutcome(True, "ok")], 10)
        checks.record_verified(spark, "silver.checked", "b", [CheckOutcome(True, "ok")], 20)
        checks.record_verified(spark, "silver.checked", "c", [CheckOutcome(False, "no")], 30)  # failed: stays
        assert verified() == {}
    assert commits() == before + 1
    assert verified() == {checks.VERIFIED_PREFIX + "a": "10", checks.VERIFIED_PREFIX + "b": "20"}

    with pytest.raises(RuntimeError):
        with checks.marks_together(spark):
            checks.record_verified(spark, "silver.checked", "a", [CheckOutcome(True, "ok")], 11)
            raise RuntimeError("a check raised")
    assert verified()[checks.VERIFIED_PREFIX + "a"] == "10" and commits() == before + 1
    checks.record_verified(spark, "silver.checked", "a", [CheckOutcome(True, "ok")], 12)  # outside a step: at once
    assert verified()[checks.VERIFIED_PREFIX + "a"] == "12"


def test_a_first_load_that_another_run_beats_to_the_empty_table_merges_into_what_it_wrote(
        spark, lakehouse, monkeypatch):
    """A first load writes all its rows into the empty Silver and Gold tables in one commit, no MERGE. When an
    overlapping run fills the table first, that commit fails validation (nothing written), and the step MERGEs
    into what the other run left: no id twice, nothing lost."""
    from lakehouse import gold_layer

    zone = lakehouse
    land(zone, "first.csv", posts("f1", "f2", "f3"))
    bronze_layer.ingest_bronze(spark, zone, Entity.POST)
    real_replace_all = tables.replace_all
    beaten = []

    def another_run_commits_first(spark_, table, rows, read_at, marks=None, properties=None):
        if not beaten:  # the other run's step, complete, between this step's look at the table and its commit
            beaten.append(table)
            other = (silver_layer.update_silver(spark_, Entity.POST) if table == "silver.posts"
                     else gold_layer.update_gold_entity(spark_, "posts"))
            assert getattr(other, "inserted", getattr(other, "rows_written", None)) == 3
        return real_replace_all(spark_, table, rows, read_at, marks, properties)

    monkeypatch.setattr(tables, "replace_all", another_run_commits_first)
    result = silver_layer.update_silver(spark, Entity.POST)
    assert beaten == ["silver.posts"]
    assert (result.inserted, result.unchanged) == (0, 3)  # lost the race, then found every row already there
    beaten.clear()
    gold = gold_layer.update_gold_entity(spark, "posts")
    assert beaten == ["gold.posts"] and gold.rows_written == 0  # lost, then found the winner had read them all
    for table, key in (("silver.posts", "id"), ("gold.posts", "post_id")):
        assert sorted(r[0] for r in spark.table(table).select(key).collect()) == ["f1", "f2", "f3"]
        fills = [s for s in tables.snapshots(spark, table) if tables.WRITE_ID_PROPERTY in s.summary]
        assert len(fills) == 1 and fills[0].summary["added-records"] == "3"  # only the winner's write landed
    # The next file MERGEs: the tables hold rows now.
    land(zone, "second.csv", posts("f3", "f4", score=5))
    bronze_layer.ingest_bronze(spark, zone, Entity.POST)
    again = silver_layer.update_silver(spark, Entity.POST)
    assert (again.inserted, again.updated) == (1, 1)
    assert {r.id: r.score for r in spark.table("silver.posts").collect()} == {"f1": 1, "f2": 1, "f3": 5, "f4": 5}


# --- writers on other hosts: a lease that expires -------------------------------------------------------------

# A plain process on "another host": the writer id names that host, so this one cannot look it up in its process
# table and has only the lease to go by.
LEASE_HOLDER = """
import sys, time
from lakehouse import writers
writers.HOST = sys.argv[1]
print(writers.hold_lease(), flush=True)
time.sleep(600)
"""


def wait_until(predicate, timeout: float, what: str) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what}: not within {timeout}s"
        time.sleep(0.2)


def test_a_writer_on_another_host_holds_silver_back_only_while_it_renews_its_lease(spark, lakehouse, monkeypatch):
    """A batch appended by a plain process on another host and not logged yet: while the process renews its lease,
    Bronze leaves the batch alone and Silver waits for it (and `lakehouse status` says which writer holds Silver
    back, since when and until when its lease runs). Killed, it stops renewing: once the lease expires, the next
    run rolls the batch back, ingests the file once, and Silver moves on. Before, such a writer was alive for ever."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from lakehouse import writers
    from lakehouse.catalog import catalog_for
    from lakehouse.settings import load_settings
    from lakehouse_assets import status

    zone = lakehouse
    ttl = 4
    holder = subprocess.Popen([sys.executable, "-c", LEASE_HOLDER, "emr-node-7"], stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).resolve().parents[1],
                              env={**os.environ, "LAKEHOUSE_WRITER_LEASE_SECONDS": str(ttl)})
    try:
        writer = holder.stdout.readline().strip()
        assert writer.startswith("proc:emr-node-7:"), writer
        assert writers.process_alive(writer) is None  # not this host's to look up
        key = land(zone, "far.csv", posts("f1", "f2"))

        def crash(*_):
            raise RuntimeError("killed between the Bronze commit and the log write")

        with monkeypatch.context() as m:
            m.setattr(bronze_layer, "write_log", crash)
            with pytest.raises(RuntimeError):
                bronze_layer.ingest_bronze(spark, zone, Entity.POST, keys=[key], writer=writer, alive=lambda w: True)
        first = writers.read_lease(writer)
        time.sleep(ttl + 1)  # longer than the lease: only its renewals keep it alive
        assert writers.default_liveness(writer)
        assert writers.read_lease(writer).renewed_at > first.renewed_at

        result = bronze_layer.ingest_bronze(spark, zone, Entity.POST)  # the default liveness: the lease
        assert result.rolled_back_batches == [] and [(f.key, f.status) for f in result.files] == [(key, "skipped")]
        assert silver_layer.update_silver(spark, Entity.POST).bronze_rows == 0
        report = status.collect(catalog_for(load_settings()), None)["entities"]["post"]
        [held] = report["silver_held_back_by"]
        assert held["by"] == "writer" and held["writer"] == writer and held["appended_at"] != "-"
        assert held["lease_until"] > held["lease_renewed_at"] >= held["appended_at"]  # renewed since it appended
        text = status.render({"entities": {"post": report}, "operator_log": []})
        assert f"SILVER HELD BACK since {held['appended_at']}" in text and "its lease was renewed at" in text

        os.kill(holder.pid, signal.SIGKILL)  # as the OOM killer would: no chance to give the lease up
        holder.wait()
        wait_until(lambda: not writers.default_liveness(writer), ttl + 5, "the dead writer's lease expired")
        report = status.collect(catalog_for(load_settings()), None)["entities"]["post"]
        assert report["silver_held_back_by"] == []
        assert report["unsettled_batches"][0]["state"].startswith("orphaned")
    finally:
        holder.kill()
        holder.wait()
    result = bronze_layer.ingest_bronze(spark, zone, Entity.POST)
    assert len(result.rolled_back_batches) == 1 and [(f.key, f.status) for f in result.files] == [(key, "loaded")]
    assert rows_per_file(spark) == {"far.csv": 2}
    assert silver_layer.update_silver(spark, Entity.POST).inserted == 2


def test_a_lease_is_kept_beside_the_warehouse_on_s3_too(moto_endpoint):
    """On AWS the lease is an object under the warehouse's prefix, stamped by S3; a writer that gives its lease up
    (it ended) or stops renewing it is gone, and the setting is validated like every other."""
    import time
    import uuid

    import boto3

    from lakehouse import writers
    from lakehouse.settings import SettingsError, load_settings

    with pytest.raises(SettingsError, match="LAKEHOUSE_WRITER_LEASE_SECONDS"):
        load_settings({"LAKEHOUSE_WRITER_LEASE_SECONDS": "0"})
    assert load_settings({}).writer_lease_seconds == 300
    bucket = f"lake-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    settings = load_settings({"LAKEHOUSE_ENV": "aws", "LAKEHOUSE_S3_BUCKET": bucket, "AWS_REGION": "us-east-1",
                              "LAKEHOUSE_AWS_ENDPOINT": moto_endpoint, "LAKEHOUSE_WRITER_LEASE_SECONDS": "2"})
    writer = "proc:emr-node-8:4242:77"
    assert not writers.lease_alive(writer, settings)  # never held one
    assert writers.hold_lease(settings, writer) == writer
    try:
        keys = [o["Key"] for o in boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
                .list_objects_v2(Bucket=bucket)["Contents"]]
        assert keys == [f"warehouse/_lakehouse/leases/{writers.lease_name(writer)}"]
        time.sleep(3)  # past its time to live: renewed meanwhile
        assert writers.lease_alive(writer, settings)
    finally:
        writers.release_lease(writer)
    assert writers.read_lease(writer, settings) is None and not writers.lease_alive(writer, settings)
    # A lease nobody renews expires by the store's clock.
    store = writers.lease_store(settings)
    store.write(writers.lease_name(writer), b'{"ttl_seconds": 1}')
    assert writers.lease_alive(writer, settings)
    wait_until(lambda: not writers.lease_alive(writer, settings), 5, "the unrenewed lease expired")
