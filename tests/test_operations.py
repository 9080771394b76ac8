"""Operator commands, run the way an operator runs them (`lakehouse ...`, each a Dagster run against the instance):
retract, reprocess, accept, refresh and status, on real Spark, Iceberg and Dagster."""

from __future__ import annotations

import json

import dagster as dg
import pytest
from pyspark.sql import functions as F

from lakehouse import cli, tables
from lakehouse.contracts import Entity
from lakehouse.generator import generate
from tests import expected as exp
from tests.test_end_to_end import assert_gold_matches

pytestmark = pytest.mark.slow


def lakehouse_cmd(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def materialize(instance, entity: Entity | None = None) -> dg.ExecuteInProcessResult:
    """The whole graph, or (`entity`) what the landing-zone sensor runs for a file of that entity, checks included."""
    from lakehouse_assets.definitions import defs
    from sensors.landing import downstream_of

    job = defs.resolve_implicit_global_asset_job_def()
    return job.execute_in_process(instance=instance, raise_on_error=False,
                                  asset_selection=downstream_of(entity) if entity else None)


@pytest.fixture
def instance(lakehouse, settings):
    """The instance `lakehouse init` makes under the data root, which the operator commands use too."""
    settings.dagster_home.mkdir(parents=True, exist_ok=True)
    with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        yield instance


def status(capsys) -> dict:
    code, out, _ = lakehouse_cmd(capsys, "status", "--json")
    assert code == 0
    return json.loads(out)


def test_retract_then_reprocess_a_file(spark, settings, lakehouse, instance, tmp_path, capsys):
    zone = lakehouse
    first = generate(tmp_path / "g1", posts=60, comments=180, files=1, seed=21, days=2, subreddits=2, repeat_share=0)
    # A later export: 20 of those posts with new scores and 10 new posts; its comments file has 30 comments.
    later = exp.bump_scores(first.posts[0], tmp_path / "later-posts.csv", delta=100, limit=20)
    extra = generate(tmp_path / "g2", posts=10, comments=30, files=1, seed=22, days=2, subreddits=2, repeat_share=0,
                     id_offset=5000)
    with later.open("a", encoding="utf-8", newline="") as out, extra.posts[0].open(encoding="utf-8", newline="") as more:
        out.write("".join(more.readlines()[1:]))
    zone.land(first.posts[0], Entity.POST)
    zone.land(first.comments[0], Entity.COMMENT)
    assert materialize(instance).success
    zone.land(later, Entity.POST)
    assert materialize(instance).success
    assert_gold_matches(settings, exp.expected_gold([first.posts[0], later], [first.comments[0]]))

    code, out, err = lakehouse_cmd(capsys, "retract", "input/post/later-posts.csv", "--why", "a bad export",
                                   "--by", "alice")
    assert code == 0, err
    done = json.loads(out)
    assert (done["bronze_rows"], done["silver_restored"], done["silver_deleted"]) == (30, 20, 10)
    # Everything as if the later export had never landed; nothing else changed.
    assert_gold_matches(settings, exp.expected_gold([first.posts[0]], [first.comments[0]]))
    assert spark.sql("SELECT count(*) FROM bronze.posts WHERE _source_uri LIKE '%later-posts%'").first()[0] == 0
    history = spark.sql("SELECT status, actor, message FROM bronze.ingestion_log "
                        "WHERE source_uri LIKE '%later-posts%' ORDER BY ingested_at").collect()
    assert [r.status for r in history] == ["loaded", "retracted"]
    assert history[1].actor == "alice" and "a bad export" in history[1].message
    from tests.test_checks import all_outcomes

    assert {k: o.summary for k, o in all_outcomes(spark).items() if not o.passed} == {}
    report = status(capsys)
    assert report["entities"]["post"]["files"]["retracted"] == 1
    assert report["operator_log"][-1]["action"] == "retract" and report["operator_log"][-1]["actor"] == "alice"
    # The sensor leaves a retracted version alone; reprocess takes it again, as the newest delivery.
    # Retracting it again finishes nothing new (a retraction interrupted half-way would be completed).
    code, out, err = lakehouse_cmd(capsys, "retract", "input/post/later-posts.csv", "--why", "again")
    assert code == 0 and json.loads(out)["bronze_rows"] == 0, err
    code, out, err = lakehouse_cmd(capsys, "reprocess", "input/post/later-posts.csv", "--why", "export fixed")
    assert code == 0, err
    assert "input/post/later-posts.csv | loaded" in out
    assert_gold_matches(settings, exp.expected_gold([first.posts[0], later], [first.comments[0]]))
    # A loaded version is not reprocessed: that would count it twice.
    code, _, err = lakehouse_cmd(capsys, "reprocess", "input/post/later-posts.csv")
    assert code == 2 and "retract it before reprocessing" in err
    # Retracting a whole batch by its id.
    batch = spark.sql("SELECT batch_id FROM bronze.ingestion_log WHERE source_uri LIKE '%later-posts%' "
                      "AND status = 'loaded' ORDER BY ingested_at DESC LIMIT 1").first().batch_id
    code, _, err = lakehouse_cmd(capsys, "retract", batch, "--why", "whole batch")
    assert code == 0, err
    assert_gold_matches(settings, exp.expected_gold([first.posts[0]], [first.comments[0]]))


def test_mistaken_targets_fail_with_a_message(spark, lakehouse, instance, capsys):
    code, _, err = lakehouse_cmd(capsys, "retract", "input/post/never-landed.csv", "--why", "x")
    assert code == 2 and "no loaded or retracted file version matches" in err
    code, _, err = lakehouse_cmd(capsys, "accept", "silver/posts", "primary_key_uniq", "--why", "x")
    assert code == 2 and "no asset check 'primary_key_uniq'" in err and "silver/posts primary_key_unique" in err
    code, _, err = lakehouse_cmd(capsys, "reprocess", "input/nowhere/a.csv")
    assert code == 2 and "not a landed file key" in err


def test_accepting_a_failing_check_lets_the_pipeline_move_on_until_something_else_breaks(
        spark, settings, lakehouse, instance, tmp_path, capsys):
    zone = lakehouse
    files = generate(tmp_path / "g", posts=50, comments=100, files=2, seed=3, days=2, subreddits=2, repeat_share=0)
    zone.land(files.posts[0], Entity.POST)
    zone.land(files.comments[0], Entity.COMMENT)
    assert materialize(instance).success
    # A post written into Silver behind the pipeline's back with an impossible date: the gate blocks Gold.
    def break_one(which: str) -> None:
        spark.sql(f"UPDATE silver.posts SET created_date = date'2004-01-01', _updated_at = current_timestamp() "
                  f"WHERE id = (SELECT {which}(id) FROM silver.posts)")

    break_one("min")
    zone.land(files.posts[1], Entity.POST)
    assert not materialize(instance).success
    report = status(capsys)
    assert any(c["check"] == "silver/posts types_and_ranges" and c["blocking"]
               for c in report["entities"]["post"]["failing_checks"])
    assert spark.sql("SELECT count(*) FROM gold.posts").first()[0] < 50  # the second file is not in Gold

    code, out, err = lakehouse_cmd(capsys, "accept", "silver/posts", "types_and_ranges", "--why",
                                   "a known bad date, fixed upstream", "--by", "bob")
    assert code == 0, err
    assert "1 rows created_date_mismatch" in out
    moved_on = materialize(instance)
    assert moved_on.success
    assert spark.sql("SELECT count(*) FROM gold.posts").first()[0] == 50  # the second file reached Gold
    [acceptance] = status(capsys)["entities"]["post"]["acceptances"]
    assert (acceptance["by"], acceptance["why"]) == ("bob", "a known bad date, fixed upstream")
    log = spark.sql("SELECT action, actor, target FROM ops.operator_log").collect()
    assert [(r.action, r.actor, r.target) for r in log] == [("accept", "bob", "silver.posts:types_and_ranges")]

    # A new, different failure still blocks.
    break_one("max")
    again = materialize(instance)
    assert not again.success
    failed = {(e.check_name, e.severity) for e in again.get_asset_check_evaluations() if not e.passed}
    assert failed == {("types_and_ranges", dg.AssetCheckSeverity.ERROR)}

    # Revoked: the accepted range is in scope again, so both bad rows fail the check now.
    code, _, err = lakehouse_cmd(capsys, "accept", "--revoke", "silver/posts", "types_and_ranges", "--why", "undo")
    assert code == 0, err
    from lakehouse import silver_layer
    from tests.test_checks import NOW

    types, _ = silver_layer.silver_values(spark, Entity.POST, NOW)
    assert types.metrics["created_date_mismatch"] == 2
    assert [r.action for r in spark.sql("SELECT action FROM ops.operator_log ORDER BY at").collect()] == [
        "accept", "revoke"]


def test_accepting_a_bronze_gate_covers_that_failure_only(spark, settings, lakehouse, instance, tmp_path, capsys):
    zone = lakehouse
    files = generate(tmp_path / "g", posts=40, comments=0, files=3, seed=4, days=2, subreddits=2, repeat_share=0)
    zone.land(files.posts[0], Entity.POST)
    assert materialize(instance).success
    spark.sql("DELETE FROM bronze.posts WHERE _source_row = 3")  # a row lost behind the pipeline's back
    zone.land(files.posts[1], Entity.POST)
    assert not materialize(instance).success  # rows_match_file blocks Silver
    code, _, err = lakehouse_cmd(capsys, "accept", "bronze/posts", "rows_match_file", "--why", "row 3 was PII")
    assert code == 0, err
    passed = materialize(instance)
    assert passed.success
    [rows] = [e for e in passed.get_asset_check_evaluations()
              if e.check_name == "rows_match_file" and e.asset_key == dg.AssetKey(["bronze", "posts"])]
    assert not rows.passed and rows.severity == dg.AssetCheckSeverity.WARN
    assert rows.metadata["accepted_why"].value == "row 3 was PII"
    spark.sql("DELETE FROM bronze.posts WHERE _source_row = 5")  # another loss: not what was accepted
    zone.land(files.posts[2], Entity.POST)
    assert not materialize(instance).success


def test_a_full_refresh_rebuilds_silver_and_gold_after_a_cleaning_rule_changes(
        spark, settings, lakehouse, instance, tmp_path, capsys, monkeypatch):
    from lakehouse.transforms import silver as silver_tf

    zone = lakehouse
    files = generate(tmp_path / "g", posts=80, comments=240, files=1, seed=8, days=3, subreddits=2, repeat_share=0)
    zone.land(files.posts[0], Entity.POST)
    zone.land(files.comments[0], Entity.COMMENT)
    assert materialize(instance).success
    silver_before = tables.snapshot_id(spark, "silver.comments")
    negative = spark.sql("SELECT count(*) FROM silver.comments WHERE score < 0").first()[0]
    assert negative > 0

    # A new cleaning rule: comments with a negative score are quarantined from now on.
    real_typed = silver_tf.typed

    def stricter(bronze, entity, now, suspect_uris=None):
        df = real_typed(bronze, entity, now, suspect_uris)
        if entity is Entity.COMMENT:
            rule = F.when(F.col("score") < 0, F.array(F.lit("negative_score"))).otherwise(
                F.array().cast("array<string>"))
            df = df.withColumn("reasons", F.concat("reasons", rule))
        return df

    monkeypatch.setattr(silver_tf, "typed", stricter)
    code, out, err = lakehouse_cmd(capsys, "refresh", "--why", "negative scores are bots", "--by", "carol")
    assert code == 0, err
    assert "silver/comments" in out and "gold/subreddit_daily" in out
    assert spark.sql("SELECT count(*) FROM silver.comments WHERE score < 0").first()[0] == 0
    assert spark.sql("SELECT count(*) FROM silver.comments_quarantine WHERE reason = 'negative_score'"
                     ).first()[0] == negative
    # Swapped in one commit: the only data snapshot since is the rebuild's overwrite.
    lineage = tables.snapshots(spark, "silver.comments")
    after = [s for s in lineage[[s.snapshot_id for s in lineage].index(silver_before) + 1:]]
    assert [s.operation for s in after] == ["overwrite"]
    # Gold equals an independent computation with the new rule.
    kept = tmp_path / "kept-comments.csv"
    import csv

    with files.comments[0].open(newline="", encoding="utf-8") as src, kept.open("w", newline="", encoding="utf-8") as dst:
        rows = list(csv.reader(src))
        csv.writer(dst).writerows([rows[0]] + [r for r in rows[1:] if int(r[-1]) >= 0])
    assert_gold_matches(settings, exp.expected_gold(files.posts, [kept]))
    actions = spark.sql("SELECT action, actor, target FROM ops.operator_log WHERE action = 'refresh'").collect()
    assert {r.target for r in actions} >= {"silver.comments", "gold.subreddit_daily"} and {r.actor for r in actions} == {
        "carol"}
    # Incremental runs go on from the rebuilt tables' positions: nothing to do, nothing changes.
    before = {t: tables.snapshot_id(spark, t) for t in ("silver.comments", "gold.comments", "gold.subreddit_daily")}
    assert materialize(instance).success
    assert {t: tables.snapshot_id(spark, t) for t in before} == before


def test_status_and_reprocess_of_a_rejected_file_after_a_parser_fix(
        spark, settings, lakehouse, instance, tmp_path, capsys, monkeypatch):
    """A file the parser of the day rejects, reprocessed once the parser is fixed; status says what happened."""
    from lakehouse import bronze_layer
    from lakehouse.transforms import bronze as bronze_tf
    from tests.conftest import dead_writer

    zone = lakehouse
    files = generate(tmp_path / "g", posts=30, comments=0, files=1, seed=5, days=1, subreddits=1, repeat_share=0)
    zone.land(files.posts[0], Entity.POST)
    real_scan = bronze_tf.scan_records
    monkeypatch.setattr(bronze_tf, "scan_records", lambda stream: bronze_tf.FileScan(
        reason="unparseable_csv", message="a parser bug of the day"))
    assert materialize(instance).success  # a rejected file warns; the run goes on
    post = status(capsys)["entities"]["post"]
    assert post["files"]["rejected"] == 1 and post["rejected"][0]["message"] == "a parser bug of the day"
    assert materialize(instance).success and spark.sql("SELECT count(*) FROM bronze.posts").first()[0] == 0

    monkeypatch.setattr(bronze_tf, "scan_records", real_scan)  # the fix ships
    key = "input/post/" + files.posts[0].name
    code, out, err = lakehouse_cmd(capsys, "reprocess", key, "--why", "parser fixed", "--by", "dan")
    assert code == 0, err
    assert f"{key} | loaded" in out
    assert spark.sql("SELECT count(*) FROM gold.posts").first()[0] == 30
    post = status(capsys)["entities"]["post"]
    assert post["files"] == {"loaded": 1, "rejected": 1, "retracted": 0, "rolled_back": 0}
    assert any(a["action"] == "reprocess" and a["actor"] == "dan" for a in status(capsys)["operator_log"])

    # A batch a dead run left behind shows as orphaned until the next run rolls it back.
    more = generate(tmp_path / "more", posts=5, comments=0, files=1, seed=6, days=1, subreddits=1, repeat_share=0,
                    id_offset=900)
    zone.land(more.posts[0], Entity.POST)
    monkeypatch.setattr(bronze_layer, "write_log", lambda *a: (_ for _ in ()).throw(RuntimeError("killed")))
    with pytest.raises(RuntimeError):
        bronze_layer.ingest_bronze(spark, zone, Entity.POST, writer=dead_writer())
    [orphan] = status(capsys)["entities"]["post"]["unsettled_batches"]
    assert orphan["rows"] == 5 and orphan["state"].startswith("orphaned")
    code, out, _ = lakehouse_cmd(capsys, "status")
    assert code == 0 and "orphaned" in out and "reprocess" in out
