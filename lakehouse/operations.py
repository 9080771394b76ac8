"""What an operator does when the data needs a human: retract a file, rebuild Silver and Gold from Bronze, accept a
failing check. No Dagster here (the Dagster jobs in lakehouse_assets/operations.py and the `lakehouse` commands
call these); every action is recorded in `ops.operator_log` with who, when and why.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from lakehouse import bronze_layer, clock, gold_layer, silver_layer, tables
from lakehouse.contracts import BRONZE, GOLD, OPERATOR_LOG, QUARANTINE, SILVER, Entity
from lakehouse.errors import UserError
from lakehouse.ingestion import LOADED, RETRACTED, LogEntry
from lakehouse.landing import entity_for_key
from lakehouse.transforms import gold as gold_tf
from lakehouse.transforms import silver as silver_tf
from lakehouse.writers import Liveness, default_liveness

log = logging.getLogger(__name__)
BATCH_ID = re.compile(r"^[0-9a-f]{32}$")


def record(spark: SparkSession, action: str, target: str, actor: str, reason: str | None, details: dict,
           run_id: str | None = None) -> None:
    """Append one operator action to `ops.operator_log`."""
    row = (clock.utcnow(), actor, action, target, reason, json.dumps(details, default=str, sort_keys=True), run_id)
    spark.createDataFrame([row], tables.spark_schema(spark, OPERATOR_LOG)).writeTo(OPERATOR_LOG.identifier).append()


# --- retract ----------------------------------------------------------------------------------------------------


class NothingToRetract(UserError, ValueError):
    """The target names no loaded file version (a typo, or it was never loaded, or is retracted already)."""


@dataclass(frozen=True)
class Version:
    """One file version as one batch loaded it."""

    batch_id: str
    uri: str
    etag: str


@dataclass
class RetractResult:
    entity: Entity
    versions: list[Version]
    bronze_rows: int = 0
    quarantine_rows: int = 0
    silver_restored: int = 0  # ids back to an older version another file holds
    silver_deleted: int = 0  # ids no other file holds
    gold: dict[str, dict] = field(default_factory=dict)

    def details(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "entity"} | {"entity": self.entity.value}


def _as_uri(target: str, landing_root: Path | None) -> str:
    """A landing key (input/post/a.csv), a path or a URI, as the URI the ingestion log records."""
    if "://" in target or target.startswith("file:"):
        return target
    if landing_root is not None and entity_for_key(target) is not None:
        return (landing_root / target).resolve().as_uri()
    return Path(target).expanduser().resolve().as_uri()


def resolve_versions(entries: list[LogEntry], target: str, landing_root: Path | None = None,
                     etag: str | None = None, statuses: tuple[str, ...] = (LOADED,)) -> list[Version]:
    """The (batch, file version)s a target names: every file of a batch id, or one file's versions.

    A file with several versions in that state must be narrowed with `etag`; the error lists them."""
    if BATCH_ID.match(target):
        found = [e for e in entries if e.batch_id == target and e.status in statuses]
        what = f"batch {target}"
    else:
        uri = _as_uri(target, landing_root)
        found = [e for e in entries if e.source_uri == uri and e.status in statuses and (etag is None or e.source_etag == etag)]
        what = f"{uri}" + (f" at etag {etag}" if etag else "")
        if len({e.source_etag for e in found}) > 1:
            listed = ", ".join(sorted(f"{e.source_etag} (batch {e.batch_id})" for e in found))
            raise NothingToRetract(f"{what} has several {'/'.join(statuses)} versions: {listed}; name one with --etag")
    if not found:
        raise NothingToRetract(f"no {' or '.join(statuses)} file version matches {what}")
    return [Version(e.batch_id, e.source_uri, e.source_etag) for e in found]


def retract(
    spark: SparkSession, entity: Entity, target: str, *, actor: str, reason: str, landing_root: Path | None = None,
    etag: str | None = None, run_id: str | None = None, alive: Liveness = default_liveness,
) -> RetractResult:
    """Take a file version's (or a batch's) rows out of Bronze, Silver and Gold; nothing else changes.

    An id whose Silver row came from the retracted version goes back to the newest version another loaded file
    holds, or leaves Silver when none does; Gold follows through its usual steps (which take out what Silver no
    longer holds and recompute the aggregate keys touched before and after). The ingestion log records the
    version as retracted, so the sensor leaves it alone until `lakehouse reprocess` asks for it again.

    Safe to run again after a crash: a version already logged as retracted is finished, not skipped.
    """
    tables.ensure_tables(spark)
    entries = bronze_layer.log_entries(spark, entity)
    versions = resolve_versions(entries, target, landing_root, etag, statuses=(LOADED, RETRACTED))
    result = RetractResult(entity, versions)
    keys = spark.createDataFrame([(v.batch_id, v.uri, v.etag) for v in versions],
                                 "_batch_id string, _source_uri string, _source_etag string")
    bronze_t, silver_t, quarantine_t = (BRONZE[entity].identifier, SILVER[entity].identifier,
                                        QUARANTINE[entity].identifier)
    now = clock.utcnow()
    # 1. The log first: from here on every reader (Silver's rebuild below included) leaves these versions out.
    fresh = [v for v in versions if (v.batch_id, v.uri, v.etag) not in
             {(e.batch_id, e.source_uri, e.source_etag) for e in entries if e.status == RETRACTED}]
    by_version = {(e.batch_id, e.source_uri, e.source_etag): e for e in entries}
    bronze_layer.write_log(spark, [
        {"entity": entity.value, "source_uri": v.uri, "source_etag": v.etag,
         "source_size": by_version[(v.batch_id, v.uri, v.etag)].source_size,
         "source_modified_at": by_version[(v.batch_id, v.uri, v.etag)].source_modified_at,
         "batch_id": v.batch_id, "status": RETRACTED, "rows": 0, "malformed_rows": 0, "ingested_at": now,
         "reason": "retracted", "message": f"retracted by {actor}: {reason}", "actor": actor}
        for v in fresh])
    # 2. The ids these versions hold, before their rows go.
    bronze = spark.table(bronze_t).join(F.broadcast(keys), ["_batch_id", "_source_uri", "_source_etag"], "left_semi")
    ids = bronze.select(F.trim("id").alias("id")).distinct().persist()
    try:
        # 3. Silver rows whose current version came from a retracted file: restored or removed.
        from_retracted = (spark.table(silver_t).join(F.broadcast(ids), "id", "left_semi")
                          .join(F.broadcast(keys.select("_batch_id", "_source_uri")), ["_batch_id", "_source_uri"],
                                "left_semi").select("id").persist())
        try:
            result.silver_restored, result.silver_deleted = _restore_silver(spark, entity, from_retracted, alive)
        finally:
            from_retracted.unpersist()
    finally:
        ids.unpersist()
    # 4. Bronze and quarantine: the versions' own rows, as these batches loaded them. By batch, not by file
    # version: the same version reprocessed since is another batch's, and running this again leaves it alone.
    on = ["_batch_id", "_source_uri", "_source_etag"]
    result.bronze_rows = _delete_versions(spark, bronze_t, keys, on)
    result.quarantine_rows = _delete_versions(spark, quarantine_t, keys, on)
    # 5. Gold through its own steps: they see the restored rows as changes and the removed ids as gone.
    for key in (entity.plural, "subreddit_daily", "post_engagement"):
        g = gold_layer.gold_update(key)(spark, key)
        result.gold[GOLD[key].identifier] = {"rows_written": g.rows_written, "rows_deleted": g.rows_deleted}
    record(spark, "retract", ", ".join(f"{v.uri}@{v.etag} (batch {v.batch_id})" for v in versions), actor, reason,
           result.details(), run_id)
    log.warning("retracted %d file versions of %s: %s", len(versions), entity.value, result.details())
    return result


def _delete_versions(spark: SparkSession, table: str, keys: DataFrame, on: list[str]) -> int:
    """Delete the rows of these versions; a table that holds none is not written (a MERGE that deletes nothing
    would still commit a snapshot), so a retraction run again changes nothing."""
    if spark.table(table).join(F.broadcast(keys), on, "left_semi").isEmpty():
        return 0
    before = tables.total_records(spark, table)
    tables.retrying(table, lambda: tables.merge(spark, table, F.broadcast(keys), on, "WHEN MATCHED THEN DELETE"))
    return before - tables.total_records(spark, table)


def _restore_silver(spark: SparkSession, entity: Entity, ids: DataFrame, alive: Liveness) -> tuple[int, int]:
    """Silver's rows for `ids` rebuilt from the Bronze rows the log still loads: each id's newest valid version,
    or no row. Returns (restored, deleted)."""
    silver_t = SILVER[entity].identifier
    entries = bronze_layer.log_entries(spark, entity)  # the retraction is in it now
    _, end, _ = silver_layer.bronze_range(spark, entity, None, alive)
    if end is None or not ids.count():
        return 0, 0
    wanted = F.broadcast(ids.withColumnRenamed("id", "_wanted"))
    remaining = silver_layer.bronze_rows(spark, entity, None, end, entries).join(
        wanted, F.trim("id") == F.col("_wanted"), "left_semi")
    typed = silver_tf.typed(remaining, entity, clock.utcnow(), silver_layer.utf8_suspects(entries))
    restored = silver_tf.to_silver(typed, entity, clock.utcnow())
    # One MERGE: restored ids replaced (stamped as changed, so Gold picks them up), the rest deleted.
    marked = ids.join(restored.withColumn("_restore", F.lit(True)), "id", "left").persist()
    try:
        counts = {r._restore: r["count"] for r in marked.groupBy("_restore").count().collect()}
        update = ", ".join(f"t.`{c}` = s.`{c}`" for c in restored.columns if c != "_updated_at")
        tables.retrying(silver_t, lambda: tables.merge(
            spark, silver_t, F.broadcast(marked), ["id"],
            f"WHEN MATCHED AND s._restore IS NULL THEN DELETE "
            f"WHEN MATCHED THEN UPDATE SET {update}, t.`_updated_at` = current_timestamp()"))
    finally:
        marked.unpersist()
    return counts.get(True, 0), counts.get(None, 0)


# --- full refresh -----------------------------------------------------------------------------------------------


def _forget_verified(spark: SparkSession, table: str) -> list[str]:
    """Drop the checks' incremental positions on `table`: after a rebuild every check looks at everything."""
    marks = [k for k in tables.table_properties(spark, table) if k.startswith("lakehouse.verified.")]
    tables.unset_properties(spark, table, marks)
    return marks


def rebuild_silver(spark: SparkSession, entity: Entity, alive: Liveness = default_liveness) -> silver_layer.SilverResult:
    """Silver and its quarantine rebuilt from every Bronze row the log loads (after a cleaning rule changed), each
    swapped in one commit; Silver's watermark set to the Bronze snapshot read, the checks' positions reset."""
    tables.ensure_tables(spark)
    silver_t, quarantine_t = SILVER[entity].identifier, QUARANTINE[entity].identifier

    def attempt() -> silver_layer.SilverResult:
        read_at = {t: tables.snapshot_id(spark, t) for t in (silver_t, quarantine_t)}
        _, end, entries = silver_layer.bronze_range(spark, entity, None, alive)  # all of Bronze
        result = silver_layer.SilverResult(entity, from_snapshot=None, to_snapshot=end)
        if end is None:
            return result
        marks = tables.marks_after(spark, silver_t, {BRONZE[entity].identifier: str(end)})
        now = clock.utcnow()
        typed = silver_tf.typed(silver_layer.bronze_rows(spark, entity, None, end, entries), entity, now,
                                silver_layer.utf8_suspects(entries)).persist()
        try:
            stats = typed.groupBy(F.col("reasons")[0].alias("r")).count().collect()
            result.bronze_rows = sum(r["count"] for r in stats)
            result.reasons = {r.r: r["count"] for r in stats if r.r is not None}
            result.quarantined = sum(result.reasons.values())
            silver = silver_tf.to_silver(typed, entity, now).persist()
            try:
                result.inserted = silver.count()
                result.duplicates_collapsed = result.bronze_rows - result.quarantined - result.inserted
                tables.replace_all(spark, quarantine_t, silver_tf.quarantine_rows(typed, entity, now), read_at[quarantine_t])
                tables.replace_all(spark, silver_t, silver, read_at[silver_t], marks)
                tables.ensure_marked(spark, silver_t, marks)
            finally:
                silver.unpersist()
        finally:
            typed.unpersist()
        for table in (silver_t, quarantine_t):
            _forget_verified(spark, table)
        return result

    return tables.retrying(f"rebuild of {silver_t}", attempt)


def rebuild_gold(spark: SparkSession, table_key: str) -> gold_layer.GoldResult:
    """A Gold table rebuilt from Silver in full (after a Gold formula changed), swapped in one commit; its
    watermarks and read snapshots set to the Silver snapshots it read, its checks' positions reset."""
    tables.ensure_tables(spark)
    gold_t = GOLD[table_key].identifier
    sources = [SILVER[Entity.POST].identifier, SILVER[Entity.COMMENT].identifier]

    def attempt() -> gold_layer.GoldResult:
        read_at = tables.snapshot_id(spark, gold_t)
        changes = {t: silver_layer.changes_since(spark, t, None) for t in sources}
        posts, comments = (changes[t].table_rows(spark) for t in sources)
        now = clock.utcnow()
        # subreddit_daily is combined from its parts, which are rebuilt with it.
        parts = (gold_tf.all_daily_parts(posts, comments, now).persist() if table_key == "subreddit_daily"
                 else None)
        parts_base = tables.snapshot_id(spark, gold_layer.PARTS) if parts is not None else None
        builds = {"posts": lambda: gold_tf.posts(posts, now), "comments": lambda: gold_tf.comments(comments, now),
                  "subreddit_daily": lambda: gold_tf.subreddit_daily_from_parts(parts, now),
                  "post_engagement": lambda: gold_tf.post_engagement(posts, comments, now)}
        if table_key not in builds:
            raise KeyError(f"no Gold table {table_key!r}; one of {', '.join(builds)}")
        out = builds[table_key]().persist()
        used = sources if table_key in ("subreddit_daily", "post_engagement") else (
            [SILVER[Entity.POST].identifier] if table_key == "posts" else [SILVER[Entity.COMMENT].identifier])
        also = {}
        try:
            result = gold_layer.GoldResult(gold_t, rows_written=out.count(), full_rebuild=True)
            result.watermarks = {t: str(changes[t].until) for t in used if changes[t].until is not None}
            if parts is not None:  # first: Gold's commit names the parts snapshot it was combined from
                also[gold_layer.PARTS_MARK] = gold_layer.parts_mark(
                    gold_layer.commit_parts(spark, parts, None, parts_base), None)
            marks = tables.marks_after(spark, gold_t, result.watermarks, also=also,
                                       read_snapshots={t: changes[t].snapshot_id for t in used if changes[t].snapshot_id})
            tables.replace_all(spark, gold_t, out, read_at, marks)
            tables.ensure_marked(spark, gold_t, marks)
        finally:
            for df in (out, parts):
                if df is not None:
                    df.unpersist()
        _forget_verified(spark, gold_t)
        return result

    return tables.retrying(f"rebuild of {gold_t}", attempt)


# --- accepting a failing check ----------------------------------------------------------------------------------


class NothingToAccept(UserError, ValueError):
    """The check passes, or (revoking) no acceptance is recorded for it."""


def accept(spark: SparkSession, table: str, check: str, outcome, *, actor: str, reason: str,
           run_id: str | None = None) -> dict:
    """Accept this failing evaluation of `check` on `table` deliberately, so the pipeline moves on.

    The same failure then reports as a warning naming who accepted it, when and why; any other failure still
    fails. An incremental check's accepted range also leaves its scope (its position moves past it), so the runs
    after look at new data only; the nightly full pass still reports what is wrong in the table.

    The acceptance and the moved position are one commit (every check keeps its position on the table it checks).
    A position kept on another table would move after the acceptance is written: a failure between the two leaves
    an accepted failure whose range is still in scope, never a range out of scope with no acceptance recorded.
    """
    from lakehouse.checks import ACCEPTED_PREFIX, VERIFIED_PREFIX

    if outcome.passed:
        raise NothingToAccept(f"{check} on {table} passes ({outcome.summary}): nothing to accept")
    entry = {"failure": outcome.failure_id(), "summary": outcome.summary, "by": actor, "why": reason,
             "at": clock.utcnow().isoformat(timespec="seconds"), "run_id": run_id}
    changes: dict[str, dict[str, str | None]] = {table: {}}
    if outcome.mark is not None and outcome.through is not None:
        mark_table, mark = outcome.mark
        entry["position"] = {"table": mark_table, "mark": mark,
                             "from": tables.table_properties(spark, mark_table).get(VERIFIED_PREFIX + mark),
                             "to": outcome.through}
        changes.setdefault(mark_table, {})[VERIFIED_PREFIX + mark] = outcome.through
    changes[table][ACCEPTED_PREFIX + check] = json.dumps(entry)
    for target, props in changes.items():  # the checked table first
        tables.set_properties(spark, target, props)
    record(spark, "accept", f"{table}:{check}", actor, reason, entry, run_id)
    return entry


def revoke(spark: SparkSession, table: str, check: str, *, actor: str, reason: str, run_id: str | None = None) -> dict:
    """Take an acceptance back: the failure fails again, and an incremental check's accepted range is back in
    its scope. The reverse of `accept`: one commit, or the position back before the acceptance goes."""
    from lakehouse.checks import ACCEPTED_PREFIX, VERIFIED_PREFIX

    raw = tables.table_properties(spark, table).get(ACCEPTED_PREFIX + check)
    if not raw:
        raise NothingToAccept(f"no acceptance of {check} on {table} is recorded")
    entry = json.loads(raw)
    changes: dict[str, dict[str, str | None]] = {}
    if position := entry.get("position"):  # back where it was before the acceptance (None: no position)
        changes[position["table"]] = {VERIFIED_PREFIX + position["mark"]: position["from"]}
    changes.setdefault(table, {})[ACCEPTED_PREFIX + check] = None
    for target, props in changes.items():  # the checked table last
        tables.set_properties(spark, target, props)
    record(spark, "revoke", f"{table}:{check}", actor, reason, {"revoked": entry}, run_id)
    return entry
