"""Gold: the warehouse tables, updated for the keys that changed in Silver."""

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import dagster as dg
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from lakehouse import operations, pipeline, quality
from lakehouse.contracts import GOLD, SILVER, Entity
from lakehouse_assets.bronze import POOL
from lakehouse.spark import in_this_thread_context
from lakehouse_assets.metadata import (
    Check, check_outcomes, check_results, chosen_checks, full_scope, layer_checks, rebuilding, record_refresh, selected,
    table_metadata,
)
from resources import ComputeResource, SparkResource
from resources.runs import liveness

SILVER_POSTS = dg.AssetKey(["silver", "posts"])
SILVER_COMMENTS = dg.AssetKey(["silver", "comments"])
CHART_DAYS = 30
CHART_WIDTH = 40

DESCRIPTIONS = {
    "posts": "One row per post with exact types and title word tokens.",
    "comments": "One row per comment with exact types, body word tokens and decimal sentiment.",
    "subreddit_daily": "Per subreddit and day: posts, comments, sentiment mean/min/max, mean score, NSFW share.",
    "post_engagement": "Per post: comment count, mean comment sentiment, positive/negative shares, score.",
}
DEPS = {
    "posts": [SILVER_POSTS],
    "comments": [SILVER_COMMENTS],
    "subreddit_daily": [SILVER_POSTS, SILVER_COMMENTS],
    "post_engagement": [SILVER_POSTS, SILVER_COMMENTS],
}


def activity_chart(spark: SparkSession, days: int = CHART_DAYS) -> str:
    """A bar chart of the last `days` days of activity (posts + comments), as Markdown."""
    rows = (
        spark.table(GOLD["subreddit_daily"].identifier)
        .groupBy("activity_date")
        .agg(F.sum("posts").alias("posts"), F.sum("comments").alias("comments"))
        .orderBy(F.col("activity_date").desc())
        .limit(days)
        .collect()
    )
    if not rows:
        return "no activity yet"
    peak = max(r.posts + r.comments for r in rows) or 1
    lines = []
    for r in sorted(rows, key=lambda r: r.activity_date):
        posts = round(CHART_WIDTH * r.posts / peak)
        comments = round(CHART_WIDTH * r.comments / peak)
        lines.append(f"{r.activity_date}  {'█' * posts}{'░' * comments}  {r.posts:,} posts, {r.comments:,} comments")
    return "Daily activity, all subreddits (█ posts, ░ comments)\n\n```\n" + "\n".join(lines) + "\n```"


def gold_checks(table_key: str) -> list[Check]:
    """Gold is complete by database standards: the documented schema, numbers that add up to Silver, up to date."""
    key = dg.AssetKey(["gold", table_key])
    contract = GOLD[table_key]
    sources = [SILVER[Entity.POST if k == SILVER_POSTS else Entity.COMMENT].identifier for k in DEPS[table_key]]
    return layer_checks([
        Check(key, "schema_matches_contract", "Column names, order, types and nullability exactly as in docs/tables.md.",
              lambda spark, full, alive: quality.schema_matches(spark, contract)),
        Check(key, "reconciles_with_silver", "Per key, Gold's rows and counts equal what Silver holds.",
              lambda spark, full, alive: quality.gold_reconciled(spark, table_key, full=full)),
        Check(key, "fresh", "Gold has read every Silver change (its watermarks reach Silver's latest update).",
              lambda spark, full, alive: quality.gold_freshness(spark, table_key, sources),
              severity=dg.AssetCheckSeverity.WARN),
    ])


# Gold tables updated at once in the Gold step. Each depends on Silver only, and a 10,000-row batch's Gold work is
# mostly driver-side planning, Iceberg metadata and commits on one thread: a second table keeps the second core busy.
GOLD_THREADS = 2


def gold_spec(table_key: str) -> dg.AssetSpec:
    contract = GOLD[table_key]
    return dg.AssetSpec(
        dg.AssetKey(["gold", table_key]),
        deps=DEPS[table_key],
        group_name="gold",
        kinds={"spark", "iceberg"},
        description=DESCRIPTIONS[table_key],
        metadata={
            "dagster/table_name": f"lakehouse.{contract.identifier}",
            "dagster/column_schema": dg.TableSchema(
                columns=[dg.TableColumn(c.name, c.type, description=c.doc) for c in contract.columns]
            ),
        },
    )


@dataclass
class TableWork:
    """What the Gold step did for one table: its update (none when only its checks were selected), its checks'
    outcomes, and the error that stopped it."""

    table_key: str
    checks: list[Check] = field(default_factory=list)
    result: pipeline.GoldResult | None = None  # a local update's figures, for the run's log
    materialization: dg.MaterializeResult | None = None
    outcomes: list = field(default_factory=list)
    error: Exception | None = None
    seconds: float = 0.0


def gold_assets_def(table_keys: list[str]) -> dg.AssetsDefinition:
    """Every Gold table as one step: the selected tables are updated side by side, each checked right after it is
    written (its own checks, as in the other layers' steps)."""
    updates = {k: pipeline.gold_update(k) for k in table_keys}  # an unknown table fails here, naming the tables
    checks = {k: gold_checks(k) for k in table_keys}

    @dg.multi_asset(
        name="gold",
        specs=[gold_spec(k) for k in table_keys],
        check_specs=[c.spec for k in table_keys for c in checks[k]],
        can_subset=True,  # the sensor's selection takes the tables of one entity; the nightly pass only checks
        pool=POOL,
    )
    def _gold(context: dg.AssetExecutionContext, spark: SparkResource, compute: ComputeResource):
        """Update the selected Gold tables for the Silver keys that changed since they last read them, then check them."""
        session = spark.spark_session
        full, alive, rebuild = full_scope(context), liveness(context.instance), rebuilding(context)
        todo = [TableWork(k, checks=chosen_checks(context, checks[k])) for k in table_keys]
        todo = [w for w in todo if w.checks or selected(context, _key(w.table_key))]

        def attempt(work: TableWork) -> TableWork:
            started = time.perf_counter()
            try:
                if selected(context, _key(work.table_key)):
                    _update(context, session, compute, work, rebuild, updates[work.table_key])
                work.outcomes = check_outcomes(session, work.checks, full, alive)
            except Exception as exc:  # the other tables go on; the step fails at the end
                work.error = exc
            work.seconds = time.perf_counter() - started
            return work

        failed = []
        if compute.remote:  # a Pipes or Glue job reports through the step's context: one after another, here
            for work in todo:
                failed += (yield from _report(context, session, attempt(work), rebuild))
        else:
            with ThreadPoolExecutor(max_workers=GOLD_THREADS, thread_name_prefix="gold") as pool:
                running = [pool.submit(in_this_thread_context(session, attempt), w) for w in todo]
                for future in running:  # reported in the order the tables are declared, each once it is done
                    failed += (yield from _report(context, session, future.result(), rebuild))
        if failed:
            names = ", ".join(GOLD[w.table_key].identifier for w in failed)
            raise RuntimeError(f"Gold failed for {names} (see the errors above)") from failed[0].error

    return _gold


def _key(table_key: str) -> dg.AssetKey:
    return dg.AssetKey(["gold", table_key])


def _update(context, session: SparkSession, compute: ComputeResource, work: TableWork, rebuild: bool, update) -> None:
    """One table's update and its materialisation (its metadata reads the table: done here, in the worker)."""
    table_key = work.table_key
    if compute.remote:
        reported = compute.run_step(context, "gold", table=table_key, extras={"rebuild": rebuild})
        # The step holds every Gold table: the job reports this one's by its key.
        (work.materialization,) = (r for r in reported.get_results()
                                   if isinstance(r, dg.MaterializeResult) and r.asset_key == _key(table_key))
        return
    work.result = operations.rebuild_gold(session, table_key) if rebuild else update(session, table_key)
    extra = {"rows_written": work.result.rows_written, "rows_deleted": work.result.rows_deleted,
             "full_rebuild": work.result.full_rebuild}
    if table_key == "subreddit_daily":
        extra["daily_activity"] = dg.MetadataValue.md(activity_chart(session))
    work.materialization = dg.MaterializeResult(asset_key=_key(table_key),
                                                metadata=table_metadata(session, GOLD[table_key], **extra))


def _report(context: dg.AssetExecutionContext, session: SparkSession, work: TableWork, rebuild: bool):
    """Yield the table's materialisation and check results with the log lines and operator record that go with
    them; returns the table's work when it failed (to raise for at the end), else nothing."""
    contract = GOLD[work.table_key]
    if work.result is not None:
        r = work.result
        if rebuild:
            record_refresh(session, context, contract.identifier, {"rows": r.rows_written, "watermarks": r.watermarks})
        context.log.info(
            f"{contract.identifier}: {r.rows_written} rows written, {r.rows_deleted} deleted"
            f"{' (full build)' if r.full_rebuild else ''}; watermarks {r.watermarks or 'unchanged'} "
            f"({work.seconds:.1f} s with its checks)"
        )
    if work.materialization is not None:
        yield work.materialization
    yield from check_results(context, session, work.checks, work.outcomes)
    if work.error is not None:
        context.log.error(f"{contract.identifier}: {type(work.error).__name__}: {work.error}")
    return [work] if work.error is not None else []


gold_tables = gold_assets_def(list(GOLD))

defs = dg.Definitions(assets=[gold_tables])
