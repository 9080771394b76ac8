"""Baseline: the job as a competent data engineer would write it by hand in one PySpark script.

    python bench/baseline_handwritten.py --landing DIR --home DIR [--jars a.jar,b.jar]

It shares no code with the project on purpose (issue 14): `bench/baseline_spark.py` reuses the lakehouse's own
transforms and so measures only what the orchestration adds. This one is what a user would compare us with:
read the CSVs, keep them raw in a Bronze Iceberg table with ingestion metadata, type and clean them, keep the
latest row per id, MERGE into Silver (rows that cannot be typed go to a rejects table), then build the Gold
tables (posts and comments with word tokens, subreddit_daily, post_engagement). No orchestration, no checks,
no ingestion log, a plain Hadoop-catalog warehouse. Prints one JSON line: seconds, per-step seconds, row counts.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from pyspark.sql import SparkSession, Window
from pyspark.sql import functions as F

POST_COLUMNS = ["type", "id", "subreddit.id", "subreddit.name", "subreddit.nsfw", "created_utc", "permalink",
                "domain", "url", "selftext", "title", "score"]
COMMENT_COLUMNS = ["type", "id", "subreddit.id", "subreddit.name", "subreddit.nsfw", "created_utc", "permalink",
                   "body", "sentiment", "score"]


def default_jars() -> str:
    """The Iceberg Spark runtime from the snowpark-connect-deps-iceberg wheel (no Maven repository here)."""
    import snowpark_connect_deps_iceberg as deps

    return str(next((Path(deps.__file__).parent / "jars").glob("iceberg-spark-runtime-3.5_2.12-*.jar")))


def session(warehouse: Path, jars: str) -> SparkSession:
    spark = (
        SparkSession.builder.master("local[*]")
        .appName("handwritten-baseline")
        .config("spark.jars", jars)
        .config("spark.driver.memory", "3g")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.extensions", "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions")
        .config("spark.sql.catalog.lake", "org.apache.iceberg.spark.SparkCatalog")
        .config("spark.sql.catalog.lake.type", "hadoop")
        .config("spark.sql.catalog.lake.warehouse", str(warehouse))
        .config("spark.sql.warehouse.dir", str(warehouse.parent / "spark-warehouse"))
        .config("spark.sql.defaultCatalog", "lake")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")  # the Hadoop catalog warns about every new table's missing version hint
    return spark


def read_raw(spark: SparkSession, files: list[Path], columns: list[str]):
    schema = ", ".join(f"`{c}` string" for c in columns)
    df = spark.read.csv([str(p) for p in files], schema=schema, header=True, multiLine=True, quote='"',
                        escape='"', mode="PERMISSIVE")
    renamed = df.toDF(*[c.replace(".", "_") for c in columns])
    return renamed.withColumn("_source_file", F.input_file_name()).withColumn("_ingested_at", F.current_timestamp())


def clean(col: str):
    """Reddit's HTML entities unescaped, blank / [deleted] / [removed] as null."""
    text = F.col(col)
    for entity, char in (("&lt;", "<"), ("&gt;", ">"), ("&quot;", '"'), ("&#39;", "'"), ("&amp;", "&")):
        text = F.regexp_replace(text, entity, char)
    text = F.trim(F.regexp_replace(text, "\u200b|&#x200B;", ""))
    return F.when(~text.isin("", "[deleted]", "[removed]"), text)


def tokens(col: str):
    words = F.split(F.lower(F.coalesce(F.col(col), F.lit(""))), r"[^\p{L}\p{N}']+")
    return F.filter(words, lambda w: w != "")


def silver_frame(bronze, entity: str):
    epoch = F.when(F.trim("created_utc").rlike(r"^[0-9]+(\.0*)?$"), F.trim("created_utc").cast("double"))
    typed = bronze.select(
        F.trim("id").alias("id"),
        F.trim("subreddit_id").alias("subreddit_id"),
        F.lower(F.trim("subreddit_name")).alias("subreddit_name"),
        (F.lower(F.trim("subreddit_nsfw")) == "true").alias("subreddit_nsfw"),
        F.timestamp_seconds(epoch.cast("bigint")).alias("created_utc"),
        F.trim("permalink").alias("permalink"),
        *([F.trim("domain").alias("domain"), F.trim("url").alias("url"), clean("selftext").alias("selftext"),
           clean("title").alias("title")] if entity == "posts" else
          [F.regexp_extract("permalink", r"/comments/([A-Za-z0-9]+)", 1).alias("post_id"),
           clean("body").alias("body"), F.col("sentiment").cast("double").alias("sentiment")]),
        F.trim("score").cast("int").alias("score"),
        "_source_file", "_ingested_at",
    ).withColumn("created_date", F.to_date("created_utc"))
    valid = (F.col("id").isNotNull() & (F.col("id") != "") & F.col("created_utc").isNotNull()
             & F.col("score").isNotNull() & F.col("subreddit_id").isNotNull())
    latest = Window.partitionBy("id").orderBy(F.col("_ingested_at").desc(), F.col("_source_file").desc())
    good = typed.filter(valid).withColumn("_n", F.row_number().over(latest)).filter("_n = 1").drop("_n")
    return good, typed.filter(~valid)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--landing", required=True, help="a landing zone: input/post/*.csv, input/comment/*.csv")
    parser.add_argument("--home", required=True, help="an empty folder for the warehouse")
    parser.add_argument("--jars", default=None, help="comma-separated jars (default: the Iceberg runtime wheel's)")
    args = parser.parse_args()
    started = time.perf_counter()
    spark = session(Path(args.home).resolve() / "warehouse", args.jars or default_jars())
    steps: dict[str, float] = {}

    def step(name: str, fn) -> None:
        t = time.perf_counter()
        fn()
        steps[name] = round(time.perf_counter() - t, 1)

    for ns in ("bronze", "silver", "gold"):
        spark.sql(f"CREATE NAMESPACE IF NOT EXISTS {ns}")
    landing = Path(args.landing)
    for entity, folder, columns in (("posts", "post", POST_COLUMNS), ("comments", "comment", COMMENT_COLUMNS)):
        files = sorted((landing / "input" / folder).glob("*.csv"))
        step(f"bronze_{entity}", lambda: read_raw(spark, files, columns).writeTo(f"bronze.{entity}").createOrReplace())

    for entity in ("posts", "comments"):
        def silver(entity=entity):
            good, bad = silver_frame(spark.table(f"bronze.{entity}"), entity)
            bad.writeTo(f"silver.{entity}_rejects").createOrReplace()
            if not spark.catalog.tableExists(f"silver.{entity}"):
                good.limit(0).writeTo(f"silver.{entity}").partitionedBy(F.col("created_date")).create()
            good.createOrReplaceTempView("updates")
            spark.sql(f"MERGE INTO silver.{entity} t USING updates s ON t.id = s.id "
                      "WHEN MATCHED THEN UPDATE SET * WHEN NOT MATCHED THEN INSERT *")
        step(f"silver_{entity}", silver)

    posts, comments = spark.table("silver.posts"), spark.table("silver.comments")
    sentiment = F.round("sentiment", 4).cast("decimal(5,4)")
    scored = F.count(sentiment)
    gold = {
        "posts": lambda: posts.select(
            F.col("id").alias("post_id"), "subreddit_id", "subreddit_name",
            F.coalesce("subreddit_nsfw", F.lit(False)).alias("is_nsfw"), F.col("created_utc").alias("created_at"),
            "created_date", "permalink", "domain", "url", "title", tokens("title").alias("title_tokens"),
            "selftext", "score"),
        "comments": lambda: comments.select(
            F.col("id").alias("comment_id"), "post_id", "subreddit_id", "subreddit_name",
            F.coalesce("subreddit_nsfw", F.lit(False)).alias("is_nsfw"), F.col("created_utc").alias("created_at"),
            "created_date", "permalink", "body", tokens("body").alias("body_tokens"),
            sentiment.alias("sentiment"), "score"),
        "subreddit_daily": lambda: posts.select(
            "subreddit_id", "subreddit_name", "created_date", "score", "subreddit_nsfw",
            F.lit(1).alias("is_post"), F.lit(None).cast("decimal(5,4)").alias("s"),
        ).unionByName(comments.select(
            "subreddit_id", "subreddit_name", "created_date", "score", "subreddit_nsfw",
            F.lit(0).alias("is_post"), sentiment.alias("s"),
        )).groupBy("subreddit_id", F.col("created_date").alias("activity_date")).agg(
            F.max("subreddit_name").alias("subreddit_name"),
            F.sum("is_post").alias("posts"),
            F.sum(1 - F.col("is_post")).alias("comments"),
            F.count("s").alias("scored_comments"),
            F.round(F.avg("s"), 4).cast("decimal(5,4)").alias("mean_sentiment"),
            F.min("s").alias("min_sentiment"), F.max("s").alias("max_sentiment"),
            F.round(F.avg("score"), 2).cast("decimal(12,2)").alias("mean_score"),
            F.round(F.avg(F.col("subreddit_nsfw").cast("int")), 4).cast("decimal(5,4)").alias("nsfw_share"),
        ),
        "post_engagement": lambda: posts.select(
            F.col("id").alias("post_id"), "subreddit_id", "subreddit_name", "created_date",
            F.col("score").alias("post_score"),
        ).join(comments.groupBy("post_id").agg(
            F.count("*").alias("comments"), scored.alias("scored_comments"),
            F.round(F.avg(sentiment), 4).cast("decimal(5,4)").alias("mean_comment_sentiment"),
            F.round(F.sum((sentiment >= 0.05).cast("int")) / scored, 4).cast("decimal(5,4)").alias("positive_share"),
            F.round(F.sum((sentiment <= -0.05).cast("int")) / scored, 4).cast("decimal(5,4)").alias("negative_share"),
        ), "post_id", "left").fillna(0, ["comments", "scored_comments"]),
    }
    for name, build in gold.items():
        step(f"gold_{name}", lambda name=name, build=build: build().writeTo(f"gold.{name}").createOrReplace())

    counts = {t: spark.table(t).count() for t in ("silver.posts", "silver.comments", "gold.posts", "gold.comments",
                                                  "gold.subreddit_daily", "gold.post_engagement")}
    print(json.dumps({"seconds": round(time.perf_counter() - started, 1), "steps": steps, "rows": counts}))
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
