"""The table-growth sensor: compacts a table when micro-batches have added enough small files to it, not by the clock.

Each tick reads every table's data-file count from its current snapshot's summary (pyiceberg, metadata only: no
Spark, no listing) and asks for one `table_maintenance` run for the tables that gained `compact_after_files` or more
since their last maintenance (`maintenance.grown`). The cursor keeps each table's count after its last maintenance
and the run it asked for; while that run is queued or going the sensor asks for nothing more, and once it has
ended the counts it left become the new baseline. A maintenance run that failed is not asked for again until the
table grows as much once more (the run's failure is in the UI; the nightly run maintains every table anyway).
"""

from __future__ import annotations

import hashlib
import json
import time

import dagster as dg

from lakehouse import maintenance
from lakehouse.settings import LakehouseSettings
from lakehouse_assets.maintenance import table_maintenance
from resources import LakehouseResource

SENSOR_NAME = "table_growth_sensor"
INTERVAL_SECONDS = 30  # 13 metadata reads a tick; a batch adds ~30 files, so a table is found within a batch or two
GROWN_MIN_INPUT_FILES = 2
VANISHED_AFTER_SECONDS = 300
ENDED = (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)


def _run_status(instance: dg.DagsterInstance, run_key: str) -> dg.DagsterRunStatus | None:
    records = instance.get_run_records(
        filters=dg.RunsFilter(tags={"dagster/sensor_name": SENSOR_NAME, "dagster/run_key": run_key}), limit=1)
    return records[0].dagster_run.status if records else None


def build_table_growth_sensor(settings: LakehouseSettings) -> dg.SensorDefinition:
    @dg.sensor(
        name=SENSOR_NAME,
        description=f"Compacts the tables that gained {settings.compact_after_files} data files since their last "
                    "maintenance (LAKEHOUSE_COMPACT_AFTER_FILES).",
        job=table_maintenance,
        minimum_interval_seconds=INTERVAL_SECONDS,
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
    def table_growth_sensor(context: dg.SensorEvaluationContext, lakehouse: LakehouseResource) -> dg.SensorResult:
        state = json.loads(context.cursor) if context.cursor else {}
        baseline: dict[str, int] = state.get("baseline", {})
        pending: dict | None = state.get("pending")
        status = None
        if pending:
            status = _run_status(context.instance, pending["run_key"])
            if status is not None and status not in ENDED:
                return dg.SensorResult(skip_reason=f"maintenance of {', '.join(pending['tables'])} is {status.value}")
            if status is None and time.time() - pending.get("asked_at", 0) < VANISHED_AFTER_SECONDS:
                # Asked for and not in the instance yet (the daemon launches a tick's requests after the tick).
                return dg.SensorResult(skip_reason="the maintenance run asked for has not started yet")
            if status is None:  # never launched (a tick that failed after its cursor was kept): ask again
                context.log.warning(f"the maintenance run {pending['run_key']} asked for never started; asking again")
        states = maintenance.table_states(lakehouse.catalog())
        if pending and status is not None:  # ended: the counts it left are the tables' new baseline
            baseline |= {t: states[t].data_files if t in states else 0 for t in pending["tables"]}
            if status is not dg.DagsterRunStatus.SUCCESS:
                context.log.warning(f"maintenance of {', '.join(pending['tables'])} ended {status.value}; asked for "
                                    f"again once they gain {settings.compact_after_files} more files")
        counts = {t: state.data_files for t, state in states.items()}
        due = maintenance.grown(counts, baseline, settings.compact_after_files)
        cursor = {"baseline": baseline, "pending": None}
        if not due:
            return dg.SensorResult(cursor=json.dumps(cursor), skip_reason="no table grew enough")
        # Keyed by the tables' snapshots, not their counts: compaction cycles bring the counts back to the same
        # numbers, and a repeated key is a request Dagster drops while the cursor waits for that old run.
        key = "grown-" + hashlib.sha1(json.dumps({t: states[t].snapshot_id for t in due}).encode()).hexdigest()[:16]
        cursor["pending"] = {"run_key": key, "tables": due, "asked_at": time.time()}
        context.log.info("compacting " + ", ".join(f"{t} ({baseline.get(t, 0)} -> {counts[t]} files)" for t in due))
        request = dg.RunRequest(
            run_key=key,
            # Every partition that got a file since: a batch adds one per partition it touches, so the default (8)
            # would leave most of what grew in place and the sensor would ask again and again.
            run_config={"ops": {"maintain_tables": {"config": {
                "tables": due, "min_input_files": GROWN_MIN_INPUT_FILES, "remove_orphans": False}}}},
            tags={"lakehouse/tables": ",".join(due)},
        )
        return dg.SensorResult(run_requests=[request], cursor=json.dumps(cursor))

    return table_growth_sensor
