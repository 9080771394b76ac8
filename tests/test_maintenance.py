"""Table maintenance (lakehouse/maintenance.py, the table_maintenance job): small files compacted, manifests
rewritten, old snapshots expired; time travel within the retention and every incremental mark survive it, and a
mark whose snapshot is gone anyway (an expiry by hand) makes the step that reads it do one full pass."""

from __future__ import annotations

from datetime import timedelta

import pytest

from lakehouse import gold_layer, maintenance, tables
from lakehouse.contracts import Entity
from lakehouse.generator import generate
from tests import expected as exp
from tests.test_checks import all_outcomes
from tests.test_end_to_end import assert_gold_matches
from tests.test_operations import instance, materialize  # noqa: F401 - the fixture

pytestmark = pytest.mark.slow


def land_batches(zone, tmp_path, count: int, start: int = 1) -> tuple[list, list]:
    posts, comments = [], []
    for seed in range(start, start + count):
        files = generate(tmp_path / f"g{seed}", posts=40, comments=120, files=1, seed=seed, days=3, subreddits=2,
                         repeat_share=0, id_offset=seed * 1000)
        zone.land(files.posts[0], Entity.POST)
        zone.land(files.comments[0], Entity.COMMENT)
        posts += files.posts
        comments += files.comments
    return posts, comments


def test_maintenance_keeps_time_travel_and_marks_and_an_expired_mark_means_a_full_pass(
        spark, settings, lakehouse, instance, tmp_path):
    from lakehouse_assets.definitions import defs

    posts, comments = [], []
    for seed in (1, 2):
        p, c = land_batches(lakehouse, tmp_path, 1, start=seed)
        posts, comments = posts + p, comments + c
        assert materialize(instance).success
        if seed == 1:
            first = tables.snapshot_id(spark, "silver.posts")
            first_rows = spark.table("silver.posts").count()
    files_before = spark.sql("SELECT count(*) FROM silver.posts.files").first()[0]

    job = defs.resolve_job_def("table_maintenance")
    config = {"ops": {"maintain_tables": {"config": {"min_input_files": 2}}}}
    result = job.execute_in_process(run_config=config, instance=instance, raise_on_error=False)
    assert result.success
    done = {m["table"]: m for m in result.output_for_node("maintain_tables")}
    # Two runs wrote a file into each day of Silver; compaction leaves one per day.
    assert done["silver.posts"]["data_files_before"] == files_before
    assert done["silver.posts"]["data_files_after"] < files_before
    assert spark.sql("SELECT count(*) FROM silver.posts.files").first()[0] == done["silver.posts"]["data_files_after"]
    # Within the retention (a week by default) time travel still reaches the first run's Silver.
    assert tables.at_snapshot(spark, "silver.posts", first).count() == first_rows

    # Expiring everything the retention allows (none) keeps every snapshot a mark names, and the chain after it.
    marks = maintenance.marked_snapshots(spark)
    before_lineage = {t: tables.snapshots(spark, t) for t in ("bronze.posts", "silver.posts", "silver.comments")}
    maintenance.maintain(spark, timedelta(0), compact=False, remove_orphans=True, retain_last=1)
    for table in ("bronze.posts", "silver.posts", "silver.comments"):
        lineage = [s.snapshot_id for s in tables.snapshots(spark, table)]
        before = {s.snapshot_id for s in before_lineage[table]}
        named = marks & before
        assert named, table  # some mark names a snapshot of each of these tables
        assert named <= set(lineage), table  # ... and it survived, with the chain from it to the current one
        oldest = min(i for i, s in enumerate(before_lineage[table]) if s.snapshot_id in named)
        assert lineage == [s.snapshot_id for s in before_lineage[table][oldest:]], table
    with pytest.raises(Exception):  # beyond the retention: the first snapshot is gone, as asked
        tables.at_snapshot(spark, "silver.posts", first).count()

    # The pipeline goes on incrementally after maintenance, and the checks pass.
    p, c = land_batches(lakehouse, tmp_path, 1, start=3)
    posts, comments = posts + p, comments + c
    assert materialize(instance).success
    assert_gold_matches(settings, exp.expected_gold(posts, comments))
    # (every check over whole tables runs at the end of what follows)
    then_an_expired_mark_falls_back_to_a_full_pass(spark, settings, lakehouse, instance, tmp_path, posts, comments)


def expire_by_hand(spark, *names: str) -> None:
    """What an operator (or another tool) may do: expire every snapshot but the current one, marks or not."""
    now = spark.sql("SELECT date_format(current_timestamp() + INTERVAL 1 SECOND, 'yyyy-MM-dd HH:mm:ss')").first()[0]
    for table in names:
        spark.sql(f"CALL lakehouse.system.expire_snapshots(table => '{table}', "
                  f"older_than => TIMESTAMP '{now}', retain_last => 1)")


def then_an_expired_mark_falls_back_to_a_full_pass(spark, settings, lakehouse, instance, tmp_path, posts, comments):
    """A mark whose snapshot is gone (expired by hand) makes the step that reads it do one full pass."""
    # Every mark's snapshot gone: Silver's positions in Bronze, Gold's read-snapshots of Silver, verified marks.
    expire_by_hand(spark, "bronze.posts", "bronze.comments", "silver.posts", "silver.comments")
    p, c = land_batches(lakehouse, tmp_path, 1, start=4)
    posts, comments = posts + p, comments + c
    assert materialize(instance).success
    # Silver re-read all of Bronze and holds no row twice; Gold and every check agree.
    assert spark.sql("SELECT count(*), count(DISTINCT id) FROM silver.posts").first() == (
        len(exp.read_rows(posts)), len(exp.read_rows(posts)))
    assert_gold_matches(settings, exp.expected_gold(posts, comments))
    assert {k: o.summary for k, o in all_outcomes(spark).items() if not o.passed} == {}

    # Rows taken out of Silver after Gold read it, and Gold's snapshot of Silver then expired: Gold cannot compare
    # with what it read, so it compares everything (before, it kept the rows).
    gone = [r.id for r in spark.sql("SELECT id FROM silver.posts ORDER BY id LIMIT 3").collect()]
    spark.sql(f"DELETE FROM silver.posts WHERE id IN ({', '.join(repr(i) for i in gone)})")
    expire_by_hand(spark, "silver.posts")
    result = gold_layer.update_gold_entity(spark, "posts")
    assert result.full_rebuild and result.rows_deleted == 3
    held = {r.post_id for r in spark.sql("SELECT post_id FROM gold.posts").collect()}
    assert not held & set(gone) and len(held) == spark.table("silver.posts").count()
    for table_key in ("subreddit_daily", "post_engagement"):
        gold_layer.update_gold_aggregate(spark, table_key)
    assert spark.sql("SELECT sum(posts) FROM gold.subreddit_daily").first()[0] == spark.table("silver.posts").count()
    assert not {r.post_id for r in spark.sql("SELECT post_id FROM gold.post_engagement").collect()} & set(gone)


def test_unknown_table_name_fails_loudly():
    from lakehouse.errors import UserError

    assert maintenance.table_names(["gold.posts", "silver.posts"]) == ["silver.posts", "gold.posts"]
    with pytest.raises(UserError, match="no such table: silver.post "):
        maintenance.table_names(["silver.post", "gold.posts"])


def land_posts(zone, tmp_path, seed: int) -> None:
    files = generate(tmp_path / f"p{seed}", posts=40, comments=0, files=1, seed=seed, days=3, subreddits=2,
                     repeat_share=0, id_offset=seed * 1000)
    zone.land(files.posts[0], Entity.POST)


def test_table_growth_sensor_compacts_only_the_tables_that_grew_once_per_growth(spark, settings, lakehouse,
                                                                                 instance, tmp_path):
    import json

    import dagster as dg

    from lakehouse.settings import load_settings
    from lakehouse_assets.definitions import defs
    from resources import LakehouseResource
    from sensors.table_growth import SENSOR_NAME, build_table_growth_sensor

    for seed in (1, 2):  # each run writes one file into each of the 3 days of the tables it writes
        land_posts(lakehouse, tmp_path, seed)
        assert materialize(instance, Entity.POST).success
    resource = LakehouseResource.from_settings(settings)
    counts = maintenance.data_file_counts(resource.catalog())
    assert counts["silver.posts"] == spark.sql("SELECT count(*) FROM silver.posts.files").first()[0] == 6

    def sensor_after(files: int):
        return build_table_growth_sensor(load_settings({"LAKEHOUSE_HOME": str(settings.home),
                                                        "LAKEHOUSE_COMPACT_AFTER_FILES": str(files)}))

    def tick(sensor, cursor):
        with dg.build_sensor_context(instance=instance, cursor=cursor, resources={"lakehouse": resource}) as ctx:
            result = sensor(ctx)
        return result.run_requests or [], result.cursor

    def launch(request):
        result = defs.resolve_job_def("table_maintenance").execute_in_process(
            run_config=request.run_config, instance=instance,
            tags={**request.tags, "dagster/sensor_name": SENSOR_NAME, "dagster/run_key": request.run_key})
        assert result.success
        return {m["table"]: m for m in result.output_for_node("maintain_tables")}

    sensor = sensor_after(5)
    (first,), cursor = tick(sensor, None)
    due = first.run_config["ops"]["maintain_tables"]["config"]["tables"]
    assert due == [t for t, n in counts.items() if n >= 5]
    assert {"silver.posts", "gold.posts"} <= set(due) and "silver.comments" not in due  # no comment landed
    # Asked for, not yet launched, then queued or going: nothing more is asked for.
    assert tick(sensor, cursor) == ([], None)  # (None: the cursor stays as it was)
    done = launch(first)
    assert list(done) == due  # only the tables that grew
    assert done["silver.posts"]["data_files_after"] == 3  # one per day

    # The run ended: what it left is the baseline, and a table is asked for again only once it grows as much again.
    requests, cursor = tick(sensor, cursor)
    assert requests == [] and json.loads(cursor)["baseline"]["silver.posts"] == 3
    assert tick(sensor, cursor)[0] == []
    land_posts(lakehouse, tmp_path, 3)
    assert materialize(instance, Entity.POST).success
    assert tick(sensor, cursor)[0] == []  # 3 more files, 5 needed
    land_posts(lakehouse, tmp_path, 4)
    assert materialize(instance, Entity.POST).success
    (again,), cursor = tick(sensor, cursor)
    assert {"silver.posts", "gold.posts"} <= set(again.run_config["ops"]["maintain_tables"]["config"]["tables"])
    assert launch(again)["silver.posts"]["data_files_after"] == 3


def test_table_growth_run_key_names_the_tables_state_not_their_file_counts(spark, settings, lakehouse, instance,
                                                                          tmp_path):
    """Compaction cycles bring a table back to the same file counts (31, 62, ... per day-partitioned batch): a
    request keyed by the counts repeats an old run's key, Dagster drops it as launched, and the sensor took that
    old ended run for its own and never compacted again (seen in a soak: silver.posts grew to 527 files)."""
    import dagster as dg

    from lakehouse.settings import load_settings
    from resources import LakehouseResource
    from sensors.table_growth import build_table_growth_sensor

    for seed in (1, 2):
        land_posts(lakehouse, tmp_path, seed)
        assert materialize(instance, Entity.POST).success
    resource = LakehouseResource.from_settings(settings)
    sensor = build_table_growth_sensor(load_settings({"LAKEHOUSE_HOME": str(settings.home),
                                                      "LAKEHOUSE_COMPACT_AFTER_FILES": "5"}))

    def request():
        with dg.build_sensor_context(instance=instance, cursor=None, resources={"lakehouse": resource}) as ctx:
            (only,) = sensor(ctx).run_requests
        return only

    first = request()
    assert request().run_key == first.run_key  # the same state: a re-evaluated tick asks for nothing new
    counts = maintenance.data_file_counts(resource.catalog())
    for table in first.run_config["ops"]["maintain_tables"]["config"]["tables"]:
        spark.sql(f"CALL lakehouse.system.rewrite_manifests(table => '{table}')")  # a commit, the same files
    assert maintenance.data_file_counts(resource.catalog()) == counts
    assert request().run_key != first.run_key


# --- expiry by lineage, not by timestamp order --------------------------------------------------------------------


def commit_stamped_before_its_parent(spark, table: str, seconds: int = 30) -> int:
    """Commit to `table` what a writer whose clock is `seconds` behind commits: a snapshot stamped before its parent.
    Iceberg accepts it (it tolerates clocks up to a minute apart). The snapshot is Iceberg's own (an empty append,
    applied), committed through the table's operations with only its timestamp set back."""
    import json

    jvm = spark._jvm
    jtable = tables.iceberg_table(spark, table)
    ops = jtable.operations()
    base = ops.current()
    snap = json.loads(jvm.org.apache.iceberg.SnapshotParser.toJson(jtable.newAppend().apply()))
    snap["timestamp-ms"] = base.currentSnapshot().timestampMillis() - seconds * 1000
    skewed = jvm.org.apache.iceberg.SnapshotParser.fromJson(json.dumps(snap))
    ops.commit(base, jvm.org.apache.iceberg.TableMetadata.buildFrom(base).setBranchSnapshot(skewed, "main").build())
    return snap["snapshot-id"]


def test_expiry_keeps_a_marked_snapshot_whose_successor_is_stamped_before_it(spark, settings, lakehouse, tmp_path):
    """A snapshot stamped before the one a mark names, later in the lineage: Iceberg's age rule (a cutoff at the
    marked snapshot's time, as maintenance used to ask) stops at it and takes the marked one with everything older.
    Expiry by lineage keeps the marked snapshot and the chain after it, takes only what came before, and Silver
    goes on reading incrementally from its mark."""
    from lakehouse import bronze_layer, silver_layer

    table = "bronze.posts"
    for seed in (1, 2):
        land_posts(lakehouse, tmp_path, seed)
        bronze_layer.ingest_bronze(spark, lakehouse, Entity.POST)
    assert silver_layer.update_silver(spark, Entity.POST).inserted == 80
    marked = tables.snapshot_id(spark, table)  # Silver's position in Bronze
    skewed = commit_stamped_before_its_parent(spark, table)
    land_posts(lakehouse, tmp_path, 3)
    bronze_layer.ingest_bronze(spark, lakehouse, Entity.POST)
    lineage = tables.snapshots(spark, table)
    ids = [s.snapshot_id for s in lineage]
    stamped = {s.snapshot_id: s.timestamp_ms for s in lineage}
    assert ids.index(marked) < ids.index(skewed) and stamped[skewed] < stamped[marked]
    marks = maintenance.marked_snapshots(spark)
    assert marked in marks

    # Iceberg's own rule, asked what it would take (applied, not committed): the marked snapshot too.
    would_take = tables.iceberg_table(spark, table).expireSnapshots().expireOlderThan(stamped[marked]).retainLast(1)
    assert marked in {snap.snapshotId() for snap in would_take.apply()}

    done = maintenance.maintain_table(spark, table, timedelta(0), marks, compact=False, remove_orphans=False,
                                      retain_last=1)
    assert [s.snapshot_id for s in tables.snapshots(spark, table)] == ids[ids.index(marked):]
    assert done.snapshots_before == len(ids) and done.snapshots_after == len(ids) - ids.index(marked)
    assert marked in done.kept_for_marks
    result = silver_layer.update_silver(spark, Entity.POST)
    assert result.from_snapshot == marked and result.inserted == 40  # the third batch alone, not a full pass


def _snap(snapshot_id: int, parent: int | None, at: int) -> dict:
    return {"snapshot-id": snapshot_id, "parent-snapshot-id": parent, "timestamp-ms": at, "summary": {}}


def test_what_may_expire_is_chosen_by_lineage():
    # Lineage 1 <- 2 <- 3 <- 4 <- 5 (current); 3 was stamped before 2 (a clock behind); 9 was rolled back from 2;
    # 7 is a tag's, 6 its parent, off the lineage.
    snaps = [_snap(1, None, 1000), _snap(2, 1, 2000), _snap(3, 2, 1500), _snap(4, 3, 4000), _snap(5, 4, 5000),
             _snap(9, 2, 2100), _snap(6, None, 1200), _snap(7, 6, 1300)]
    metadata = {"current-snapshot-id": 5, "snapshots": snaps,
                "refs": {"main": {"snapshot-id": 5, "type": "branch"}, "audit": {"snapshot-id": 7, "type": "tag"}}}

    def expirable(protected=(), cutoff=10_000, retain_last=1):
        return sorted(maintenance.expirable(metadata, set(protected), cutoff, retain_last))

    assert expirable({2}) == [1, 9]  # everything stamped before the cutoff, but the mark's chain and the tag's
    assert expirable({4}) == [1, 2, 3, 9]
    assert expirable() == [1, 2, 3, 4, 9]  # the last one stays
    assert expirable(retain_last=3) == [1, 2, 9]
    # The retention: the lineage stays from its first snapshot stamped within it (3, older, stays with it).
    assert expirable(cutoff=1800) == [1]
    assert expirable(cutoff=2050) == [1, 2, 3]  # 9, off the lineage, is younger than the cutoff
    assert expirable(cutoff=3000) == [1, 2, 3, 9]
    assert expirable(cutoff=500) == []
    metadata["refs"]["first"] = {"snapshot-id": 1, "type": "tag"}
    assert expirable() == [2, 3, 4, 9]
