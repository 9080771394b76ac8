"""Gold: the warehouse tables, updated for the Silver keys that changed, and the checks that they add up to
Silver. No Dagster here; the assets are lakehouse_assets/gold.py, the pure transforms lakehouse/transforms/gold.py.

The steps are idempotent (see CONVENTIONS.md). Each check returns a `CheckOutcome` (lakehouse/checks.py).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import reduce
from typing import Callable

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from lakehouse import checks, silver_layer, tables
from lakehouse.checks import CheckOutcome
from lakehouse.clock import utcnow
from lakehouse.contracts import GOLD, GOLD_SUBREDDIT_DAILY_PARTS, SILVER, Entity, TableContract
from lakehouse.errors import named
from lakehouse.transforms import gold as gold_tf

log = logging.getLogger(__name__)


# --- the step -------------------------------------------------------------------------------------------------

@dataclass
class GoldResult:
    table: str
    rows_written: int = 0
    rows_deleted: int = 0
    full_rebuild: bool = False
    watermarks: dict[str, str] = field(default_factory=dict)



ENTITY_GOLD = {"posts": (Entity.POST, "post_id"), "comments": (Entity.COMMENT, "comment_id")}


def _entity_gold(table_key: str) -> tuple[Entity, str]:
    return named(ENTITY_GOLD, table_key, "Gold entity table")


def update_gold_entity(spark: SparkSession, table_key: str, now: datetime | None = None) -> GoldResult:
    """Upsert changed Silver posts or comments into `gold.posts` / `gold.comments`; drop the ones Silver lost."""
    tables.ensure_tables(spark)
    # Another run writing the same table first: read again and recompute (Gold is derived, each attempt is whole).
    return tables.retrying(GOLD[table_key].identifier, lambda: _update_gold_entity(spark, table_key, now))


def _update_gold_entity(spark: SparkSession, table_key: str, now: datetime | None) -> GoldResult:
    entity, key = _entity_gold(table_key)
    gold_table, silver_table = GOLD[table_key].identifier, SILVER[entity].identifier
    base_snapshot = tables.current_snapshot(spark, gold_table)
    base = base_snapshot.snapshot_id if base_snapshot else None
    marks = tables.step_marks(spark, gold_table).values
    read_mark = marks.get(tables.READ_SNAPSHOT_PREFIX + silver_table)
    # Without the Silver snapshot it last read (a table Gold wrote before it kept one, or one that has since left
    # Silver's history), Gold cannot tell what Silver lost since: one full pass.
    if read_mark is not None and _lineage_after(spark, silver_table, read_mark) is None:
        log.warning("%s: the Silver snapshot it last read (%s) is no longer in %s's history; one full pass",
                    gold_table, read_mark, silver_table)
        read_mark = None
    since = marks.get(tables.WATERMARK_PREFIX + silver_table) if read_mark else None
    changes = silver_layer.changes_since(spark, silver_table, since)
    removed = _removed_rows(spark, changes, read_mark)
    result = GoldResult(gold_table, full_rebuild=changes.since is None)
    if not changes.pending and removed is None:
        return result
    result.watermarks = {changes.table: str(changes.until)} if changes.until is not None else {}
    # The marks travel in the last commit of Gold's rows (rows and marks land together or not at all).
    after = tables.marks_after(spark, gold_table, result.watermarks,
                               read_snapshots={changes.table: changes.snapshot_id} if changes.snapshot_id else None)
    build = gold_tf.posts if entity is Entity.POST else gold_tf.comments
    if changes.since is None and tables.holds_no_rows(base_snapshot):
        # A first load: every Silver row into an empty table in one commit, no count or MERGE join; losing a race
        # to another run raises Conflict, and the next attempt MERGEs into what it wrote.
        result.rows_written = tables.fill_empty(spark, gold_table, build(changes.rows(spark), now or utcnow()),
                                                base_snapshot, after)
        tables.ensure_marked(spark, gold_table, after)
        return result
    out = build(changes.rows(spark), now or utcnow()).persist()
    # Ids Gold holds that Silver no longer does: taken out since Gold last read Silver, or, on a full pass,
    # every Gold id Silver lacks.
    if changes.since is None:
        gone = _held_but_absent(spark, gold_table, [key], changes.table_rows(spark).select(F.col("id").alias(key)))
    else:
        gone = removed.select(F.col("id").alias(key)).persist() if removed is not None else None
    try:
        result.rows_written = out.count()
        result.rows_deleted = gone.count() if gone is not None else 0
        tables.expect_unchanged(spark, gold_table, base)
        if result.rows_written:
            tables.upsert(spark, gold_table, out, [key], small_source=result.rows_written <= tables.BROADCAST_KEYS_MAX,
                          marks=None if result.rows_deleted else after)
        if result.rows_deleted:
            tables.merge(spark, gold_table, gone, [key], "WHEN MATCHED THEN DELETE", marks=after)
    finally:
        for df in (out, gone):
            if df is not None:
                df.unpersist()
    tables.ensure_marked(spark, gold_table, after)  # nothing to write: the marks move on their own
    return result


def _lineage_after(spark: SparkSession, table: str, mark: str | None) -> list[tables.Snapshot] | None:
    """The table's snapshots after `mark`, oldest first (None: no mark, or it left the table's history)."""
    lineage = tables.snapshots(spark, table)
    ids = [s.snapshot_id for s in lineage]
    if mark is None or int(mark) not in ids:
        return None
    return lineage[ids.index(int(mark)) + 1:]


def _removed_rows(spark: SparkSession, changes: silver_layer.Changes, mark: str | None) -> DataFrame | None:
    """Rows Silver held at `mark` (the snapshot Gold last read) and holds no more: an operator's retraction took
    them out. None when no snapshot since removed rows (snapshot summaries say so: no scan)."""
    later = _lineage_after(spark, changes.table, mark)
    if not later or not any(int(s.summary.get("deleted-records", 0)) > int(s.summary.get("added-records", 0))
                            for s in later):
        return None
    now = changes.table_rows(spark).select("id")
    return tables.at_snapshot(spark, changes.table, int(mark)).join(now, "id", "left_anti")


def _as_last_read(spark: SparkSession, changes: silver_layer.Changes, mark: str | None) -> DataFrame | None:
    """The changed Silver rows as of `mark`, the Silver snapshot last read (None: that snapshot is gone).

    A changed row can move an aggregate key (a comment re-dated or re-parented): its old key must be recomputed
    too, or the old group keeps counting it.
    """
    later = _lineage_after(spark, changes.table, mark)
    if later is None:
        return None
    if all(s.operation == "append" for s in later):
        # Only new rows since (no MERGE, no delete): nothing had a key before. Spark answers this without a scan.
        return changes.rows(spark).where(F.lit(False))
    ids = changes.rows(spark).select("id")
    # The snapshot summaries bound how many rows changed since: a small batch filters by broadcast.
    added = sum(int(s.summary.get("added-records", 0)) for s in later)
    return tables.at_snapshot(spark, changes.table, int(mark)).join(
        F.broadcast(ids) if added <= tables.BROADCAST_KEYS_MAX else ids, "id", "left_semi")


def _aggregate_keys(table_key: str, posts: list[DataFrame], comments: list[DataFrame]) -> DataFrame:
    """The aggregate keys that these Silver post and comment rows fall under."""
    if table_key == "subreddit_daily":
        frames = [df.select("subreddit_id", "created_date") for df in posts + comments]
    else:
        frames = [df.select(F.col("id").alias("post_id")) for df in posts] + [df.select("post_id") for df in comments]
    return reduce(DataFrame.unionByName, frames).distinct()


AGGREGATE_KEYS = {"subreddit_daily": ["subreddit_id", "activity_date"], "post_engagement": ["post_id"]}


def _held_but_absent(spark: SparkSession, gold_table: str, merge_keys: list[str], present: DataFrame,
                     recomputed: DataFrame | None = None) -> DataFrame | None:
    """Keys Gold holds (among `recomputed`; on a full pass, all of them) that `present` (what Silver gives now)
    lacks: a subreddit-day everything moved out of, a post or comment an operator retracted. Persisted and
    counted before the upsert, because it may read Gold itself."""
    if recomputed is not None:
        # Both sides are persisted by the caller: the anti-join is small and cheap to evaluate twice.
        absent = recomputed.join(present.select(*merge_keys), merge_keys, "left_anti")
        if absent.isEmpty():
            return absent
        # A recomputed key Gold never held (the comments of a post that has not arrived) is no deletion: only the
        # keys Gold has are deleted, so nothing is counted, or committed, for the others.
        return spark.table(gold_table).select(*merge_keys).join(absent, merge_keys, "left_semi").persist()
    snap = tables.current_snapshot(spark, gold_table)
    if not snap or not int(snap.summary.get("total-records", 0)):
        return None
    held = spark.table(gold_table).select(*merge_keys)
    return held.join(present.select(*merge_keys), merge_keys, "left_anti").persist()


def update_gold_aggregate(spark: SparkSession, table_key: str, now: datetime | None = None) -> GoldResult:
    """Recompute `subreddit_daily` or `post_engagement` for the keys changed Silver rows touch, before and after."""
    named(AGGREGATE_KEYS, table_key, "Gold aggregate")
    tables.ensure_tables(spark)
    return tables.retrying(GOLD[table_key].identifier, lambda: _update_gold_aggregate(spark, table_key, now))


def _update_gold_aggregate(spark: SparkSession, table_key: str, now: datetime | None) -> GoldResult:
    gold_table = GOLD[table_key].identifier
    daily = table_key == "subreddit_daily"
    base_snapshot = tables.current_snapshot(spark, gold_table)
    base = base_snapshot.snapshot_id if base_snapshot else None
    posts_t, comments_t = SILVER[Entity.POST].identifier, SILVER[Entity.COMMENT].identifier
    found = tables.step_marks(spark, gold_table)  # watermarks and read snapshots: one metadata load
    marks = found.values
    post_changes = silver_layer.changes_since(spark, posts_t, marks.get(tables.WATERMARK_PREFIX + posts_t))
    comment_changes = silver_layer.changes_since(spark, comments_t, marks.get(tables.WATERMARK_PREFIX + comments_t))
    changes = (post_changes, comment_changes)
    removed = {c.table: r for c in changes
               if (r := _removed_rows(spark, c, marks.get(tables.READ_SNAPSHOT_PREFIX + c.table))) is not None}
    # A Silver snapshot last read that has left Silver's history (expired, rolled back): what Silver lost since
    # cannot be told, so everything is recomputed, even with no new change.
    expired = [c.table for c in changes if (m := marks.get(tables.READ_SNAPSHOT_PREFIX + c.table)) is not None
               and _lineage_after(spark, c.table, m) is None]
    parts_base = tables.snapshot_id(spark, PARTS) if daily else None
    parts_named = _parts_named(marks.get(PARTS_MARK), found.carrier)
    parts_astray = daily and not _parts_agree(spark, parts_named, gold_table, base, parts_base)
    if parts_astray and base is not None:
        log.warning("%s: it or its parts table was written since it was last combined from them (%s, now %s); "
                    "one full pass rebuilds both", gold_table, parts_named, parts_mark(parts_base, base))
    if not any(c.pending for c in changes) and not removed and not expired and not parts_astray:
        return GoldResult(gold_table, full_rebuild=any(c.since is None for c in changes))
    # Posts keep their post_engagement key (their id); everything else can move.
    movable = changes if daily else (comment_changes,)
    before = {c.table: _as_last_read(spark, c, marks.get(tables.READ_SNAPSHOT_PREFIX + c.table))
              for c in movable if c.pending and c.since is not None}
    # No watermark, or the Silver version last read is gone (rolled back, expired): recompute everything.
    full = (any(c.since is None for c in changes) or any(b is None for b in before.values()) or bool(expired)
            or parts_astray)
    result = GoldResult(gold_table, full_rebuild=full)
    posts, comments = post_changes.table_rows(spark), comment_changes.table_rows(spark)
    keys = None
    if not full:
        keys = _aggregate_keys(
            table_key,
            [post_changes.rows(spark)] + [f[posts_t] for f in (before, removed) if posts_t in f],
            [comment_changes.rows(spark)] + [f[comments_t] for f in (before, removed) if comments_t in f],
        ).persist()
        if not daily:
            posts = posts.join(keys.withColumnRenamed("post_id", "id"), "id", "left_semi")
            comments = comments.join(keys, "post_id", "left_semi")
    merge_keys = AGGREGATE_KEYS[table_key]
    loaded_at = now or utcnow()
    parts = parts_change = None
    if daily:
        # Only the sources that changed are read from Silver; the other's sums come from the parts table.
        changed = {e for e, c in ((Entity.POST, post_changes), (Entity.COMMENT, comment_changes))
                   if full or c.pending or c.table in removed}
        parts, parts_change = _parts_for(spark, {Entity.POST: posts, Entity.COMMENT: comments}, changed, keys,
                                           parts_base, loaded_at)
        out = gold_tf.subreddit_daily_from_parts(parts, loaded_at)
    else:
        out = gold_tf.post_engagement(posts, comments, loaded_at)
    # A first load (everything recomputed into an empty table) is written in one commit, no count or MERGE join.
    first_load = full and tables.holds_no_rows(base_snapshot)
    gone = None
    if not first_load:
        out = out.persist()
        recomputed = None if keys is None else keys.withColumnRenamed("created_date", "activity_date")
        gone = _held_but_absent(spark, gold_table, merge_keys, out, recomputed)
    result.watermarks = {c.table: str(c.until) for c in changes if c.until is not None}
    read_snapshots = {c.table: c.snapshot_id for c in changes if c.snapshot_id is not None}
    try:
        if not first_load:
            result.rows_written = out.count()
            result.rows_deleted = gone.count() if gone is not None else 0
        tables.expect_unchanged(spark, gold_table, base)
        also = {}
        if daily:
            # The parts first: Gold's commit names the parts snapshot its rows were combined from. A run that dies
            # between the two leaves the parts at a snapshot Gold does not name: the next run rebuilds both.
            also[PARTS_MARK] = parts_mark(commit_parts(spark, parts, parts_change, parts_base), None)
        # The marks travel in the last commit of Gold's rows (rows and marks land together or not at all).
        after = tables.marks_after(spark, gold_table, result.watermarks, read_snapshots, also)
        if first_load:  # losing a race raises Conflict: the next attempt MERGEs into what the other run wrote
            result.rows_written = tables.fill_empty(spark, gold_table, out, base_snapshot, after)
        elif result.rows_written:
            tables.upsert(spark, gold_table, out, merge_keys,
                          small_source=result.rows_written <= tables.BROADCAST_KEYS_MAX,
                          marks=None if result.rows_deleted else after)
        if result.rows_deleted:
            tables.merge(spark, gold_table, gone, merge_keys, "WHEN MATCHED THEN DELETE", marks=after)
        tables.ensure_marked(spark, gold_table, after)  # nothing to write: the marks move on their own
    finally:
        for df in (gone, out, parts, keys):
            if df is not None:
                df.unpersist()
    return result


PARTS = GOLD_SUBREDDIT_DAILY_PARTS.identifier
PARTS_KEYS = ["subreddit_id", "activity_date", "source"]
# On gold.subreddit_daily: the parts table's snapshot its rows were combined from, and its own snapshot then.
# Either table written since by anything else (a run that died between the parts' commit and the marks, older
# code, a hand edit) and the parts are not trusted: one full pass rebuilds both.
PARTS_MARK = "lakehouse.parts-snapshot"


def parts_mark(parts_snapshot: int | str | None, gold_snapshot: int | None) -> str:
    """`parts@gold`; with no Gold snapshot, `parts@`: the Gold snapshot is the one whose commit carries the mark."""
    return f"{parts_snapshot}@{'' if gold_snapshot is None else gold_snapshot}"


def _parts_named(mark: str | None, carrier: int | None) -> str | None:
    """The mark with its Gold snapshot filled in (a mark carried in Gold's commit names the parts only)."""
    return f"{mark}{carrier}" if mark is not None and mark.endswith("@") and carrier is not None else mark


def _parts_agree(spark: SparkSession, mark: str | None, gold_table: str, gold_snapshot: int | None,
                 parts_snapshot: int | None) -> bool:
    """Whether Gold and its parts are as the last run left them: the mark names their current snapshots, or ones
    after which only maintenance committed (compaction and manifest rewrites, `replace`, change no row)."""
    if mark == parts_mark(parts_snapshot, gold_snapshot):
        return True
    marked = (mark or "").split("@")
    return len(marked) == 2 and all(
        _only_rewritten_since(spark, table, m, current)
        for table, m, current in ((PARTS, marked[0], parts_snapshot), (gold_table, marked[1], gold_snapshot)))


def _only_rewritten_since(spark: SparkSession, table: str, mark: str, current: int | None) -> bool:
    if mark == str(current):
        return True
    if not mark.lstrip("-").isdigit():  # "none": another writer came between
        return False
    later = _lineage_after(spark, table, mark)
    return later is not None and all(s.operation == "replace" for s in later)


def _parts_for(
    spark: SparkSession, silver: dict[Entity, DataFrame], changed: set[Entity], keys: DataFrame | None,
    parts_base: int | None, loaded_at: datetime,
) -> tuple[DataFrame, DataFrame | None]:
    """The parts of the subreddit-days `keys` names (None: every day): recomputed from Silver for the `changed`
    sources, read from the parts table (at `parts_base`) for the others; persisted. Also the MERGE source that
    brings the parts table there (None: replace it whole): every recomputed (day, source), with its new part or,
    gone, a null `items`."""
    if keys is None:
        return gold_tf.all_daily_parts(silver[Entity.POST], silver[Entity.COMMENT], loaded_at).persist(), None
    days = keys.withColumnRenamed("created_date", "activity_date")
    by_day = ["subreddit_id", "activity_date"]
    # The date list lets Iceberg prune partitions (and the parts table's files) before the key join.
    dates = [r.created_date for r in keys.select("created_date").distinct().collect()]
    frames = []
    for entity in Entity:
        if entity in changed:
            rows = silver[entity].where(F.col("created_date").isin(dates)).join(
                F.broadcast(keys), ["subreddit_id", "created_date"], "left_semi")
            frames.append(gold_tf.daily_parts(rows, entity, loaded_at))
        elif parts_base is not None:
            held = tables.at_snapshot(spark, PARTS, parts_base).where(
                (F.col("source") == entity.value) & F.col("activity_date").isin(dates))
            frames.append(held.join(F.broadcast(days), by_day, "left_semi"))
    parts = reduce(DataFrame.unionByName, frames).persist()
    sources = spark.createDataFrame([(e.value,) for e in Entity if e in changed], "source string")
    slots = days.crossJoin(F.broadcast(sources))
    change = slots.join(parts, PARTS_KEYS, "left").select(*GOLD_SUBREDDIT_DAILY_PARTS.names)
    return parts, change


def commit_parts(spark: SparkSession, parts: DataFrame, change: DataFrame | None, base: int | None) -> str:
    """Bring the parts table to `parts` in one commit; the snapshot to record as the one Gold was combined from
    ("none" when another writer's commit came between: the next run then rebuilds the parts)."""
    tables.expect_unchanged(spark, PARTS, base)
    if change is None:
        tables.replace_all(spark, PARTS, parts, base)
    else:
        tables.merge(spark, PARTS, change, PARTS_KEYS,
                     "WHEN MATCHED AND s.items IS NULL THEN DELETE WHEN MATCHED THEN UPDATE SET * "
                     "WHEN NOT MATCHED AND s.items IS NOT NULL THEN INSERT *")
    snap = tables.current_snapshot(spark, PARTS)
    if snap is None or snap.snapshot_id == base:
        return str(base)  # nothing to change: still the parts Gold agrees with
    return str(snap.snapshot_id) if snap.parent_id == base else "none"


@dataclass(frozen=True)
class GoldTable:
    """One Gold table's registration: what the asset says, which Silver entities it reads, how it is updated."""

    key: str
    description: str
    sources: tuple[Entity, ...]
    update: Callable[[SparkSession, str], GoldResult]

    @property
    def contract(self) -> TableContract:
        return GOLD[self.key]

    @property
    def source_tables(self) -> list[str]:
        return [SILVER[e].identifier for e in self.sources]


# A new Gold table: its contract (contracts.GOLD), its transform (transforms/gold.py), and one line here (with its
# keys in ENTITY_GOLD or AGGREGATE_KEYS, and its rule in `gold_reconciled`).
GOLD_TABLES = {t.key: t for t in (
    GoldTable("posts", "One row per post with exact types and title word tokens.", (Entity.POST,),
              update_gold_entity),
    GoldTable("comments", "One row per comment with exact types, body word tokens and decimal sentiment.",
              (Entity.COMMENT,), update_gold_entity),
    GoldTable("subreddit_daily", "Per subreddit and day: posts, comments, sentiment mean/min/max, mean score, "
              "NSFW share.", (Entity.POST, Entity.COMMENT), update_gold_aggregate),
    GoldTable("post_engagement", "Per post: comment count, mean comment sentiment, positive/negative shares, "
              "score.", (Entity.POST, Entity.COMMENT), update_gold_aggregate),
)}
assert set(GOLD_TABLES) == set(GOLD), "every Gold contract needs a registration here, and only those"


def gold_table(table_key: str) -> GoldTable:
    """A Gold table's registration; an unknown table name fails, naming the tables there are."""
    return named(GOLD_TABLES, table_key, "Gold table")


def gold_update(table_key: str) -> Callable[[SparkSession, str], GoldResult]:
    """How a Gold table is updated from Silver; an unknown table name fails, naming the tables there are."""
    return gold_table(table_key).update


# --- the checks -----------------------------------------------------------------------------------------------

def _compare(expected: DataFrame, actual: DataFrame, keys: list[str], values: list[str]) -> tuple[int, list[dict]]:
    """Keys whose values differ between two keyed frames (missing on either side counts)."""
    e = expected.select(*keys, *[F.col(v).alias(f"expected_{v}") for v in values])
    a = actual.select(*keys, *[F.col(v).alias(f"gold_{v}") for v in values])
    diff = F.lit(False)
    for v in values:
        diff = diff | ~F.col(f"expected_{v}").eqNullSafe(F.col(f"gold_{v}"))
    mismatched = e.join(a, keys, "full_outer").where(diff).persist()
    try:
        n = mismatched.count()
        return n, checks.sample(mismatched, mismatched.columns) if n else []
    finally:
        mismatched.unpersist()


def _gold_high(spark: SparkSession, gold_table: str) -> int | None:
    """The latest `loaded_at` in Gold now, in micros (None: empty)."""
    snapshot = tables.snapshot_id(spark, gold_table)
    return None if snapshot is None else tables.latest_micros(spark, gold_table, snapshot, "loaded_at")


def gold_reconciled(spark: SparkSession, table_key: str, full: bool = False) -> CheckOutcome:
    """Gold adds up to Silver: one row per Silver item, and per-key counts equal to Silver's.

    Compares the keys that Silver rows changed since the check last passed touch, and the keys of Gold rows
    written since; every key on a full pass.
    """
    posts_t, comments_t = SILVER[Entity.POST].identifier, SILVER[Entity.COMMENT].identifier
    gold_table = GOLD[table_key].identifier
    posts, comments = spark.table(posts_t), spark.table(comments_t)
    gold = spark.table(gold_table)
    marks = json.loads(checks.verified(spark, gold_table, "reconciles_with_silver", full) or "{}")
    post_changes = silver_layer.changes_since(spark, posts_t, marks.get(posts_t))
    comment_changes = silver_layer.changes_since(spark, comments_t, marks.get(comments_t))
    gold_high = _gold_high(spark, gold_table)
    through = {posts_t: post_changes.until, comments_t: comment_changes.until, gold_table: gold_high}
    incremental = post_changes.since is not None and comment_changes.since is not None and "gold" in marks
    scope = "keys changed since last verified" if incremental else "full"
    gold_since = gold.where(F.col("loaded_at") > F.timestamp_micros(F.lit(int(marks.get("gold", 0)))))
    if incremental and not (post_changes.pending or comment_changes.pending or gold_high != marks["gold"]):
        return CheckOutcome(True, "nothing changed in Silver or Gold since they last added up",
                            {"gold_rows": tables.total_records(spark, gold_table), "mismatched_keys": 0, "scope": scope})

    def restrict(frames: list[DataFrame], keys: list[str], changed: DataFrame) -> list[DataFrame]:
        key_set = F.broadcast(changed.distinct())
        return [f.join(key_set, keys, "left_semi") for f in frames]

    if table_key in ("posts", "comments"):
        changes = post_changes if table_key == "posts" else comment_changes
        silver, key = (posts, "post_id") if table_key == "posts" else (comments, "comment_id")
        if incremental:
            changed = changes.rows(spark).select(F.col("id").alias(key)).unionByName(gold_since.select(key))
            silver, gold = restrict([silver.withColumnRenamed("id", key), gold], [key], changed)
            silver = silver.withColumnRenamed(key, "id")
        n, sample = _compare(silver.select(F.col("id").alias(key), "score"), gold, [key], ["score"])
        what = f"{table_key} whose id or score differs from Silver"
    elif table_key == "subreddit_daily":
        keys = ["subreddit_id", "activity_date"]
        if incremental:
            changed = (
                post_changes.rows(spark).select("subreddit_id", F.col("created_date").alias("activity_date"))
                .unionByName(comment_changes.rows(spark)
                             .select("subreddit_id", F.col("created_date").alias("activity_date")))
                .unionByName(gold_since.select(*keys)).distinct()
            )
            # The day list lets Iceberg prune Silver's partitions before the key join.
            days = [r.activity_date for r in changed.select("activity_date").distinct().collect()]
            posts, comments = (
                f.where(F.col("created_date").isin(days)).join(
                    F.broadcast(changed.withColumnRenamed("activity_date", "created_date")),
                    ["subreddit_id", "created_date"], "left_semi")
                for f in (posts, comments)
            )
            (gold,) = restrict([gold], keys, changed)
        per_day = (
            posts.groupBy("subreddit_id", F.col("created_date").alias("activity_date")).agg(F.count("*").alias("posts"))
            .join(comments.groupBy("subreddit_id", F.col("created_date").alias("activity_date"))
                  .agg(F.count("*").alias("comments")), keys, "full_outer")
            .fillna(0, ["posts", "comments"])
        )
        n, sample = _compare(per_day, gold, keys, ["posts", "comments"])
        what = "subreddit-days whose post or comment count differs from Silver"
    else:
        if incremental:
            changed = (
                post_changes.rows(spark).select(F.col("id").alias("post_id"))
                .unionByName(comment_changes.rows(spark).select("post_id"))
                .unionByName(gold_since.select("post_id"))
            )
            posts, comments, gold = restrict(
                [posts.withColumnRenamed("id", "post_id"), comments, gold], ["post_id"], changed)
            posts = posts.withColumnRenamed("post_id", "id")
        per_post = posts.select(F.col("id").alias("post_id"), F.col("score").alias("post_score")).join(
            comments.groupBy("post_id").agg(F.count("*").alias("comments")), "post_id", "left"
        ).fillna(0, ["comments"])
        n, sample = _compare(per_post, gold, ["post_id"], ["post_score", "comments"])
        what = "posts whose score or comment count differs from Silver"
    totals = tables.total_records(spark, gold_table)
    outcome = CheckOutcome(
        passed=n == 0,
        summary=f"{n:,} {what} ({scope})" if n else f"{totals:,} rows add up to Silver ({scope})",
        metrics={"gold_rows": totals, "silver_posts": tables.total_records(spark, posts_t),
                 "silver_comments": tables.total_records(spark, comments_t), "mismatched_keys": n, "scope": scope},
        sample=sample,
        sample_columns=list(sample[0]) if sample else [],
    )
    if None not in through.values():
        checks.record_verified(spark, gold_table, "reconciles_with_silver", [outcome],
                         json.dumps({posts_t: through[posts_t], comments_t: through[comments_t], "gold": gold_high}))
    return outcome


def gold_freshness(spark: SparkSession, table_key: str, sources: list[str]) -> CheckOutcome:
    """Gold has read every Silver change: its watermarks reach each source's latest `_updated_at`."""
    gold_table = GOLD[table_key].identifier
    lag = {}
    for source in sources:
        # The same watermark/high-water pair the Gold step reads its changes by.
        changes = silver_layer.silver_changes(spark, gold_table, source)
        if changes.until is not None:
            lag[source] = (changes.until - (changes.since or 0)) / 1e6
    behind = {s: v for s, v in lag.items() if v > 0}
    high = _gold_high(spark, gold_table)
    last = None if high is None else datetime.fromtimestamp(high / 1e6, timezone.utc)
    return CheckOutcome(
        passed=not behind,
        summary=", ".join(f"{s} changed {v:,.0f} s after Gold last read it" for s, v in behind.items())
        or "Gold has read every Silver change",
        metrics={"last_loaded_at": str(last), **{f"lag_seconds {s}": round(v, 3) for s, v in lag.items()}},
        fingerprint=json.dumps(sorted(behind)),
    )
