"""The landing-zone sensor: the AWS Lambda S3 trigger and Step Functions type choice of the original design.

Each tick lists the landing zone in full (S3 lists in key order, so a "since key" cursor misses keys that arrive
out of order), drops every file version the ingestion log has settled, and asks for runs of at most
`batch_size` files per entity. A run ingests its files into Bronze and updates Silver and Gold after it.

Exactly once: the ingestion log in the lakehouse is the final word, and the Bronze step checks it again before
it writes. The cursor only remembers what was requested recently, so that a queued run is not asked for again
every tick; losing it costs a duplicate request that Bronze turns away, never a duplicate row.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Callable

import dagster as dg

from lakehouse import engine
from lakehouse.contracts import Entity
from lakehouse.ingestion import IngestionIndex, read_log
from lakehouse.landing import LandedFile, LandingZone
from lakehouse.settings import LakehouseSettings
from resources import LakehouseResource, LandingZoneResource
from resources.runs import failure_cause, reap_dead_runs

SENSOR_NAME = "landing_zone_sensor"
# A requested file is asked for again only when its run failed or was canceled, or vanished (no run with its key a
# while after the request, or a run that ended without settling it); up to MAX_ATTEMPTS, then it is reported once,
# with the cause, and left alone until the file changes. A run that is only queued is waited for, however long.
MAX_ATTEMPTS = 3
VANISHED_AFTER_SECONDS = 120  # a requested run shows up in the instance within a tick or two
IN_PROGRESS = (dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
               dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING)
FAILED = (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)


def downstream_of(entity: Entity) -> list[dg.AssetKey]:
    """What one entity's batch updates: its own layers, and the Gold aggregates both entities feed."""
    return [
        dg.AssetKey(["bronze", entity.plural]),
        dg.AssetKey(["silver", entity.plural]),
        dg.AssetKey(["silver", f"{entity.plural}_quarantine"]),
        dg.AssetKey(["gold", entity.plural]),
        dg.AssetKey(["gold", "subreddit_daily"]),
        dg.AssetKey(["gold", "post_engagement"]),
    ]


@dataclass
class InFlight:
    """A file version the sensor has requested and the log has not settled yet."""

    etag: str
    size: int
    modified: str
    requested_at: float
    attempt: int = 1
    run_key: str = ""
    gave_up: str | None = None  # why the sensor stopped asking for it (reported once)

    def same_version(self, f: LandedFile) -> bool:
        if f.etag is not None:  # S3 lists the content hash: a re-upload of the same bytes is the same version
            return f.etag == self.etag
        return f.size == self.size and f.modified_at.isoformat() == self.modified  # local: no hashing per tick


@dataclass(frozen=True)
class RunState:
    """The latest run for a run key, as the instance knows it."""

    run_id: str
    status: dg.DagsterRunStatus


def _load_cursor(raw: str | None) -> dict[str, InFlight]:
    if not raw:
        return {}
    try:
        return {uri: InFlight(**v) for uri, v in json.loads(raw).get("in_flight", {}).items()}
    except (ValueError, TypeError):  # an unreadable cursor is the same as a lost one
        return {}


def why_again(flight: InFlight, runs: dict[str, RunState], now: float) -> str | None:
    """Why the run a file was requested for will not finish the job; None while it may (queued, running) or did.

    Vanished: no run with its key a while after the request, or a run that ended without settling the file."""
    run = runs.get(flight.run_key)
    if run is None:
        if now - flight.requested_at < VANISHED_AFTER_SECONDS:
            return None
        return f"no run with key {flight.run_key} exists (it was never created, or deleted)"
    if run.status in IN_PROGRESS or run.status == dg.DagsterRunStatus.SUCCESS:
        return None
    return f"run {run.run_id} {run.status.value.lower()}"


def _request(entity: Entity, run_key: str, keys: list[str] | None, nbytes: int | None) -> dg.RunRequest:
    """One run for an entity: its files into Bronze and the layers below, or (no keys) the layers below only."""
    tags = {"lakehouse/entity": entity.value, "lakehouse/files": str(len(keys or []))}
    if nbytes is not None:
        tags["lakehouse/bytes"] = str(nbytes)
    if keys is None:
        # Bronze holds the files already (a run died after Bronze): Silver and Gold catch up from Bronze.
        return dg.RunRequest(run_key=run_key, asset_selection=downstream_of(entity)[1:],
                             tags=tags | {"lakehouse/catch_up": "true"})
    return dg.RunRequest(run_key=run_key, asset_selection=downstream_of(entity), tags=tags,
                         run_config={"ops": {f"bronze__{entity.plural}": {"config": {"keys": keys}}}})


def plan(
    zone: LandingZone,
    index: IngestionIndex,
    in_flight: dict[str, InFlight],
    batch_size: int,
    now: float,
    runs: dict[str, RunState] | None = None,
    max_runs: int = 25,
    cause_of: Callable[[RunState], str] = lambda run: "",
) -> tuple[list[dg.RunRequest], dict[str, InFlight], list[tuple[str, str]]]:
    """Run requests for the unsettled files, the in-flight set to remember, and files given up on this tick
    (key, cause).

    A requested file stays in flight until its run succeeds. A run that failed or vanished is asked for again:
    the whole of it when the log has not settled the file, only Silver and Gold (a catch-up run) when Bronze did
    before the run died. At most `max_runs` requests per tick: a flood of files is worked off over several ticks,
    which keeps the run queue and the cursor bounded.
    """
    runs = runs or {}
    requests: list[dg.RunRequest] = []
    remembered: dict[str, InFlight] = {}
    given_up: list[tuple[str, str]] = []
    for entity in Entity:
        pending: list[tuple[LandedFile, int]] = []
        catch_up: list[tuple[LandedFile, InFlight]] = []
        for f in zone.list_files(entity):
            flight = in_flight.get(f.uri)
            if flight and flight.same_version(f):
                settled = index.has_version(f.uri, flight.etag)
                run = runs.get(flight.run_key)
                if flight.gave_up:
                    if not settled:
                        remembered[f.uri] = flight  # given up until the file changes
                    continue
                if settled and (run is None or run.status == dg.DagsterRunStatus.SUCCESS):
                    continue  # done: by its run, or by another run (which took it downstream too)
                reason = why_again(flight, runs, now)
                if reason is None:
                    remembered[f.uri] = flight  # its run is queued or running
                    continue
                if flight.attempt >= MAX_ATTEMPTS:
                    cause = f"{reason}: {cause_of(run)}" if run is not None and run.status in FAILED else reason
                    remembered[f.uri] = InFlight(**{**vars(flight), "gave_up": cause})
                    given_up.append((f.key, cause))
                    continue
                if settled:
                    catch_up.append((f, flight))
                    continue
            if index.settled(f, zone.with_etag):
                continue
            f = zone.with_etag(f)
            attempt = flight.attempt + 1 if flight and flight.etag == f.etag else 1
            pending.append((f, attempt))
        if catch_up:
            failed_keys = sorted({flight.run_key for _, flight in catch_up})
            attempt = max(flight.attempt for _, flight in catch_up) + 1
            run_key = f"{entity.value}-catchup-{hashlib.sha1(' '.join(failed_keys).encode()).hexdigest()}"
            requests.append(_request(entity, run_key, None, None))
            for f, flight in catch_up:
                remembered[f.uri] = InFlight(**{**vars(flight), "requested_at": now, "attempt": attempt,
                                                "run_key": run_key})
        for start in range(0, len(pending), batch_size):
            if len(requests) >= max_runs:
                break
            batch = pending[start : start + batch_size]
            digest = hashlib.sha1("\n".join(f"{f.uri}@{f.etag}" for f, _ in batch).encode()).hexdigest()
            attempt = max(a for _, a in batch)
            # Same files, same key: a re-evaluated tick never starts a second run for them.
            run_key = f"{entity.value}-{digest}" + (f"-attempt{attempt}" if attempt > 1 else "")
            requests.append(_request(entity, run_key, [f.key for f, _ in batch], sum(f.size for f, _ in batch)))
            for f, a in batch:
                remembered[f.uri] = InFlight(f.etag, f.size, f.modified_at.isoformat(), now, a, run_key)
    return requests, remembered, given_up


def run_states(instance: dg.DagsterInstance, run_keys: set[str]) -> dict[str, RunState]:
    """The latest run of each of the sensor's run keys (one query)."""
    if not run_keys:
        return {}
    records = instance.get_run_records(
        filters=dg.RunsFilter(tags={"dagster/sensor_name": SENSOR_NAME, "dagster/run_key": sorted(run_keys)}),
        limit=max(100, 4 * len(run_keys)),
    )
    states: dict[str, RunState] = {}
    for record in records:  # newest first
        run = record.dagster_run
        states.setdefault(run.tags.get("dagster/run_key", ""), RunState(run.run_id, run.status))
    return states


def build_landing_sensor(settings: LakehouseSettings) -> dg.SensorDefinition:
    @dg.sensor(
        name=SENSOR_NAME,
        description="Starts a run for each batch of newly landed files, routed by prefix (post or comment).",
        minimum_interval_seconds=settings.sensor_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        target=dg.AssetSelection.all(),
    )
    def landing_zone_sensor(
        context: dg.SensorEvaluationContext, landing: LandingZoneResource, lakehouse: LakehouseResource
    ) -> dg.SensorResult:
        started = time.perf_counter()
        # Runs whose worker died would hold their pool slots (and stay STARTED) forever: end them first.
        for run_id in reap_dead_runs(context.instance):
            context.log.warning(f"run {run_id} had died (its worker process is gone): marked failed, slots freed")
        zone = landing.zone()
        index = IngestionIndex(read_log(lakehouse.catalog()))
        previous = _load_cursor(context.cursor)
        runs = run_states(context.instance, {f.run_key for f in previous.values() if f.run_key and not f.gave_up})
        requests, in_flight, given_up = plan(
            zone, index, previous, settings.sensor_batch_size, time.time(), runs, settings.sensor_max_runs_per_tick,
            cause_of=lambda run: failure_cause(context.instance, run.run_id),
        )
        for key, cause in given_up:  # once: the cursor remembers it was given up on
            context.log.error(f"giving up on {key} after {MAX_ATTEMPTS} attempts ({cause}); land a new version of "
                              "the file or run `lakehouse reprocess` to try again")
        context.log.info(
            f"{len(requests)} run requests for {sum(int(r.tags['lakehouse/files']) for r in requests)} files; "
            f"{len(in_flight)} in flight; tick {time.perf_counter() - started:.2f}s"
        )
        if (requests or in_flight) and engine.wanted(settings):
            # The sensor supervises the warm engine: started (or started again after a crash) when there is work,
            # without waiting; the runs it requests wait for it to answer.
            engine.start(settings, wait=False)
        cursor = json.dumps({"in_flight": {uri: vars(v) for uri, v in in_flight.items()}})
        return dg.SensorResult(run_requests=requests, cursor=cursor)

    return landing_zone_sensor
