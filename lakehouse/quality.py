"""What each layer guarantees, checked against the tables themselves. No Dagster here: each check returns a
`CheckOutcome` that the asset checks in `lakehouse_assets/` turn into `AssetCheckResult`s.

The checks read table metadata where it answers the question (snapshot summaries, the ingestion log) and scan
only the columns they need otherwise; their cost is reported in the benchmarks.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from lakehouse import pipeline, tables
from lakehouse.contracts import BRONZE, GOLD, QUARANTINE, SILVER, Entity, TableContract
from lakehouse.ingestion import LOADED, REJECTED
from lakehouse.transforms import silver as silver_tf
from lakehouse.writers import Liveness, default_liveness

log = logging.getLogger(__name__)
SAMPLE_ROWS = 5
# What a check has verified, kept as a table property of the table it checks: the expensive checks look at
# what changed since they last passed (a failure is looked at again next time), or at everything when asked
# for a full pass (the nightly `full_quality_checks` job) or when they have never passed.
VERIFIED_PREFIX = "lakehouse.verified."


@dataclass
class CheckOutcome:
    passed: bool
    summary: str  # one line a data engineer reads in the UI
    metrics: dict[str, Any] = field(default_factory=dict)
    sample: list[dict] = field(default_factory=list)  # offending rows, at most SAMPLE_ROWS
    sample_columns: list[str] = field(default_factory=list)
    # Incremental checks: the (table, position name) they keep and the position this evaluation reached; moved
    # on a pass, or when an operator accepts the failure (the accepted range leaves the scope).
    mark: tuple[str, str] | None = None
    through: str | None = None
    # Checks that look at a fixed scope (the latest batch, a schema): what the failure is, to tell an accepted
    # failure from a new one. None: the summary and the sample say it.
    fingerprint: str | None = None

    def failure_id(self) -> str:
        """A stable identity of this failure (accepted failures are matched by it)."""
        basis = self.fingerprint or json.dumps([self.summary, self.sample], default=str, sort_keys=True)
        return hashlib.sha256(basis.encode()).hexdigest()[:16]




def _verified(spark: SparkSession, table: str, check: str, full: bool) -> str | None:
    """How far `check` has verified `table` (None: never, or a full pass is asked for)."""
    return None if full else tables.table_properties(spark, table).get(VERIFIED_PREFIX + check)


def _record_verified(spark: SparkSession, table: str, check: str, outcomes: list[CheckOutcome], through: Any) -> None:
    """Move the check's mark forward when every outcome passed; a failed range stays in scope until it is fixed
    (or an operator accepts it: `lakehouse accept`)."""
    for outcome in outcomes:
        outcome.mark, outcome.through = (table, check), (None if through is None else str(through))
    if all(o.passed for o in outcomes) and through is not None:
        tables.set_properties(spark, table, {VERIFIED_PREFIX + check: str(through)})


# An operator's acceptance of a failing check, kept on the table the check looks at.
ACCEPTED_PREFIX = "lakehouse.accepted."


def acceptance(spark: SparkSession, table: str, check: str, outcome: CheckOutcome) -> dict | None:
    """The operator's acceptance of exactly this failure (who, when, why), if one is recorded; None otherwise.

    A failure other than the accepted one is not covered: it fails as it would have."""
    if outcome.passed:
        return None
    raw = tables.table_properties(spark, table).get(ACCEPTED_PREFIX + check)
    accepted = json.loads(raw) if raw else None
    return accepted if accepted and accepted.get("failure") == outcome.failure_id() else None


def _scope(changes: "pipeline.Changes") -> str:
    return "full" if changes.since is None else "changed since last verified"


def _sample(df: DataFrame, columns: list[str]) -> list[dict]:
    return [r.asDict() for r in df.select(*columns).limit(SAMPLE_ROWS).collect()]


# --- Bronze ----------------------------------------------------------------------------------------------------


def _latest_batch(entries: list[dict], statuses: tuple[str, ...] = (LOADED, REJECTED)) -> tuple[str | None, list[dict]]:
    settled = [e for e in entries if e["status"] in statuses]
    if not settled:
        return None, []
    batch = settled[-1]["batch_id"]
    return batch, [e for e in settled if e["batch_id"] == batch]


def bronze_header(spark: SparkSession, entity: Entity) -> CheckOutcome:
    """The latest batch's files match the header contract: none rejected, no unknown columns (schema drift)."""
    entries = pipeline.log_rows(spark, entity)
    batch, files = _latest_batch(entries)
    rejected = [f for f in files if f["status"] == REJECTED]
    drift = [f for f in files if f["extra_columns"]]
    reasons = sorted({f["reason"] for f in rejected if f["reason"]})
    parts = []
    if rejected:
        parts.append(f"{len(rejected)} of {len(files)} files rejected ({', '.join(reasons)}); they stay in the landing zone")
    if drift:
        parts.append(f"{len(drift)} files carry columns the contract does not know (kept in _extra_columns)")
    return CheckOutcome(
        passed=not rejected and not drift,
        summary="; ".join(parts) or f"all {len(files)} files of the latest batch match the contract",
        metrics={
            "batch_id": batch or "none",
            "files_in_batch": len(files),
            "rejected_in_batch": len(rejected),
            "drift_files_in_batch": len(drift),
            "rejected_all_time": sum(1 for e in entries if e["status"] == REJECTED),
        },
        sample=[
            {"file": f["source_uri"], "status": f["status"], "reason": f["reason"] or "schema_drift",
             "detail": f["message"] or ", ".join(f["extra_columns"] or [])}
            for f in (rejected + drift)[:SAMPLE_ROWS]
        ],
        sample_columns=["file", "status", "reason", "detail"],
        fingerprint=json.dumps([batch, sorted(f["source_uri"] for f in rejected + drift)]),
    )


def _in_flight(spark: SparkSession, table: str, entries: list[dict], alive: Liveness) -> list["pipeline.Unsettled"]:
    """Batches another live run has appended to Bronze and not logged yet: theirs to settle, not a fault."""
    return [u for u in pipeline.unsettled_batches(tables.snapshots(spark, table), entries) if alive(u.writer)]


def bronze_row_counts(spark: SparkSession, entity: Entity, alive: Liveness = default_liveness) -> CheckOutcome:
    """Bronze holds the records an independent parser counted in each loaded file; parse errors counted.

    The latest batch is recounted from the table per file; earlier batches by what the log recorded when they
    were committed, and the whole table by its total against the log's (rows of batches another live run has
    not logged yet aside).
    """
    table = BRONZE[entity].identifier
    entries = pipeline.log_rows(spark, entity)
    in_flight = _in_flight(spark, table, entries, alive)
    loaded = [e for e in entries if e["status"] == LOADED]
    batch, batch_files = _latest_batch(entries, (LOADED,))
    # The latest batch is re-counted from the table itself; earlier ones by what was committed at the time.
    actual = {}
    if batch:
        actual = {
            (r._source_uri, r._source_etag): r.n
            for r in spark.table(table).where(F.col("_batch_id") == batch)
            .groupBy("_source_uri", "_source_etag").agg(F.count("*").alias("n")).collect()
        }
    mismatched = []
    for e in loaded:
        rows = actual.get((e["source_uri"], e["source_etag"]), 0) if e["batch_id"] == batch else e["rows"]
        if e["source_records"] is not None and rows != e["source_records"]:
            mismatched.append({"file": e["source_uri"], "batch_id": e["batch_id"], "bronze_rows": rows,
                               "records_in_file": e["source_records"]})
    bronze_rows = tables.total_records(spark, table) - sum(u.rows for u in in_flight)
    logged_rows = sum(e["rows"] for e in loaded)
    passed = not mismatched and bronze_rows == logged_rows
    summary = (
        f"{len(mismatched)} files where Bronze's rows differ from the records in the file" if mismatched
        else f"Bronze holds {bronze_rows:,} rows but the ingestion log accounts for {logged_rows:,}" if not passed
        else f"{bronze_rows:,} Bronze rows = the records of {len(loaded)} loaded files"
    )
    return CheckOutcome(
        passed=passed,
        summary=summary,
        metrics={
            "bronze_rows": bronze_rows,
            "logged_rows": logged_rows,
            "records_in_files": sum(e["source_records"] or 0 for e in loaded),
            "files_checked": sum(1 for e in loaded if e["source_records"] is not None),
            "malformed_rows": sum(e["malformed_rows"] for e in loaded),
            "malformed_rows_in_batch": sum(e["malformed_rows"] for e in batch_files),
            "invalid_utf8_records": sum(e["invalid_utf8_records"] or 0 for e in loaded),
            "mismatched_files": len(mismatched),
            "in_flight_batches": len(in_flight),
        },
        sample=mismatched[:SAMPLE_ROWS],
        sample_columns=["file", "batch_id", "bronze_rows", "records_in_file"],
        # The same files off by the same counts, and the table off the log by the same number: the same failure.
        fingerprint=json.dumps([sorted(json.dumps(m, sort_keys=True, default=str) for m in mismatched),
                                bronze_rows - logged_rows]),
    )


def bronze_metadata(spark: SparkSession, entity: Entity, alive: Liveness = default_liveness) -> CheckOutcome:
    """Every Bronze row names its file, version, row and batch: rows numbered 1..n per file, batches all logged
    (or still being written by a live run)."""
    table = BRONZE[entity].identifier
    entries = pipeline.log_rows(spark, entity)
    statuses = {e["batch_id"]: e["status"] for e in entries}
    in_flight = {u.batch_id for u in _in_flight(spark, table, entries, alive)}
    # Every append to Bronze carries its batch id; each must be settled in the log (or rolled back), unless a
    # live run is still writing it.
    unlogged = [
        s.summary.get(tables.BATCH_ID_PROPERTY, "(none)") for s in tables.snapshots(spark, table)
        if s.operation == "append" and s.summary.get(tables.BATCH_ID_PROPERTY) not in statuses
        and s.summary.get(tables.BATCH_ID_PROPERTY) not in in_flight
    ]
    batch, files = _latest_batch(entries, (LOADED,))
    expected = {(f["source_uri"], f["source_etag"]) for f in files}
    bad = []
    rows = 0
    if batch:
        per_file = (
            spark.table(table).where(F.col("_batch_id") == batch)
            .groupBy("_source_uri", "_source_etag")
            .agg(
                F.count("*").alias("rows"),
                F.min("_source_row").alias("first_row"),
                F.max("_source_row").alias("last_row"),
                F.countDistinct("_source_row").alias("distinct_rows"),
                F.sum(F.when(F.col("_ingested_at").isNull() | F.col("_source_row").isNull(), 1).otherwise(0))
                .alias("incomplete"),
            )
            .collect()
        )
        for r in per_file:
            rows += r.rows
            numbered = r.first_row == 1 and r.last_row == r.rows == r.distinct_rows
            if not numbered or r.incomplete or (r._source_uri, r._source_etag) not in expected:
                bad.append({"file": r._source_uri, "rows": r.rows, "first_row": r.first_row, "last_row": r.last_row,
                            "distinct_rows": r.distinct_rows, "in_log": (r._source_uri, r._source_etag) in expected})
    passed = not bad and not unlogged
    return CheckOutcome(
        passed=passed,
        summary=(
            f"{len(bad)} files with gaps, repeats or unknown origin; {len(unlogged)} unlogged appends" if not passed
            else f"{rows:,} rows of the latest batch numbered 1..n in {len(files)} logged files"
        ),
        metrics={"batch_id": batch or "none", "rows_in_batch": rows, "files_in_batch": len(files),
                 "bad_files": len(bad), "unlogged_appends": len(unlogged), "in_flight_batches": len(in_flight)},
        sample=bad[:SAMPLE_ROWS],
        sample_columns=["file", "rows", "first_row", "last_row", "distinct_rows", "in_log"],
        fingerprint=json.dumps([sorted(json.dumps(b, sort_keys=True, default=str) for b in bad), sorted(unlogged)]),
    )


# --- Silver ----------------------------------------------------------------------------------------------------


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
        sample=diffs[:SAMPLE_ROWS],
        sample_columns=["position", "expected", "found"],
        fingerprint=json.dumps(diffs, sort_keys=True),
    )


def silver_primary_key(spark: SparkSession, entity: Entity, full: bool = False) -> CheckOutcome:
    """Every id is present and appears once (checked for the ids changed since the check last passed)."""
    table = SILVER[entity].identifier
    changes = pipeline.changes_since(spark, table, _verified(spark, table, "primary_key_unique", full))
    df = spark.table(table)
    if changes.since is not None and not changes.pending:
        return CheckOutcome(True, "no Silver rows changed since the ids were last verified unique",
                            {"rows": tables.total_records(spark, table), "rows_checked": 0, "scope": _scope(changes)})
    changed = df if changes.since is None else changes.rows(spark)
    # A changed id is unique when the whole table holds it once: the same id-column scan a MERGE makes.
    scope = df if changes.since is None else df.join(changed.select("id").distinct(), "id", "left_semi")
    row = changed.agg(F.count("*").alias("rows"), F.count("id").alias("non_null")).first()
    duplicated = scope.groupBy("id").count().where("count > 1")
    dupes = duplicated.agg(F.count("*").alias("ids")).first()
    n_dupes, null_ids = dupes.ids or 0, row.rows - row.non_null
    sample = [] if not n_dupes else [
        r.asDict() for r in duplicated.orderBy(F.desc("count")).limit(SAMPLE_ROWS).collect()
    ]
    total = tables.total_records(spark, table)
    outcome = CheckOutcome(
        passed=n_dupes == 0 and null_ids == 0,
        summary=f"{row.rows:,} rows checked: {n_dupes:,} ids appear more than once, {null_ids:,} null ids"
        + ("" if changes.since is None else f" ({total:,} rows in Silver)"),
        metrics={"rows": total, "rows_checked": row.rows, "duplicated_ids": n_dupes, "null_ids": null_ids,
                 "scope": _scope(changes)},
        sample=sample,
        sample_columns=["id", "count"],
    )
    _record_verified(spark, table, "primary_key_unique", [outcome], changes.until)
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
    changes = pipeline.changes_since(spark, contract.identifier,
                                     _verified(spark, contract.identifier, "values", full))
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
        sample = _sample(df.where(offending), shown)
    broken = {k: v for k, v in counts.items() if v}
    problems = ([schema.summary] if not schema.passed else []) + [f"{v:,} rows {k}" for k, v in broken.items()]
    scope = _scope(changes)
    types = CheckOutcome(
        passed=not problems,
        summary="; ".join(problems) or f"{rows:,} rows ({scope}): types as documented, every value in range",
        metrics={"rows": rows, "schema_differences": schema.metrics["differences"], "scope": scope, **counts},
        sample=sample if broken else schema.sample,
        sample_columns=shown if broken else schema.sample_columns,
    )
    if entity is Entity.POST:
        _record_verified(spark, contract.identifier, "values", [types], changes.until)
        return types, None
    post_sample = _sample(df.where(post_rule), ["id", "post_id", "permalink"]) if post_bad else []
    post_id = CheckOutcome(
        passed=post_bad == 0,
        summary=f"{post_bad:,} comments whose post_id is not the one in their permalink" if post_bad
        else f"{rows:,} comments, each with the post id from its permalink",
        metrics={"rows": rows, "post_id_not_parsed": post_bad, "scope": scope},
        sample=post_sample,
        sample_columns=["id", "post_id", "permalink"],
    )
    _record_verified(spark, contract.identifier, "values", [types, post_id], changes.until)
    return types, post_id


def quarantine_rate(spark: SparkSession, entity: Entity, max_rate: float) -> CheckOutcome:
    """The share of the latest loaded batch's rows that Silver quarantined stays under `max_rate`."""
    entries = pipeline.log_rows(spark, entity)
    batch, files = _latest_batch(entries, (LOADED,))
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
        sample=reasons[:SAMPLE_ROWS],
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
    verified = _verified(spark, silver_table, "bronze_reconciled", full)
    # Incremental only from a snapshot still in Bronze's lineage, before Silver's position.
    start = int(verified) if verified and int(verified) in ids and int(mark) in ids \
        and ids.index(int(verified)) <= ids.index(int(mark)) else None
    scope = "full" if start is None else "Bronze snapshots read since last verified"
    if start == int(mark):
        return CheckOutcome(True, "Silver has read no Bronze rows since they were last reconciled",
                            {"bronze_rows": 0, "bronze_snapshot": mark, "scope": scope})
    entries = pipeline.log_entries(spark, entity)
    keys = ["_source_uri", "_source_etag", "_source_row"]
    read = pipeline.bronze_rows(spark, entity, start, int(mark), entries)
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
            silver_tf.typed(read.join(newer_keys.drop("_s_hash"), keys, "left_semi"), entity, pipeline.utcnow(), [])
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
        sample = _sample(bad, ["id", "_state", *keys])
    bronze_rows = sum(counts.values())
    outcome = CheckOutcome(
        passed=unaccounted == 0 and stale == 0 and orphans == 0,
        summary=(
            f"{bronze_rows:,} Bronze rows ({scope}): {counts.get('in_silver', 0):,} in Silver, "
            f"{counts.get('quarantined', 0):,} quarantined, {counts.get('collapsed_duplicate', 0):,} older versions "
            f"of an id, {counts.get('redelivered_unchanged', 0):,} re-delivered unchanged, {unaccounted:,} "
            f"unaccounted, {stale:,} newer than Silver's version; {orphans:,} Silver rows without a Bronze row"
        ),
        metrics={"bronze_rows": bronze_rows, "in_silver": counts.get("in_silver", 0),
                 "quarantined": counts.get("quarantined", 0),
                 "collapsed_duplicates": counts.get("collapsed_duplicate", 0),
                 "redelivered_unchanged": counts.get("redelivered_unchanged", 0),
                 "unaccounted": unaccounted, "newer_than_silver": stale, "silver_rows_without_bronze": orphans,
                 "bronze_snapshot": mark, "scope": scope},
        sample=sample,
        sample_columns=["id", "_state", *keys],
    )
    _record_verified(spark, silver_table, "bronze_reconciled", [outcome], mark)
    return outcome


# --- Gold ------------------------------------------------------------------------------------------------------


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
        return n, _sample(mismatched, mismatched.columns) if n else []
    finally:
        mismatched.unpersist()


def _gold_high(spark: SparkSession, gold_table: str) -> int | None:
    # Answered from file statistics (aggregate push-down), like Silver's high-water.
    return spark.table(gold_table).select(F.unix_micros(F.max("loaded_at")).alias("m")).first().m


def gold_reconciled(spark: SparkSession, table_key: str, full: bool = False) -> CheckOutcome:
    """Gold adds up to Silver: one row per Silver item, and per-key counts equal to Silver's.

    Compares the keys that Silver rows changed since the check last passed touch, and the keys of Gold rows
    written since; every key on a full pass.
    """
    posts_t, comments_t = SILVER[Entity.POST].identifier, SILVER[Entity.COMMENT].identifier
    gold_table = GOLD[table_key].identifier
    posts, comments = spark.table(posts_t), spark.table(comments_t)
    gold = spark.table(gold_table)
    marks = json.loads(_verified(spark, gold_table, "reconciles_with_silver", full) or "{}")
    post_changes = pipeline.changes_since(spark, posts_t, marks.get(posts_t))
    comment_changes = pipeline.changes_since(spark, comments_t, marks.get(comments_t))
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
        _record_verified(spark, gold_table, "reconciles_with_silver", [outcome],
                         json.dumps({posts_t: through[posts_t], comments_t: through[comments_t], "gold": gold_high}))
    return outcome


def gold_freshness(spark: SparkSession, table_key: str, sources: list[str]) -> CheckOutcome:
    """Gold has read every Silver change: its watermarks reach each source's latest `_updated_at`."""
    gold_table = GOLD[table_key].identifier
    lag = {}
    for source in sources:
        # The same watermark/high-water pair the Gold step reads its changes by.
        changes = pipeline.silver_changes(spark, gold_table, source)
        if changes.until is not None:
            lag[source] = (changes.until - (changes.since or 0)) / 1e6
    behind = {s: v for s, v in lag.items() if v > 0}
    last = spark.table(gold_table).agg(F.max("loaded_at").alias("m")).first().m
    return CheckOutcome(
        passed=not behind,
        summary=", ".join(f"{s} changed {v:,.0f} s after Gold last read it" for s, v in behind.items())
        or "Gold has read every Silver change",
        metrics={"last_loaded_at": str(last), **{f"lag_seconds {s}": round(v, 3) for s, v in lag.items()}},
        fingerprint=json.dumps(sorted(behind)),
    )
