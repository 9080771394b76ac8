"""Bad input, end to end: every case is landed beside good files in one batch, the whole graph runs once through
Dagster, and each case's outcome is asserted: rejected with a reason (file kept, message in the run log) or loaded
with its bad rows quarantined under a reason code, and no row lost or duplicated.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
from collections import Counter
from dataclasses import dataclass, field, replace

import dagster as dg
import pytest

from lakehouse.contracts import SOURCE_HEADERS, Entity
from lakehouse.landing import entity_prefix
from lakehouse.transforms.bronze import SPARK_MAX_FIELD_CHARS

pytestmark = pytest.mark.slow

POST_HEADER = ",".join(SOURCE_HEADERS[Entity.POST])
COMMENT_HEADER = ",".join(SOURCE_HEADERS[Entity.COMMENT])
CREATED = "1648771149"


def post_row(pid: str, score: str = "5", created: str = CREATED, selftext: str = "some text") -> str:
    return (f"post,{pid},2qh1i,TestSub,false,{created},https://old.reddit.com/r/testsub/comments/{pid}/t/,"
            f'self.testsub,,"{selftext}","title of {pid}",{score}\n')


def comment_row(cid: str, post: str = "good1", score: str = "2", sentiment: str = "0.25", body: str = "a comment",
                permalink: str | None = None) -> str:
    link = permalink or f"https://old.reddit.com/r/testsub/comments/{post}/t/{cid}/"
    return f'comment,{cid},2qh1i,TestSub,false,{CREATED},{link},"{body}",{sentiment},{score}\n'


def posts(*rows: str, header: str = POST_HEADER) -> bytes:
    return (header + "\n" + "".join(rows)).encode()


def lines(header: str, *rows: str, end: str = "\r\n", header_end: str | None = None) -> bytes:
    """A file whose header ends in `header_end` (default `end`) and each row in `end` (rows given without one)."""
    return (header + (end if header_end is None else header_end) + "".join(r + end for r in rows)).encode()


def multiline_comment(cid: str, newline: str) -> str:
    """A comment whose quoted body spans lines, as real exports have them."""
    return comment_row(cid, body=f"first line{newline}second line").rstrip("\n")


def comments(*rows: str) -> bytes:
    return (COMMENT_HEADER + "\n" + "".join(rows)).encode()


@dataclass
class Case:
    name: str
    entity: Entity
    data: bytes
    status: str  # loaded | rejected
    reason: str | None = None  # rejection reason code
    quarantined: dict[str, int] = field(default_factory=dict)  # reason code -> rows
    silver_ids: set[str] = field(default_factory=set)  # ids this file must put in Silver
    rows: int = 0  # Bronze rows expected from the file

    @property
    def key(self) -> str:
        return f"{entity_prefix(self.entity)}{self.name}.csv"


BIG = "word " * 210_000  # a 1 MB text field
ONE_LINE = comment_row("x").rstrip("\n")

CASES = [
    Case("empty", Entity.POST, b"", "rejected", "empty_file"),
    Case("header_only", Entity.POST, posts(), "loaded"),
    Case("wrong_columns", Entity.POST, comments(comment_row("wc1")), "rejected", "wrong_entity"),
    Case("missing_column", Entity.POST, posts("post,mc1,2qh1i,x,false\n", header=POST_HEADER.replace(",score", "")),
         "rejected", "missing_columns"),
    Case("extra_column", Entity.POST,
         posts(post_row("xc1").rstrip("\n") + ",7\n", post_row("xc2").rstrip("\n") + ",\n", header=POST_HEADER + ",gilded"),
         "loaded", silver_ids={"xc1", "xc2"}, rows=2),
    Case("wrong_delimiter", Entity.POST, posts(post_row("wd1").replace(",", ";"), header=POST_HEADER.replace(",", ";")),
         "rejected", "wrong_delimiter"),
    Case("gzip", Entity.POST, gzip.compress(posts(post_row("gz1")), mtime=0), "rejected", "not_csv"),
    Case("binary", Entity.POST, bytes(range(256)) * 8, "rejected", "not_csv"),
    Case("not_utf8", Entity.COMMENT,
         comments(comment_row("nu1")) + comment_row("nu2", body="caf\xe9 cr\xe8me").encode("latin-1")
         + comment_row("nu3").encode(),
         "loaded", quarantined={"invalid_utf8": 1}, silver_ids={"nu1", "nu3"}, rows=3),
    # A quote never closed: Spark would silently run the following records into this field.
    Case("unterminated_quote", Entity.COMMENT,
         comments(comment_row("uq1"), comment_row("uq2", body="x").replace('"x"', '"never closed'),
                  comment_row("uq3"), comment_row("uq4")),
         "rejected", "bad_quoting"),
    # ... and no quote after it: one field to the end of the file. Spark's reader, bounded, fails the whole read
    # on it (unbounded, it ran the JVM out of memory), so the batch is appended again without it.
    Case("never_closed_to_the_end", Entity.COMMENT,
         comments(comment_row("nc1"), comment_row("nc2", body="x").replace('"x"', '"never closed'))
         + ("no quote here " * (SPARK_MAX_FIELD_CHARS // 14 + 1)).encode(),
         "rejected", "field_too_long"),
    Case("truncated_last_line", Entity.POST, posts(post_row("tl1"), post_row("tl2"))
         + b"post,tl3,2qh1i,TestSub,false,16487", "loaded",
         quarantined={"malformed_record": 1}, silver_ids={"tl1", "tl2"}, rows=3),
    Case("one_mb_field", Entity.POST, posts(post_row("mb1", selftext=BIG), post_row("mb2")), "loaded",
         silver_ids={"mb1", "mb2"}, rows=2),
    Case("not_numbers", Entity.COMMENT,
         comments(comment_row("nn1", score="12abc"), comment_row("nn2", sentiment="high"), comment_row("nn3")),
         "loaded", quarantined={"invalid_score": 1, "invalid_sentiment": 1}, silver_ids={"nn3"}, rows=3),
    Case("milliseconds", Entity.POST, posts(post_row("ms1", created=CREATED + "000"), post_row("ms2")), "loaded",
         quarantined={"created_utc_in_milliseconds": 1}, silver_ids={"ms2"}, rows=2),
    Case("duplicate_ids", Entity.POST, posts(post_row("du1", score="1"), post_row("du1", score="9"), post_row("du2")),
         "loaded", silver_ids={"du1", "du2"}, rows=3),
    Case("permalink_without_post", Entity.COMMENT,
         comments(comment_row("np1", permalink="https://old.reddit.com/r/testsub/wiki/np1/"), comment_row("np2")),
         "loaded", quarantined={"missing_post_id": 1}, silver_ids={"np2"}, rows=2),
    # A name is data: Spark would read `[...]`, `{a,b}` and `*` as a pattern, SQL text would break on the quote.
    Case("it's [2022-03] {a,b} *, week 3", Entity.POST, posts(post_row("aw1")), "loaded", silver_ids={"aw1"}, rows=1),
    # The one kind of name Hadoop's paths cannot address: rejected alone, the batch goes on.
    Case("posts [10:00]", Entity.POST, posts(post_row("un1")), "rejected", "unreadable_name"),
]
# Line endings (see docs/quality.md): one line ending per file reads right whatever the quoted fields hold; a file
# whose records end in more than one way is refused up front, because Spark would read it differently.
LINE_ENDING_CASES = [
    Case("crlf_rows_multiline", Entity.COMMENT,
         lines(COMMENT_HEADER, multiline_comment("le1", "\n"), multiline_comment("le2", "\r\n"), ONE_LINE.replace("x", "le3")),
         "loaded", silver_ids={"le1", "le2", "le3"}, rows=3),
    Case("lf_rows_multiline", Entity.COMMENT,
         lines(COMMENT_HEADER, multiline_comment("lf1", "\n"), multiline_comment("lf2", "\r\n"), end="\n"),
         "loaded", silver_ids={"lf1", "lf2"}, rows=2),
    Case("cr_rows_multiline", Entity.COMMENT,
         lines(COMMENT_HEADER, multiline_comment("cr1", "\r"), ONE_LINE.replace("x", "cr2"), end="\r"),
         "loaded", silver_ids={"cr1", "cr2"}, rows=2),
    # The disagreement seen with a real export: Spark took the header's CRLF for the whole file and read one record.
    Case("header_crlf_rows_lf", Entity.COMMENT,
         lines(COMMENT_HEADER, multiline_comment("hl1", "\n"), ONE_LINE.replace("x", "hl2"), end="\n", header_end="\r\n"),
         "rejected", "mixed_line_endings"),
    # Same count, but Spark would keep a CR in every last field (the score): rows lost to quarantine.
    Case("header_lf_rows_crlf", Entity.COMMENT,
         lines(COMMENT_HEADER, ONE_LINE.replace("x", "lc1"), ONE_LINE.replace("x", "lc2"), end="\r\n", header_end="\n"),
         "rejected", "mixed_line_endings"),
    Case("mixed_crlf_lf_cr", Entity.COMMENT,
         (COMMENT_HEADER + "\r\n" + ONE_LINE.replace("x", "mx1") + "\n" + ONE_LINE.replace("x", "mx2") + "\r"
          + ONE_LINE.replace("x", "mx3") + "\r\n").encode(), "rejected", "mixed_line_endings"),
    Case("utf8_bom", Entity.POST, b"\xef\xbb\xbf" + posts(post_row("bom1")), "loaded", silver_ids={"bom1"}, rows=1),
    Case("utf16", Entity.POST, posts(post_row("u16")).decode().encode("utf-16"), "rejected", "not_utf8"),
    Case("quoted_header", Entity.POST, posts(post_row("qh1"), header=",".join(f'"{h}"' for h in SOURCE_HEADERS[Entity.POST])),
         "loaded", silver_ids={"qh1"}, rows=1),
]
CASES += LINE_ENDING_CASES
GOOD = [
    Case("good_posts", Entity.POST, posts(post_row("good1"), post_row("good2")), "loaded",
         silver_ids={"good1", "good2"}, rows=2),
    Case("good_comments", Entity.COMMENT, comments(comment_row("gc1"), comment_row("gc2", post="good2")), "loaded",
         silver_ids={"gc1", "gc2"}, rows=2),
]
BY_NAME = {c.name: c for c in CASES + GOOD}
# Symbolic links (docs/quality.md): never read through. One that leads out of the landing zone, or round in a loop,
# is refused on its own; one into the zone is the file it points to, ingested once, under that file's own name.
LINKS = {  # key -> (where it points, reason); "outside": a good posts file outside the landing zone
    "input/post/link_outside.csv": ("outside", "symlink_outside_landing_zone"),
    "input/comment/link_loop_a.csv": ("link_loop_b.csv", "symlink_loop"),
    "input/comment/link_loop_b.csv": ("link_loop_a.csv", "symlink_loop"),
    "input/post/link_inside.csv": ("good_posts.csv", None),
}


@pytest.fixture(scope="module")
def landed(spark, settings, tmp_path_factory):
    """Land every case, the links and the good files at once, run the whole graph once, keep what the run reported."""
    from tests.conftest import empty_lakehouse

    zone = empty_lakehouse(spark, settings)
    for case in CASES + GOOD:
        path = zone.path_for(case.key)
        path.write_bytes(case.data)
    outside = tmp_path_factory.mktemp("outside") / "posts.csv"
    outside.write_bytes(posts(post_row("outside1")))
    for key, (target, _) in LINKS.items():
        os.symlink(outside if target == "outside" else target, zone.path_for(key))
    from lakehouse_assets.definitions import defs

    instance = dg.DagsterInstance.ephemeral()
    result = defs.resolve_implicit_global_asset_job_def().execute_in_process(instance=instance, raise_on_error=False)
    messages = [e.user_message for e in instance.all_logs(result.run_id)]
    return zone, result, messages


def _q(spark, sql: str):
    return spark.sql(sql).collect()


def test_the_run_succeeds_and_only_warnings_fail(landed):
    _, result, _ = landed
    assert result.success
    failed = {(e.asset_check_key.asset_key.to_user_string(), e.check_name, e.severity.value)
              for e in result.get_asset_check_evaluations() if not e.passed}
    # Rejected files and a new column make the header checks warn; a batch quarantining more than its threshold too.
    from lakehouse.settings import DEFAULT_QUARANTINE_MAX_RATE

    expected = {("bronze/posts", "header_matches_contract", "WARN"),
                ("bronze/comments", "header_matches_contract", "WARN")}
    for entity in Entity:
        loaded = [c for c in CASES + GOOD if c.entity is entity and c.status == "loaded"]
        share = sum(sum(c.quarantined.values()) for c in loaded) / sum(c.rows for c in loaded)
        if share > DEFAULT_QUARANTINE_MAX_RATE[entity.value]:
            expected.add((f"silver/{entity.plural}_quarantine", "quarantine_rate", "WARN"))
    assert failed == expected


def test_the_ingestion_log_accounts_for_every_landed_file(landed, spark):
    zone = landed[0]
    logged = {r.source_uri for r in _q(spark, "SELECT source_uri FROM bronze.ingestion_log")}
    refused_links = {zone.path_for(key).as_uri() for key, (_, reason) in LINKS.items() if reason}
    assert {zone.path_for(c.key).as_uri() for c in CASES + GOOD} | refused_links == logged


def test_symbolic_links_are_never_read_through(landed, spark):
    zone, _, messages = landed
    logged = {r.source_uri: (r.status, r.reason, r.rows) for r in _q(
        spark, "SELECT source_uri, status, reason, rows FROM bronze.ingestion_log")}
    for key, (_, reason) in LINKS.items():
        uri = zone.path_for(key).as_uri()
        if reason is None:  # the file it points to is logged, under its own name
            assert uri not in logged
            continue
        assert logged[uri] == ("rejected", reason, 0)
        assert any(m and key in m and reason in m for m in messages), "no error in the run log"
    assert _q(spark, "SELECT count(*) AS n FROM bronze.posts WHERE trim(id) = 'outside1'")[0].n == 0
    assert _q(spark, "SELECT count(*) AS n FROM bronze.posts WHERE trim(id) = 'good1'")[0].n == 1


def test_multiline_bodies_read_right_whatever_the_line_ending(landed, spark):
    ids = ["le1", "le2", "lf1", "lf2", "cr1"]
    bodies = {r.id: r.body for r in _q(spark, f"SELECT id, body FROM silver.comments WHERE id IN {tuple(ids)}")}
    assert bodies == {i: "first line\nsecond line" for i in ids}
    scores = {r.id: r.score for r in _q(spark, "SELECT id, score FROM silver.comments WHERE id IN ('le3', 'cr2')")}
    assert scores == {"le3": 2, "cr2": 2}  # no stray CR kept in the last field


def test_a_mixed_line_ending_file_is_refused_with_what_differs(landed, spark):
    uri = landed[0].path_for(BY_NAME["header_crlf_rows_lf"].key).as_uri()
    [entry] = _q(spark, f"SELECT message FROM bronze.ingestion_log WHERE source_uri = '{uri}'")
    assert "CRLF (1 records, first ending line 1)" in entry.message and "LF (2 records" in entry.message


@pytest.mark.parametrize("name", list(BY_NAME))
def test_outcome(landed, spark, name):
    zone, _, messages = landed
    case = BY_NAME[name]
    path = zone.path_for(case.key)
    assert path.read_bytes() == case.data  # the landed file is kept as it arrived
    uri = path.as_uri()
    entity = case.entity
    [entry] = _q(spark, f"SELECT status, reason, message, rows, source_records, extra_columns "
                        f"FROM bronze.ingestion_log WHERE source_uri = '{uri}'")
    assert (entry.status, entry.reason) == (case.status, case.reason)
    bronze = _q(spark, f"SELECT trim(id) AS id, _source_row FROM bronze.{entity.plural} WHERE _source_uri = '{uri}'")
    assert len(bronze) == entry.rows == case.rows
    if case.status == "rejected":
        assert entry.message
        assert any(m and case.key in m and case.reason in m for m in messages), "no error in the run log"
        return
    assert entry.source_records == case.rows
    quarantined = Counter(r.reason for r in _q(
        spark, f"SELECT reason FROM silver.{entity.plural}_quarantine WHERE _source_uri = '{uri}'"))
    assert dict(quarantined) == case.quarantined
    in_silver = {r.id for r in _q(spark, f"SELECT id FROM silver.{entity.plural} WHERE _source_uri = '{uri}'")}
    assert in_silver == case.silver_ids
    # No row lost or duplicated: each Bronze row is in Silver, quarantined, or an older version of an id.
    collapsed = len(bronze) - len(in_silver) - sum(case.quarantined.values())
    assert collapsed == (1 if name == "duplicate_ids" else 0)


def test_schema_drift_is_kept_in_bronze_and_reported(landed, spark):
    _, _, messages = landed
    uri = landed[0].path_for(BY_NAME["extra_column"].key).as_uri()
    rows = _q(spark, f"SELECT id, _extra_columns FROM bronze.posts WHERE _source_uri = '{uri}' ORDER BY id")
    assert [(r.id, r._extra_columns) for r in rows] == [("xc1", {"gilded": "7"}), ("xc2", {"gilded": None})]
    [entry] = _q(spark, f"SELECT extra_columns, message FROM bronze.ingestion_log WHERE source_uri = '{uri}'")
    assert entry.extra_columns == ["gilded"] and "schema drift" in entry.message


def test_bad_rows_keep_their_raw_values(landed, spark):
    rows = _q(spark, "SELECT id, score, created_utc, _raw_record FROM silver.posts_quarantine ORDER BY id")
    by_id = {r.id: r for r in rows}
    assert by_id["ms1"].created_utc == CREATED + "000"
    assert by_id["tl3"]._raw_record == "post,tl3,2qh1i,TestSub,false,16487"
    [nu2] = _q(spark, "SELECT body, reason FROM silver.comments_quarantine WHERE id = 'nu2'")
    assert nu2.body == "caf\ufffd cr\ufffdme"  # what Spark made of the Latin-1 bytes; the landed file has them


def test_good_and_odd_rows_reach_gold(landed, spark):
    gold_posts = {r.post_id: r for r in _q(spark, "SELECT post_id, score, length(selftext) AS n FROM gold.posts")}
    expected = set().union(*(c.silver_ids for c in CASES + GOOD if c.entity is Entity.POST))
    assert set(gold_posts) == expected
    assert gold_posts["du1"].score == 9  # the later row of the file wins
    assert gold_posts["mb1"].n == len(BIG.strip())
    engagement = {r.post_id: r.comments for r in _q(spark, "SELECT post_id, comments FROM gold.post_engagement")}
    # good1 has every valid comment of the comment cases; good2 the one good comment landed for it.
    assert engagement["good2"] == 1
    assert engagement["good1"] == sum(len(c.silver_ids) for c in CASES + GOOD if c.entity is Entity.COMMENT) - 1


def test_every_rejected_file_has_its_reason_in_the_bronze_metadata(landed):
    _, result, _ = landed
    for entity in Entity:
        [mat] = [e for e in result.get_asset_materialization_events()
                 if e.asset_key == dg.AssetKey(["bronze", entity.plural])]
        table = mat.materialization.metadata["files"].value
        for case in CASES:
            if case.entity is entity and case.status == "rejected":
                assert case.key in table and case.reason in table


def test_records_counted_by_hand_match(landed):
    """The fixture's own expectations agree with Python's CSV module, so a wrong row count above is real."""
    for case in CASES + GOOD:
        if case.status == "loaded" and case.name != "not_utf8":
            text = case.data.decode()
            assert sum(1 for r in csv.reader(io.StringIO(text, newline="")) if r) - 1 == case.rows, case.name


def test_the_real_export_with_its_odd_variants_in_one_batch(spark, settings, lakehouse, meirl, tmp_path):
    """The real SocialGrep comments export landed with variants of itself: other line endings, a byte order mark,
    a mixed-ending copy. The run is green, the mixed copy alone is refused, every real comment reaches Gold."""
    zone = lakehouse
    real = (meirl / "comments.csv").read_bytes()
    assert b"\r\n" in real and real.count(b"\r\n") < real.count(b"\n")  # CRLF rows, bare LF inside bodies
    crlf = b"\r\n"
    variants = {
        "real.csv": real,
        "as-lf.csv": real.replace(crlf, b"\n"),
        "with-bom.csv": b"\xef\xbb\xbf" + real,
        # A header saved with CRLF in front of LF rows: Spark would have read it as one record.
        "mixed.csv": real.split(crlf, 1)[0] + crlf + real.split(crlf, 1)[1].replace(crlf, b"\n"),
    }
    for name, data in variants.items():
        zone.path_for(f"input/comment/{name}").write_bytes(data)
    zone.land(meirl / "posts.csv", Entity.POST)
    from lakehouse_assets.definitions import defs

    result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    assert result.success
    log = {r.source_uri.rsplit("/", 1)[-1]: (r.status, r.reason, r.rows) for r in _q(
        spark, "SELECT source_uri, status, reason, rows FROM bronze.ingestion_log")}
    assert log == {"posts.csv": ("loaded", None, 1999), "real.csv": ("loaded", None, 858),
                   "as-lf.csv": ("loaded", None, 858), "with-bom.csv": ("loaded", None, 858),
                   "mixed.csv": ("rejected", "mixed_line_endings", 0)}
    # Three deliveries of the same comments: one row per comment, the same text whatever the line ending.
    assert _q(spark, "SELECT count(*) AS n, count(DISTINCT id) AS d FROM silver.comments")[0] == (858, 858)
    assert _q(spark, "SELECT sum(comments) AS c FROM gold.subreddit_daily")[0].c == 858
    assert _q(spark, "SELECT count(*) AS n FROM silver.comments_quarantine")[0].n == 0


def test_a_file_spark_reads_differently_is_taken_out_and_the_rest_goes_on(spark, settings, lakehouse, monkeypatch):
    """A file whose Bronze rows do not reconcile with its records leaves Bronze in the same run, logged with what
    differed; the other files of the batch load, and Bronze's whole-table gates pass."""
    from lakehouse import bronze_layer, silver_layer
    from lakehouse.transforms import bronze as bronze_tf
    from pyspark.sql import functions as F

    zone = lakehouse
    zone.path_for("input/post/good.csv").write_bytes(posts(post_row("g1"), post_row("g2")))
    zone.path_for("input/post/odd.csv").write_bytes(posts(post_row("o1"), post_row("o2"), post_row("o3")))
    real_read = bronze_tf.read_csv

    def spark_misreads_odd(*args, **kwargs):  # stands in for a parser disagreement not caught up front
        df = real_read(*args, **kwargs)
        return df.where(~(F.col("_file_path").endswith("odd.csv") & (F.trim("id") == "o2")))

    monkeypatch.setattr(bronze_tf, "read_csv", spark_misreads_odd)
    result = bronze_layer.ingest_bronze(spark, zone, Entity.POST)
    outcomes = {f.key: (f.status, f.reason, f.source_records) for f in result.files}
    assert outcomes == {"input/post/good.csv": ("loaded", None, 2),
                        "input/post/odd.csv": ("rejected", "record_count_mismatch", 3)}
    [odd] = [f for f in result.files if f.key.endswith("odd.csv")]
    assert "Spark read 2 rows but the independent CSV parser counts 3 records" in odd.message
    assert {r.id for r in _q(spark, "SELECT id FROM bronze.posts")} == {"g1", "g2"}
    assert bronze_layer.bronze_row_counts(spark, Entity.POST).passed
    assert bronze_layer.bronze_metadata(spark, Entity.POST).passed
    assert silver_layer.update_silver(spark, Entity.POST).inserted == 2


def test_a_file_replaced_while_spark_reads_it_is_taken_out_again(spark, settings, lakehouse, monkeypatch):
    """The race between Bronze's check/count and Spark's read: the rows of the other version do not stay."""
    from lakehouse import bronze_layer, silver_layer
    from lakehouse.transforms import bronze as bronze_tf

    zone = lakehouse
    kept = zone.path_for("input/post/kept.csv")
    kept.write_bytes(posts(post_row("k1")))
    racy = zone.path_for("input/post/racy.csv")
    racy.write_bytes(posts(post_row("r1"), post_row("r2")))
    real_read = bronze_tf.read_csv

    def read_after_a_replacement(*args, **kwargs):
        replacement = racy.with_name(".racy.csv.part")
        replacement.write_bytes(posts(post_row("r9")))
        replacement.replace(racy)  # an uploader replaces the file atomically, between the count and the read
        return real_read(*args, **kwargs)

    monkeypatch.setattr(bronze_tf, "read_csv", read_after_a_replacement)
    result = bronze_layer.ingest_bronze(spark, zone, Entity.POST)
    outcomes = {f.key: (f.status, f.reason) for f in result.files}
    assert outcomes == {"input/post/kept.csv": ("loaded", None),
                        "input/post/racy.csv": ("rejected", "changed_during_ingestion")}
    ids = {r.id for r in _q(spark, "SELECT id FROM bronze.posts")}
    assert ids == {"k1"}
    silver_layer.update_silver(spark, Entity.POST)  # the incremental read must not bring the taken-out rows back
    assert {r.id for r in _q(spark, "SELECT id FROM silver.posts")} == {"k1"}

    monkeypatch.setattr(bronze_tf, "read_csv", real_read)
    again = bronze_layer.ingest_bronze(spark, zone, Entity.POST)  # the new version is a new file version
    assert [(f.key, f.status, f.rows) for f in again.files] == [("input/post/racy.csv", "loaded", 1)]


# Names a person picks; Spark would read each as a pattern (`[...]`, `{a,b}`, `*`, `?`, `\`) or could not parse it
# (`:`), and SQL text would break on the quote.
AWKWARD_NAMES = ["comments [2022-03].csv", "it's comments.csv", "comments {a,b} *.csv", "comments, week 3.csv",
                 "50%20 off?.csv", "back\\slash.csv", "standup 10:00.csv", "émoji 😀.csv"]
# What Hadoop's paths cannot address at all: a ':' and a pattern character in one name.
UNREADABLE_NAME = "comments [10:00].csv"


def test_awkward_file_names_are_read_literally_and_reach_silver(spark, settings, lakehouse, meirl):
    """The real comments export split over files named as people name them: every file loads, every comment once;
    the one name Spark cannot address is rejected alone, with its reason."""
    from lakehouse import bronze_layer, silver_layer

    zone = lakehouse
    header, *records = _records((meirl / "comments.csv").read_bytes())
    share = -(-len(records) // len(AWKWARD_NAMES))
    for i, name in enumerate(AWKWARD_NAMES):
        zone.path_for(f"input/comment/{name}").write_bytes(header + b"".join(records[i * share:(i + 1) * share]))
    zone.path_for(f"input/comment/{UNREADABLE_NAME}").write_bytes(header + records[0])
    result = bronze_layer.ingest_bronze(spark, zone, Entity.COMMENT)
    outcomes = {f.key.rsplit("/", 1)[-1]: (f.status, f.reason, f.rows) for f in result.files}
    assert outcomes == {name: ("loaded", None, len(records[i * share:(i + 1) * share]))
                        for i, name in enumerate(AWKWARD_NAMES)} | {UNREADABLE_NAME: ("rejected", "unreadable_name", 0)}
    by_file = dict(_q(spark, "SELECT _source_uri, count(*) FROM bronze.comments GROUP BY 1"))
    assert by_file == {zone.path_for(f"input/comment/{name}").as_uri(): outcomes[name][2] for name in AWKWARD_NAMES}
    assert bronze_layer.bronze_row_counts(spark, Entity.COMMENT).passed
    assert bronze_layer.bronze_metadata(spark, Entity.COMMENT).passed
    silver_layer.update_silver(spark, Entity.COMMENT)
    assert _q(spark, "SELECT count(*) AS n, count(DISTINCT id) AS d FROM silver.comments")[0] == (858, 858)


def _records(data: bytes) -> list[bytes]:
    """A CSV file's header and records as bytes, each with its own line ending (quoted newlines stay inside)."""
    out, start, quoted = [], 0, False
    for i, byte in enumerate(data):
        if byte == ord('"'):
            quoted = not quoted
        elif byte == ord("\n") and not quoted:
            out.append(data[start:i + 1])
            start = i + 1
    return out + ([data[start:]] if data[start:] else [])


def test_a_rejected_file_with_a_quote_in_its_name_leaves_bronze(spark, settings, lakehouse, monkeypatch):
    """Taking a file's rows out of the batch again matches its name as a value, not as SQL text."""
    from lakehouse import bronze_layer
    from lakehouse.landing import LocalLandingZone
    from lakehouse.transforms import bronze as bronze_tf
    from pyspark.sql import functions as F

    class KeysAsS3Has(LocalLandingZone):  # S3 URIs keep the key's quote as is; a local file URI encodes it
        def _file(self, path, stat):
            return replace(super()._file(path, stat), uri="file://" + str(path))

    zone = KeysAsS3Has(lakehouse.root)
    zone.path_for("input/post/good.csv").write_bytes(posts(post_row("g1")))
    zone.path_for("input/post/it's odd.csv").write_bytes(posts(post_row("o1"), post_row("o2")))
    real_read = bronze_tf.read_csv

    def spark_misreads_odd(*args, **kwargs):  # a parser disagreement: the file must leave the batch
        return real_read(*args, **kwargs).where(~(F.col("_file_path").contains("odd") & (F.trim("id") == "o2")))

    monkeypatch.setattr(bronze_tf, "read_csv", spark_misreads_odd)
    result = bronze_layer.ingest_bronze(spark, zone, Entity.POST)
    assert {f.key: (f.status, f.reason) for f in result.files} == {
        "input/post/good.csv": ("loaded", None), "input/post/it's odd.csv": ("rejected", "record_count_mismatch")}
    assert {r.id for r in _q(spark, "SELECT id FROM bronze.posts")} == {"g1"}
    assert bronze_layer.bronze_row_counts(spark, Entity.POST).passed


def test_an_s3_key_spark_cannot_address_is_rejected_alone(spark, settings, lakehouse, moto_endpoint):
    """`input/post//a.csv` is a real S3 object (an event names it) that Hadoop's paths would fold into another key:
    it is rejected with a reason, not taken for a bad key that fails its batch."""
    import boto3

    from lakehouse import bronze_layer
    from lakehouse.events import files_in_event
    from lakehouse.landing import S3LandingZone

    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1",
                      aws_access_key_id="x", aws_secret_access_key="x")
    s3.create_bucket(Bucket="names")
    s3.put_object(Bucket="names", Key="input/post//a.csv", Body=posts(post_row("s1")))
    event = {"Records": [{"eventName": "ObjectCreated:Put", "eventTime": "2026-12-06T10:00:00.000Z",
                          "s3": {"bucket": {"name": "names"},
                                 "object": {"key": "input/post//a.csv", "size": 1, "eTag": "e"}}}]}
    [landed] = files_in_event(json.dumps(event), "names", "")
    result = bronze_layer.ingest_bronze(spark, S3LandingZone(s3, "names"), Entity.POST, keys=[landed.key])
    [outcome] = result.files
    assert (outcome.key, outcome.status, outcome.reason) == ("input/post//a.csv", "rejected", "unreadable_name")
    assert "'//'" in outcome.message
    [entry] = _q(spark, "SELECT source_uri, status, reason FROM bronze.ingestion_log")
    assert entry == ("s3://names/input/post//a.csv", "rejected", "unreadable_name")


def test_local_sql_reads_a_warehouse_whose_path_holds_quotes_and_patterns(tmp_path):
    """DuckDB is handed the data files as values: a warehouse under any folder name answers queries."""
    import pyarrow as pa
    from pyiceberg.catalog.sql import SqlCatalog

    from lakehouse.query import QueryEngine

    root = tmp_path / "it's [a] {b} *"
    root.mkdir()
    catalog = SqlCatalog("t", uri=f"sqlite:///{root}/catalog.db", warehouse=f"file://{root}")  # as Spark writes it
    catalog.create_namespace("gold")
    rows = pa.table({"subreddit": ["meirl", "it's"], "posts": [3, 1]})
    catalog.create_table("gold.counts", schema=rows.schema).append(rows)
    answer = QueryEngine(catalog, namespaces=("gold",)).sql("SELECT * FROM gold.counts ORDER BY posts").fetchall()
    assert answer == [("it's", 1), ("meirl", 3)]
