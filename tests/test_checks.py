"""Each check passes on a healthy lakehouse and fails when its promise is broken behind the pipeline's back.

One lakehouse is loaded once (through the pipeline steps the assets call); each test breaks one thing, asserts
the check catches it with a useful sample, and puts the table back (Iceberg rollback to the saved snapshot).
"""

from __future__ import annotations

from datetime import datetime, timezone

import dagster as dg
import pytest

from lakehouse import pipeline, quality, tables
from lakehouse.contracts import GOLD, SILVER, Entity
from lakehouse.generator import generate

pytestmark = pytest.mark.slow
NOW = datetime.now(timezone.utc)


def load(spark, zone, files) -> None:
    for entity, paths in ((Entity.POST, files.posts), (Entity.COMMENT, files.comments)):
        for path in paths:
            zone.land(path, entity)
        pipeline.ingest_bronze(spark, zone, entity)
        pipeline.update_silver(spark, entity)
    for key in ("posts", "comments"):
        pipeline.update_gold_entity(spark, key)
    for key in ("subreddit_daily", "post_engagement"):
        pipeline.update_gold_aggregate(spark, key)


def all_outcomes(spark) -> dict[str, quality.CheckOutcome]:
    out = {}
    for e in Entity:
        out[f"bronze/{e.plural}:header"] = quality.bronze_header(spark, e)
        out[f"bronze/{e.plural}:rows"] = quality.bronze_row_counts(spark, e)
        out[f"bronze/{e.plural}:metadata"] = quality.bronze_metadata(spark, e)
        out[f"silver/{e.plural}:pk"] = quality.silver_primary_key(spark, e)
        types, post_id = quality.silver_values(spark, e, NOW)
        out[f"silver/{e.plural}:types"] = types
        if post_id:
            out[f"silver/{e.plural}:post_id"] = post_id
        out[f"silver/{e.plural}:reconciled"] = quality.bronze_reconciled(spark, e)
    for key in GOLD:
        out[f"gold/{key}:schema"] = quality.schema_matches(spark, GOLD[key])
        out[f"gold/{key}:reconciled"] = quality.gold_reconciled(spark, key)
    return out


@pytest.fixture(scope="module")
def loaded(spark, settings, tmp_path_factory):
    from tests.conftest import empty_lakehouse

    zone = empty_lakehouse(spark, settings)
    files = generate(tmp_path_factory.mktemp("gen"), posts=300, comments=900, files=2, seed=11, days=4,
                     subreddits=3, repeat_share=0.05)
    load(spark, zone, files)
    return zone


@pytest.fixture
def restore(spark, loaded):
    """Roll every table back to where the test found it."""
    from lakehouse.contracts import ALL_TABLES

    saved = {c.identifier: getattr(tables.current_snapshot(spark, c.identifier), "snapshot_id", None)
             for c in ALL_TABLES}
    yield
    for table, snap in saved.items():
        current = getattr(tables.current_snapshot(spark, table), "snapshot_id", None)
        if snap is not None and current != snap:
            spark.sql(f"CALL lakehouse.system.rollback_to_snapshot('{table}', {snap})")


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
    rows = quality.bronze_row_counts(spark, Entity.POST)
    assert not rows.passed and rows.metrics["mismatched_files"] >= 1
    assert rows.sample[0]["records_in_file"] == rows.sample[0]["bronze_rows"] + 1
    assert not quality.bronze_metadata(spark, Entity.POST).passed  # a gap in the row numbers


def test_a_silver_row_lost_is_unaccounted(spark, restore):
    spark.sql("DELETE FROM silver.comments WHERE id = (SELECT min(id) FROM silver.comments)")
    outcome = quality.bronze_reconciled(spark, Entity.COMMENT)
    assert not outcome.passed and outcome.metrics["unaccounted"] >= 1 and outcome.sample


def test_a_lost_update_is_caught(spark, restore):
    """Silver holding an older version of an id than Bronze offers is not a 'collapsed duplicate'."""
    dup = spark.sql("SELECT trim(id) AS id FROM bronze.posts GROUP BY trim(id) HAVING count(*) > 1 "
                    "ORDER BY 1 LIMIT 1").first().id
    older = spark.sql(f"SELECT _source_uri, _source_row FROM bronze.posts WHERE trim(id) = '{dup}' "
                      "ORDER BY _ingested_at, _source_uri, _source_row LIMIT 1").first()
    spark.sql(f"UPDATE silver.posts SET _source_uri = '{older._source_uri}', _source_row = {older._source_row} "
              f"WHERE id = '{dup}'")
    outcome = quality.bronze_reconciled(spark, Entity.POST)
    assert not outcome.passed and outcome.metrics["newer_than_silver"] == 1
    assert outcome.sample[0]["id"] == dup and outcome.sample[0]["_state"] == "newer_than_silver"


def test_values_out_of_range_are_caught(spark, restore):
    spark.sql("UPDATE silver.comments SET sentiment = 1.5 WHERE id = (SELECT min(id) FROM silver.comments)")
    spark.sql("UPDATE silver.posts SET created_utc = timestamp'2004-01-01 00:00:00', "
              "created_date = date'2004-01-01' WHERE id = (SELECT min(id) FROM silver.posts)")
    comments, _ = quality.silver_values(spark, Entity.COMMENT, NOW)
    posts, _ = quality.silver_values(spark, Entity.POST, NOW)
    assert not comments.passed and comments.metrics["sentiment_out_of_range"] == 1
    assert not posts.passed and posts.metrics["created_utc_out_of_range"] == 1 and posts.sample


def test_a_wrong_post_id_is_caught(spark, restore):
    spark.sql("UPDATE silver.comments SET post_id = 'zzzzzz' WHERE id = (SELECT min(id) FROM silver.comments)")
    _, post_id = quality.silver_values(spark, Entity.COMMENT, NOW)
    assert not post_id.passed and post_id.sample[0]["post_id"] == "zzzzzz"


def test_gold_that_does_not_add_up_is_caught(spark, restore):
    spark.sql("UPDATE gold.subreddit_daily SET comments = comments + 1 "
              "WHERE activity_date = (SELECT min(activity_date) FROM gold.subreddit_daily)")
    spark.sql("DELETE FROM gold.posts WHERE post_id = (SELECT min(post_id) FROM gold.posts)")
    daily = quality.gold_reconciled(spark, "subreddit_daily")
    assert not daily.passed and daily.sample[0]["gold_comments"] == daily.sample[0]["expected_comments"] + 1
    posts = quality.gold_reconciled(spark, "posts")
    assert not posts.passed and posts.metrics["mismatched_keys"] == 1


def test_a_gold_schema_change_is_caught(spark, restore):
    spark.sql("ALTER TABLE gold.post_engagement ADD COLUMNS (surprise STRING)")
    try:
        outcome = quality.schema_matches(spark, GOLD["post_engagement"])
        assert not outcome.passed and outcome.sample[0]["found"] == "surprise string"
    finally:
        spark.sql("ALTER TABLE gold.post_engagement DROP COLUMN surprise")
    assert quality.schema_matches(spark, GOLD["post_engagement"]).passed


def test_gold_behind_silver_is_not_fresh(spark, restore):
    table = GOLD["posts"].identifier
    source = SILVER[Entity.POST].identifier
    mark = tables.watermark(spark, table, source)
    tables.set_watermarks(spark, table, {source: str(int(mark) - 5_000_000)})
    try:
        outcome = quality.gold_freshness(spark, "posts", [source])
        assert not outcome.passed and outcome.metrics[f"lag_seconds {source}"] == 5.0
    finally:
        tables.set_watermarks(spark, table, {source: mark})
    assert quality.gold_freshness(spark, "posts", [source]).passed


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
