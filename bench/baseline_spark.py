"""Baseline: the same transformations as plain PySpark in one session, writing the same Iceberg tables.

    python bench/baseline_spark.py --landing DIR --home DIR

No Dagster, no checks, no ingestion log, no incremental reads or MERGE: every landed file is read, Bronze is
appended, Silver, quarantine and Gold are written whole into an empty lakehouse. It reuses the pure transforms in
`lakehouse/transforms/`, so the difference to the full graph is what the platform adds around them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lakehouse import tables  # noqa: E402
from lakehouse.contracts import BRONZE, GOLD, QUARANTINE, SILVER, Entity  # noqa: E402
from lakehouse.settings import load_settings  # noqa: E402
from lakehouse.spark import get_spark  # noqa: E402
from lakehouse.transforms import bronze as bronze_tf  # noqa: E402
from lakehouse.transforms import gold as gold_tf  # noqa: E402
from lakehouse.transforms import silver as silver_tf  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--landing", required=True, help="a landing zone: input/post/*.csv, input/comment/*.csv")
    parser.add_argument("--home", required=True, help="an empty data root for the baseline's tables")
    args = parser.parse_args()
    os.environ["LAKEHOUSE_HOME"] = args.home
    started = time.perf_counter()
    spark = get_spark(load_settings())
    tables.ensure_tables(spark)
    now = datetime.now(timezone.utc)
    steps = {}
    for entity in Entity:
        t = time.perf_counter()
        paths = sorted((Path(args.landing) / "input" / entity.value).glob("*.csv"))
        files = spark.createDataFrame(
            [(bronze_tf.LOCAL_FILE_PREFIX.sub("file:///", p.resolve().as_uri()), p.resolve().as_uri(), "-")
             for p in paths], "_file_path string, uri string, etag string")
        raw = bronze_tf.read_csv(spark, [str(p) for p in paths], entity)
        bronze_tf.to_bronze(raw, files, "baseline", now, entity).writeTo(BRONZE[entity].identifier).append()
        steps[f"bronze_{entity.plural}"] = round(time.perf_counter() - t, 1)
    for entity in Entity:
        t = time.perf_counter()
        typed = silver_tf.typed(spark.table(BRONZE[entity].identifier), entity, now, []).persist()
        silver_tf.quarantine_rows(typed, entity, now).writeTo(QUARANTINE[entity].identifier).append()
        silver_tf.to_silver(typed, entity, now).writeTo(SILVER[entity].identifier).append()
        typed.unpersist()
        steps[f"silver_{entity.plural}"] = round(time.perf_counter() - t, 1)
    posts, comments = spark.table(SILVER[Entity.POST].identifier), spark.table(SILVER[Entity.COMMENT].identifier)
    builds = {
        "posts": lambda: gold_tf.posts(posts, now),
        "comments": lambda: gold_tf.comments(comments, now),
        "subreddit_daily": lambda: gold_tf.subreddit_daily(posts, comments, now),
        "post_engagement": lambda: gold_tf.post_engagement(posts, comments, now),
    }
    for key, build in builds.items():
        t = time.perf_counter()
        build().writeTo(GOLD[key].identifier).append()
        steps[f"gold_{key}"] = round(time.perf_counter() - t, 1)
    counts = {c.identifier: spark.table(c.identifier).count() for c in (*SILVER.values(), *GOLD.values())}
    print(json.dumps({"seconds": round(time.perf_counter() - started, 1), "steps": steps, "rows": counts}))
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
