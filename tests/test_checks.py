"""Each check passes on a healthy lakehouse and fails when its promise is broken behind the pipeline's back.

One lakehouse is loaded once (through the pipeline steps the assets call); each test breaks one thing, asserts
the check catches it with a useful sample, and puts the table back (Iceberg rollback to the saved snapshot).
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import pytest
from pyspark.sql import functions as F

from lakehouse import bronze_layer, checks, gold_layer, silver_layer, tables
from lakehouse.contracts import GOLD, SILVER, Entity
from lakehouse.generator import generate

pytestmark = pytest.mark.slow
NOW = datetime.now(timezone.utc)


def load(spark, zone, files) -> None:
    for entity, paths in ((Entity.POST, files.posts), (Entity.COMMENT, files.comments)):
        for path in paths:
            zone.land(path, entity)
        bronze_layer.ingest_bronze(spark, zone, entity)
        silver_layer.update_silver(spark, entity)
    for key in ("posts", "comments"):
        gold_layer.update_gold_entity(spark, key)
    for key in ("subreddit_daily", "post_engagement"):
        gold_layer.update_gold_aggregate(spark, key)


def all_outcomes(spark, full: bool = True) -> dict[str, checks.CheckOutcome]:
    out = {}
    for e in Entity:
        out[f"bronze/{e.plural}:header"] = bronze_layer.bronze_header(spark, e)
        out[f"bronze/{e.plural}:rows"] = bronze_layer.bronze_row_counts(spark, e)
        out[f"bronze/{e.plural}:metadata"] = bronze_layer.bronze_metadata(spark, e)
        out[f"silver/{e.plural}:pk"] = silver_layer.silver_primary_key(spark, e, full=full)
        types, post_id = silver_layer.silver_values(spark, e, NOW, full=full)
        out[f"silver/{e.plural}:types"] = types
        if post_id:
            out[f"silver/{e.plural}:post_id"] = post_id
        out[f"silver/{e.plural}:reconciled"] = silver_layer.bronze_reconciled(spark, e, full=full)
    for key in GOLD:
        out[f"gold/{key}:schema"] = silver_layer.schema_matches(spark, GOLD[key])
        out[f"gold/{key}:reconciled"] = gold_layer.gold_reconciled(spark, key, full=full)
    return out


@pytest.fixture(scope="module")
def loaded(spark, settings, tmp_path_factory):
    from tests.conftest import empty_lakehouse

    from lakehouse.contracts import SOURCE_HEADERS

    zone = empty_lakehouse(spark, settings)
    folder = tmp_path_factory.mktemp("gen")
    files = generate(folder, posts=300, comments=900, files=2, seed=11, days=4, subreddits=3, repeat_share=0.05)
    # Generated exports are clean; a few broken comments give the reconciliation quarantined rows to add up.
    broken = folder / "broken-comments.csv"
    broken.write_text(",".join(SOURCE_HEADERS[Entity.COMMENT]) + "\r\n" + "".join(
        f"comment,bad{i},2qh1i,x,false,1648771149,https://old.reddit.com/r/x/comments/zz{i}/t/bad{i}/,b,{s},{score}\r\n"
        for i, (s, score) in enumerate([("high", "1"), ("0.5", "12abc"), ("1.5", "2")])), encoding="utf-8")
    files.comments.append(broken)
    load(spark, zone, files)
    return zone


@pytest.fixture
def restore(spark, loaded):
    """Roll every table back to where the test found it."""
    from lakehouse.contracts import ALL_TABLES

    def marks(table: str) -> dict[str, str]:  # check marks are table properties (the rollback restores the rest)
        return {k: v for k, v in tables.table_properties(spark, table).items() if k.startswith("lakehouse.")}

    saved = {c.identifier: getattr(tables.current_snapshot(spark, c.identifier), "snapshot_id", None)
             for c in ALL_TABLES}
    saved_marks = {table: marks(table) for table in saved}
    yield
    for table, snap in saved.items():
        current = getattr(tables.current_snapshot(spark, table), "snapshot_id", None)
        if snap is not None and current != snap:
            spark.sql(f"CALL lakehouse.system.rollback_to_snapshot('{table}', {snap})")
        added = sorted(set(marks(table)) - set(saved_marks[table]))
        if added:
            spark.sql(f"ALTER TABLE {table} UNSET TBLPROPERTIES ({', '.join(repr(k) for k in added)})")
        tables.set_properties(spark, table, saved_marks[table])


def test_a_healthy_lakehouse_passes_every_check(spark, loaded):
    outcomes = all_outcomes(spark)
    failed = {k: o.summary for k, o in outcomes.items() if not o.passed}
    assert failed == {}
    reconciled = outcomes["silver/comments:reconciled"].metrics
    # The generated data has duplicates and quarantined rows, so the reconciliation has something to add up;
    # its counts agree with the tables counted directly.
    assert reconciled["collapsed_duplicates"] > 0 and reconciled["quarantined"] > 0
    assert reconciled["in_silver"] == spark.table("silver.comments").count()
    assert reconciled["quarantined"] == spark.table("silver.comments_quarantine").count()
    assert reconciled["bronze_rows"] == spark.table("bronze.comments").count()


def test_rows_lost_from_bronze_are_caught(spark, restore):
    spark.sql("DELETE FROM bronze.posts WHERE _source_row = 7")
    rows = bronze_layer.bronze_row_counts(spark, Entity.POST)
    assert not rows.passed and rows.metrics["mismatched_files"] >= 1
    assert rows.sample[0]["records_in_file"] == rows.sample[0]["bronze_rows"] + 1
    assert not bronze_layer.bronze_metadata(spark, Entity.POST).passed  # a gap in the row numbers


def test_a_repeated_row_number_is_caught(spark, restore):
    """Rows numbered 1..n with one number twice and one missing: the count, the first and the last row agree,
    only the distinct numbers (per 32,768-row bucket of a file) do not."""
    spark.sql("UPDATE bronze.posts SET _source_row = 7 WHERE _source_row = 8")
    outcome = bronze_layer.bronze_metadata(spark, Entity.POST)
    assert not outcome.passed and outcome.metrics["bad_files"] >= 1
    bad = outcome.sample[0]
    assert bad["first_row"] == 1 and bad["last_row"] == bad["rows"] == bad["distinct_rows"] + 1


def test_a_silver_row_lost_is_unaccounted(spark, restore):
    spark.sql("DELETE FROM silver.comments WHERE id = (SELECT min(id) FROM silver.comments)")
    outcome = silver_layer.bronze_reconciled(spark, Entity.COMMENT, full=True)
    assert not outcome.passed and outcome.metrics["unaccounted"] >= 1 and outcome.sample


def test_a_lost_update_is_caught(spark, restore):
    """Silver holding an older version of an id than Bronze offers is not a 'collapsed duplicate'."""
    dup = spark.sql("SELECT trim(id) AS id FROM bronze.posts GROUP BY trim(id) HAVING count(*) > 1 "
                    "ORDER BY 1 LIMIT 1").first().id
    older = spark.sql(f"SELECT _source_uri, _source_row FROM bronze.posts WHERE trim(id) = '{dup}' "
                      "ORDER BY _ingested_at, _source_uri, _source_row LIMIT 1").first()
    # Silver points at the older row and holds other values than the newest row's (an identical newer row
    # would be a re-delivery, which Silver rightly does not rewrite).
    spark.sql(f"UPDATE silver.posts SET _source_uri = '{older._source_uri}', _source_row = {older._source_row}, "
              f"_row_hash = sha2('an older version', 256) WHERE id = '{dup}'")
    outcome = silver_layer.bronze_reconciled(spark, Entity.POST, full=True)
    assert not outcome.passed and outcome.metrics["newer_than_silver"] == 1
    assert outcome.sample[0]["id"] == dup and outcome.sample[0]["_state"] == "newer_than_silver"


def test_values_out_of_range_are_caught(spark, restore):
    spark.sql("UPDATE silver.comments SET sentiment = 1.5 WHERE id = (SELECT min(id) FROM silver.comments)")
    spark.sql("UPDATE silver.posts SET created_utc = timestamp'2004-01-01 00:00:00', "
              "created_date = date'2004-01-01' WHERE id = (SELECT min(id) FROM silver.posts)")
    comments, _ = silver_layer.silver_values(spark, Entity.COMMENT, NOW, full=True)
    posts, _ = silver_layer.silver_values(spark, Entity.POST, NOW, full=True)
    assert not comments.passed and comments.metrics["sentiment_out_of_range"] == 1
    assert not posts.passed and posts.metrics["created_utc_out_of_range"] == 1 and posts.sample


def test_a_wrong_post_id_is_caught(spark, restore):
    spark.sql("UPDATE silver.comments SET post_id = 'zzzzzz' WHERE id = (SELECT min(id) FROM silver.comments)")
    _, post_id = silver_layer.silver_values(spark, Entity.COMMENT, NOW, full=True)
    assert not post_id.passed and post_id.sample[0]["post_id"] == "zzzzzz"


def test_gold_that_does_not_add_up_is_caught(spark, restore):
    spark.sql("UPDATE gold.subreddit_daily SET comments = comments + 1 "
              "WHERE activity_date = (SELECT min(activity_date) FROM gold.subreddit_daily)")
    spark.sql("DELETE FROM gold.posts WHERE post_id = (SELECT min(post_id) FROM gold.posts)")
    daily = gold_layer.gold_reconciled(spark, "subreddit_daily", full=True)
    assert not daily.passed and daily.sample[0]["gold_comments"] == daily.sample[0]["expected_comments"] + 1
    posts = gold_layer.gold_reconciled(spark, "posts", full=True)
    assert not posts.passed and posts.metrics["mismatched_keys"] == 1


def test_a_gold_schema_change_is_caught(spark, restore):
    spark.sql("ALTER TABLE gold.post_engagement ADD COLUMNS (surprise STRING)")
    try:
        outcome = silver_layer.schema_matches(spark, GOLD["post_engagement"])
        assert not outcome.passed and outcome.sample[0]["found"] == "surprise string"
    finally:
        spark.sql("ALTER TABLE gold.post_engagement DROP COLUMN surprise")
    assert silver_layer.schema_matches(spark, GOLD["post_engagement"]).passed


def test_gold_behind_silver_is_not_fresh(spark, restore):
    table = GOLD["posts"].identifier
    source = SILVER[Entity.POST].identifier
    mark = tables.watermark(spark, table, source)
    tables.set_watermarks(spark, table, {source: str(int(mark) - 5_000_000)})
    try:
        outcome = gold_layer.gold_freshness(spark, "posts", [source])
        assert not outcome.passed and outcome.metrics[f"lag_seconds {source}"] == 5.0
    finally:
        tables.set_watermarks(spark, table, {source: mark})
    assert gold_layer.gold_freshness(spark, "posts", [source]).passed


def test_a_failing_bronze_gate_stops_silver_in_the_run(spark, loaded, restore, tmp_path):
    # A new file lands, and Bronze already lost a row: the run must not carry Bronze forward.
    files = generate(tmp_path / "more", posts=20, comments=0, files=1, seed=99, id_offset=10_000)
    loaded.land(files.posts[0], Entity.POST)
    spark.sql("DELETE FROM bronze.posts WHERE _source_row = 3")
    silver_before = tables.current_snapshot(spark, SILVER[Entity.POST].identifier).snapshot_id
    from lakehouse_assets.definitions import defs

    job = defs.resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    assert not result.success
    failed = {(e.asset_check_key.asset_key.to_user_string(), e.check_name) for e in result.get_asset_check_evaluations()
              if not e.passed and e.severity is dg.AssetCheckSeverity.ERROR}
    assert ("bronze/posts", "rows_match_file") in failed
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert "silver/posts" not in materialized and "silver/comments" in materialized
    assert tables.current_snapshot(spark, SILVER[Entity.POST].identifier).snapshot_id == silver_before


def _run_pipeline(spark, zone, entity: Entity) -> silver_layer.SilverResult:
    bronze_layer.ingest_bronze(spark, zone, entity)
    silver = silver_layer.update_silver(spark, entity)
    for key in ("posts", "comments"):
        gold_layer.update_gold_entity(spark, key)
    for key in ("subreddit_daily", "post_engagement"):
        gold_layer.update_gold_aggregate(spark, key)
    return silver


def test_checks_look_at_what_changed_since_they_last_passed(spark, loaded, restore, tmp_path):
    """After a pass, the expensive checks read only what later runs changed; a failure stays in scope."""
    assert {k: o.summary for k, o in all_outcomes(spark, full=True).items() if not o.passed} == {}
    files = generate(tmp_path / "inc", posts=40, comments=0, files=1, seed=5, id_offset=20_000, repeat_share=0)
    loaded.land(files.posts[0], Entity.POST)
    silver = _run_pipeline(spark, loaded, Entity.POST)
    assert silver.inserted > 0 and silver.updated == 0

    outcomes = all_outcomes(spark, full=False)
    assert {k: o.summary for k, o in outcomes.items() if not o.passed} == {}
    pk = outcomes["silver/posts:pk"].metrics
    assert pk["scope"] == "changed since last verified"
    assert pk["rows_checked"] == silver.inserted < pk["rows"]
    reconciled = outcomes["silver/posts:reconciled"].metrics
    assert reconciled["scope"] != "full" and reconciled["bronze_rows"] == silver.bronze_rows
    assert outcomes["silver/posts:types"].metrics["rows"] == silver.inserted
    assert outcomes["gold/posts:reconciled"].metrics["scope"] == "keys changed since last verified"
    # Nothing changed since: nothing to read.
    assert silver_layer.silver_primary_key(spark, Entity.POST).metrics["rows_checked"] == 0

    # A bad write that goes through Silver's change tracking is caught, and stays caught until it is fixed.
    spark.sql("UPDATE silver.posts SET created_date = date'2004-01-01', _updated_at = current_timestamp() "
              "WHERE id = (SELECT max(id) FROM silver.posts)")
    for _ in range(2):
        types, _ = silver_layer.silver_values(spark, Entity.POST, NOW)
        assert not types.passed and types.metrics["created_date_mismatch"] == 1 and types.metrics["rows"] == 1


def test_a_redelivered_file_reconciles(spark, loaded, restore, tmp_path):
    """The same export landed again under another name: Bronze keeps both deliveries, Silver does not rewrite
    the unchanged rows, and the reconciliation counts those as re-deliveries rather than lost updates."""
    original = sorted(loaded.list_files(Entity.POST), key=lambda f: f.key)[0]
    copy = tmp_path / "again.csv"
    copy.write_bytes(Path(original.read_location.removeprefix("file://")).read_bytes())
    loaded.land(copy, Entity.POST, name="redelivered.csv")
    silver = _run_pipeline(spark, loaded, Entity.POST)
    # Unchanged ids are not rewritten (ids the other original file also held do change: latest delivery wins).
    assert silver.unchanged > 0
    for full in (False, True):
        outcome = silver_layer.bronze_reconciled(spark, Entity.POST, full=full)
        assert outcome.passed, outcome.summary
        assert outcome.metrics["redelivered_unchanged"] > 0 and outcome.metrics["newer_than_silver"] == 0


def test_an_item_that_moves_key_leaves_no_stale_aggregate(spark, loaded, restore, tmp_path):
    """A comment re-dated and re-parented by a later delivery is taken out of its old aggregate keys too, and an
    aggregate key left with nothing in it goes."""
    import csv

    from lakehouse.contracts import SOURCE_HEADERS, bronze_column_name

    # A comment in Silver on a post in Silver, and its raw row as Bronze received it.
    before = spark.sql("SELECT c.id, c.post_id FROM silver.comments c JOIN silver.posts p ON p.id = c.post_id "
                       "ORDER BY c.id LIMIT 1").first()
    header = list(SOURCE_HEADERS[Entity.COMMENT])
    raw = (spark.table("bronze.comments").where(F.trim("id") == before.id)
           .orderBy(F.desc("_ingested_at"), F.desc("_source_row")).first())
    comment = {h: raw[bronze_column_name(h)] for h in header}
    other_post = spark.table("silver.posts").where(F.col("id") != before.post_id).orderBy("id").first().id

    def deliver(day: str, post_id: str, name: str) -> None:
        moved = {**comment, "created_utc": str(int(datetime.fromisoformat(f"{day}T12:00:00+00:00").timestamp())),
                 "permalink": f"https://old.reddit.com/r/x/comments/{post_id}/x/{comment['id']}/"}
        path = tmp_path / name
        with path.open("w", newline="") as fh:
            csv.writer(fh).writerows([header, [moved[h] for h in header]])
        loaded.land(path, Entity.COMMENT)
        assert _run_pipeline(spark, loaded, Entity.COMMENT).updated == 1

    def comments_on(day: str) -> list:
        return [r.comments for r in spark.table("gold.subreddit_daily").where(F.col("activity_date") == day).collect()]

    def engagement(post_id: str) -> int:
        return spark.table("gold.post_engagement").where(F.col("post_id") == post_id).first().comments

    old_count, other_count = engagement(before.post_id), engagement(other_post)
    deliver("2019-01-01", other_post, "moved-once.csv")
    assert comments_on("2019-01-01") == [1]
    assert (engagement(before.post_id), engagement(other_post)) == (old_count - 1, other_count + 1)
    for key in ("subreddit_daily", "post_engagement"):
        outcome = gold_layer.gold_reconciled(spark, key, full=True)
        assert outcome.passed, outcome.summary

    deliver("2019-02-01", other_post, "moved-twice.csv")  # 2019-01-01 now holds nothing: its row goes
    assert comments_on("2019-01-01") == [] and comments_on("2019-02-01") == [1]
    outcome = gold_layer.gold_reconciled(spark, "subreddit_daily", full=True)
    assert outcome.passed, outcome.summary


def _daily_from_silver(spark) -> dict:
    """gold.subreddit_daily's counts and sentiment range, computed straight from Silver in SQL."""
    rows = spark.sql("""
        SELECT subreddit_id, created_date AS activity_date, sum(is_post) AS posts, sum(1 - is_post) AS comments,
               count(sentiment) AS scored_comments, min(sentiment) AS min_sentiment, max(sentiment) AS max_sentiment
        FROM (SELECT subreddit_id, created_date, 1 AS is_post, CAST(NULL AS DECIMAL(5,4)) AS sentiment
              FROM silver.posts
              UNION ALL
              SELECT subreddit_id, created_date, 0, CAST(round(sentiment, 4) AS DECIMAL(5,4)) FROM silver.comments)
        GROUP BY 1, 2""").collect()
    return {(r.subreddit_id, r.activity_date): r.asDict() for r in rows}


def _gold_daily(spark) -> dict:
    cols = ["subreddit_id", "activity_date", "posts", "comments", "scored_comments", "min_sentiment", "max_sentiment"]
    return {(r.subreddit_id, r.activity_date): r.asDict()
            for r in spark.table("gold.subreddit_daily").select(*cols).collect()}


def _posts_batch(spark, zone, folder: Path, id_offset: int) -> dict[str, gold_layer.GoldResult]:
    """Land 30 new posts on the days already loaded and run the pipeline; each Gold aggregate's result. (Files that
    earlier tests landed are ingested again too: `restore` rolled the tables back, not the landing zone.)"""
    files = generate(folder, posts=30, comments=0, files=1, seed=7, days=4, subreddits=3, id_offset=id_offset,
                     repeat_share=0)
    zone.land(files.posts[0], Entity.POST)
    bronze_layer.ingest_bronze(spark, zone, Entity.POST)
    assert silver_layer.update_silver(spark, Entity.POST).inserted >= 30
    gold_layer.update_gold_entity(spark, "posts")
    return {key: gold_layer.update_gold_aggregate(spark, key) for key in ("subreddit_daily", "post_engagement")}


def test_a_posts_only_batch_takes_the_comments_sums_from_the_parts_table(spark, loaded, restore, tmp_path):
    """subreddit_daily is combined from exact per-source parts: a posts-only batch recomputes the posts' part of the
    days it touches and does not re-read those days' comments. A part that drifted from Silver shows in Gold and
    the reconciliation check catches it; a rebuild puts both right."""
    assert _gold_daily(spark) == _daily_from_silver(spark)
    spark.sql("UPDATE gold.subreddit_daily_parts SET items = items + 1000 WHERE source = 'comment'")
    # As a bug in the parts' upkeep would leave it: Gold's mark names the drifted parts (any other write to them
    # is not trusted, as the next test shows).
    tables.set_watermarks(spark, "gold.subreddit_daily", {}, also={gold_layer.PARTS_MARK: gold_layer.parts_mark(
        tables.snapshot_id(spark, gold_layer.PARTS), None)})

    results = _posts_batch(spark, loaded, tmp_path / "posts", 30_000)
    assert not results["subreddit_daily"].full_rebuild
    gold, silver = _gold_daily(spark), _daily_from_silver(spark)
    drifted = {k for k in gold if gold[k] != silver.get(k)}
    # Exactly the days the new posts fell on that have comments took the comments' (drifted) part from the table.
    touched = {(r.subreddit_id, r.created_date) for r in spark.sql(
        "SELECT DISTINCT subreddit_id, created_date FROM silver.posts WHERE _updated_at = "
        "(SELECT max(_updated_at) FROM silver.posts)").collect()}
    assert drifted and drifted == {k for k in touched if silver[k]["comments"]}
    assert all(gold[k]["comments"] == silver[k]["comments"] + 1000 for k in drifted)
    outcome = gold_layer.gold_reconciled(spark, "subreddit_daily", full=True)
    assert not outcome.passed and outcome.metrics["mismatched_keys"] == len(drifted)

    from lakehouse import operations
    operations.rebuild_gold(spark, "subreddit_daily")
    assert _gold_daily(spark) == _daily_from_silver(spark)
    assert gold_layer.gold_reconciled(spark, "subreddit_daily", full=True).passed
    # The rebuild left the parts where Gold's marks say: the next batch is incremental again.
    assert not _posts_batch(spark, loaded, tmp_path / "again", 40_000)["subreddit_daily"].full_rebuild
    assert _gold_daily(spark) == _daily_from_silver(spark)


def test_parts_or_gold_written_by_anything_else_are_rebuilt_in_one_full_pass(spark, loaded, restore, tmp_path):
    """A run that died between the parts' commit and Gold's marks, older code or a hand edit leaves parts Gold was
    not combined from: the next run does not trust them and rebuilds both from Silver; after that, incremental."""
    foreign_writes = ["DELETE FROM gold.subreddit_daily_parts WHERE source = 'comment'",
                      "UPDATE gold.subreddit_daily SET comments = comments + 1"]
    for i, statement in enumerate(foreign_writes):
        spark.sql(statement)
        results = _posts_batch(spark, loaded, tmp_path / f"posts-{i}", 30_000 + 1000 * i)
        assert results["subreddit_daily"].full_rebuild, statement
        assert _gold_daily(spark) == _daily_from_silver(spark)
        assert gold_layer.gold_reconciled(spark, "subreddit_daily", full=True).passed
    # Trusted again: the next batch is incremental.
    assert not _posts_batch(spark, loaded, tmp_path / "later", 40_000)["subreddit_daily"].full_rebuild
    assert _gold_daily(spark) == _daily_from_silver(spark)
    # Maintenance commits to both (compaction, manifest rewrites) change no row: still trusted.
    for table in ("gold.subreddit_daily", "gold.subreddit_daily_parts"):
        before = tables.snapshot_id(spark, table)
        spark.sql(f"CALL lakehouse.system.rewrite_data_files(table => '{table}', "
                  "options => map('rewrite-all', 'true'))")
        spark.sql(f"CALL lakehouse.system.rewrite_manifests(table => '{table}')")
        assert tables.snapshot_id(spark, table) != before
    assert not _posts_batch(spark, loaded, tmp_path / "compacted", 50_000)["subreddit_daily"].full_rebuild
    assert _gold_daily(spark) == _daily_from_silver(spark)


def test_comments_of_posts_not_loaded_delete_nothing_from_post_engagement(spark, loaded, restore, tmp_path):
    """Comments whose posts have not arrived (an export of comments alone) give post_engagement no row and take
    none away: the step reports no deletion (and makes no delete commit) for keys Gold never held. (Comment files
    earlier tests landed are ingested again too: `restore` rolled the tables back, not the landing zone.)"""
    files = generate(tmp_path, posts=0, comments=40, files=1, seed=5, days=4, subreddits=3, id_offset=70_000,
                     repeat_share=0)
    loaded.land(files.comments[0], Entity.COMMENT)
    bronze_layer.ingest_bronze(spark, loaded, Entity.COMMENT)
    assert silver_layer.update_silver(spark, Entity.COMMENT).inserted >= 40
    held = spark.table("gold.post_engagement").count()
    result = gold_layer.update_gold_aggregate(spark, "post_engagement")
    assert result.rows_deleted == 0
    assert spark.table("gold.post_engagement").count() == held
    assert gold_layer.gold_reconciled(spark, "post_engagement", full=True).passed
