"""Silver: the step that cleans, types and deduplicates what Bronze loaded into one MERGE, the changes it offers
the layers after it (`changes_since`), and the checks of Silver against Bronze. No Dagster here; the asset is
lakehouse_assets/silver.py, the pure transforms lakehouse/transforms/silver.py.

The step is idempotent (see CONVENTIONS.md). Each check returns a `CheckOutcome` (lakehouse/checks.py).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from lakehouse import bronze_layer, checks, tables
from lakehouse.checks import CheckOutcome
from lakehouse.clock import utcnow
from lakehouse.contracts import BRONZE, QUARANTINE, SILVER, Entity, TableContract
from lakehouse.ingestion import LOADED, LogEntry
from lakehouse.transforms import silver as silver_tf
from lakehouse.writers import Liveness, default_liveness

log = logging.getLogger(__name__)


# --- the step -------------------------------------------------------------------------------------------------

@dataclass
class SilverResult:
    entity: Entity
    bronze_rows: int = 0
    quarantined: int = 0
    duplicates_collapsed: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    from_snapshot: int | None = None
    to_snapshot: int | None = None
    reasons: dict[str, int] = field(default_factory=dict)
    # Gates of Bronze that kept this step from reading what Bronze holds past `to_snapshot` (checks.standing_holds).
    held: list[dict] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.inserted or self.updated or self.quarantined)


def loaded_files(spark: SparkSession, entries: list[LogEntry]) -> DataFrame:
    """(batch, file, version) of every file the ingestion log records as loaded, to semi-join Bronze rows with.

    Per file, not per batch: a batch may hold rejected files, and a file taken out of a batch again (replaced
    while it was read) is still in the data files an incremental read of that append returns.
    """
    rows = sorted({(e.batch_id, e.source_uri, e.source_etag) for e in entries if e.status == LOADED}) or [("", "", "")]
    return F.broadcast(spark.createDataFrame(rows, "_batch_id string, _source_uri string, _source_etag string"))


def bronze_rows(
    spark: SparkSession, entity: Entity, start: int | None, end: int, entries: list[LogEntry]
) -> DataFrame:
    """Bronze rows appended in snapshots (start, end] (start None: all up to end) of files the log loaded."""
    reader = spark.read.format("iceberg")
    reader = (
        reader.option("start-snapshot-id", str(start)).option("end-snapshot-id", str(end))
        if start is not None
        else reader.option("snapshot-id", str(end))
    )
    return reader.load(BRONZE[entity].identifier).join(
        loaded_files(spark, entries), ["_batch_id", "_source_uri", "_source_etag"], "left_semi"
    )


def utf8_suspects(entries: list[LogEntry]) -> list[str]:
    """Files Bronze's scan found bytes that are not UTF-8 in (or loaded before it counted them)."""
    return sorted({e.source_uri for e in entries if e.status == LOADED
                   and (e.invalid_utf8_records is None or e.invalid_utf8_records > 0)})


def bronze_range(
    spark: SparkSession, entity: Entity, silver_table: str | None, alive: Liveness = default_liveness
) -> tuple[int | None, int | None, list[LogEntry]]:
    """The Bronze snapshots Silver has not processed: (exclusive start, inclusive end, the log's entries).
    With no `silver_table`: every Bronze snapshot (start None), for a rebuild.

    The range stops before the first batch the ingestion log has not settled whose writer is still alive, so a
    batch that is still being written is never skipped past. A dead writer's batch will never be logged (it is
    rolled back), and its rows are never read (only files the log loaded are): the range goes past it.

    While a gate of Bronze holds it (a blocking Bronze check failed, and has neither passed since nor been
    accepted: `checks.HELD_PREFIX`), the range goes no further than Silver has read: no path (a catch-up run, a
    hand-made materialisation, a rebuild, a job outside Dagster) carries Bronze past a gate its run did not evaluate.
    """
    bronze_table = BRONZE[entity].identifier
    entries = bronze_layer.log_entries(spark, entity)
    lineage = tables.snapshots(spark, bronze_table)
    in_flight = {u.snapshot_id for u in bronze_layer.unsettled_batches(lineage, entries) if alive(u.writer)}
    held = checks.holds_on(spark, bronze_table)
    silver_mark = tables.watermark(spark, SILVER[entity].identifier, bronze_table) if silver_table or held else None
    mark = silver_mark if silver_table else None
    ids = [s.snapshot_id for s in lineage]
    start = int(mark) if mark is not None and int(mark) in ids else None
    if mark is not None and start is None:
        log.warning("watermark %s of %s is not in %s's lineage; re-reading all of it", mark, silver_table, bronze_table)
    first, stop = ids.index(start) + 1 if start is not None else 0, len(lineage)
    if held:
        read = int(silver_mark) if silver_mark is not None and int(silver_mark) in ids else None
        stop = ids.index(read) + 1 if read is not None else 0
        log.warning("%s is held by %s: read no further than snapshot %s", bronze_table,
                    ", ".join(f"{h['check']} ({h['summary']})" for h in held), read)
    end = start
    for snap in lineage[first:stop]:
        if snap.snapshot_id in in_flight:
            break
        end = snap.snapshot_id
    return start, end, entries


def held_back(spark: SparkSession, entity: Entity, end: int | None) -> list[dict]:
    """The gates holding Silver back when Bronze has appends past `end` that Silver would otherwise read."""
    bronze_table = BRONZE[entity].identifier
    held = checks.holds_on(spark, bronze_table)
    if not held:
        return []
    lineage = tables.snapshots(spark, bronze_table)
    ids = [s.snapshot_id for s in lineage]
    after = lineage[ids.index(end) + 1:] if end in ids else lineage
    return held if any(s.operation == "append" for s in after) else []


# Silver's version order (silver_tf.latest_per_id) as a MERGE condition: a row is replaced only by a newer version
# with other values, so overlapping runs can commit in any order and Silver still ends at each id's latest version.
NEWER_VERSION = ("s._row_hash <> t._row_hash AND struct(s._ingested_at, s._source_uri, s._source_row) "
                 "> struct(t._ingested_at, t._source_uri, t._source_row)")


def update_silver(
    spark: SparkSession, entity: Entity, now: datetime | None = None, alive: Liveness = default_liveness
) -> SilverResult:
    """Type, clean and MERGE the Bronze rows Silver has not seen; quarantine the rows that break the contract."""
    tables.ensure_tables(spark)
    silver_table, quarantine_table = SILVER[entity].identifier, QUARANTINE[entity].identifier
    bronze_table = BRONZE[entity].identifier
    start, end, entries = bronze_range(spark, entity, silver_table, alive)
    result = SilverResult(entity, from_snapshot=start, to_snapshot=end, held=held_back(spark, entity, end))
    if end is None or end == start:
        return result
    bronze = bronze_rows(spark, entity, start, end, entries)
    # Silver's position in Bronze travels in its MERGE's commit: the rows and the mark land together or not at all.
    marks = tables.marks_after(spark, silver_table, {bronze_table: str(end)})
    now = now or utcnow()
    # Not cached: each pass reads only what it needs of `typed` (Spark prunes the rest). The count evaluates the
    # rules alone, the quarantine keeps the raw strings of the rows that broke one, and Silver's write cleans the
    # text of the valid rows without the raw record beside it. A cache would hold every row twice (raw and typed).
    typed = silver_tf.typed(bronze, entity, now, utf8_suspects(entries))
    stats = typed.groupBy(F.col("reasons")[0].alias("r")).count().collect()
    result.bronze_rows = sum(r["count"] for r in stats)
    result.reasons = {r.r: r["count"] for r in stats if r.r is not None}
    result.quarantined = sum(result.reasons.values())
    if result.quarantined:
        quarantined = silver_tf.quarantine_rows(typed, entity, now)
        tables.retrying(quarantine_table, lambda: tables.insert_new(
            spark, quarantine_table, quarantined, ["_source_uri", "_source_etag", "_source_row"]))
    latest = silver_tf.to_silver(typed, entity, utcnow())
    if not _first_load(spark, silver_table, latest, marks, result):
        _merge(spark, silver_table, latest, marks, result)
    tables.ensure_marked(spark, silver_table, marks)  # nothing to MERGE: the mark moves on its own
    return result


def _merge(spark: SparkSession, silver_table: str, latest: DataFrame, marks: dict[str, str],
           result: SilverResult) -> None:
    """Compare the latest rows with Silver's versions and MERGE the new and changed ones, counting each kind."""
    current = tables.keys_present(
        spark.table(silver_table).select("id", F.col("_row_hash").alias("_current_hash")), latest, ["id"],
        small_source=result.bronze_rows <= tables.BROADCAST_KEYS_MAX,
    )
    state = (
        F.when(F.col("_current_hash").isNull(), "inserted")
        .when(F.col("_current_hash") != F.col("_row_hash"), "updated")
        .otherwise("unchanged")
    )
    compared = latest.join(current, "id", "left").withColumn("_state", state).persist()
    try:
        ops = {r._state: r["count"] for r in compared.groupBy("_state").count().collect()}
        result.inserted, result.updated = ops.get("inserted", 0), ops.get("updated", 0)
        result.unchanged = ops.get("unchanged", 0)
        result.duplicates_collapsed = result.bronze_rows - result.quarantined - sum(ops.values())
        # New and changed ids in one validated MERGE: an overlapping run that committed first makes it fail and
        # try again (it never appends an id twice), and NEWER_VERSION never lets an older version win.
        if result.inserted or result.updated:
            changed = compared.where(F.col("_state") != "unchanged").drop("_current_hash", "_state")
            small = result.inserted + result.updated <= tables.BROADCAST_KEYS_MAX
            tables.retrying(silver_table, lambda: tables.upsert(
                spark, silver_table, changed, ["id"], small_source=small, update_if=NEWER_VERSION,
                stamp="_updated_at", marks=marks))
    finally:
        compared.unpersist()


def _first_load(spark: SparkSession, silver_table: str, latest: DataFrame, marks: dict[str, str],
                result: SilverResult) -> bool:
    """Write every latest row into a Silver that holds none yet, in one commit carrying `marks` (True), instead
    of comparing with and MERGEing into an empty table; False when Silver holds rows, or an overlapping run
    committed first (the MERGE path then takes over)."""
    read_at = tables.current_snapshot(spark, silver_table)
    if not tables.holds_no_rows(read_at):
        return False
    try:
        # Stamped at the statement's time, as the MERGE stamps (tables.upsert): Gold reads changes by this column.
        result.inserted = tables.fill_empty(
            spark, silver_table, latest.withColumn("_updated_at", F.current_timestamp()), read_at, marks)
    except tables.Conflict:
        log.info("%s: another run wrote it first; merging into what it wrote", silver_table)
        return False
    result.duplicates_collapsed = result.bronze_rows - result.quarantined - result.inserted
    return True


@dataclass(frozen=True)
class Changes:
    """Silver rows changed since a Gold table last read them: (watermark, high-water] in `_updated_at` micros.

    Read at one Silver snapshot, so the high-water and the rows agree while other runs commit to Silver.
    """

    table: str
    since: int | None
    until: int | None
    snapshot_id: int | None = None

    @property
    def pending(self) -> bool:
        return self.until is not None and self.since != self.until

    def table_rows(self, spark: SparkSession) -> DataFrame:
        """The whole table, at the snapshot the changes were read from."""
        return tables.at_snapshot(spark, self.table, self.snapshot_id) if self.snapshot_id else spark.table(self.table)

    def rows(self, spark: SparkSession) -> DataFrame:
        df = self.table_rows(spark)
        if self.since is not None:
            df = df.where(F.col("_updated_at") > F.timestamp_micros(F.lit(self.since)))
        return df.where(F.col("_updated_at") <= F.timestamp_micros(F.lit(self.until)))


def changes_since(spark: SparkSession, silver_table: str, since: int | str | None) -> Changes:
    """Silver rows changed after `since` (micros; None: every row) up to Silver's latest change."""
    snap = tables.current_snapshot(spark, silver_table)
    if snap is None:
        return Changes(silver_table, int(since) if since else None, None)
    return Changes(silver_table, int(since) if since else None, _high_water(spark, silver_table, snap.snapshot_id),
                   snap.snapshot_id)


def _high_water(spark: SparkSession, table: str, snapshot_id: int) -> int | None:
    return tables.latest_micros(spark, table, snapshot_id, "_updated_at")


def silver_changes(spark: SparkSession, gold_table: str, silver_table: str) -> Changes:
    return changes_since(spark, silver_table, tables.watermark(spark, gold_table, silver_table))


# --- the checks -----------------------------------------------------------------------------------------------

def schema_matches(spark: SparkSession, contract: TableContract) -> CheckOutcome:
    """The table's columns are exactly the contract's: names, order, types and nullability."""
    actual: StructType = spark.table(contract.identifier).schema
    wanted = tables.spark_schema(spark, contract)
    diffs = []
    for i in range(max(len(actual.fields), len(wanted.fields))):
        a = actual.fields[i] if i < len(actual.fields) else None
        w = wanted.fields[i] if i < len(wanted.fields) else None
        got = (a.name, a.dataType.simpleString(), a.nullable) if a else None
        want = (w.name, w.dataType.simpleString(), w.nullable) if w else None
        if got != want:
            diffs.append({"position": i + 1, "expected": "missing" if want is None else f"{want[0]} {want[1]}"
                          f"{'' if want[2] else ' NOT NULL'}", "found": "missing" if got is None else
                          f"{got[0]} {got[1]}{'' if got[2] else ' NOT NULL'}"})
    return CheckOutcome(
        passed=not diffs,
        summary=f"{len(diffs)} columns differ from the contract" if diffs
        else f"{len(wanted.fields)} columns exactly as documented",
        metrics={"columns": len(actual.fields), "differences": len(diffs)},
        sample=diffs[:checks.SAMPLE_ROWS],
        sample_columns=["position", "expected", "found"],
        fingerprint=json.dumps(diffs, sort_keys=True),
    )


def silver_primary_key(spark: SparkSession, entity: Entity, full: bool = False) -> CheckOutcome:
    """Every id is present and appears once (checked for the ids changed since the check last passed)."""
    table = SILVER[entity].identifier
    changes = changes_since(spark, table, checks.verified(spark, table, "primary_key_unique", full))
    df = spark.table(table)
    if changes.since is not None and not changes.pending:
        return CheckOutcome(True, "no Silver rows changed since the ids were last verified unique",
                            {"rows": tables.total_records(spark, table), "rows_checked": 0, "scope": checks.scope(changes)})
    changed = df if changes.since is None else changes.rows(spark)
    # A changed id is unique when the whole table holds it once: the same id-column scan a MERGE makes.
    scope = df if changes.since is None else df.join(changed.select("id").distinct(), "id", "left_semi")
    row = changed.agg(F.count("*").alias("rows"), F.count("id").alias("non_null")).first()
    duplicated = scope.groupBy("id").count().where("count > 1")
    dupes = duplicated.agg(F.count("*").alias("ids")).first()
    n_dupes, null_ids = dupes.ids or 0, row.rows - row.non_null
    sample = [] if not n_dupes else [
        r.asDict() for r in duplicated.orderBy(F.desc("count")).limit(checks.SAMPLE_ROWS).collect()
    ]
    total = tables.total_records(spark, table)
    outcome = CheckOutcome(
        passed=n_dupes == 0 and null_ids == 0,
        summary=f"{row.rows:,} rows checked: {n_dupes:,} ids appear more than once, {null_ids:,} null ids"
        + ("" if changes.since is None else f" ({total:,} rows in Silver)"),
        metrics={"rows": total, "rows_checked": row.rows, "duplicated_ids": n_dupes, "null_ids": null_ids,
                 "scope": checks.scope(changes)},
        sample=sample,
        sample_columns=["id", "count"],
    )
    checks.record_verified(spark, table, "primary_key_unique", [outcome], changes.until)
    return outcome


def _violations(entity: Entity, now: datetime) -> dict[str, F.Column]:
    """Value rules Silver promises, as conditions that are true for an offending row."""
    c = F.col
    rules = {
        "required_null": F.lit(False),
        "blank_or_untrimmed_id": (F.trim(c("id")) == "") | (c("id") != F.trim(c("id"))),
        "created_utc_out_of_range": (c("created_utc") < F.lit(silver_tf.REDDIT_EPOCH.replace(tzinfo=timezone.utc)))
        | (c("created_utc") > F.lit(now)),
        "created_date_mismatch": c("created_date") != F.to_date(c("created_utc")),
        "subreddit_name_not_lowercase": c("subreddit_name") != F.lower(c("subreddit_name")),
    }
    for col in SILVER[entity].columns:
        if not col.nullable:
            rules["required_null"] = rules["required_null"] | c(col.name).isNull()
    for text in ("title", "selftext") if entity is Entity.POST else ("body",):
        rules[f"{text}_status_inconsistent"] = c(text).isNull() != (c(f"{text}_status") != "present")
    if entity is Entity.COMMENT:
        rules["sentiment_out_of_range"] = (c("sentiment") < -1) | (c("sentiment") > 1) | F.isnan(c("sentiment"))
    return rules


def silver_values(
    spark: SparkSession, entity: Entity, now: datetime, full: bool = False
) -> tuple[CheckOutcome, CheckOutcome | None]:
    """Types and value ranges (one scan of the rows changed since both last passed); for comments also the
    post id parsed from the permalink.

    Returns (types_and_ranges, post_id_parsed); the second is None for posts.
    """
    contract = SILVER[entity]
    schema = schema_matches(spark, contract)
    if not schema.passed:  # the value rules name the contract's columns: report the schema, do not crash
        return schema, (schema if entity is Entity.COMMENT else None)
    changes = changes_since(spark, contract.identifier,
                                     checks.verified(spark, contract.identifier, "values", full))
    df = spark.table(contract.identifier) if changes.since is None else changes.rows(spark)
    rules = _violations(entity, now)
    post_rule = None
    if entity is Entity.COMMENT:
        parsed = F.regexp_extract(F.col("permalink"), silver_tf.POST_ID_IN_PERMALINK, 1)
        post_rule = F.col("post_id").isNull() | (F.col("post_id") != parsed)
    exprs = [F.sum(F.coalesce(cond, F.lit(False)).cast("int")).alias(name) for name, cond in rules.items()]
    if post_rule is not None:
        exprs.append(F.sum(post_rule.cast("int")).alias("post_id_not_parsed"))
    counts = df.agg(F.count("*").alias("rows"), *exprs).first().asDict()
    rows = counts.pop("rows")
    post_bad = counts.pop("post_id_not_parsed", 0) or 0
    counts = {k: v or 0 for k, v in counts.items()}
    shown = ["id", "created_utc", "created_date", "subreddit_name"] + (["sentiment"] if entity is Entity.COMMENT else [])
    sample = []
    if any(counts.values()):
        offending = F.lit(False)
        for cond in rules.values():
            offending = offending | F.coalesce(cond, F.lit(False))
        sample = checks.sample(df.where(offending), shown)
    broken = {k: v for k, v in counts.items() if v}
    problems = ([schema.summary] if not schema.passed else []) + [f"{v:,} rows {k}" for k, v in broken.items()]
    scope = checks.scope(changes)
    types = CheckOutcome(
        passed=not problems,
        summary="; ".join(problems) or f"{rows:,} rows ({scope}): types as documented, every value in range",
        metrics={"rows": rows, "schema_differences": schema.metrics["differences"], "scope": scope, **counts},
        sample=sample if broken else schema.sample,
        sample_columns=shown if broken else schema.sample_columns,
    )
    if entity is Entity.POST:
        checks.record_verified(spark, contract.identifier, "values", [types], changes.until)
        return types, None
    post_sample = checks.sample(df.where(post_rule), ["id", "post_id", "permalink"]) if post_bad else []
    post_id = CheckOutcome(
        passed=post_bad == 0,
        summary=f"{post_bad:,} comments whose post_id is not the one in their permalink" if post_bad
        else f"{rows:,} comments, each with the post id from its permalink",
        metrics={"rows": rows, "post_id_not_parsed": post_bad, "scope": scope},
        sample=post_sample,
        sample_columns=["id", "post_id", "permalink"],
    )
    checks.record_verified(spark, contract.identifier, "values", [types, post_id], changes.until)
    return types, post_id


def quarantine_rate(spark: SparkSession, entity: Entity, max_rate: float) -> CheckOutcome:
    """The share of the latest loaded batch's rows that Silver quarantined stays under `max_rate`."""
    entries = bronze_layer.log_rows(spark, entity)
    batch, files = bronze_layer.latest_batch(entries, (LOADED,))
    batch_rows = sum(f["rows"] for f in files)
    reasons = []
    if batch:
        reasons = [
            r.asDict() for r in spark.table(QUARANTINE[entity].identifier).where(F.col("_batch_id") == batch)
            .groupBy("reason").agg(F.count("*").alias("rows")).orderBy(F.desc("rows")).collect()
        ]
    quarantined = sum(r["rows"] for r in reasons)
    rate = quarantined / batch_rows if batch_rows else 0.0
    total = tables.total_records(spark, BRONZE[entity].identifier)
    overall = tables.total_records(spark, QUARANTINE[entity].identifier) / total if total else 0.0
    return CheckOutcome(
        passed=rate <= max_rate,
        summary=f"{rate:.2%} of the latest batch quarantined ({quarantined:,} of {batch_rows:,} rows; "
        f"threshold {max_rate:.2%})",
        metrics={"batch_id": batch or "none", "batch_rows": batch_rows, "quarantined_in_batch": quarantined,
                 "rate": round(rate, 6), "threshold": max_rate, "overall_rate": round(overall, 6)},
        sample=reasons[:checks.SAMPLE_ROWS],
        sample_columns=["reason", "rows"],
        fingerprint=json.dumps(batch),
    )


def bronze_reconciled(spark: SparkSession, entity: Entity, full: bool = False) -> CheckOutcome:
    """Every Bronze row Silver has read is in Silver, in quarantine, or an older version of an id in Silver.

    "Older" is checked: an id's newest valid Bronze row, when newer than Silver's version, fails (a lost update)
    unless its values are the ones Silver holds (a re-delivery: Silver keeps the first delivery's lineage).
    Looks at the Bronze snapshots Silver read since the check last passed; all of Bronze on a full pass.
    """
    bronze_table, silver_table = BRONZE[entity].identifier, SILVER[entity].identifier
    mark = tables.watermark(spark, silver_table, bronze_table)
    if mark is None:
        return CheckOutcome(True, "Silver has not read Bronze yet", {"bronze_rows": 0})
    lineage = tables.snapshots(spark, bronze_table)
    ids = [snap.snapshot_id for snap in lineage]
    verified = checks.verified(spark, silver_table, "bronze_reconciled", full)
    # Incremental only from a snapshot still in Bronze's lineage, before Silver's position.
    start = int(verified) if verified and int(verified) in ids and int(mark) in ids \
        and ids.index(int(verified)) <= ids.index(int(mark)) else None
    scope = "full" if start is None else "Bronze snapshots read since last verified"
    if start == int(mark):
        return CheckOutcome(True, "Silver has read no Bronze rows since they were last reconciled",
                            {"bronze_rows": 0, "bronze_snapshot": mark, "scope": scope})
    entries = bronze_layer.log_entries(spark, entity)
    keys = ["_source_uri", "_source_etag", "_source_row"]
    read = bronze_rows(spark, entity, start, int(mark), entries)
    bronze = read.select(F.trim("id").alias("id"), *keys, "_batch_id", "_ingested_at")
    quarantined = spark.table(QUARANTINE[entity].identifier)
    silver = spark.table(silver_table)
    batches = None
    if start is not None:  # the range's batches, from the snapshot summaries: prunes quarantine and Silver
        in_range = lineage[ids.index(start) + 1: ids.index(int(mark)) + 1]
        batches = sorted({b for snap in in_range if (b := snap.summary.get(tables.BATCH_ID_PROPERTY))})
        quarantined = quarantined.where(F.col("_batch_id").isin(batches))
        silver_ids = silver.join(bronze.select("id").distinct(), "id", "left_semi")
    else:
        silver_ids = silver
    quarantined = quarantined.select(*keys, F.lit(True).alias("_quarantined"))
    silver_ids = silver_ids.select(
        "id", F.col("_source_uri").alias("_s_uri"), F.col("_source_row").alias("_s_row"),
        F.col("_batch_id").alias("_s_batch"), F.col("_ingested_at").alias("_s_ingested_at"),
        F.col("_row_hash").alias("_s_hash"),
    )

    # Silver's order of versions (silver_tf.latest_per_id): later ingestion, then later file name, then later row.
    def version(ingested: str, uri: str, row: str) -> F.Column:
        return F.struct(F.col(ingested).alias("t"), F.col(uri).alias("u"), F.col(row).alias("r"))

    newer = version("_ingested_at", "_source_uri", "_source_row") > version("_s_ingested_at", "_s_uri", "_s_row")
    state = (
        F.when(F.col("_quarantined"), "quarantined")
        .when((F.col("_s_uri") == F.col("_source_uri")) & (F.col("_s_row") == F.col("_source_row"))
              & (F.col("_s_batch") == F.col("_batch_id")), "in_silver")
        .when(F.col("_s_uri").isNotNull() & newer & (F.col("_rank") == 1), "newer_than_silver")
        .when(F.col("_s_uri").isNotNull(), "collapsed_duplicate")
        .otherwise("unaccounted")
    )
    # Only an id's newest valid row must be Silver's version (or hold its values); older ones were collapsed.
    newest_first = Window.partitionBy("id").orderBy(
        F.col("_quarantined").asc_nulls_first(), *[F.col(c).desc() for c in ("_ingested_at", "_source_uri", "_source_row")]
    )
    joined = (
        bronze.join(quarantined, keys, "left").withColumn("_rank", F.row_number().over(newest_first))
        .join(silver_ids, "id", "left").withColumn("_state", state)
    )
    counts = {r._state: r["count"] for r in joined.groupBy("_state").count().collect()}
    if counts.get("newer_than_silver"):
        # Newer rows are fine when they hold Silver's values (Silver does not rewrite an unchanged row).
        newer_keys = joined.where(F.col("_state") == "newer_than_silver").select(*keys, "_s_hash")
        business = silver_tf.business_columns(entity)
        same = (
            silver_tf.typed(read.join(newer_keys.drop("_s_hash"), keys, "left_semi"), entity, utcnow(), [])
            .select(*keys, silver_tf.row_hash(business).alias("_hash"))
            .join(newer_keys, keys).where(F.col("_hash") == F.col("_s_hash")).count()
        )
        counts["newer_than_silver"] -= same
        counts["redelivered_unchanged"] = same
    silver_rows = (
        tables.total_records(spark, silver_table) if batches is None
        else silver.where(F.col("_batch_id").isin(batches)).count()
    )
    unaccounted = counts.get("unaccounted", 0)
    stale = counts.get("newer_than_silver", 0)
    orphans = silver_rows - counts.get("in_silver", 0)  # Silver rows with no Bronze row behind them
    sample = []
    if unaccounted or stale:
        bad = joined.where(F.col("_state") == "unaccounted")
        if stale:
            bad = bad.unionByName(joined.where(F.col("_state") == "newer_than_silver"))
        sample = checks.sample(bad, ["id", "_state", *keys])
    rows = sum(counts.values())
    outcome = CheckOutcome(
        passed=unaccounted == 0 and stale == 0 and orphans == 0,
        summary=(
            f"{rows:,} Bronze rows ({scope}): {counts.get('in_silver', 0):,} in Silver, "
            f"{counts.get('quarantined', 0):,} quarantined, {counts.get('collapsed_duplicate', 0):,} older versions "
            f"of an id, {counts.get('redelivered_unchanged', 0):,} re-delivered unchanged, {unaccounted:,} "
            f"unaccounted, {stale:,} newer than Silver's version; {orphans:,} Silver rows without a Bronze row"
        ),
        metrics={"bronze_rows": rows, "in_silver": counts.get("in_silver", 0),
                 "quarantined": counts.get("quarantined", 0),
                 "collapsed_duplicates": counts.get("collapsed_duplicate", 0),
                 "redelivered_unchanged": counts.get("redelivered_unchanged", 0),
                 "unaccounted": unaccounted, "newer_than_silver": stale, "silver_rows_without_bronze": orphans,
                 "bronze_snapshot": mark, "scope": scope},
        sample=sample,
        sample_columns=["id", "_state", *keys],
    )
    checks.record_verified(spark, silver_table, "bronze_reconciled", [outcome], mark)
    return outcome
