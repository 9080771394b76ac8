"""Gold: the warehouse. Business-standard schemas with exact types, built from Silver frames.

Pure `DataFrame -> DataFrame` functions; which Silver rows they are given (everything, or only the keys a
batch touched) is the caller's choice.
"""

from __future__ import annotations

from datetime import datetime

from pyspark.sql import Column as SparkColumn
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from lakehouse.contracts import GOLD, GOLD_SUBREDDIT_DAILY_PARTS, SENTIMENT, Entity, TableContract

# VADER's conventional thresholds for a positive / negative compound score.
POSITIVE = 0.05
NEGATIVE = -0.05
# A word: letters and digits, with apostrophes inside it (don't, it's) but not around it; everything else
# separates words.
_WORD = r"[\p{L}\p{N}]+(?:'+[\p{L}\p{N}]+)*"


def tokenize(text: SparkColumn) -> SparkColumn:
    """Lowercase word tokens; an empty array for null text."""
    # One regex pass in generated code. Splitting, then trimming the apostrophes off each piece and dropping the
    # empty ones with higher-order functions (a regex per piece, outside generated code), took longer (issue 14).
    return F.regexp_extract_all(F.lower(F.coalesce(text, F.lit(""))), F.lit(_WORD), 0)


def _exact_sentiment(col: str = "sentiment") -> SparkColumn:
    """Silver's double sentiment as the exact 4-decimal value the source wrote."""
    return F.round(F.col(col), 4).cast(SENTIMENT)


def _exact_ratio(total: SparkColumn, count: SparkColumn, places: int) -> SparkColumn:
    """total / count rounded half-up to `places`, in decimal arithmetic (a mean of doubles can land just
    below a half and round the wrong way); null when count is 0."""
    ratio = total.cast("decimal(24,4)") / count.cast("decimal(20,0)")
    return F.when(count > 0, F.round(ratio, places))


def _loaded(loaded_at: datetime) -> SparkColumn:
    return F.lit(loaded_at).cast("timestamp").alias("loaded_at")


def _conform(df: DataFrame, contract: TableContract) -> DataFrame:
    """Cast every column to the contract's exact type, in the contract's order."""
    return df.select(*[F.col(c.name).cast(c.type).alias(c.name) for c in contract.columns])


def _item_columns() -> list[SparkColumn]:
    """The columns every Gold post or comment carries after its ids (contracts._GOLD_ITEM)."""
    return [
        F.col("subreddit_id"),
        F.col("subreddit_name"),
        F.coalesce("subreddit_nsfw", F.lit(False)).alias("is_nsfw"),
        F.col("created_utc").alias("created_at"),
        F.col("created_date"),
        F.col("permalink"),
    ]


def posts(silver_posts: DataFrame, loaded_at: datetime) -> DataFrame:
    out = silver_posts.select(
        F.col("id").alias("post_id"),
        *_item_columns(),
        "domain",
        "url",
        "title",
        tokenize(F.col("title")).alias("title_tokens"),
        "selftext",
        "selftext_status",
        "score",
        _loaded(loaded_at),
    )
    return _conform(out, GOLD["posts"])


def comments(silver_comments: DataFrame, loaded_at: datetime) -> DataFrame:
    out = silver_comments.select(
        F.col("id").alias("comment_id"),
        "post_id",
        *_item_columns(),
        "body",
        "body_status",
        tokenize(F.col("body")).alias("body_tokens"),
        _exact_sentiment().alias("sentiment"),
        "score",
        _loaded(loaded_at),
    )
    return _conform(out, GOLD["comments"])


def daily_parts(silver: DataFrame, entity: Entity, loaded_at: datetime) -> DataFrame:
    """Per subreddit and UTC day, the exact sums of one Silver table's rows that `subreddit_daily` is combined
    from (gold.subreddit_daily_parts)."""
    sentiment = _exact_sentiment() if entity is Entity.COMMENT else F.lit(None).cast(SENTIMENT)
    nsfw = F.coalesce("subreddit_nsfw", F.lit(False)).cast("int")
    out = silver.groupBy("subreddit_id", F.col("created_date").alias("activity_date")).agg(
        F.max("subreddit_name").alias("subreddit_name"),
        F.count("*").alias("items"),
        F.sum("score").alias("score_sum"),
        F.sum(nsfw).alias("nsfw_items"),
        F.count(sentiment).alias("scored"),
        F.sum(sentiment).alias("sentiment_sum"),
        F.min(sentiment).alias("min_sentiment"),
        F.max(sentiment).alias("max_sentiment"),
    )
    out = out.select("*", F.lit(entity.value).alias("source"), _loaded(loaded_at))
    return _conform(out, GOLD_SUBREDDIT_DAILY_PARTS)


def subreddit_daily_from_parts(parts: DataFrame, loaded_at: datetime) -> DataFrame:
    """`subreddit_daily` for every subreddit-day `parts` holds (each day's parts: its posts', its comments')."""
    posts = F.col("source") == Entity.POST.value
    out = parts.groupBy("subreddit_id", "activity_date").agg(
        F.max("subreddit_name").alias("subreddit_name"),
        F.sum(F.when(posts, F.col("items")).otherwise(0)).alias("posts"),
        F.sum(F.when(~posts, F.col("items")).otherwise(0)).alias("comments"),
        F.sum("scored").alias("scored_comments"),
        _exact_ratio(F.sum("sentiment_sum"), F.sum("scored"), 4).alias("mean_sentiment"),
        F.min("min_sentiment").alias("min_sentiment"),
        F.max("max_sentiment").alias("max_sentiment"),
        _exact_ratio(F.sum("score_sum"), F.sum("items"), 2).alias("mean_score"),
        _exact_ratio(F.sum("nsfw_items"), F.sum("items"), 4).alias("nsfw_share"),
    )
    return _conform(out.select("*", _loaded(loaded_at)), GOLD["subreddit_daily"])


def all_daily_parts(silver_posts: DataFrame, silver_comments: DataFrame, loaded_at: datetime) -> DataFrame:
    """Both sources' parts of every subreddit-day these Silver rows fall on."""
    return daily_parts(silver_posts, Entity.POST, loaded_at).unionByName(
        daily_parts(silver_comments, Entity.COMMENT, loaded_at))


def subreddit_daily(silver_posts: DataFrame, silver_comments: DataFrame, loaded_at: datetime) -> DataFrame:
    """Per subreddit and UTC day: counts (every comment), sentiment over the comments that have a score, mean score
    and NSFW share."""
    return subreddit_daily_from_parts(all_daily_parts(silver_posts, silver_comments, loaded_at), loaded_at)


def post_engagement(silver_posts: DataFrame, silver_comments: DataFrame, loaded_at: datetime) -> DataFrame:
    """Per post known to Silver: its comments, and the mean sentiment and positive/negative shares of those with
    a sentiment score (a comment without one counts as a comment, not as neutral)."""
    sentiment = _exact_sentiment()
    scored = F.count(sentiment)
    per_post = silver_comments.groupBy("post_id").agg(
        F.count("*").alias("comments"),
        scored.alias("scored_comments"),
        _exact_ratio(F.sum(sentiment), scored, 4).alias("mean_comment_sentiment"),
        _exact_ratio(F.sum((sentiment >= POSITIVE).cast("int")), scored, 4).alias("positive_share"),
        _exact_ratio(F.sum((sentiment <= NEGATIVE).cast("int")), scored, 4).alias("negative_share"),
    )
    out = silver_posts.select(
        F.col("id").alias("post_id"), "subreddit_id", "subreddit_name", "created_date",
        F.col("score").alias("post_score"),
    ).join(per_post, "post_id", "left")
    out = out.withColumn("comments", F.coalesce("comments", F.lit(0)))
    out = out.withColumn("scored_comments", F.coalesce("scored_comments", F.lit(0)))
    return _conform(out.select("*", _loaded(loaded_at)), GOLD["post_engagement"])

