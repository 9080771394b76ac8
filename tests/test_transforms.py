"""Pure transform tests on small frames: each SocialGrep quirk, each quarantine rule, each Gold formula."""

from __future__ import annotations

import gzip
import io
from datetime import date, datetime, timezone

import pytest
from pyspark.sql import functions as F

from lakehouse.contracts import BRONZE, GOLD, QUARANTINE, SILVER, SOURCE_HEADERS, Entity
from lakehouse.transforms import bronze as bronze_tf
from lakehouse.transforms import gold as gold_tf
from lakehouse.transforms import silver as silver_tf

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
T0 = datetime(2022, 3, 31, tzinfo=timezone.utc)
POST_HEADER = ",".join(SOURCE_HEADERS[Entity.POST])
COMMENT_HEADER = ",".join(SOURCE_HEADERS[Entity.COMMENT])


def bronze_frame(spark, entity: Entity, rows: list[dict], ingested_at=T0, source="file:///f.csv"):
    """Bronze-shaped rows: every source column a string (missing ones null), with lineage columns."""
    names = BRONZE[entity].names
    full = []
    for i, row in enumerate(rows, start=1):
        base = {n: None for n in names}
        base.update({"_source_uri": source, "_source_etag": "e", "_source_row": i,
                     "_ingested_at": ingested_at, "_batch_id": "b1"})
        base.update(row)
        full.append(tuple(base[n] for n in names))
    schema = ", ".join(f"`{c.name}` {c.type}" for c in BRONZE[entity].columns)
    return spark.createDataFrame(full, schema)


def post(**overrides):
    row = {"type": "post", "id": "abc1", "subreddit_id": "2s5ti", "subreddit_name": "meirl",
           "subreddit_nsfw": "false", "created_utc": "1648771149",
           "permalink": "https://old.reddit.com/r/meirl/comments/abc1/me_irl/", "domain": "i.redd.it",
           "url": "https://i.redd.it/x.jpg", "selftext": None, "title": "me irl", "score": "93"}
    row.update(overrides)
    return row


def comment(**overrides):
    row = {"type": "comment", "id": "c1", "subreddit_id": "2s5ti", "subreddit_name": "meirl",
           "subreddit_nsfw": "false", "created_utc": "1648771186",
           "permalink": "https://old.reddit.com/r/MeIRL/comments/tswh3j/meirl/c1/", "body": "Yes",
           "sentiment": "0.4019", "score": "1"}
    row.update(overrides)
    return row


# --- header contract -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "head, entity, ok, reason",
    [
        ((POST_HEADER + "\r\npost,a\r\n").encode(), Entity.POST, True, None),
        (("\ufeff" + COMMENT_HEADER + "\n").encode(), Entity.COMMENT, True, None),  # BOM tolerated
        (b"", Entity.POST, False, "empty_file"),
        # mtime=0: the bytes are the test id, and xdist workers must collect the same ids
        (gzip.compress(POST_HEADER.encode(), mtime=0), Entity.POST, False, "not_csv"),
        (POST_HEADER.replace(",", ";").encode(), Entity.POST, False, "wrong_delimiter"),
        ((COMMENT_HEADER + "\r\n").encode(), Entity.POST, False, "wrong_entity"),  # a comment file as posts
        (b"\xff\xfe" + POST_HEADER.encode(), Entity.POST, False, "not_utf8"),
        (b"PK\x03\x04\x00\x00" + POST_HEADER.encode(), Entity.POST, False, "not_csv"),  # a zip archive
        (POST_HEADER.replace(",score", "").encode(), Entity.POST, False, "missing_columns"),
        (POST_HEADER.replace("score", "points").encode(), Entity.POST, False, "missing_columns"),
        ((POST_HEADER + ",title").encode(), Entity.POST, False, "duplicate_columns"),
        ((POST_HEADER + ",gilded").encode(), Entity.POST, True, None),  # schema drift: kept
        (",".join(reversed(POST_HEADER.split(","))).encode(), Entity.POST, True, None),  # matched by name
    ],
)
def test_check_header(head, entity, ok, reason):
    result = bronze_tf.check_header(head, entity)
    assert result.ok is ok
    assert result.reason == reason
    if not ok:
        assert result.message
    else:
        assert set(result.columns) - set(result.extra) == set(POST_HEADER.split(",") if entity is Entity.POST
                                                                else COMMENT_HEADER.split(","))


def test_check_header_reports_drift_columns():
    result = bronze_tf.check_header((POST_HEADER + ",gilded,\n").encode(), Entity.POST)
    assert result.ok and result.extra == ("gilded", "column_14")


# --- the independent record count -------------------------------------------------------------------------------


def row_text(i: int, body: str = "hello") -> str:
    return f'comment,c{i},2s,sub,false,1640000000,https://x/comments/p1/t/c{i}/,"{body}",0.5,3\n'


@pytest.mark.parametrize(
    "body, records, reason, truncated, invalid",
    [
        ((COMMENT_HEADER + "\n" + row_text(1) + row_text(2)).encode(), 2, None, False, 0),
        ((COMMENT_HEADER + "\n").encode(), 0, None, False, 0),
        ((COMMENT_HEADER + "\n" + row_text(1) + "\n\n" + row_text(2)).encode(), 2, None, False, 0),  # blank lines
        ((COMMENT_HEADER + "\n" + row_text(1, "two\nlines, \"\"quoted\"\"")).encode(), 1, None, False, 0),
        ((COMMENT_HEADER + "\n" + row_text(1, "x" * 1_500_000)).encode(), 1, None, False, 0),
        # A field up to the limit is a record; one character more is a quote that never closes (Spark's read stops).
        ((COMMENT_HEADER + "\n" + row_text(1) + row_text(2, "x" * bronze_tf.MAX_FIELD_CHARS)).encode(), 2, None, False, 0),
        ((COMMENT_HEADER + "\n" + row_text(1) + row_text(2, "x" * (bronze_tf.MAX_FIELD_CHARS + 1))).encode(), 1,
         "field_too_long", False, 0),
        ((COMMENT_HEADER + "\n" + row_text(1) + 'comment,c2,2s,sub,false,16400').encode(), 2, None, False, 0),
        ((COMMENT_HEADER + "\n" + row_text(1) + 'comment,c2,2s,sub,false,1,x,"cut in the mi').encode(), 2, None, True, 0),
        # A quote never closed: Spark would run the next records into this field without a word.
        ((COMMENT_HEADER + "\n" + row_text(1) + 'comment,c2,2s,sub,false,1,x,"open,0.5,3\n' + row_text(3)
          + row_text(4)).encode(), 1, "bad_quoting", False, 0),
        ((COMMENT_HEADER + "\n" + row_text(1) + 'comment,c2,2s,sub,false,1,x,"open,0.5,3\ncomment,c3\n').encode(),
         1, "unterminated_quote", False, 0),
        ((COMMENT_HEADER + "\n").encode() + row_text(1, "caf\xe9").encode("latin-1") + row_text(2).encode(),
         2, None, False, 1),
    ],
)
def test_scan_records(body, records, reason, truncated, invalid):
    scan = bronze_tf.scan_records(io.BytesIO(body))
    assert (scan.records, scan.reason, scan.truncated, scan.invalid_utf8_records) == (records, reason, truncated, invalid)
    if reason:
        assert "line 3" in scan.message


# --- Bronze CSV reading ----------------------------------------------------------------------------------------


def test_read_csv_keeps_quirks_and_numbers_rows(spark, tmp_path):
    # CRLF row ends, a bare LF and a CRLF inside quoted fields, doubled quotes, commas, emoji, empty fields.
    text = (
        COMMENT_HEADER + "\r\n"
        'comment,c1,2s5ti,meirl,false,1648771186,https://x/comments/p1/t/c1/,"line one\nline two, with ""quotes"" 😂",0.5,3\r\n'
        "comment,c2,2s5ti,meirl,false,1648771187,https://x/comments/p1/t/c2/,[deleted],,1\r\n"
        'comment,c3,2s5ti,meirl,false,1648771188,https://x/comments/p1/t/c3/,"first\r\nsecond",-0.25,-4\r\n'
    )
    path = tmp_path / "comments.csv"
    path.write_bytes(text.encode("utf-8"))
    raw = bronze_tf.read_csv(spark, [str(path)], Entity.COMMENT)
    files = spark.createDataFrame(
        [(bronze_tf.LOCAL_FILE_PREFIX.sub("file:///", path.as_uri()), path.as_uri(), "etag")],
        "_file_path string, uri string, etag string",
    )
    out = bronze_tf.to_bronze(raw, files, "batch", T0, Entity.COMMENT).orderBy("_source_row").collect()
    assert [r.id for r in out] == ["c1", "c2", "c3"]
    assert [r._source_row for r in out] == [1, 2, 3]
    assert out[0].body == 'line one\nline two, with "quotes" 😂'
    # Spark's CSV parser normalises a CRLF inside quotes to LF (documented in CONVENTIONS.md); the landed
    # file itself stays byte-for-byte as received.
    assert out[2].body == "first\nsecond"
    assert out[1].sentiment is None and out[1].body == "[deleted]"
    assert out[2].score == "-4"  # no trailing \r leaks into the last column
    assert all(r._source_uri == path.as_uri() and r._raw_record is None for r in out)
    assert list(out[0].asDict()) == BRONZE[Entity.COMMENT].names


def test_rows_are_numbered_per_file_by_their_place_in_a_read_task_of_their_own(spark, tmp_path):
    from lakehouse.bronze_layer import files_own_partitions

    # Small files: Spark would pack all three into one read task, numbering the second file's rows from 4 on.
    paths, expected = [], {}
    for f, n in (("a", 3), ("b", 5), ("c", 1)):
        lines = [f"comment,{f}{i},2s5ti,meirl,false,1648771186,https://x/comments/p1/t/{f}{i}/,"
                 f'"text\nof {f}{i}",0.5,{i}' for i in range(1, n + 1)]
        path = tmp_path / f"{f}.csv"
        path.write_bytes(("\r\n".join([COMMENT_HEADER, *lines]) + "\r\n").encode())
        paths.append(path)
        expected.update({f"{f}{i}": (path.as_uri(), i) for i in range(1, n + 1)})
    files = spark.createDataFrame(
        [(bronze_tf.LOCAL_FILE_PREFIX.sub("file:///", p.as_uri()), p.as_uri(), "etag") for p in paths],
        "_file_path string, uri string, etag string",
    )
    raw = bronze_tf.read_csv(spark, [str(p) for p in paths], Entity.COMMENT)
    own_setting = spark.conf.get("spark.sql.files.openCostInBytes")
    numbered = bronze_tf.to_bronze(raw, files, "batch", T0, Entity.COMMENT, files_own_partitions=True)
    with files_own_partitions(spark):
        assert numbered.rdd.getNumPartitions() == 3
        got = {r.id: (r._source_uri, r._source_row) for r in numbered.collect()}
    assert got == expected
    assert spark.conf.get("spark.sql.files.openCostInBytes") == own_setting  # the session's own setting is back
    # Outside it the files share a task, so only the window's numbering is right there.
    assert raw.rdd.getNumPartitions() < 3
    windowed = bronze_tf.to_bronze(raw, files, "batch", T0, Entity.COMMENT)
    assert {r.id: (r._source_uri, r._source_row) for r in windowed.collect()} == expected


def test_read_csv_matches_columns_by_name_and_keeps_drift(spark, tmp_path):
    header = ["gilded"] + list(reversed(COMMENT_HEADER.split(",")))
    values = ["2", "3", "0.5", "Yes", "https://x/comments/p1/t/c1/", "1648771186", "false", "meirl", "2s5ti", "c1",
              "comment"]
    path = tmp_path / "drift.csv"
    path.write_text(",".join(header) + "\n" + ",".join(values) + "\n")
    check = bronze_tf.check_header(path.read_bytes(), Entity.COMMENT)
    assert check.ok and check.extra == ("gilded",)
    row = bronze_tf.read_csv(spark, [str(path)], Entity.COMMENT, check.columns).first()
    assert (row.id, row.body, row.sentiment, row.score, row.subreddit_name) == ("c1", "Yes", "0.5", "3", "meirl")
    assert row._extra_columns == {"gilded": "2"} and row._raw_record is None


def test_read_csv_keeps_malformed_record(spark, tmp_path):
    path = tmp_path / "short.csv"
    path.write_bytes((COMMENT_HEADER + "\r\ncomment,c1,2s5ti\r\n").encode())
    row = bronze_tf.read_csv(spark, [str(path)], Entity.COMMENT).first()
    assert row.id == "c1" and row._raw_record == "comment,c1,2s5ti"


# --- Silver typing, cleaning, quarantine ----------------------------------------------------------------------


def test_text_cleaning_and_status(spark):
    cases = [
        (None, None, "empty"),
        ("   ", None, "empty"),
        ("[deleted]", None, "deleted"),
        ("[removed]", None, "removed"),
        ("Tom &amp; Jerry &gt; you", "Tom & Jerry > you", "present"),
        ("&amp;#x200B;\n\nreal text  ", "real text", "present"),
        ("\nleading newline", "leading newline", "present"),
        ("a\r\nb", "a\nb", "present"),
        ("&amp;gt; stays literal", "&gt; stays literal", "present"),
    ]
    df = spark.createDataFrame([(c[0],) for c in cases], "raw string")
    got = df.select(silver_tf.clean_text(F.col("raw")).alias("v"), silver_tf.text_status(F.col("raw")).alias("s"))
    assert [(r.v, r.s) for r in got.collect()] == [(c[1], c[2]) for c in cases]


def test_posts_typed_and_cleaned(spark):
    bronze = bronze_frame(spark, Entity.POST, [post(subreddit_nsfw="TRUE", selftext="", url="")])
    row = silver_tf.to_silver(silver_tf.typed(bronze, Entity.POST, NOW), Entity.POST, NOW).first()
    # 1648771149 is 2022-03-31 23:59:09 UTC (PySpark hands back naive datetimes in the session's UTC).
    assert row.created_utc.replace(tzinfo=None) == datetime(2022, 3, 31, 23, 59, 9)
    assert row.created_date == date(2022, 3, 31)
    assert row.subreddit_nsfw is True
    assert row.score == 93 and isinstance(row.score, int)
    assert row.selftext is None and row.selftext_status == "empty"
    assert row.url is None
    assert list(row.asDict()) == SILVER[Entity.POST].names


@pytest.mark.parametrize(
    "overrides, reason",
    [
        ({"id": ""}, "missing_id"),
        ({"id": None}, "missing_id"),
        ({"created_utc": ""}, "missing_created_utc"),
        ({"created_utc": "yesterday"}, "invalid_created_utc"),
        ({"created_utc": "1648771149000"}, "created_utc_in_milliseconds"),
        ({"created_utc": "100"}, "created_utc_out_of_range"),  # before Reddit existed
        ({"created_utc": "4102444800"}, "created_utc_out_of_range"),  # 2100: in the future
        ({"created_utc": "99999999999999999999"}, "created_utc_out_of_range"),  # past Spark's timestamps
        ({"title": "caf\ufffd"}, "invalid_utf8"),  # Spark's decoding of a byte that is not UTF-8
        ({"_extra_columns": {"gilded": "\ufffd"}}, "invalid_utf8"),  # in a schema-drift column too
        ({"score": "12abc"}, "invalid_score"),
        ({"score": "99999999999"}, "invalid_score"),  # overflows INT
        ({"score": None}, "missing_score"),
        ({"subreddit_nsfw": "maybe"}, "invalid_nsfw"),
        ({"type": "comment"}, "wrong_type"),
        ({"subreddit_id": " "}, "missing_subreddit"),
        ({"_raw_record": "post,abc1"}, "malformed_record"),
    ],
)
def test_post_quarantine_reasons(spark, overrides, reason):
    typed = silver_tf.typed(bronze_frame(spark, Entity.POST, [post(**overrides)]), Entity.POST, NOW)
    assert silver_tf.valid_rows(typed).count() == 0
    q = silver_tf.quarantine_rows(typed, Entity.POST, NOW).first()
    assert reason in q.reasons and q.reason == q.reasons[0]
    assert q._source_row == 1 and q._source_uri == "file:///f.csv"
    assert list(q.asDict()) == QUARANTINE[Entity.POST].names
    # The raw strings are kept exactly as received.
    for column in ("id", "created_utc", "score"):
        assert getattr(q, column) == post(**overrides)[column]


@pytest.mark.parametrize(
    "overrides, reason",
    [
        ({"sentiment": "positive"}, "invalid_sentiment"),
        ({"sentiment": "1.5"}, "sentiment_out_of_range"),
        ({"permalink": "https://old.reddit.com/r/meirl/"}, "missing_post_id"),
    ],
)
def test_comment_quarantine_reasons(spark, overrides, reason):
    typed = silver_tf.typed(bronze_frame(spark, Entity.COMMENT, [comment(**overrides)]), Entity.COMMENT, NOW)
    q = silver_tf.quarantine_rows(typed, Entity.COMMENT, NOW).collect()
    assert len(q) == 1 and reason in q[0].reasons


def test_a_comment_without_sentiment_is_a_comment(spark):
    """Real exports leave sentiment empty on deleted/removed and many short live comments: kept, sentiment null."""
    rows = [comment(id="c1", body="[deleted]", sentiment=""), comment(id="c2", body="ok", sentiment=" ")]
    typed = silver_tf.typed(bronze_frame(spark, Entity.COMMENT, rows), Entity.COMMENT, NOW)
    assert silver_tf.quarantine_rows(typed, Entity.COMMENT, NOW).count() == 0
    out = {r.id: r for r in silver_tf.to_silver(typed, Entity.COMMENT, NOW).collect()}
    assert (out["c1"].sentiment, out["c1"].body, out["c1"].body_status) == (None, None, "deleted")
    assert (out["c2"].sentiment, out["c2"].body) == (None, "ok")


def test_comment_post_id_sentiment_and_deleted_body(spark):
    bronze = bronze_frame(spark, Entity.COMMENT, [comment(body="[removed]", sentiment="-0.4767")])
    row = silver_tf.to_silver(silver_tf.typed(bronze, Entity.COMMENT, NOW), Entity.COMMENT, NOW).first()
    assert row.post_id == "tswh3j"
    assert row.sentiment == pytest.approx(-0.4767)
    assert row.body is None and row.body_status == "removed"
    assert row.subreddit_name == "meirl"


def test_latest_ingestion_wins_and_duplicates_collapse(spark):
    early = bronze_frame(spark, Entity.POST, [post(score="1"), post(id="zz", score="5")], ingested_at=T0)
    late = bronze_frame(
        spark, Entity.POST, [post(score="7")], ingested_at=datetime(2022, 4, 1, tzinfo=timezone.utc)
    )
    # Within one file, the later row wins too.
    same_file = bronze_frame(spark, Entity.POST, [post(id="yy", score="2"), post(id="yy", score="3")])
    typed = silver_tf.typed(early.unionByName(late).unionByName(same_file), Entity.POST, NOW)
    rows = {r.id: r for r in silver_tf.to_silver(typed, Entity.POST, NOW).collect()}
    assert set(rows) == {"abc1", "zz", "yy"}
    assert rows["abc1"].score == 7 and rows["yy"].score == 3


def test_row_hash_changes_only_with_business_columns(spark):
    a = bronze_frame(spark, Entity.POST, [post()], source="file:///a.csv")
    b = bronze_frame(spark, Entity.POST, [post()], source="file:///b.csv")
    c = bronze_frame(spark, Entity.POST, [post(score="94")])

    def hash_of(df):
        return silver_tf.to_silver(silver_tf.typed(df, Entity.POST, NOW), Entity.POST, NOW).first()._row_hash

    assert hash_of(a) == hash_of(b)
    assert hash_of(a) != hash_of(c)


# --- Gold -----------------------------------------------------------------------------------------------------


def test_tokenize(spark):
    df = spark.createDataFrame([("Me IRL, when it's 3am 😂 -- don't!",), (None,)], "t string")
    got = [r.tok for r in df.select(gold_tf.tokenize(F.col("t")).alias("tok")).collect()]
    assert got == [["me", "irl", "when", "it's", "3am", "don't"], []]


def _silver(spark, entity, rows):
    typed = silver_tf.typed(bronze_frame(spark, entity, rows), entity, NOW)
    return silver_tf.to_silver(typed, entity, NOW)


def test_gold_aggregates(spark):
    posts = _silver(spark, Entity.POST, [
        post(id="p1", score="10"),
        post(id="p2", score="-2", subreddit_nsfw="true"),
        post(id="p3", score="4", created_utc="1648684800"),  # 2022-03-31 00:00 UTC... same day
        post(id="p4", score="1", subreddit_id="other", subreddit_name="other"),
    ])
    comments = _silver(spark, Entity.COMMENT, [
        comment(id="c1", sentiment="0.5", score="3", permalink="https://x/comments/p1/t/c1/"),
        comment(id="c2", sentiment="-0.3", score="1", permalink="https://x/comments/p1/t/c2/"),
        comment(id="c3", sentiment="0.0", score="2", permalink="https://x/comments/p2/t/c3/"),
        # No sentiment score: counted as a comment, left out of every sentiment figure.
        comment(id="c4", sentiment="", score="6", body="[removed]", permalink="https://x/comments/p1/t/c4/"),
    ])
    daily = {(r.subreddit_id, r.activity_date): r
             for r in gold_tf.subreddit_daily(posts, comments, NOW).collect()}
    meirl = daily[("2s5ti", date(2022, 3, 31))]
    assert (meirl.posts, meirl.comments, meirl.scored_comments) == (3, 4, 3)
    assert float(meirl.mean_sentiment) == pytest.approx(0.0667, abs=1e-4)
    assert float(meirl.min_sentiment) == -0.3 and float(meirl.max_sentiment) == 0.5
    assert float(meirl.mean_score) == pytest.approx((10 - 2 + 4 + 3 + 1 + 2 + 6) / 7, abs=0.005)
    assert float(meirl.nsfw_share) == pytest.approx(1 / 7, abs=1e-4)
    other = daily[("other", date(2022, 3, 31))]
    assert other.comments == 0 and other.mean_sentiment is None

    engagement = {r.post_id: r for r in gold_tf.post_engagement(posts, comments, NOW).collect()}
    assert (engagement["p1"].comments, engagement["p1"].scored_comments) == (3, 2)
    assert float(engagement["p1"].mean_comment_sentiment) == pytest.approx(0.1)
    assert float(engagement["p1"].positive_share) == 0.5 and float(engagement["p1"].negative_share) == 0.5
    assert engagement["p2"].comments == 1 and float(engagement["p2"].positive_share) == 0.0
    assert engagement["p3"].comments == 0 and engagement["p3"].mean_comment_sentiment is None
    assert engagement["p1"].post_score == 10


def test_gold_frames_match_contract_types(spark):
    posts = _silver(spark, Entity.POST, [post()])
    comments = _silver(spark, Entity.COMMENT, [comment(permalink="https://x/comments/abc1/t/c1/")])
    frames = {
        "posts": gold_tf.posts(posts, NOW),
        "comments": gold_tf.comments(comments, NOW),
        "subreddit_daily": gold_tf.subreddit_daily(posts, comments, NOW),
        "post_engagement": gold_tf.post_engagement(posts, comments, NOW),
    }
    for key, df in frames.items():
        expected = [(c.name, c.type.lower().replace(" ", "")) for c in GOLD[key].columns]
        got = [(f.name, f.dataType.simpleString().replace("int", "int")) for f in df.schema.fields]
        assert [n for n, _ in got] == [n for n, _ in expected], key
        for (name, want), (_, have) in zip(expected, got):
            assert have == want, f"{key}.{name}: {have} != {want}"
    assert frames["comments"].first().sentiment.as_tuple().exponent == -4  # exact DECIMAL(5,4)


def test_text_is_rewritten_whenever_a_rewrite_would_change_it(spark):
    """The guard that spares most values the nine rewrites never spares one they would change."""
    values = [
        None, "", "plain text", " leading", "trailing ", "\tx", "x\t", "x\u000b", "\fx", "x\n", "\nx", "a\r\nb",
        "a\rb", "x\r", "x \u2028", "x\t\u0085", "x \u2029", "x\u2028", "&amp;", "&nbsp;x", "x&nbsp;", "a\u200b",
        "\ufeffa", "&#x200B; x", "x &#x200b;", "a\u200b ", "x \u00a0", "x\u3000", "&lt;b&gt;", "no & entity",
    ]
    df = spark.createDataFrame([(v,) for v in values], "raw string")
    rows = df.select("raw", silver_tf._normalised(F.col("raw")).alias("guarded"),
                     silver_tf._rewrites(F.col("raw")).alias("always")).collect()
    assert [(r.raw, r.guarded) for r in rows] == [(r.raw, r.always) for r in rows]
    assert sum(r.always != r.raw for r in rows if r.raw is not None) >= 20  # the cases do exercise the rewrites


def test_tokens_are_the_words_between_separators_with_apostrophes_trimmed_off(spark):
    """Tokens as the definition reads: split at runs of what is not a letter, digit or apostrophe, trim the
    apostrophes off each piece, drop the empty ones."""
    texts = ["'quoted' words", "rock'n'roll ''twice''", "l''amour", "'''", "x'", "'x", "a'b'c d''e",
             "Ünïcödé Straße 42nd", "日本語 テキスト", "tabs\tand\nnewlines", "emoji😂inside", "", "  ", "it’s curly",
             "--- 3.14 ---", "don't'", "'n'", "ÀB'ÇD", None]
    df = spark.createDataFrame([(t,) for t in texts], "t string")
    pieces = F.split(F.lower(F.coalesce("t", F.lit(""))), r"[^\p{L}\p{N}']+")
    reference = F.filter(F.transform(pieces, lambda w: F.regexp_replace(w, r"^'+|'+$", "")), lambda w: w != "")
    rows = df.select(gold_tf.tokenize(F.col("t")).alias("got"), reference.alias("want")).collect()
    assert [r.got for r in rows] == [r.want for r in rows]
    assert sum(len(r.want) for r in rows) >= 25
