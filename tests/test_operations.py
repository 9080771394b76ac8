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
    # The sensor leaves a retracted version alone; reprocess takes it again, in its old place (the newest here).
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


# A reason as operators write them: quotes, a backslash, a newline, an emoji, and SQL that must stay text.
REASON = "it's \"bad\" \\ see C:\\new\nticket 😀 ', 'lakehouse.injected'='1"


def table_rows(spark, table: str, *leave_out: str) -> list[str]:
    """Every row of `table` (its columns but `leave_out`), as comparable text, in a fixed order."""
    return sorted(repr(tuple(r)) for r in spark.table(table).drop(*leave_out).collect())


# What an undone retraction cannot give back as it was: when Silver and Gold last wrote a row, and the Bronze batch
# that holds the version's rows now (the reprocess's: the retracted batch's rows are gone).
LEAVE_OUT = {"bronze.posts": ("_batch_id",), "silver.posts": ("_batch_id", "_updated_at"),
             "silver.posts_quarantine": ("_batch_id", "quarantined_at"), "silver.comments": ("_batch_id", "_updated_at"),
             **{f"gold.{t}": ("loaded_at",) for t in ("posts", "comments", "subreddit_daily", "subreddit_daily_parts",
                                                      "post_engagement")}}


def test_undoing_a_retraction_puts_every_table_back_as_it_was(spark, settings, lakehouse, instance, tmp_path, capsys):
    """Retract a file a later file overwrote, reprocess it: every table as before, rows and lineage; a retract
    run again after that finishes nothing and touches nothing."""
    zone = lakehouse
    first = generate(tmp_path / "g1", posts=60, comments=180, files=1, seed=31, days=2, subreddits=2, repeat_share=0)
    # A: 20 of the first file's posts with new scores, 10 new posts and a row Silver quarantines.
    a = exp.bump_scores(first.posts[0], tmp_path / "a-posts.csv", delta=100, limit=20)
    extra = generate(tmp_path / "g2", posts=10, comments=0, files=1, seed=32, days=2, subreddits=2, repeat_share=0,
                     id_offset=5000)
    bad = ("post,q9zz9,171bj,bad,false,1646159252,https://old.reddit.com/r/bad/comments/q9zz9/x/,self.bad,"
           "https://old.reddit.com/r/bad/comments/q9zz9/x/,text,title,not-a-score\r\n")
    with a.open("a", encoding="utf-8", newline="") as out, extra.posts[0].open(encoding="utf-8", newline="") as more:
        out.write("".join(more.readlines()[1:]) + bad)
    # B, later: 10 of A's posts with newer scores still.
    b = exp.bump_scores(first.posts[0], tmp_path / "b-posts.csv", delta=1000, limit=10)
    zone.land(first.posts[0], Entity.POST)
    zone.land(first.comments[0], Entity.COMMENT)
    assert materialize(instance).success
    for f in (a, b):
        zone.land(f, Entity.POST)
        assert materialize(instance, Entity.POST).success
    valid_a = tmp_path / "a-valid.csv"
    valid_a.write_bytes(a.read_bytes().replace(bad.encode(), b""))
    assert_gold_matches(settings, exp.expected_gold([first.posts[0], valid_a, b], [first.comments[0]]))
    assert [tuple(r) for r in spark.sql("SELECT id, reason FROM silver.posts_quarantine").collect()] == [
        ("q9zz9", "invalid_score")]
    before = {t: table_rows(spark, t, *cols) for t, cols in LEAVE_OUT.items()}
    [batch_a] = [r.batch_id for r in spark.sql("SELECT DISTINCT batch_id FROM bronze.ingestion_log "
                                               "WHERE source_uri LIKE '%a-posts%'").collect()]

    code, out, err = lakehouse_cmd(capsys, "retract", "input/post/a-posts.csv", "--why", REASON, "--by", "alice")
    assert code == 0, err
    assert json.loads(out)["quarantine_rows"] == 1
    # B's 10 posts keep B's scores; A's other 10 go back to the first file's; A's new posts leave.
    assert_gold_matches(settings, exp.expected_gold([first.posts[0], b], [first.comments[0]]))

    code, out, err = lakehouse_cmd(capsys, "reprocess", "input/post/a-posts.csv", "--why", REASON, "--by", "alice")
    assert code == 0, err
    # Not A's values over B's: A is back in its place, before B, and every table is as it was, row for row.
    assert {t: table_rows(spark, t, *cols) for t, cols in LEAVE_OUT.items()} == before
    from tests.test_checks import all_outcomes

    assert {k: o.summary for k, o in all_outcomes(spark).items() if not o.passed} == {}

    # The first retraction run again by its batch id: finished already, so nothing changes, the reprocessed
    # version's quarantine row included.
    data = [t for t in LEAVE_OUT]
    snapshots = {t: tables.snapshot_id(spark, t) for t in data}
    code, out, err = lakehouse_cmd(capsys, "retract", batch_a, "--why", "again")
    assert code == 0, err
    done = json.loads(out)
    assert (done["bronze_rows"], done["quarantine_rows"], done["silver_restored"], done["silver_deleted"]) == (0, 0, 0, 0)
    assert {t: tables.snapshot_id(spark, t) for t in data} == snapshots
    assert {t: table_rows(spark, t, *cols) for t, cols in LEAVE_OUT.items()} == before

    # The reason, exactly as given, in the operator log, the ingestion log and `lakehouse status`.
    logged = spark.sql("SELECT action, reason FROM ops.operator_log ORDER BY at").collect()
    assert [(r.action, r.reason) for r in logged] == [("retract", REASON), ("reprocess", REASON), ("retract", "again")]
    [message] = [r.message for r in spark.sql("SELECT message FROM bronze.ingestion_log WHERE status = 'retracted'"
                                              ).collect()]
    assert message == f"retracted by alice: {REASON}"
    assert [a["reason"] for a in status(capsys)["operator_log"]] == [REASON, REASON, "again"]


def test_mistaken_targets_fail_with_a_message(spark, lakehouse, instance, capsys):
    code, _, err = lakehouse_cmd(capsys, "retract", "input/post/never-landed.csv", "--why", "x")
    assert code == 2 and "no loaded or retracted file version matches" in err
    code, _, err = lakehouse_cmd(capsys, "accept", "silver/posts", "primary_key_uniq", "--why", "x")
    assert code == 2 and "no asset check 'primary_key_uniq'" in err and "silver/posts primary_key_unique" in err
    code, _, err = lakehouse_cmd(capsys, "reprocess", "input/nowhere/a.csv")
    assert code == 2 and "not a landed file key" in err


def test_accepting_a_failing_check_lets_the_pipeline_move_on_until_something_else_breaks(
        spark, settings, lakehouse, instance, tmp_path, capsys, monkeypatch):
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

    # The acceptance and the check's moved position are one commit: when it fails, neither is recorded (the range
    # stays in scope, the failure still blocks), never the position moved with no acceptance behind it.
    from lakehouse.checks import ACCEPTED_PREFIX

    marks_before = tables.table_properties(spark, "silver.posts")
    real_set = tables.set_properties

    def acceptance_fails(spark_, table, props):
        if any(k.startswith(ACCEPTED_PREFIX) for k in props):
            raise RuntimeError("the catalog is gone")
        real_set(spark_, table, props)

    monkeypatch.setattr(tables, "set_properties", acceptance_fails)
    code, _, err = lakehouse_cmd(capsys, "accept", "silver/posts", "types_and_ranges", "--why", "x")
    assert code == 1 and "the catalog is gone" in err
    assert tables.table_properties(spark, "silver.posts") == marks_before
    monkeypatch.setattr(tables, "set_properties", real_set)

    code, out, err = lakehouse_cmd(capsys, "accept", "silver/posts", "types_and_ranges", "--why", REASON, "--by", "bob")
    assert code == 0, err
    assert "1 rows created_date_mismatch" in out
    # The reason is a property's value, whatever it holds: it sets no property of its own.
    added = set(tables.table_properties(spark, "silver.posts")) - set(marks_before)
    assert added == {"lakehouse.accepted.types_and_ranges"}
    moved_on = materialize(instance)
    assert moved_on.success
    assert spark.sql("SELECT count(*) FROM gold.posts").first()[0] == 50  # the second file reached Gold
    [acceptance] = status(capsys)["entities"]["post"]["acceptances"]
    assert (acceptance["by"], acceptance["why"]) == ("bob", REASON)
    log = spark.sql("SELECT action, actor, target, reason FROM ops.operator_log").collect()
    assert [tuple(r) for r in log] == [("accept", "bob", "silver.posts:types_and_ranges", REASON)]

    # A new, different failure still blocks.
    break_one("max")
    again = materialize(instance)
    assert not again.success
    failed = {(e.check_name, e.severity) for e in again.get_asset_check_evaluations() if not e.passed}
    assert failed == {("types_and_ranges", dg.AssetCheckSeverity.ERROR)}

    # Revoked: the accepted range is in scope again, so both bad rows fail the check now.
    code, _, err = lakehouse_cmd(capsys, "accept", "--revoke", "silver/posts", "types_and_ranges", "--why", REASON)
    assert code == 0, err
    assert not status(capsys)["entities"]["post"]["acceptances"]
    from lakehouse import silver_layer
    from tests.test_checks import NOW

    types, _ = silver_layer.silver_values(spark, Entity.POST, NOW)
    assert types.metrics["created_date_mismatch"] == 2
    revoked = spark.sql("SELECT action, reason, details FROM ops.operator_log ORDER BY at").collect()
    assert [(r.action, r.reason) for r in revoked] == [("accept", REASON), ("revoke", REASON)]
    assert json.loads(revoked[1].details)["revoked"]["why"] == REASON
    assert tables.table_properties(spark, "silver.posts").get("lakehouse.verified.values") == marks_before.get(
        "lakehouse.verified.values")


def test_accepting_a_bronze_gate_covers_that_failure_only(spark, settings, lakehouse, instance, tmp_path, capsys):
    zone = lakehouse
    files = generate(tmp_path / "g", posts=40, comments=0, files=3, seed=4, days=2, subreddits=2, repeat_share=0)
    zone.land(files.posts[0], Entity.POST)
    assert materialize(instance).success
    spark.sql("DELETE FROM bronze.posts WHERE _source_row = 3")  # a row lost behind the pipeline's back
    zone.land(files.posts[1], Entity.POST)
    assert not materialize(instance).success  # rows_match_file blocks Silver
    code, _, err = lakehouse_cmd(capsys, "accept", "bronze/posts", "rows_match_file", "--why", REASON)
    assert code == 0, err
    passed = materialize(instance)
    assert passed.success
    [rows] = [e for e in passed.get_asset_check_evaluations()
              if e.check_name == "rows_match_file" and e.asset_key == dg.AssetKey(["bronze", "posts"])]
    assert not rows.passed and rows.severity == dg.AssetCheckSeverity.WARN
    assert rows.metadata["accepted_why"].value == REASON
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
