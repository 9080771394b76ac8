"""Baseline: the same transformations as one DuckDB script writing Parquet files.

    python bench/baseline_duckdb.py --landing DIR --out DIR

Bronze (raw strings + file and row), Silver (typed, cleaned, the same quarantine rules, latest version per id),
quarantine and the four Gold tables, each written as a zstd Parquet file. No catalog, no table format, no
incremental processing: the simplest single-node alternative a data engineer would reach for.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lakehouse.contracts import SOURCE_HEADERS, Entity  # noqa: E402

REDDIT_EPOCH = datetime(2005, 6, 23, tzinfo=timezone.utc).timestamp()


def q(name: str) -> str:
    return '"' + name + '"'


def normalised(col: str) -> str:
    value = f"regexp_replace({q(col)}, '\\r\\n?', chr(10), 'g')"
    for entity, char in (("&lt;", "<"), ("&gt;", ">"), ("&quot;", '"'), ("&#39;", "''"), ("&nbsp;", " "),
                         ("&amp;", "&")):
        value = f"regexp_replace({value}, '{entity}', '{char}', 'g')"
    value = f"regexp_replace({value}, '[\\x{{200B}}\\x{{FEFF}}]|&#x200[bB];', '', 'g')"
    return f"regexp_replace({value}, '^\\s+|\\s+$', '', 'g')"


def status(col: str) -> str:
    n = normalised(col)
    return (f"CASE WHEN {q(col)} IS NULL OR {n} = '' THEN 'empty' WHEN {n} = '[deleted]' THEN 'deleted' "
            f"WHEN {n} = '[removed]' THEN 'removed' ELSE 'present' END")


def clean(col: str) -> str:
    return f"CASE WHEN {status(col)} = 'present' THEN {normalised(col)} END"


def blank(col: str) -> str:
    return f"({q(col)} IS NULL OR trim({q(col)}) = '')"


def tokens(col: str) -> str:
    words = f"string_split_regex(lower(coalesce({col}, '')), '[^\\p{{L}}\\p{{N}}'']+')"
    return f"list_filter(list_transform({words}, lambda w: regexp_replace(w, '^''+|''+$', '', 'g')), lambda w: w <> '')"


def typed_sql(entity: Entity, now: float) -> str:
    in_range = lambda s: f"coalesce({s} >= {REDDIT_EPOCH} AND {s} <= {now}, false)"  # noqa: E731
    rules = [
        f"CASE WHEN {blank('id')} THEN 'missing_id' END",
        f"CASE WHEN {blank('subreddit.id')} OR {blank('subreddit.name')} THEN 'missing_subreddit' END",
        f"CASE WHEN {blank('permalink')} THEN 'missing_permalink' END",
        f"CASE WHEN type IS NOT NULL AND trim(type) <> '{entity.value}' THEN 'wrong_type' END",
        f"CASE WHEN {blank('created_utc')} THEN 'missing_created_utc' END",
        f"CASE WHEN NOT {blank('created_utc')} AND _seconds IS NULL THEN 'invalid_created_utc' END",
        f"CASE WHEN NOT {in_range('_seconds')} AND {in_range('_seconds / 1000')} THEN 'created_utc_in_milliseconds' END",
        f"CASE WHEN _seconds IS NOT NULL AND NOT {in_range('_seconds')} AND NOT {in_range('_seconds / 1000')} "
        "THEN 'created_utc_out_of_range' END",
        f"CASE WHEN {blank('score')} THEN 'missing_score' END",
        f"CASE WHEN NOT {blank('score')} AND _score IS NULL THEN 'invalid_score' END",
        f"CASE WHEN NOT {blank('subreddit.nsfw')} AND _nsfw IS NULL THEN 'invalid_nsfw' END",
    ]
    columns = [
        "trim(id) AS id", 'trim("subreddit.id") AS subreddit_id', 'lower(trim("subreddit.name")) AS subreddit_name',
        "_nsfw AS subreddit_nsfw", "to_timestamp(_seconds) AS created_utc",
        "CAST(to_timestamp(_seconds) AS DATE) AS created_date", "trim(permalink) AS permalink",
    ]
    parsed = [
        "CASE WHEN regexp_matches(trim(created_utc), '^[0-9]{1,20}(\\.0*)?$') "
        "THEN TRY_CAST(trim(created_utc) AS DOUBLE) END AS _seconds",
        "CASE WHEN regexp_matches(trim(score), '^-?[0-9]{1,10}$') THEN TRY_CAST(trim(score) AS INTEGER) END AS _score",
        "CASE lower(trim(\"subreddit.nsfw\")) WHEN 'true' THEN true WHEN 'false' THEN false END AS _nsfw",
    ]
    if entity is Entity.POST:
        columns += ["nullif(trim(domain), '') AS domain", "nullif(trim(url), '') AS url",
                    f"{clean('selftext')} AS selftext", f"{status('selftext')} AS selftext_status",
                    f"{clean('title')} AS title", f"{status('title')} AS title_status", "_score AS score"]
    else:
        parsed += ["CASE WHEN regexp_matches(trim(sentiment), '^-?[0-9]+(\\.[0-9]+)?([eE]-?[0-9]+)?$') "
                   "THEN TRY_CAST(trim(sentiment) AS DOUBLE) END AS _sentiment",
                   "regexp_extract(permalink, '/comments/([A-Za-z0-9]+)(/|$)', 1) AS _post_id"]
        rules += [f"CASE WHEN NOT {blank('sentiment')} AND _sentiment IS NULL THEN 'invalid_sentiment' END",
                  "CASE WHEN _sentiment < -1 OR _sentiment > 1 THEN 'sentiment_out_of_range' END",
                  "CASE WHEN _post_id = '' THEN 'missing_post_id' END"]
        columns += ["nullif(_post_id, '') AS post_id", f"{clean('body')} AS body", f"{status('body')} AS body_status",
                    "_sentiment AS sentiment", "_score AS score"]
    return (
        f"SELECT {', '.join(columns)}, _source_uri, _source_row, "
        f"list_filter([{', '.join(rules)}], lambda r: r IS NOT NULL) AS reasons "
        f"FROM (SELECT *, {', '.join(parsed)} FROM bronze_{entity.plural})"
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--landing", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--memory-limit", default="3GB")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    con = duckdb.connect()
    con.execute(f"SET memory_limit = '{args.memory_limit}'")
    con.execute(f"SET temp_directory = '{out / 'tmp'}'")
    now = time.time()
    steps = {}

    def copy(table: str, name: str) -> None:
        con.execute(f"COPY {table} TO '{out / name}.parquet' (FORMAT parquet, COMPRESSION zstd)")

    for entity in Entity:
        t = time.perf_counter()
        files = sorted(str(p) for p in (Path(args.landing) / "input" / entity.value).glob("*.csv"))
        columns = ", ".join(f"'{h}': 'VARCHAR'" for h in SOURCE_HEADERS[entity])
        con.execute(
            f"CREATE TABLE bronze_{entity.plural} AS SELECT * EXCLUDE (filename), filename AS _source_uri, "
            "row_number() OVER (PARTITION BY filename) AS _source_row "
            f"FROM read_csv({files}, header = true, columns = {{{columns}}}, auto_detect = false, quote = '\"', escape = '\"', "
            "filename = true, strict_mode = false, null_padding = true, parallel = false, max_line_size = 50000000)"
        )
        copy(f"bronze_{entity.plural}", f"bronze_{entity.plural}")
        steps[f"bronze_{entity.plural}"] = round(time.perf_counter() - t, 1)
    for entity in Entity:
        t = time.perf_counter()
        con.execute(f"CREATE TABLE typed_{entity.plural} AS {typed_sql(entity, now)}")
        con.execute(f"CREATE TABLE quarantine_{entity.plural} AS SELECT reasons[1] AS reason, * "
                    f"FROM typed_{entity.plural} WHERE len(reasons) > 0")
        con.execute(f"CREATE TABLE silver_{entity.plural} AS SELECT * EXCLUDE (reasons) FROM typed_{entity.plural} "
                    "WHERE len(reasons) = 0 QUALIFY row_number() OVER "
                    "(PARTITION BY id ORDER BY _source_uri DESC, _source_row DESC) = 1")
        copy(f"silver_{entity.plural}", f"silver_{entity.plural}")
        copy(f"quarantine_{entity.plural}", f"quarantine_{entity.plural}")
        steps[f"silver_{entity.plural}"] = round(time.perf_counter() - t, 1)
    gold = {
        "posts": "SELECT id AS post_id, subreddit_id, subreddit_name, coalesce(subreddit_nsfw, false) AS is_nsfw, "
                 "created_utc AS created_at, created_date, permalink, domain, url, title, "
                 f"{tokens('title')} AS title_tokens, selftext, selftext_status, score, now() AS loaded_at "
                 "FROM silver_posts",
        "comments": "SELECT id AS comment_id, post_id, subreddit_id, subreddit_name, "
                    "coalesce(subreddit_nsfw, false) AS is_nsfw, created_utc AS created_at, created_date, permalink, "
                    f"body, body_status, {tokens('body')} AS body_tokens, "
                    "CAST(round(sentiment, 4) AS DECIMAL(5,4)) AS sentiment, score, now() AS loaded_at "
                    "FROM silver_comments",
        "subreddit_daily": """
            WITH items AS (
                SELECT subreddit_id, subreddit_name, created_date, score, subreddit_nsfw, 1 AS is_post,
                       NULL::DECIMAL(5,4) AS sentiment FROM silver_posts
                UNION ALL
                SELECT subreddit_id, subreddit_name, created_date, score, subreddit_nsfw, 0,
                       CAST(round(sentiment, 4) AS DECIMAL(5,4)) FROM silver_comments)
            SELECT subreddit_id, max(subreddit_name) AS subreddit_name, created_date AS activity_date,
                   sum(is_post) AS posts, sum(1 - is_post) AS comments, count(sentiment) AS scored_comments,
                   CAST(round(sum(sentiment) / count(sentiment), 4) AS DECIMAL(5,4)) AS mean_sentiment,
                   min(sentiment) AS min_sentiment, max(sentiment) AS max_sentiment,
                   CAST(round(sum(score) / count(*), 2) AS DECIMAL(12,2)) AS mean_score,
                   CAST(round(sum(coalesce(subreddit_nsfw, false)::INT) / count(*), 4) AS DECIMAL(5,4)) AS nsfw_share,
                   now() AS loaded_at
            FROM items GROUP BY subreddit_id, created_date""",
        "post_engagement": """
            WITH c AS (SELECT post_id, CAST(round(sentiment, 4) AS DECIMAL(5,4)) AS s FROM silver_comments),
            per_post AS (
                SELECT post_id, count(*) AS comments, count(s) AS scored_comments,
                       CAST(round(sum(s) / count(s), 4) AS DECIMAL(5,4)) AS mean_comment_sentiment,
                       CAST(round(sum((s >= 0.05)::INT) / count(s), 4) AS DECIMAL(5,4)) AS positive_share,
                       CAST(round(sum((s <= -0.05)::INT) / count(s), 4) AS DECIMAL(5,4)) AS negative_share
                FROM c GROUP BY post_id)
            SELECT p.id AS post_id, p.subreddit_id, p.subreddit_name, p.created_date, p.score AS post_score,
                   coalesce(pp.comments, 0) AS comments, coalesce(pp.scored_comments, 0) AS scored_comments,
                   pp.mean_comment_sentiment, pp.positive_share,
                   pp.negative_share, now() AS loaded_at
            FROM silver_posts p LEFT JOIN per_post pp ON pp.post_id = p.id""",
    }
    for key, sql in gold.items():
        t = time.perf_counter()
        con.execute(f"CREATE TABLE gold_{key} AS {sql}")
        copy(f"gold_{key}", f"gold_{key}")
        steps[f"gold_{key}"] = round(time.perf_counter() - t, 1)
    rows = {t: con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0] for t in
            ("silver_posts", "silver_comments", "quarantine_comments", "gold_post_engagement", "gold_subreddit_daily")}
    print(json.dumps({"seconds": round(time.perf_counter() - started, 1), "steps": steps, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
