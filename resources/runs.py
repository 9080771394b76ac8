"""Runs as the Dagster instance knows them: which lakehouse writers are alive, and recovery from runs that died.

A run killed with SIGKILL, out of memory or by a reboot never reports its end: the instance keeps it STARTED and
its steps keep their `lakehouse` pool slots, so the next run would wait for them forever. Each run names its
worker process in a run tag when its resources start (`register_worker`); every run start and every sensor tick
then look for in-progress runs whose worker process is gone on this host and end them the way Dagster's own run
monitoring does (`report_run_failed`, then free their concurrency slots). No manual step, with the daemon or
from `dagster asset materialize`.

Runs on other hosts are left to Dagster's run monitoring (`run_monitoring` in dagster.yaml): this host cannot see
their processes, so they count as alive while the instance has them in progress. A plain process writing Bronze
(`proc:` writers) is not a run: on another host, its lease says whether it lives (lakehouse/writers.py).
"""

from __future__ import annotations

import logging

import dagster as dg
from dagster._core.storage.dagster_run import FINISHED_STATUSES  # the statuses Dagster itself calls finished

from lakehouse.writers import Liveness, default_liveness, process_alive, process_writer, run_id_of, run_writer

log = logging.getLogger(__name__)

WORKER_TAG = "lakehouse/worker"  # proc:<host>:<pid>:<start> of the process executing the run's steps
IN_PROGRESS = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]


def register_worker(instance: dg.DagsterInstance, run_id: str) -> None:
    """Name this process as the run's worker, so a later run can tell when it is gone."""
    instance.add_run_tags(run_id, {WORKER_TAG: process_writer()})


def worker_gone(run: dg.DagsterRun) -> bool:
    """True when the run's worker ran on this host and no longer runs."""
    worker = run.tags.get(WORKER_TAG)
    return bool(worker) and process_alive(worker) is False


def reap_dead_runs(instance: dg.DagsterInstance, keep: str | None = None) -> list[str]:
    """End in-progress runs whose worker is gone, and free pool slots that finished runs still hold.

    Returns the run ids it ended or freed. `keep`: the calling run, never touched.
    """
    reaped = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=IN_PROGRESS), limit=200):
        if run.run_id != keep and worker_gone(run):
            instance.report_run_failed(run, (
                f"The run's worker process ({run.tags[WORKER_TAG]}) is gone (killed, out of memory or a reboot); "
                "marked failed by the lakehouse so its pool slots are freed and its files can be ingested again."))
            reaped.append(run.run_id)
    storage = instance.event_log_storage
    if storage.supports_global_concurrency_limits:
        for run_id in storage.get_concurrency_run_ids():
            if run_id == keep:
                continue
            run = instance.get_run_by_id(run_id)
            if run is None or run.status in FINISHED_STATUSES:
                storage.free_concurrency_slots_for_run(run_id)
                reaped.append(run_id)
    for run_id in reaped:
        log.warning("freed run %s: its worker is gone", run_id)
    return sorted(set(reaped))


def liveness(instance: dg.DagsterInstance) -> Liveness:
    """Whether a writer (lakehouse/writers.py) may still settle its batch: a run as the instance knows it; a plain
    process by the process table on this host, by its lease on another."""

    def alive(writer: str | None) -> bool:
        run_id = run_id_of(writer)
        if run_id is None:
            return default_liveness(writer)
        run = instance.get_run_by_id(run_id)
        return run is not None and run.status not in FINISHED_STATUSES and not worker_gone(run)

    return alive


def writer_of(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext) -> str:
    return run_writer(context.run_id)


def failure_cause(instance: dg.DagsterInstance, run_id: str) -> str:
    """The first error a failed run reported (a step's error, else the run's own failure message)."""
    from dagster._core.events import DagsterEventType

    for kind in (DagsterEventType.STEP_FAILURE, DagsterEventType.RUN_FAILURE):
        for record in instance.get_records_for_run(run_id, of_type=kind, limit=5).records:
            entry = record.event_log_entry
            event = entry.dagster_event
            error = getattr(getattr(event, "event_specific_data", None), "error", None)
            while error is not None and error.cause is not None:  # Dagster wraps the user's error: show that one
                error = error.cause
            text = (error.message.strip() if error is not None else None) or event.message or entry.user_message
            if text:
                step = f"{event.step_key}: " if event.step_key else ""
                return step + text.splitlines()[0][:500]
    run = instance.get_run_by_id(run_id)
    return f"run ended {run.status.value}" if run else "run not found"
