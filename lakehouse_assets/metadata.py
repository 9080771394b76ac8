"""Materialisation metadata shared by every layer: row count, schema, preview, Iceberg snapshot."""

# No `from __future__ import annotations`: Dagster reads the check function's annotations at definition time.
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator

import dagster as dg
from pyspark.sql import SparkSession

from lakehouse import tables
from lakehouse.contracts import TableContract
from lakehouse.errors import UserError
from lakehouse.markdown import markdown_table
from lakehouse import checks
from lakehouse.checks import CheckOutcome, acceptance, marks_together, record_gates
from lakehouse.settings import CATALOG_NAME
from lakehouse.spark import in_this_thread_context
from lakehouse.writers import Liveness
from resources.runs import liveness

PREVIEW_ROWS = 5
CHECK_THREADS = 2  # a step's check evaluations at once (evaluate_checks)
# Runs tagged `lakehouse/check_scope=full` (the nightly `full_quality_checks` job) make every check look at
# whole tables; otherwise the expensive checks look at what changed since they last passed.
CHECK_SCOPE_TAG = "lakehouse/check_scope"
# Runs tagged `lakehouse/rebuild=true` (the `full_refresh` job) rebuild Silver and Gold in full instead of updating
# them; `lakehouse/requested_by` and `lakehouse/reason` say who asked and why (the operator log records them).
REBUILD_TAG = "lakehouse/rebuild"
REQUESTED_BY_TAG, REASON_TAG = "lakehouse/requested_by", "lakehouse/reason"


def rebuilding(context: dg.AssetExecutionContext) -> bool:
    return context.run.tags.get(REBUILD_TAG) == "true"


def record_refresh(spark: SparkSession, context: dg.AssetExecutionContext, table: str, details: dict) -> None:
    """The operator log's row for one table a full refresh rebuilt."""
    from lakehouse import operations

    tags = context.run.tags
    operations.record(spark, "refresh", table, tags.get(REQUESTED_BY_TAG) or "launchpad", tags.get(REASON_TAG),
                      details, context.run_id)


def full_scope(context: dg.AssetExecutionContext) -> bool:
    return context.run.tags.get(CHECK_SCOPE_TAG) == "full"


def column_schema(contract: TableContract) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name=c.name,
                type=c.type,
                description=c.doc,
                constraints=dg.TableColumnConstraints(nullable=c.nullable),
            )
            for c in contract.columns
        ]
    )


def preview(spark: SparkSession, contract: TableContract, order_by: str | None = None) -> str:
    df = spark.table(contract.identifier)
    if order_by:
        df = df.orderBy(order_by)
    rows = [r.asDict() for r in df.limit(PREVIEW_ROWS).collect()]
    business = [c for c in contract.names if not c.startswith("_")][:10]
    return markdown_table(rows, business)


def table_metadata(spark: SparkSession, contract: TableContract, **extra: Any) -> dict[str, Any]:
    """What a user wants to see for any Iceberg table after a materialisation."""
    snap = tables.current_snapshot(spark, contract.identifier)
    meta: dict[str, Any] = {
        "dagster/table_name": f"{CATALOG_NAME}.{contract.identifier}",
        "dagster/row_count": int(snap.summary.get("total-records", 0)) if snap else 0,
        "dagster/column_schema": column_schema(contract),
        "snapshot_id": str(snap.snapshot_id) if snap else "none",
        "data_files": int(snap.summary.get("total-data-files", 0)) if snap else 0,
        "preview": dg.MetadataValue.md(preview(spark, contract)),
    }
    meta.update(extra)
    return meta


def check_table(asset: dg.AssetKey) -> str:
    """The Iceberg table an asset check looks at: asset `silver/posts` is table `silver.posts`."""
    return ".".join(asset.path)


def check_result(
    context: dg.AssetCheckExecutionContext | dg.OpExecutionContext,
    outcome: CheckOutcome,
    severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR,
    check_name: str | None = None,
    asset_key: dg.AssetKey | None = None,
    spark: SparkSession | None = None,
) -> dg.AssetCheckResult:
    """An `AssetCheckResult` with the outcome's counts and offending rows; a failure is also logged in the run.

    A failure an operator accepted (`lakehouse accept`) is reported as a warning saying who accepted it, when and
    why, so it no longer blocks; any other failure keeps its severity."""
    metadata: dict[str, Any] = {"summary": outcome.summary, **outcome.metrics}
    if outcome.sample:
        metadata["offending_rows"] = dg.MetadataValue.md(markdown_table(outcome.sample, outcome.sample_columns))
    accepted = None
    if spark is not None and asset_key is not None and not outcome.passed:
        accepted = checks.acceptance(spark, check_table(asset_key), check_name, outcome)
    if accepted:
        severity = dg.AssetCheckSeverity.WARN
        metadata |= {"accepted_by": accepted["by"], "accepted_at": accepted["at"], "accepted_why": accepted["why"]}
        outcome = replace(outcome, summary=f"accepted by {accepted['by']} at {accepted['at']} ({accepted['why']}): "
                                           f"{outcome.summary}")
    if not outcome.passed:
        name = check_name or "check"
        log = context.log.error if severity is dg.AssetCheckSeverity.ERROR else context.log.warning
        log(f"{name} failed ({severity.value}): {outcome.summary}")
    return dg.AssetCheckResult(
        passed=outcome.passed,
        severity=severity,
        description=outcome.summary,
        metadata=metadata,
        check_name=check_name,
        asset_key=asset_key,
    )


Evaluate = Callable[[SparkSession, bool, Liveness], Any]


@dataclass(frozen=True)
class Check:
    """One asset check of a layer: its spec, and how the step that writes the asset evaluates it.

    `evaluate(spark, full, alive)` computes the outcome with the step's Spark session (`full`: whole tables, not
    what changed since the check last passed; `alive`: which Bronze writers the instance knows to be running).
    Checks answered by one scan share an `evaluate` that returns a tuple, and each names its `part` of it.

    A `gate` (blocking) also keeps its standing failure on the table it checks, so that the table's readers stop on
    every path, not only in the run that evaluated it (`checks.record_gates`, `checks.HELD_PREFIX`)."""

    asset: dg.AssetKey
    name: str
    description: str
    evaluate: Evaluate
    blocking: bool = False
    severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR
    part: int | None = None
    gate: bool = False

    def __post_init__(self) -> None:
        if self.gate and not self.blocking:
            raise ValueError(f"{self.name}: a gate holds readers only when it blocks")

    @property
    def key(self) -> dg.AssetCheckKey:
        return dg.AssetCheckKey(self.asset, self.name)

    @property
    def spec(self) -> dg.AssetCheckSpec:
        return dg.AssetCheckSpec(self.name, asset=self.asset, blocking=self.blocking, description=self.description)

    def outcome(self, spark: SparkSession, full: bool, alive: Liveness) -> CheckOutcome:
        return self.of(self.evaluate(spark, full, alive))

    def of(self, evaluated: Any) -> CheckOutcome:
        """This check's outcome from what its `evaluate` returned (its part of a shared scan's tuple)."""
        return evaluated if self.part is None else evaluated[self.part]


def layer_checks(checks: list[Check]) -> list[Check]:
    """Register a layer's checks for `lakehouse accept` and hand them to the step that runs them."""
    for check in checks:
        register(check)
    return checks


def evaluate_checks(
    context: dg.AssetExecutionContext, spark: SparkSession, checks: list[Check]
) -> Iterator[dg.AssetCheckResult]:
    """The step's selected checks, evaluated with its session right after it wrote (no step of their own).

    A run of the nightly `full_quality_checks` job selects only the checks: then they look at whole tables.
    The evaluations run side by side (one per `evaluate`: checks answered by one scan share it). A check's Spark
    jobs on a small batch are mostly driver-side planning and commits on one thread, so a second thread keeps the
    second core busy; the results are reported in the order the layer declares them."""
    chosen = [c for c in checks if c.key in context.selected_asset_check_keys]
    alive, full = liveness(context.instance), full_scope(context)
    # The snapshot of each gated table the gates look at: a hold names it (the sensor waits while it is current).
    gated = {table: tables.snapshot_id(spark, table)
             for table in sorted({check_table(c.asset) for c in chosen if c.gate})}
    with ThreadPoolExecutor(max_workers=CHECK_THREADS, thread_name_prefix="check") as pool:
        with marks_together(spark):  # one commit per table for all the checks' marks
            running = {e: pool.submit(in_this_thread_context(spark, e), spark, full, alive)
                       for e in dict.fromkeys(c.evaluate for c in chosen)}
            outcomes = [(check, check.of(running[check.evaluate].result())) for check in chosen]
    verdicts: dict[str, list] = {}
    for check, outcome in outcomes:
        if check.gate:
            table = check_table(check.asset)
            accepted = not outcome.passed and acceptance(spark, table, check.name, outcome) is not None
            verdicts.setdefault(table, []).append((check.name, outcome, accepted))
    for table, verdict in verdicts.items():  # before the results: a failing gate fails the step once reported
        record_gates(spark, table, verdict, gated[table], context.run_id)
    for check, outcome in outcomes:  # a check that raised fails the step, as before
        yield check_result(context, outcome, check.severity, check_name=check.name, asset_key=check.asset,
                           spark=spark)


def selected(context: dg.AssetExecutionContext, *keys: dg.AssetKey) -> bool:
    """Whether the step is to write any of these assets (a run of only their checks is not)."""
    return bool(set(keys) & set(context.selected_asset_keys))


# Every asset check's evaluation by (asset, check name): what `lakehouse accept` evaluates before it records an
# acceptance. An unknown name fails loudly with the names there are.
CHECKS: dict[tuple[str, str], Check] = {}


def register(check: Check) -> None:
    CHECKS[(check.asset.to_user_string(), check.name)] = check


class UnknownCheck(UserError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


def check_named(asset: str, name: str) -> Check:
    try:
        return CHECKS[(asset, name)]
    except KeyError:
        known = "\n  ".join(f"{a} {n}" for a, n in sorted(CHECKS))
        raise UnknownCheck(f"no asset check {name!r} on {asset!r}; the checks are:\n  {known}") from None
