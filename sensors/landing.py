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

import dagster as dg

from lakehouse.contracts import Entity
from lakehouse.ingestion import IngestionIndex, read_log
from lakehouse.landing import LandedFile, LandingZone
from lakehouse.settings import LakehouseSettings
from resources import LakehouseResource, LandingZoneResource

SENSOR_NAME = "landing_zone_sensor"
# A requested file still unsettled after this long (its run was lost) is asked for again; a failed run's files
# are asked for again at once, up to MAX_ATTEMPTS, then left alone (and reported) until the file changes.
RETRY_AFTER_SECONDS = 15 * 60
MAX_ATTEMPTS = 3
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

    def same_version(self, f: LandedFile) -> bool:
        if f.etag is not None:  # S3 lists the content hash: a re-upload of the same bytes is the same version
            return f.etag == self.etag
        return f.size == self.size and f.modified_at.isoformat() == self.modified  # local: no hashing per tick


def _load_cursor(raw: str | None) -> dict[str, InFlight]:
    if not raw:
        return {}
    try:
        return {uri: InFlight(**v) for uri, v in json.loads(raw).get("in_flight", {}).items()}
    except (ValueError, TypeError):  # an unreadable cursor is the same as a lost one
        return {}


def plan(
    zone: LandingZone,
    index: IngestionIndex,
    in_flight: dict[str, InFlight],
    batch_size: int,
    now: float,
    failed_run_keys: set[str] = frozenset(),
    max_runs: int = 25,
) -> tuple[list[dg.RunRequest], dict[str, InFlight], list[str]]:
    """Run requests for the unsettled files, the in-flight set to remember, and files given up on.

    At most `max_runs` requests per tick: a flood of files is worked off over several ticks, which keeps the
    run queue and the cursor bounded.
    """
    requests: list[dg.RunRequest] = []
    remembered: dict[str, InFlight] = {}
    given_up: list[str] = []
    for entity in Entity:
        pending: list[tuple[LandedFile, int]] = []
        for f in zone.list_files(entity):
            flight = in_flight.get(f.uri)
            if flight and flight.same_version(f):
                if index.has_version(f.uri, flight.etag):
                    continue
                expired = flight.run_key in failed_run_keys or now - flight.requested_at >= RETRY_AFTER_SECONDS
                if not expired or flight.attempt >= MAX_ATTEMPTS:
                    remembered[f.uri] = flight
                    if expired:
                        given_up.append(f.key)
                    continue
            if index.settled(f, zone.with_etag):
                continue
            f = zone.with_etag(f)
            attempt = flight.attempt + 1 if flight and flight.etag == f.etag else 1
            pending.append((f, attempt))
        for start in range(0, len(pending), batch_size):
            if len(requests) >= max_runs:
                break
            batch = pending[start : start + batch_size]
            digest = hashlib.sha1("\n".join(f"{f.uri}@{f.etag}" for f, _ in batch).encode()).hexdigest()
            attempt = max(a for _, a in batch)
            # Same files, same key: a re-evaluated tick never starts a second run for them.
            run_key = f"{entity.value}-{digest}" + (f"-attempt{attempt}" if attempt > 1 else "")
            requests.append(
                dg.RunRequest(
                    run_key=run_key,
                    asset_selection=downstream_of(entity),
                    run_config={"ops": {f"bronze__{entity.plural}": {"config": {"keys": [f.key for f, _ in batch]}}}},
                    tags={
                        "lakehouse/entity": entity.value,
                        "lakehouse/files": str(len(batch)),
                        "lakehouse/bytes": str(sum(f.size for f, _ in batch)),
                    },
                )
            )
            for f, a in batch:
                remembered[f.uri] = InFlight(f.etag, f.size, f.modified_at.isoformat(), now, a, run_key)
    return requests, remembered, given_up


def failed_runs(instance: dg.DagsterInstance, run_keys: set[str]) -> set[str]:
    """The run keys whose latest run failed or was canceled."""
    if not run_keys:
        return set()
    runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/sensor_name": SENSOR_NAME}, statuses=list(FAILED)),
                             limit=500)
    return {r.tags.get("dagster/run_key") for r in runs} & run_keys


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
        zone = landing.zone()
        index = IngestionIndex(read_log(lakehouse.catalog()))
        previous = _load_cursor(context.cursor)
        failed = failed_runs(context.instance, {f.run_key for f in previous.values() if f.run_key})
        requests, in_flight, given_up = plan(
            zone, index, previous, settings.sensor_batch_size, time.time(), failed, settings.sensor_max_runs_per_tick
        )
        if given_up:
            context.log.error(f"not retrying after {MAX_ATTEMPTS} failed runs (land a new version to retry): {given_up}")
        context.log.info(
            f"{len(requests)} run requests for {sum(int(r.tags['lakehouse/files']) for r in requests)} files; "
            f"{len(in_flight)} in flight; tick {time.perf_counter() - started:.2f}s"
        )
        cursor = json.dumps({"in_flight": {uri: vars(v) for uri, v in in_flight.items()}})
        return dg.SensorResult(run_requests=requests, cursor=cursor)

    return landing_zone_sensor
