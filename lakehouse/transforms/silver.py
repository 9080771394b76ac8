"""Silver: typed, cleaned, renamed and deduplicated rows, plus the rows that cannot meet the contract.

Every function here is `DataFrame -> DataFrame` (no I/O), so it runs the same in local mode, on a cluster and
inside an AWS job.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Iterable

from pyspark.sql import Column as SparkColumn
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from lakehouse.contracts import QUARANTINE, SILVER, Entity

# Reddit went live on 2005-06-23; anything earlier is not a Reddit timestamp.
REDDIT_EPOCH = datetime(2005, 6, 23)
INTEGER = r"^-?[0-9]{1,10}$"
EPOCH_NUMBER = r"^[0-9]{1,20}(\.0*)?$"
# Beyond this many seconds Spark's microsecond timestamps overflow; such a value is out of range anyway.
MAX_EPOCH_SECONDS = 9_000_000_000_000
DECIMAL = r"^-?[0-9]+(\.[0-9]+)?([eE]-?[0-9]+)?$"
# The post id is the segment after /comments/ in a comment's permalink.
POST_ID_IN_PERMALINK = r"/comments/([A-Za-z0-9]+)(/|$)"

# Reddit escapes these in exported text; `&amp;#x200B;` is a double-escaped zero-width space Reddit uses
# as an empty paragraph.
_ENTITIES = (("&lt;", "<"), ("&gt;", ">"), ("&quot;", '"'), ("&#39;", "'"), ("&nbsp;", " "), ("&amp;", "&"))
_ZERO_WIDTH = "[\u200b\ufeff]|&#x200[bB];"


# Java's `\s` (Spark's regexes are Java's): what `^\s+|\s+$` strips at either end.
_JAVA_SPACE = " \t\n\u000b\f\r"
# Where a rewrite can start: a CR, an entity or `&#x200B;` (all start with `&`), a zero-width character, and the
# line terminators that are not white space, because `\s+$` also strips white space before a final one of these.
_REWRITE_STARTS = ("\r", "&", "\u200b", "\ufeff", "\u0085", "\u2028", "\u2029")


def _rewrites(raw: SparkColumn) -> SparkColumn:
    """Unescape Reddit's HTML entities, drop zero-width spaces, LF newlines, strip surrounding white space."""
    value = F.regexp_replace(raw, "\r\n?", "\n")
    for entity, char in _ENTITIES:  # `&amp;` last: `&amp;gt;` must become the literal text `&gt;`
        value = F.regexp_replace(value, entity, char)
    value = F.regexp_replace(value, _ZERO_WIDTH, "")
    return F.regexp_replace(value, r"^\s+|\s+$", "")


def _may_change(raw: SparkColumn) -> SparkColumn:
    """True for every value `_rewrites` would change (and for a few it leaves as they are).

    Byte searches and one trim of the ends: one regex search of the whole text took three times as long
    (measured over 674k comment bodies, issue 14), and most values need none of the rewrites.
    """
    found = F.btrim(raw, F.lit(_JAVA_SPACE)) != raw
    for start in _REWRITE_STARTS:
        found = found | raw.contains(start)
    return found


def _normalised(raw: SparkColumn) -> SparkColumn:
    """`_rewrites`, for the values it can change; every other value as it is, without copying it nine times."""
    return F.when(_may_change(raw), _rewrites(raw)).otherwise(raw)


def _status_of(raw: SparkColumn, value: SparkColumn) -> SparkColumn:
    return (
        F.when(raw.isNull() | (value == ""), "empty")
        .when(value == "[deleted]", "deleted")
        .when(value == "[removed]", "removed")
        .otherwise("present")
    )


def text_status(raw: SparkColumn) -> SparkColumn:
    """Why a text value is (or is not) null in Silver: present | empty | deleted | removed."""
    return _status_of(raw, _normalised(raw))


def clean_text(raw: SparkColumn) -> SparkColumn:
    """The normalised text when it is present; null when empty, `[deleted]` or `[removed]`."""
    value = _normalised(raw)
    return F.when(_status_of(raw, value) == "present", value)


def _text_columns(name: str) -> dict[str, SparkColumn]:
    """`name` cleaned and its status, from the normalised value `typed` computes once in a projection of its own."""
    raw, value = F.col(name), F.col(f"_text_{name}")
    return {name: F.when(_status_of(raw, value) == "present", value), f"{name}_status": _status_of(raw, value)}


def _blank(raw: SparkColumn) -> SparkColumn:
    return raw.isNull() | (F.trim(raw) == "")


def _rule(condition: SparkColumn, code: str) -> SparkColumn:
    return F.when(condition, F.lit(code))


def typed(
    bronze: DataFrame, entity: Entity, now: datetime, suspect_uris: Iterable[str] | None = None
) -> DataFrame:
    """Type and clean Bronze rows; `reasons` lists every broken rule (empty when the row is valid).

    `suspect_uris` are the files Bronze's scan found bytes that are not UTF-8 in: only their rows are searched
    for the U+FFFD Spark decoded those bytes to (None searches every row; a U+FFFD a valid file really holds
    is data, not an error).
    """
    now = now if now.tzinfo else now.replace(tzinfo=timezone.utc)
    lowest, highest = REDDIT_EPOCH.replace(tzinfo=timezone.utc).timestamp(), now.timestamp()

    def in_range(seconds: SparkColumn) -> SparkColumn:
        return F.coalesce((seconds >= lowest) & (seconds <= highest), F.lit(False))

    # Parse once, in a projection of its own: the rules and the columns below reference these several times.
    created_raw = F.trim(F.col("created_utc"))
    parsed = {
        "_seconds": F.when(created_raw.rlike(EPOCH_NUMBER), created_raw.cast("double")),
        "_score": F.when(F.trim(F.col("score")).rlike(INTEGER), F.trim(F.col("score")).cast("int")),
        "_nsfw": F.when(F.lower(F.trim(F.col("subreddit_nsfw"))) == "true", True)
        .when(F.lower(F.trim(F.col("subreddit_nsfw"))) == "false", False),
    }
    if entity is Entity.COMMENT:
        sentiment_raw = F.trim(F.col("sentiment"))
        parsed["_sentiment"] = F.when(sentiment_raw.rlike(DECIMAL), sentiment_raw.cast("double"))
        parsed["_post_id"] = F.regexp_extract(F.col("permalink"), POST_ID_IN_PERMALINK, 1)
    for text in ("title", "selftext") if entity is Entity.POST else ("body",):
        parsed[f"_text_{text}"] = _normalised(F.col(text))
    source_columns = [c for c in bronze.columns if not c.startswith("_")]
    replaced = F.lit(False)
    if suspect_uris is None or suspect_uris:
        for c in source_columns:
            replaced = replaced | F.coalesce(F.instr(F.col(c), "\ufffd") > 0, F.lit(False))
        if "_extra_columns" in bronze.columns:  # schema-drift columns are part of the record too
            in_extra = F.exists(F.map_values("_extra_columns"),
                                lambda v: F.coalesce(F.instr(v, "\ufffd") > 0, F.lit(False)))
            replaced = replaced | F.coalesce(in_extra, F.lit(False))
        if suspect_uris is not None:
            replaced = F.col("_source_uri").isin(sorted(suspect_uris)) & replaced
    bronze = bronze.select("*", *[expr.alias(name) for name, expr in parsed.items()])

    seconds, score, nsfw = F.col("_seconds"), F.col("_score"), F.col("_nsfw")
    created = F.when(seconds <= MAX_EPOCH_SECONDS, F.timestamp_seconds(seconds.cast("bigint")))
    # An export that wrote epoch milliseconds: flagged as such, never guessed into seconds.
    millis = ~in_range(seconds) & in_range(seconds / 1000)
    rules = [
        _rule(F.col("_raw_record").isNotNull(), "malformed_record"),
        # Spark decodes bytes that are not UTF-8 as U+FFFD; the landed file keeps the original bytes.
        _rule(replaced, "invalid_utf8"),
        _rule(_blank(F.col("id")), "missing_id"),
        _rule(_blank(F.col("subreddit_id")) | _blank(F.col("subreddit_name")), "missing_subreddit"),
        _rule(_blank(F.col("permalink")), "missing_permalink"),
        _rule(F.col("type").isNotNull() & (F.trim(F.col("type")) != entity.value), "wrong_type"),
        _rule(_blank(F.col("created_utc")), "missing_created_utc"),
        _rule(~_blank(F.col("created_utc")) & seconds.isNull(), "invalid_created_utc"),
        _rule(millis, "created_utc_in_milliseconds"),
        _rule(seconds.isNotNull() & ~in_range(seconds) & ~millis, "created_utc_out_of_range"),
        _rule(_blank(F.col("score")), "missing_score"),
        _rule(~_blank(F.col("score")) & score.isNull(), "invalid_score"),
        _rule(~_blank(F.col("subreddit_nsfw")) & nsfw.isNull(), "invalid_nsfw"),
    ]
    columns = {
        "id": F.trim(F.col("id")),
        "subreddit_id": F.trim(F.col("subreddit_id")),
        "subreddit_name": F.lower(F.trim(F.col("subreddit_name"))),
        "subreddit_nsfw": nsfw,
        "created_utc": created,
        "created_date": F.to_date(created),
        "permalink": F.trim(F.col("permalink")),
    }
    if entity is Entity.POST:
        columns |= {
            "domain": F.when(~_blank(F.col("domain")), F.trim(F.col("domain"))),
            "url": F.when(~_blank(F.col("url")), F.trim(F.col("url"))),
            **_text_columns("selftext"),
            **_text_columns("title"),
            "score": score,
        }
    else:
        sentiment, post_id = F.col("_sentiment"), F.col("_post_id")
        rules += [
            _rule(~_blank(F.col("sentiment")) & sentiment.isNull(), "invalid_sentiment"),
            _rule(sentiment.isNotNull() & ((sentiment < -1) | (sentiment > 1)), "sentiment_out_of_range"),
            _rule(post_id == "", "missing_post_id"),
        ]
        columns |= {
            "post_id": F.when(post_id != "", post_id),
            **_text_columns("body"),
            "sentiment": sentiment,
            "score": score,
        }
    lineage = ["_source_uri", "_source_etag", "_source_row", "_raw_record", "_extra_columns", "_ingested_at",
               "_batch_id"]
    # filter() is evaluated outside Spark's generated code, and the rules beneath it with it. A concatenation of
    # one-element arrays computes `reasons` alone twice as fast, but made the whole projection slower (measured over
    # 674k comment bodies, issue 14).
    reasons = F.filter(F.array(*rules), lambda r: r.isNotNull())
    return bronze.select(
        *[expr.alias(name) for name, expr in columns.items()],
        *lineage,
        reasons.alias("reasons"),
        # Keep the raw strings so a quarantined row is stored exactly as received.
        F.struct(*[F.col(c) for c in source_columns]).alias("_raw"),
    )


def valid_rows(typed_df: DataFrame) -> DataFrame:
    return typed_df.filter(F.size("reasons") == 0)


def quarantine_rows(typed_df: DataFrame, entity: Entity, quarantined_at: datetime) -> DataFrame:
    """Rows that broke a rule, exactly as received, with reason codes and lineage."""
    bad = typed_df.filter(F.size("reasons") > 0)
    out = bad.select(
        F.col("reasons")[0].alias("reason"),
        "reasons",
        "_raw.*",
        "_source_uri",
        "_source_etag",
        "_source_row",
        "_raw_record",
        "_extra_columns",
        "_batch_id",
        "_ingested_at",
        F.lit(quarantined_at).cast("timestamp").alias("quarantined_at"),
    )
    return out.select(*QUARANTINE[entity].names)


def latest_per_id(df: DataFrame) -> DataFrame:
    """One row per id: the latest ingestion wins; within a batch, the later file name, then the later row.

    SocialGrep exports are named by date, so within one batch the later file name is the later export.
    """
    order = Window.partitionBy("id").orderBy(
        F.col("_ingested_at").desc(), F.col("_source_uri").desc(), F.col("_source_row").desc()
    )
    return df.withColumn("_rank", F.row_number().over(order)).filter("_rank = 1").drop("_rank")


def row_hash(columns: list[str]) -> SparkColumn:
    """A stable hash of the business columns; nulls and empty strings hash differently."""
    parts = [F.coalesce(F.col(c).cast("string"), F.lit("\u0000")) for c in columns]
    return F.sha2(F.concat_ws("\u0001", *parts), 256)


def business_columns(entity: Entity) -> list[str]:
    return [c for c in SILVER[entity].names if not c.startswith("_")]


def to_silver(typed_df: DataFrame, entity: Entity, updated_at: datetime) -> DataFrame:
    """Valid rows, one per id, shaped as the Silver table."""
    business = business_columns(entity)
    latest = latest_per_id(valid_rows(typed_df))
    out = latest.select(
        *business,
        row_hash(business).alias("_row_hash"),
        "_source_uri",
        "_source_row",
        "_batch_id",
        "_ingested_at",
        F.lit(updated_at).cast("timestamp").alias("_updated_at"),
    )
    return out.select(*SILVER[entity].names)
