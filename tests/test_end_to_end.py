"""End to end through Dagster on real components: land files, materialise the graph, check Gold independently."""

from __future__ import annotations

import dagster as dg
import pytest

from lakehouse.contracts import Entity
from lakehouse.generator import generate
from tests import expected as exp

pytestmark = pytest.mark.slow


def materialize_all():
    from lakehouse_assets.definitions import defs

    job = defs.resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(instance=dg.DagsterInstance.ephemeral())
    assert result.success
    return result


def engine(settings):
    from lakehouse.catalog import catalog_for
    from lakehouse.query import QueryEngine

    return QueryEngine(catalog_for(settings))


def snapshot_ids(spark) -> dict[str, int | None]:
    from lakehouse import tables
    from lakehouse.contracts import GOLD, QUARANTINE, SILVER

    names = [c.identifier for c in (*SILVER.values(), *QUARANTINE.values(), *GOLD.values())]
    return {n: getattr(tables.current_snapshot(spark, n), "snapshot_id", None) for n in names}


def assert_gold_matches(settings, want: dict) -> None:
    q = engine(settings)
    daily = {
        (r[0], r[1].isoformat()): r[2:]
        for r in q.sql(
            "SELECT subreddit_id, activity_date, posts, comments, scored_comments, mean_sentiment, min_sentiment, "
            "max_sentiment, mean_score, nsfw_share FROM gold.subreddit_daily"
        ).fetchall()
    }
    assert set(daily) == set(want["subreddit_daily"])
    for key, w in want["subreddit_daily"].items():
        posts, comments, scored, mean_s, min_s, max_s, mean_score, nsfw = daily[key]
        assert (posts, comments, scored) == (w["posts"], w["comments"], w["scored_comments"]), key
        # Gold's decimals are exact: compare them to the independently rounded values, digit for digit.
        # (A mean of doubles may sit one unit off in the last place when it is within 1e-12 of a half.)
        for got, expect in ((mean_s, w["mean_sentiment"]), (min_s, w["min_sentiment"]),
                            (max_s, w["max_sentiment"]), (mean_score, w["mean_score"]), (nsfw, w["nsfw_share"])):
            assert (got is None) == (expect is None), key
            if got is not None:
                assert float(got) == pytest.approx(float(expect), abs=1e-12), key

    engagement = {
        r[0]: r[1:]
        for r in q.sql(
            "SELECT post_id, post_score, comments, scored_comments, mean_comment_sentiment, positive_share, "
            "negative_share FROM gold.post_engagement"
        ).fetchall()
    }
    assert set(engagement) == set(want["post_engagement"])
    for pid, w in want["post_engagement"].items():
        score, n, scored, mean_s, pos, neg = engagement[pid]
        assert (score, n, scored) == (w["post_score"], w["comments"], w["scored_comments"]), pid
        for got, expect in ((mean_s, w["mean_comment_sentiment"]), (pos, w["positive_share"]), (neg, w["negative_share"])):
            assert (got is None) == (expect is None)
            if got is not None:
                assert float(got) == pytest.approx(float(expect), abs=1e-12), pid

    gold_posts = dict(q.sql("SELECT post_id, score FROM gold.posts").fetchall())
    assert gold_posts == {k: int(v["score"]) for k, v in want["posts"].items()}
    assert q.sql("SELECT count(*), count(DISTINCT comment_id) FROM gold.comments").fetchall()[0] == (
        len(want["comments"]), len(want["comments"]))


def test_generated_data_end_to_end_and_idempotent(spark, settings, lakehouse, tmp_path):
    files = generate(tmp_path / "gen", posts=400, comments=1200, files=2, seed=7, days=5, subreddits=4,
                     repeat_share=0.05)
    # Landed in name order; the second file of each entity repeats ids of the first with new scores.
    for path in files.posts:
        lakehouse.land(path, Entity.POST)
    for path in files.comments:
        lakehouse.land(path, Entity.COMMENT)
    materialize_all()
    want = exp.expected_gold(files.posts, files.comments)
    assert_gold_matches(settings, want)

    q = engine(settings)
    posts_raw = sum(1 for _ in exp.read_rows(files.posts))
    assert q.sql("SELECT count(*) FROM bronze.posts").fetchall()[0][0] == posts_raw
    assert q.sql("SELECT count(*), count(DISTINCT id) FROM silver.posts").fetchall()[0] == (400, 400)
    # Every Bronze comment is in Silver, in quarantine, or collapsed into a later version of its id.
    bronze_n = q.sql("SELECT count(*) FROM bronze.comments").fetchall()[0][0]
    quarantined = q.sql("SELECT count(*) FROM silver.comments_quarantine").fetchall()[0][0]
    silver_n = q.sql("SELECT count(*) FROM silver.comments").fetchall()[0][0]
    dupes = q.sql("SELECT count(*) - count(DISTINCT id) FROM bronze.comments").fetchall()[0][0]
    assert bronze_n == silver_n + quarantined + dupes and dupes > 0
    # Comments without a sentiment score are real comments: in Silver with a null sentiment, none quarantined.
    assert quarantined == 0
    assert q.sql("SELECT count(*) FROM silver.comments WHERE sentiment IS NULL").fetchall()[0][0] > 0

    # Materialising again commits nothing new and changes no number.
    before = snapshot_ids(spark)
    materialize_all()
    assert snapshot_ids(spark) == before
    assert_gold_matches(settings, want)

    # A later export repeats ids with new scores: Silver keeps one row per id, Gold follows.
    update = exp.bump_scores(files.posts[0], tmp_path / "update-posts.csv", delta=1000, limit=50)
    lakehouse.land(update, Entity.POST)
    materialize_all()
    before_update = want
    want = exp.expected_gold([*files.posts, update], files.comments)
    changed = [k for k in want["posts"] if want["posts"][k]["score"] != before_update["posts"][k]["score"]]
    assert len(changed) == 50  # the update really changes scores, so the match below means something
    assert_gold_matches(settings, want)
    assert q.sql("SELECT count(*), count(DISTINCT id) FROM silver.posts").fetchall()[0] == (400, 400)

    # The same file landed again (same name, same bytes, new mtime) is not ingested twice.
    before = snapshot_ids(spark)
    lakehouse.land(update, Entity.POST)
    materialize_all()
    assert snapshot_ids(spark) == before

    # The nightly full pass runs the checks alone: every check of every layer, over whole tables, no asset written.
    from lakehouse_assets.definitions import defs

    nightly = defs.resolve_job_def("full_quality_checks").execute_in_process(instance=dg.DagsterInstance.ephemeral())
    assert nightly.success and nightly.get_asset_materialization_events() == []
    evaluations = {(e.asset_key.to_user_string(), e.check_name): e for e in nightly.get_asset_check_evaluations()}
    assert set(evaluations) == {(k.asset_key.to_user_string(), k.name)
                                for k in defs.resolve_asset_graph().asset_check_keys}
    assert all(e.passed for e in evaluations.values()), [k for k, e in evaluations.items() if not e.passed]
    assert evaluations[("silver/posts", "primary_key_unique")].metadata["scope"].value == "full"
    assert snapshot_ids(spark) == before


def test_real_sample_end_to_end(spark, settings, lakehouse, meirl):
    lakehouse.land(meirl / "posts.csv", Entity.POST)
    lakehouse.land(meirl / "comments.csv", Entity.COMMENT)
    materialize_all()
    q = engine(settings)
    assert q.sql("SELECT count(*) FROM bronze.posts").fetchall()[0][0] == 1999
    assert q.sql("SELECT count(*) FROM bronze.comments").fetchall()[0][0] == 858
    assert q.sql("SELECT count(*) FROM silver.posts").fetchall()[0][0] == 1999
    # DATA.md: 233 comments have an empty sentiment. The original design dropped them; they are real comments
    # (deleted, removed, short live ones), kept with a null sentiment and counted in Gold.
    assert q.sql("SELECT count(*) FROM silver.comments_quarantine").fetchall()[0][0] == 0
    assert q.sql("SELECT count(*), count(sentiment) FROM silver.comments").fetchall()[0] == (858, 625)
    statuses = dict(q.sql("SELECT body_status, count(*) FROM silver.comments WHERE sentiment IS NULL "
                          "GROUP BY 1").fetchall())
    assert statuses.get("present", 0) > 0 and statuses.get("deleted", 0) + statuses.get("removed", 0) > 0
    assert q.sql("SELECT sum(comments), sum(scored_comments) FROM gold.subreddit_daily").fetchall()[0] == (858, 625)
    assert q.sql("SELECT count(*) FROM silver.posts WHERE selftext_status = 'deleted'").fetchall()[0][0] == 502
    assert q.sql("SELECT count(*) FROM silver.comments WHERE body LIKE '%\n%'").fetchall()[0][0] > 0
    assert_gold_matches(settings, exp.expected_gold([meirl / "posts.csv"], [meirl / "comments.csv"]))


def test_a_failing_blocking_check_stops_gold(spark, settings, lakehouse, tmp_path):
    files = generate(tmp_path / "gen", posts=50, comments=100, files=1, seed=3, days=2, subreddits=2)
    lakehouse.land(files.posts[0], Entity.POST)
    lakehouse.land(files.comments[0], Entity.COMMENT)
    materialize_all()
    gold_before = snapshot_ids(spark)["gold.posts"]
    # A faulty write duplicates a Silver row (stamped as changed, as every Silver write is): the next run must
    # not carry it into Gold. (Edits that bypass `_updated_at` are the nightly full pass's to find.)
    spark.sql("INSERT INTO silver.posts SELECT * FROM silver.posts LIMIT 1")
    spark.sql("UPDATE silver.posts SET _updated_at = current_timestamp() "
              "WHERE id = (SELECT id FROM silver.posts GROUP BY id HAVING count(*) > 1)")

    from lakehouse_assets.definitions import defs

    job = defs.resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    assert not result.success
    failed = {(e.asset_check_key.asset_key.to_user_string(), e.check_name)
              for e in result.get_asset_check_evaluations()
              if not e.passed and e.severity is dg.AssetCheckSeverity.ERROR}
    assert ("silver/posts", "primary_key_unique") in failed
    assert {asset for asset, _ in failed} == {"silver/posts"}, failed
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert "gold/posts" not in materialized and "gold/subreddit_daily" not in materialized
    assert snapshot_ids(spark)["gold.posts"] == gold_before


def test_a_later_deleted_version_of_a_comment_replaces_it_everywhere(spark, settings, lakehouse, tmp_path):
    """An export that marks a comment [deleted] (sentiment empty) is its newest version: Silver and Gold follow."""
    import csv

    files = generate(tmp_path / "gen", posts=60, comments=200, files=1, seed=5, days=2, subreddits=2, repeat_share=0)
    lakehouse.land(files.posts[0], Entity.POST)
    lakehouse.land(files.comments[0], Entity.COMMENT)
    materialize_all()
    q = engine(settings)
    [(victim, post_id)] = q.sql("SELECT id, post_id FROM silver.comments WHERE sentiment IS NOT NULL "
                                "AND body IS NOT NULL ORDER BY id LIMIT 1").fetchall()
    with files.comments[0].open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    header, original = rows[0], next(r for r in rows[1:] if r[1] == victim)
    deleted = dict(zip(header, original)) | {"body": "[deleted]", "sentiment": "", "score": "1"}
    later = tmp_path / "later-export.csv"
    with later.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh, lineterminator="\r\n").writerows([header, [deleted[h] for h in header]])
    lakehouse.land(later, Entity.COMMENT)
    materialize_all()

    assert q.sql(f"SELECT body, body_status, sentiment, score FROM silver.comments WHERE id = '{victim}'").fetchall() \
        == [(None, "deleted", None, 1)]
    assert q.sql(f"SELECT body, body_status, sentiment FROM gold.comments WHERE comment_id = '{victim}'").fetchall() \
        == [(None, "deleted", None)]
    assert q.sql("SELECT count(*) FROM silver.comments_quarantine").fetchall() == [(0,)]
    assert_gold_matches(settings, exp.expected_gold(files.posts, [files.comments[0], later]))


def test_tables_from_an_older_contract_evolve_in_place(spark, lakehouse):
    """A lakehouse created before comments without sentiment were kept: the columns evolve, no data rewritten."""
    from dataclasses import replace

    from lakehouse import tables
    from lakehouse.contracts import GOLD, SILVER

    comments, engagement = SILVER[Entity.COMMENT], GOLD["post_engagement"]
    old_comments = replace(comments, columns=tuple(
        replace(c, nullable=False) if c.name == "sentiment" else c for c in comments.columns))
    old_engagement = replace(engagement, columns=tuple(c for c in engagement.columns if c.name != "scored_comments"))
    for ns in ("silver", "gold"):
        spark.sql(f"CREATE NAMESPACE IF NOT EXISTS {ns}")
    for old in (old_comments, old_engagement):
        spark.sql(old.create_ddl(tables.TABLE_PROPERTIES))
    assert not {f.name: f for f in spark.table("silver.comments").schema.fields}["sentiment"].nullable
    tables.ensure_tables(spark, (comments, engagement))
    assert {f.name: f for f in spark.table("silver.comments").schema.fields}["sentiment"].nullable
    assert spark.table("gold.post_engagement").columns == engagement.names  # added where the contract has it
    assert tables.current_snapshot(spark, "gold.post_engagement") is None  # schema only: nothing rewritten


def test_tables_are_ensured_once_per_driver_not_once_per_session(spark, lakehouse):
    """Every run on the warm engine is a new session on one driver: the tables it ensured stay ensured."""
    from lakehouse import tables

    tables.ensure_tables(spark)
    spark.sql("DROP TABLE gold.posts")  # behind the lakehouse's back
    tables.ensure_tables(spark.newSession())  # another run's session on the same driver: nothing asked again
    assert not spark.catalog.tableExists("gold.posts")
    tables.forget_ensured(spark)
    tables.ensure_tables(spark.newSession())
    assert spark.catalog.tableExists("gold.posts")
