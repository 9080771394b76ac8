"""Data contracts: the source CSV headers and every table's schema, documented column by column.

Schemas are declared once here as (name, Spark SQL type, nullable, doc) tuples; the DDL, the Gold contract
documentation and the schema checks are all generated from them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Entity(str, Enum):
    POST = "post"
    COMMENT = "comment"

    @property
    def plural(self) -> str:
        return f"{self.value}s"


# SocialGrep export headers, in file order (../shared/DATA.md).
SOURCE_HEADERS: dict[Entity, tuple[str, ...]] = {
    Entity.POST: (
        "type", "id", "subreddit.id", "subreddit.name", "subreddit.nsfw", "created_utc",
        "permalink", "domain", "url", "selftext", "title", "score",
    ),
    Entity.COMMENT: (
        "type", "id", "subreddit.id", "subreddit.name", "subreddit.nsfw", "created_utc",
        "permalink", "body", "sentiment", "score",
    ),
}


def bronze_column_name(source_name: str) -> str:
    """Iceberg resolves dots as nesting, so `subreddit.name` is stored as `subreddit_name` (doc keeps the original)."""
    return source_name.replace(".", "_")


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # Spark SQL type
    nullable: bool
    doc: str

    def ddl(self) -> str:
        null = "" if self.nullable else " NOT NULL"
        doc = self.doc.replace("'", "\\'")
        return f"`{self.name}` {self.type}{null} COMMENT '{doc}'"


@dataclass(frozen=True)
class TableContract:
    """Schema, partitioning and purpose of one Iceberg table."""

    identifier: str  # namespace.table
    columns: tuple[Column, ...]
    partitioned_by: tuple[str, ...] = ()
    comment: str = ""

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def create_ddl(self, properties: dict[str, str]) -> str:
        cols = ",\n  ".join(c.ddl() for c in self.columns)
        part = f"\nPARTITIONED BY ({', '.join(self.partitioned_by)})" if self.partitioned_by else ""
        props = ", ".join(f"'{k}'='{v}'" for k, v in sorted(properties.items()))
        comment = self.comment.replace("'", "\\'")
        return (
            f"CREATE TABLE IF NOT EXISTS {self.identifier} (\n  {cols}\n) USING iceberg{part}\n"
            f"COMMENT '{comment}'\nTBLPROPERTIES ({props})"
        )

    def markdown(self) -> str:
        rows = [f"| `{c.name}` | `{c.type}` | {'yes' if c.nullable else 'no'} | {c.doc} |" for c in self.columns]
        head = "| column | type | nullable | meaning |\n|---|---|---|---|"
        return "\n".join([head, *rows])


# --- Bronze: raw rows as strings plus ingestion metadata ------------------------------------------------------

INGESTION_COLUMNS = (
    Column("_source_uri", "STRING", False, "URI of the landed file the row came from"),
    Column("_source_etag", "STRING", False, "content hash (S3 ETag or MD5) of that file version"),
    Column("_source_row", "BIGINT", False, "1-based record number in the file, header excluded"),
    Column("_raw_record", "STRING", True, "the raw CSV record when it did not parse into the header's columns"),
    Column(
        "_extra_columns", "MAP<STRING,STRING>", True,
        "source columns the contract does not know (schema drift), by header name; null when none",
    ),
    Column("_ingested_at", "TIMESTAMP", False,
           "when the file version was first loaded into Bronze (UTC): its batch's time, or for a version reprocessed "
           "after a retraction its first batch's (its place in Silver's version order)"),
    Column("_batch_id", "STRING", False, "ingestion batch id; one batch may hold many files"),
)


def _bronze(entity: Entity) -> TableContract:
    cols = tuple(
        Column(bronze_column_name(h), "STRING", True, f"source column `{h}`, as received")
        for h in SOURCE_HEADERS[entity]
    )
    return TableContract(
        identifier=f"bronze.{entity.plural}",
        columns=cols + INGESTION_COLUMNS,
        partitioned_by=("days(_ingested_at)",),
        comment=f"Raw SocialGrep {entity.value} rows as received (all strings), append-only",
    )


BRONZE = {e: _bronze(e) for e in Entity}

INGESTION_LOG = TableContract(
    identifier="bronze.ingestion_log",
    columns=(
        Column("entity", "STRING", False, "post or comment"),
        Column("source_uri", "STRING", False, "URI of the landed file"),
        Column("source_etag", "STRING", False, "content hash of the file version"),
        Column("source_size", "BIGINT", False, "bytes"),
        Column("source_modified_at", "TIMESTAMP", True, "modification time reported by the store"),
        Column("batch_id", "STRING", False, "ingestion batch id (matches bronze._batch_id)"),
        Column("status", "STRING", False, "loaded | rejected | rolled_back | retracted (the latest row of a batch "
               "and file version is what holds now)"),
        Column("rows", "BIGINT", False, "records written to Bronze from this file"),
        Column("malformed_rows", "BIGINT", False, "records that did not parse into the header's columns"),
        Column("message", "STRING", True, "why a file was rejected, or what was unusual about it"),
        Column("ingested_at", "TIMESTAMP", False, "when the file was recorded (UTC)"),
        Column("reason", "STRING", True, "reason code when rejected (empty_file, not_csv, missing_columns, ...)"),
        Column("source_records", "BIGINT", True, "records counted in the file by an independent CSV parser"),
        Column("invalid_utf8_records", "BIGINT", True, "records holding bytes that are not UTF-8"),
        Column("extra_columns", "ARRAY<STRING>", True, "header columns the contract does not know (schema drift)"),
        Column("actor", "STRING", True, "who recorded the row: the writing run (run:<id>, proc:<host>:<pid>) or the "
               "operator who retracted the file"),
    ),
    comment="One row per landed file version: the lakehouse's own record of what was ingested",
)

OPERATOR_LOG = TableContract(
    identifier="ops.operator_log",
    columns=(
        Column("at", "TIMESTAMP", False, "when the action was taken (UTC)"),
        Column("actor", "STRING", False, "who took it (--by, or the operating-system user)"),
        Column("action", "STRING", False, "retract | reprocess | accept | revoke | refresh"),
        Column("target", "STRING", False, "what it acted on: a file version, a batch, an asset check, tables"),
        Column("reason", "STRING", True, "why, in the operator's words"),
        Column("details", "STRING", True, "what changed, as JSON (rows taken out, restored, positions)"),
        Column("run_id", "STRING", True, "the Dagster run that carried it out"),
    ),
    comment="Every operator action: retractions, reprocessing, accepted checks, full refreshes (append-only)",
)

# --- Silver: typed, cleaned, one row per id -----------------------------------------------------------------

_COMMON_SILVER = (
    Column("id", "STRING", False, "Reddit base-36 id (primary key)"),
    Column("subreddit_id", "STRING", False, "subreddit base-36 id"),
    Column("subreddit_name", "STRING", False, "subreddit name, lowercase"),
    Column("subreddit_nsfw", "BOOLEAN", True, "subreddit marked NSFW; null when the export left it empty"),
    Column("created_utc", "TIMESTAMP", False, "creation time (UTC)"),
    Column("created_date", "DATE", False, "creation date (UTC); partition column"),
    Column("permalink", "STRING", False, "Reddit permalink"),
)
_LINEAGE = (
    Column("_row_hash", "STRING", False, "hash of the business columns; unchanged rows are not rewritten"),
    Column("_source_uri", "STRING", False, "file the current version came from"),
    Column("_source_row", "BIGINT", False, "record number in that file"),
    Column("_batch_id", "STRING", False, "Bronze batch of the current version"),
    Column("_ingested_at", "TIMESTAMP", False, "Bronze ingestion time of the current version"),
    Column("_updated_at", "TIMESTAMP", False, "when Silver last inserted or changed the row"),
)
TEXT_STATUS_DOC = "present | empty | deleted | removed: why the text column is null"
# Real exports leave sentiment empty on about a quarter of comments (every deleted/removed one and many short live
# ones). They are real comments: kept with a null sentiment and counted (the original design dropped them).
SENTIMENT_DOC = ("sentiment score in [-1, 1]; null when the export has none (deleted or removed comments, "
                 "many short live ones)")

SILVER = {
    Entity.POST: TableContract(
        identifier="silver.posts",
        columns=_COMMON_SILVER
        + (
            Column("domain", "STRING", True, "link domain (self.<sub> for text posts)"),
            Column("url", "STRING", True, "link URL; null when empty"),
            Column("selftext", "STRING", True, "post body; null when empty, [deleted] or [removed]"),
            Column("selftext_status", "STRING", False, TEXT_STATUS_DOC),
            Column("title", "STRING", True, "post title; null when empty, [deleted] or [removed]"),
            Column("title_status", "STRING", False, TEXT_STATUS_DOC),
            Column("score", "INT", False, "score at export time"),
        )
        + _LINEAGE,
        partitioned_by=("created_date",),
        comment="Reddit posts, typed and cleaned, one row per id (latest ingestion wins)",
    ),
    Entity.COMMENT: TableContract(
        identifier="silver.comments",
        columns=_COMMON_SILVER
        + (
            Column("post_id", "STRING", False, "id of the post, parsed from the permalink"),
            Column("body", "STRING", True, "comment body; null when empty, [deleted] or [removed]"),
            Column("body_status", "STRING", False, TEXT_STATUS_DOC),
            Column("sentiment", "DOUBLE", True, SENTIMENT_DOC),
            Column("score", "INT", False, "score at export time"),
        )
        + _LINEAGE,
        partitioned_by=("created_date",),
        comment="Reddit comments, typed and cleaned, one row per id (latest ingestion wins)",
    ),
}


def _quarantine(entity: Entity) -> TableContract:
    raw = tuple(c for c in BRONZE[entity].columns if c.name not in {"_ingested_at", "_batch_id"})
    return TableContract(
        identifier=f"silver.{entity.plural}_quarantine",
        columns=(
            Column("reason", "STRING", False, "first failed rule (reason code)"),
            Column("reasons", "ARRAY<STRING>", False, "every failed rule"),
        )
        + raw
        + (
            Column("_batch_id", "STRING", False, "Bronze batch the row came from"),
            Column("_ingested_at", "TIMESTAMP", False, "Bronze ingestion time"),
            Column("quarantined_at", "TIMESTAMP", False, "when Silver quarantined the row"),
        ),
        comment=f"Bronze {entity.value} rows that cannot meet the Silver contract, with the reason",
    )


QUARANTINE = {e: _quarantine(e) for e in Entity}

# --- Gold: the warehouse --------------------------------------------------------------------------------------

SENTIMENT = "DECIMAL(5,4)"  # SocialGrep sentiment has 4 decimals in [-1, 1]: exact, no float drift
SHARE = "DECIMAL(5,4)"
# Columns every Gold item (post or comment) carries, after its ids.
_GOLD_ITEM = (
    Column("subreddit_id", "STRING", False, "subreddit id"),
    Column("subreddit_name", "STRING", False, "subreddit name, lowercase"),
    Column("is_nsfw", "BOOLEAN", False, "subreddit marked NSFW (unknown counts as false)"),
    Column("created_at", "TIMESTAMP", False, "creation time, UTC"),
    Column("created_date", "DATE", False, "creation date, UTC; partition column"),
    Column("permalink", "STRING", False, "Reddit permalink"),
)

GOLD_POSTS = TableContract(
    identifier="gold.posts",
    columns=(
        Column("post_id", "STRING", False, "Reddit post id (primary key)"),
    )
    + _GOLD_ITEM
    + (
        Column("domain", "STRING", True, "link domain"),
        Column("url", "STRING", True, "link URL"),
        Column("title", "STRING", True, "title; null when deleted or removed"),
        Column("title_tokens", "ARRAY<STRING>", False, "lowercase word tokens of the title"),
        Column("selftext", "STRING", True, "body text; null for link posts, deleted or removed"),
        Column("selftext_status", "STRING", False, TEXT_STATUS_DOC),
        Column("score", "INT", False, "score at the latest export"),
        Column("loaded_at", "TIMESTAMP", False, "when Gold last wrote the row"),
    ),
    partitioned_by=("created_date",),
    comment="Gold: one row per Reddit post",
)

GOLD_COMMENTS = TableContract(
    identifier="gold.comments",
    columns=(
        Column("comment_id", "STRING", False, "Reddit comment id (primary key)"),
        Column("post_id", "STRING", False, "id of the commented post"),
    )
    + _GOLD_ITEM
    + (
        Column("body", "STRING", True, "comment text; null when empty, deleted or removed"),
        Column("body_status", "STRING", False, TEXT_STATUS_DOC),
        Column("body_tokens", "ARRAY<STRING>", False, "lowercase word tokens of the body"),
        Column("sentiment", SENTIMENT, True, SENTIMENT_DOC),
        Column("score", "INT", False, "score at the latest export"),
        Column("loaded_at", "TIMESTAMP", False, "when Gold last wrote the row"),
    ),
    partitioned_by=("created_date",),
    comment="Gold: one row per Reddit comment",
)

GOLD_SUBREDDIT_DAILY = TableContract(
    identifier="gold.subreddit_daily",
    columns=(
        Column("subreddit_id", "STRING", False, "subreddit id (key)"),
        Column("subreddit_name", "STRING", False, "subreddit name"),
        Column("activity_date", "DATE", False, "UTC day (key)"),
        Column("posts", "BIGINT", False, "posts created that day"),
        Column("comments", "BIGINT", False, "comments created that day, with or without a sentiment score"),
        Column("scored_comments", "BIGINT", True, "comments created that day that have a sentiment score"),
        Column("mean_sentiment", SENTIMENT, True,
               "mean sentiment of that day's comments that have a score; null when none has one"),
        Column("min_sentiment", SENTIMENT, True, "lowest sentiment among the comments that have a score"),
        Column("max_sentiment", SENTIMENT, True, "highest sentiment among the comments that have a score"),
        Column("mean_score", "DECIMAL(12,2)", False, "mean score over that day's posts and comments"),
        Column("nsfw_share", SHARE, False, "share of that day's posts and comments in NSFW subreddits"),
        Column("loaded_at", "TIMESTAMP", False, "when Gold last wrote the row"),
    ),
    comment="Gold: activity per subreddit and UTC day",
)

GOLD_POST_ENGAGEMENT = TableContract(
    identifier="gold.post_engagement",
    columns=(
        Column("post_id", "STRING", False, "Reddit post id (key)"),
        Column("subreddit_id", "STRING", False, "subreddit id"),
        Column("subreddit_name", "STRING", False, "subreddit name"),
        Column("created_date", "DATE", False, "post creation date, UTC"),
        Column("post_score", "INT", False, "post score at the latest export"),
        Column("comments", "BIGINT", False, "comments on the post in Silver, with or without a sentiment score"),
        Column("scored_comments", "BIGINT", True, "comments on the post that have a sentiment score"),
        Column("mean_comment_sentiment", SENTIMENT, True,
               "mean sentiment of the post's comments that have a score; null when none has one"),
        Column("positive_share", SHARE, True, "share of the scored comments with sentiment >= 0.05"),
        Column("negative_share", SHARE, True, "share of the scored comments with sentiment <= -0.05"),
        Column("loaded_at", "TIMESTAMP", False, "when Gold last wrote the row"),
    ),
    comment="Gold: engagement per post (posts known to Silver)",
)

# Not a warehouse table: the exact sums `gold.subreddit_daily` is combined from, kept per source entity, so a
# posts-only batch recomputes the posts' part of the days it touches and reads the comments' part from here instead
# of re-scanning those days' comments (means, shares and min/max cannot be taken apart from the daily row).
GOLD_SUBREDDIT_DAILY_PARTS = TableContract(
    identifier="gold.subreddit_daily_parts",
    columns=(
        Column("subreddit_id", "STRING", False, "subreddit id (key)"),
        Column("activity_date", "DATE", False, "UTC day (key)"),
        Column("source", "STRING", False, "`post` or `comment`: which Silver table the part sums (key)"),
        Column("subreddit_name", "STRING", False, "greatest subreddit name among the part's rows"),
        Column("items", "BIGINT", False, "rows of that source that day"),
        Column("score_sum", "BIGINT", True, "sum of their scores"),
        Column("nsfw_items", "BIGINT", False, "rows among them in NSFW subreddits"),
        Column("scored", "BIGINT", False, "rows with a sentiment score (comments)"),
        Column("sentiment_sum", "DECIMAL(20,4)", True, "exact sum of those sentiment scores"),
        Column("min_sentiment", SENTIMENT, True, "lowest of those sentiment scores"),
        Column("max_sentiment", SENTIMENT, True, "highest of those sentiment scores"),
        Column("loaded_at", "TIMESTAMP", False, "when Gold last wrote the row"),
    ),
    comment="Gold bookkeeping: the exact per-source sums gold.subreddit_daily is combined from",
)

GOLD = {
    "posts": GOLD_POSTS,
    "comments": GOLD_COMMENTS,
    "subreddit_daily": GOLD_SUBREDDIT_DAILY,
    "post_engagement": GOLD_POST_ENGAGEMENT,
}

ALL_TABLES: tuple[TableContract, ...] = (
    *BRONZE.values(),
    INGESTION_LOG,
    OPERATOR_LOG,
    *SILVER.values(),
    *QUARANTINE.values(),
    *GOLD.values(),
    GOLD_SUBREDDIT_DAILY_PARTS,
)


def contracts_markdown() -> str:
    """docs/tables.md: every table's contract, column by column (kept current by a test)."""
    parts = ["# Table contracts\n\nGenerated by `lakehouse contracts` from `lakehouse/contracts.py`; do not edit.\n"]
    for contract in ALL_TABLES:
        part = f" (partitioned by {', '.join(contract.partitioned_by)})" if contract.partitioned_by else ""
        parts.append(f"## `{contract.identifier}`{part}\n\n{contract.comment}.\n\n{contract.markdown()}\n")
    return "\n".join(parts)
