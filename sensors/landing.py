"""The landing-zone sensor: the AWS Lambda S3 trigger and Step Functions type choice of the original design.

Where files are found:
- AWS with a queue (`LAKEHOUSE_SQS_QUEUE_URL`): the bucket's ObjectCreated events, long-polled from SQS each tick
  (lakehouse/events.py); a message is deleted only once the ingestion log has settled what it names. The bucket is
  listed only by the sweep, every `LAKEHOUSE_SWEEP_INTERVAL` seconds, a bounded number of pages per tick, and
  only from a day before the newest date-prefixed key where the keys allow it (a full sweep once a day, and when
  the cursor is reset): it finds what an event never brought.
- Otherwise (a local folder, or S3 without a queue): the zone is listed each tick, in full (S3 lists in key order,
  so a "since key" cursor misses keys that arrive out of order).
Either way it drops every file version the ingestion log has settled, asked of the settled index (a SQLite cache
of the log brought up to date from the log's new appends, `ingestion.SettledIndex`), and asks for runs of at most
`batch_size` files per entity. A run ingests its files into Bronze and updates Silver and Gold after it.

Exactly once: the ingestion log in the lakehouse is the final word, and the Bronze step checks it again before
it writes. The cursor only remembers what was requested recently, so that a queued run is not asked for again
every tick; losing it (or the index, or an event) costs a duplicate request that Bronze turns away, never a
duplicate row.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Callable, Iterable
from urllib.parse import unquote, urlparse

import dagster as dg

from lakehouse import engine
from lakehouse.checks import standing_holds
from lakehouse.contracts import BRONZE, Entity
from lakehouse.events import EventQueue, Message
from lakehouse.ingestion import Settled, SettledIndex
from lakehouse.landing import LandedFile, LandingZone, LocalLandingZone, entity_prefix
from lakehouse.settings import LakehouseSettings
from resources import LakehouseResource, LandingZoneResource
from resources.runs import failure_cause, reap_dead_runs

SENSOR_NAME = "landing_zone_sensor"
log = logging.getLogger(__name__)
# A requested file is asked for again only when its run failed or was canceled, or vanished (no run with its key a
# while after the request, or a run that ended without settling it); up to MAX_ATTEMPTS, then it is reported once,
# with the cause, and left alone until the file changes. A run that is only queued is waited for, however long.
MAX_ATTEMPTS = 3
VANISHED_AFTER_SECONDS = 120  # a requested run shows up in the instance within a tick or two
IN_PROGRESS = (dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
               dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING)
FAILED = (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)
# The queue: a message naming a file not settled yet comes back this long after a tick looked at it (a run takes
# seconds to minutes; each look is one receive). One tick takes up to MAX_MESSAGES; an empty queue answers after
# LONG_POLL_SECONDS, which keeps a quiet tick short.
RECHECK_SECONDS = 60
MAX_MESSAGES = 500
LONG_POLL_SECONDS = 1
# An in-flight file whose message never came back is forgotten after SQS's longest retention.
FORGET_AFTER_SECONDS = 14 * 86400
# The sweep: at most this many pages of 1,000 keys per entity per tick (a sensor evaluation must end within 60 s);
# an incremental sweep starts a day before the newest date-prefixed key it saw; a full one runs once a day.
SWEEP_PAGES_PER_TICK = 20
SWEEP_LOOKBACK = timedelta(days=1)
FULL_SWEEP_SECONDS = 86400
_WATCH_FAILED: dict = {}  # folder -> when starting its watch last failed, in this process
_DATED = re.compile(r"^(\d{4})([/-])(\d{2})\2(\d{2})(?=[/\-_.])")


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
    # Settled in Bronze, its run failed, and a gate of Bronze holds Silver (checks.HELD_PREFIX): the catch-up run
    # waits for an accept (or for Bronze to change) instead of failing on the same gate again.
    held: str | None = None

    def same_version(self, f: LandedFile) -> bool:
        if f.etag is not None:  # S3 lists the content hash: a re-upload of the same bytes is the same version
            return f.etag == self.etag
        return f.size == self.size and f.modified_at.isoformat() == self.modified  # local: no hashing per tick


@dataclass(frozen=True)
class RunState:
    """The latest run for a run key, as the instance knows it."""

    run_id: str
    status: dg.DagsterRunStatus


@dataclass
class Sweep:
    """The sweep's place: when the next one is due, and, while one runs, where each entity's listing goes on."""

    due_at: float = 0.0  # 0: at the next tick (a new or reset cursor starts with a full sweep)
    full_at: float = 0.0  # when the last full sweep started
    listing: dict[str, str] = field(default_factory=dict)  # entity -> key to list after ("": the start)
    newest: dict[str, str] = field(default_factory=dict)  # entity -> the newest key a sweep saw
    asked_at: float = 0.0  # the last `lakehouse sweep` acted on (its file's modification time)


def _load_cursor(raw: str | None) -> dict[str, InFlight]:
    if not raw:
        return {}
    try:
        return {uri: InFlight(**v) for uri, v in json.loads(raw).get("in_flight", {}).items()}
    except (ValueError, TypeError):  # an unreadable cursor is the same as a lost one
        return {}


def _load_sweep(raw: str | None) -> Sweep:
    try:
        return Sweep(**json.loads(raw).get("sweep", {})) if raw else Sweep()
    except (ValueError, TypeError, AttributeError):
        return Sweep()


def sweep_start(entity: Entity, newest: str | None) -> str:
    """Where an incremental sweep of the entity starts: after the key prefix of the day before the newest
    date-prefixed key (`input/post/2026/12/03`, `input/post/2026-12-03`); "" (the start) when keys are not dated."""
    prefix = entity_prefix(entity)
    if not newest or not newest.startswith(prefix):
        return ""
    m = _DATED.match(newest[len(prefix):])
    if not m:
        return ""
    try:
        day = date(int(m[1]), int(m[3]), int(m[4])) - SWEEP_LOOKBACK
    except ValueError:
        return ""
    sep = m[2]
    return f"{prefix}{day.year:04d}{sep}{day.month:02d}{sep}{day.day:02d}"


def sweep_tick(zone, sweep: Sweep, now: float, interval: int) -> tuple[dict[Entity, list[LandedFile]], bool]:
    """The files this tick's share of the sweep lists (nothing when none is due), and whether a sweep ended. `sweep`
    moves on; a tick that cannot ask for all the files listed puts back the copy it took before."""
    if not sweep.listing and now >= sweep.due_at:
        full = now - sweep.full_at >= FULL_SWEEP_SECONDS
        sweep.listing = {e.value: "" if full else sweep_start(e, sweep.newest.get(e.value)) for e in Entity}
        if full:
            sweep.full_at = now
    found: dict[Entity, list[LandedFile]] = {}
    for value, after in list(sweep.listing.items()):
        entity = Entity(value)
        files, more = zone.list_after(entity, after or None, SWEEP_PAGES_PER_TICK)
        found[entity] = files
        if files:
            sweep.newest[value] = max(sweep.newest.get(value, ""), files[-1].key)
        if more is None:
            del sweep.listing[value]
        else:
            sweep.listing[value] = more
    ended = bool(found) and not sweep.listing
    if ended:
        sweep.due_at = now + interval
    return found, ended


def why_again(flight: InFlight, runs: dict[str, RunState], now: float) -> str | None:
    """Why the run a file was requested for will not finish the job; None while it may (queued, running) or did.

    Vanished: no run with its key a while after the request, or a run that ended without settling the file."""
    run = runs.get(flight.run_key)
    if run is None:
        if now - flight.requested_at < VANISHED_AFTER_SECONDS:
            return None
        return f"no run with key {flight.run_key} exists (it was never created, or deleted)"
    if run.status in IN_PROGRESS:
        return None
    if run.status == dg.DagsterRunStatus.SUCCESS:
        # Called for files the log has not settled. The run states are read before the settled index is brought
        # up to date, so a run that succeeded and settled the file is seen settled. It succeeded without it when
        # Bronze left the file to another live run: give that run a while, then ask again.
        if now - flight.requested_at < VANISHED_AFTER_SECONDS:
            return None
        return f"run {run.run_id} succeeded without settling the file (another run had it and did not finish)"
    return f"run {run.run_id} {run.status.value.lower()}"


def catch_up_checks(entity: Entity) -> list[dg.AssetCheckKey]:
    """The checks of a catch-up run: every check of the layers it updates, and Bronze's gates (its blocking checks)
    without the Bronze step. The run that died, or failed on a gate, may never have passed them: Silver waits on
    them in the run (Dagster's blocking checks), and a gate that fails again holds Silver where it is."""
    import lakehouse_assets.bronze  # noqa: F401  (each layer module registers its checks)
    import lakehouse_assets.gold  # noqa: F401
    import lakehouse_assets.silver  # noqa: F401
    from lakehouse_assets.metadata import CHECKS

    bronze, *below = downstream_of(entity)
    return [c.key for c in CHECKS.values() if c.asset in below or (c.asset == bronze and c.gate)]


def _request(entity: Entity, run_key: str, keys: list[str] | None, nbytes: int | None) -> dg.RunRequest:
    """One run for an entity: its files into Bronze and the layers below, or (no keys) the layers below only."""
    tags = {"lakehouse/entity": entity.value, "lakehouse/files": str(len(keys or []))}
    if nbytes is not None:
        tags["lakehouse/bytes"] = str(nbytes)
    if keys is None:
        # Bronze holds the files already (a run died after Bronze, or Bronze's gates failed): Silver and Gold catch
        # up from Bronze once Bronze's gates pass again (or their failure is accepted).
        return dg.RunRequest(run_key=run_key, asset_selection=downstream_of(entity)[1:],
                             asset_check_keys=catch_up_checks(entity), tags=tags | {"lakehouse/catch_up": "true"})
    return dg.RunRequest(run_key=run_key, asset_selection=downstream_of(entity), tags=tags,
                         run_config={"ops": {f"bronze__{entity.plural}": {"config": {"keys": keys}}}})


def plan(
    zone: LandingZone,
    index: Settled,
    in_flight: dict[str, InFlight],
    batch_size: int,
    now: float,
    runs: dict[str, RunState] | None = None,
    max_runs: int = 25,
    cause_of: Callable[[RunState], str] = lambda run: "",
    files: dict[Entity, Iterable[LandedFile]] | None = None,
    deferred: list[LandedFile] | None = None,
    held: Callable[[Entity], str | None] | None = None,
    waiting: list[tuple[str, str]] | None = None,
) -> tuple[list[dg.RunRequest], dict[str, InFlight], list[tuple[str, str]]]:
    """Run requests for the unsettled files, the in-flight set to remember, and files given up on this tick
    (key, cause). `files`: the files to look at per entity (the events and the sweep's); None: list the zone.
    `deferred` receives the unsettled files left for a later tick by `max_runs` (a listing finds them again; the
    caller of `files` must give them again).

    A requested file stays in flight until its run succeeds. A run that failed or vanished is asked for again:
    the whole of it when the log has not settled the file, only Silver and Gold (a catch-up run, which evaluates
    Bronze's gates again first) when Bronze did before the run failed. While a gate of Bronze holds Silver and
    Bronze has not changed since it failed (`held` says why, per entity), the catch-up run would only fail on it
    again: the file waits for an operator's accept, costing no attempt (`waiting` receives key and cause). At most
    `max_runs` requests per tick: a flood of files is worked off over several ticks, which keeps the run queue and
    the cursor bounded.
    """
    runs = runs or {}
    requests: list[dg.RunRequest] = []
    remembered: dict[str, InFlight] = {}
    given_up: list[tuple[str, str]] = []
    holds: dict[Entity, str | None] = {}

    def hold_of(entity: Entity) -> str | None:  # asked at most once per entity, and only for a catch-up
        if entity not in holds:
            holds[entity] = held(entity) if held is not None else None
        return holds[entity]
    for entity in Entity:
        pending: list[tuple[LandedFile, int]] = []
        catch_up: list[tuple[LandedFile, InFlight]] = []
        for f in zone.list_files(entity) if files is None else files.get(entity, ()):
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
                if settled and (hold := hold_of(entity)):
                    remembered[f.uri] = InFlight(**{**vars(flight), "held": hold})
                    if waiting is not None:
                        waiting.append((f.key, hold))
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
                                                "run_key": run_key, "held": None})
        for start in range(0, len(pending), batch_size):
            batch = pending[start : start + batch_size]
            if len(requests) >= max_runs:
                if deferred is not None:
                    deferred.extend(f for f, _ in batch)
                continue
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


def from_events(messages: list[Message], swept: dict[Entity, list[LandedFile]]) -> dict[Entity, list[LandedFile]]:
    """The files to look at this tick, one version per file: what the sweep listed (the object as it is now),
    else the newest event's (an object written twice in a row has two events)."""
    chosen: dict[str, LandedFile] = {}
    for message in messages:
        for f in message.files:
            if f.uri not in chosen or f.modified_at >= chosen[f.uri].modified_at:
                chosen[f.uri] = f
    for entity_files in swept.values():
        chosen.update((f.uri, f) for f in entity_files)
    by_entity: dict[Entity, list[LandedFile]] = {e: [] for e in Entity}
    for f in chosen.values():
        by_entity[f.entity].append(f)
    return by_entity


def settle_messages(queue: EventQueue, messages: list[Message], zone: LandingZone, index: Settled,
                    in_flight: dict[str, InFlight], runs: dict[str, RunState]) -> dict[str, int]:
    """Delete the messages whose every file version is settled (or was replaced or deleted before it could be:
    the newer version has an event of its own, and the sweep is the backstop); move aside those of a file the
    sensor gave up on; look at the rest again in RECHECK_SECONDS. Counts per outcome."""
    done: list[Message] = []
    again: list[Message] = []
    counts = {"deleted": 0, "again": 0, "set_aside": 0, "unreadable": 0}
    for message in messages:
        if message.problem:
            log.warning("message %s is not an S3 event: %s", message.message_id, message.problem)
            if queue.set_aside(message, message.problem) is False:
                again.append(message)
                continue
            counts["unreadable"] += 1
            done.append(message)
            continue
        state = "done"
        for f in message.files:
            flight = in_flight.get(f.uri)
            ours = flight is not None and flight.etag == f.etag
            run = runs.get(flight.run_key) if ours else None
            # Held: the catch-up run is asked for once the gate is accepted; the message comes back until then.
            waiting = ours and not flight.gave_up and (bool(flight.held) or run is None or run.status in IN_PROGRESS)
            if index.has_version(f.uri, f.etag):
                if waiting:
                    # Bronze settled it, Silver and Gold may still fail: kept until the run ends, so that a
                    # catch-up run is asked for when the message comes back.
                    state = "again"
                continue
            if ours and flight.gave_up:
                if queue.set_aside(message, f"{f.key}: {flight.gave_up}") is False:
                    state = "again"  # the dead-letter queue refused it: looked at again, nothing lost
                    break
                counts["set_aside"] += 1
                state = "aside"
                break
            if waiting or zone.unchanged(f):  # still this version: its run is coming, or a retry is
                state = "again"
            elif ours:
                del in_flight[f.uri]  # replaced or deleted, and its run is over: nothing left to wait for
        if state == "again":
            again.append(message)
        else:
            done.append(message)
    queue.delete(done)
    queue.look_again_in(again, RECHECK_SECONDS)
    counts["deleted"] = len(done) - counts["set_aside"] - counts["unreadable"]
    counts["again"] = len(again)
    return counts


def bronze_holds(catalog) -> Callable[[Entity], str | None]:
    """Per entity, why a catch-up run would fail on a gate of Bronze again: the gates holding Silver (not accepted),
    when Bronze has not changed since the evaluation that failed (an operator's retract or a new batch changes it:
    then the catch-up run evaluates them again). None: nothing holds it, or a new evaluation may pass."""
    from pyiceberg.exceptions import NoSuchTableError

    def held(entity: Entity) -> str | None:
        try:
            table = catalog.load_table(BRONZE[entity].identifier)
        except NoSuchTableError:
            return None
        standing = standing_holds(table.properties)
        snap = table.current_snapshot()
        now_at = str(snap.snapshot_id) if snap is not None else None
        if not standing or any(h.get("at") != now_at for h in standing):
            return None
        asset = BRONZE[entity].identifier.replace(".", "/")
        return "; ".join(f"{asset} {h['check']} failed since {h.get('since')} ({h['summary']}): accept it "
                         f"(lakehouse accept {asset} {h['check']}) or fix the data" for h in standing)

    return held


def take_sweep_request(settings: LakehouseSettings, sweep: Sweep) -> bool:
    """True once per `lakehouse sweep` (it touches a file; the cursor keeps the time of the last one acted on, so a
    tick that fails before saving its cursor acts on it again)."""
    try:
        asked = settings.sweep_request_path.stat().st_mtime
    except FileNotFoundError:
        return False
    if asked <= sweep.asked_at:
        return False
    sweep.asked_at = asked
    return True


def local_changes(zone, watch, fresh: bool, in_flight: dict[str, InFlight], sweep: Sweep, now: float,
                  interval: int) -> tuple[dict[Entity, list[LandedFile]] | None, str]:
    """The files a local tick looks at: what the folder's notifications name, and the files in flight (their runs
    may need asking again); None (list the whole folder) on a watch's first tick in this process and when the
    sweep is due. Also what to say of it in the tick's log line."""
    changed = watch.drain()  # before any listing: what lands from here on is in the next drain
    if fresh or now >= sweep.due_at:
        sweep.due_at = now + interval
        return None, "; listed the folder (" + ("its watch started" if fresh else "the sweep") + ")"
    paths = changed | {unquote(urlparse(uri).path) for uri in in_flight}
    files: dict[Entity, list[LandedFile]] = {e: [] for e in Entity}
    for f in zone.files_at(paths):
        files[f.entity].append(f)
    return files, f"; {len(changed)} paths changed"


def build_landing_sensor(settings: LakehouseSettings) -> dg.SensorDefinition:
    @dg.sensor(
        name=SENSOR_NAME,
        description="Starts a run for each batch of newly landed files (from S3 events, or by listing the landing "
                    "zone), routed by prefix (post or comment).",
        minimum_interval_seconds=settings.sensor_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        target=dg.AssetSelection.all(),
    )
    def landing_zone_sensor(
        context: dg.SensorEvaluationContext, landing: LandingZoneResource, lakehouse: LakehouseResource
    ) -> dg.SensorResult:
        started = time.perf_counter()
        now = time.time()
        # Runs whose worker died would hold their pool slots (and stay STARTED) forever: end them first.
        for run_id in reap_dead_runs(context.instance):
            context.log.warning(f"run {run_id} had died (its worker process is gone): marked failed, slots freed")
        zone = landing.zone()
        queue = landing.queue()
        previous = _load_cursor(context.cursor)
        sweep = _load_sweep(context.cursor)
        if take_sweep_request(settings, sweep):
            sweep.due_at, sweep.full_at, sweep.listing = 0.0, 0.0, {}
            context.log.info("a full sweep was asked for (`lakehouse sweep`): listing everything")
        runs = run_states(context.instance, {f.run_key for f in previous.values() if f.run_key and not f.gave_up})
        catalog = lakehouse.catalog()
        with SettledIndex(settings.state_path / "settled.sqlite") as index:
            index.refresh(catalog)
            files, messages, note, watch = None, [], "", None
            before = copy.deepcopy(sweep)
            if queue is None and settings.landing_watch == "on" and isinstance(zone, LocalLandingZone) \
                    and now - _WATCH_FAILED.get(zone.root, -1e18) >= settings.sweep_interval_seconds:
                try:
                    watch = zone.watch()
                except OSError as exc:  # e.g. the inotify watch limit (fs.inotify.max_user_watches)
                    # A failed start leaves watchdog's descriptors open: tried again only once a sweep interval.
                    _WATCH_FAILED[zone.root] = now
                    context.log.warning(f"cannot watch {zone.root} ({exc}): listing it every tick instead")
            if watch is not None:
                files, note = local_changes(zone, *watch, previous, sweep, now, settings.sweep_interval_seconds)
            elif queue is not None:
                messages = queue.receive(MAX_MESSAGES, LONG_POLL_SECONDS)
                swept, ended = sweep_tick(zone, sweep, now, settings.sweep_interval_seconds)
                files = from_events(messages, swept)
                note = (f"; {len(messages)} messages"
                        + (f", sweep listed {sum(map(len, swept.values()))} files" if swept else "")
                        + (" (sweep done)" if ended else ""))
            deferred: list[LandedFile] = []
            if files is None and isinstance(zone, LocalLandingZone):
                index.load_stats()  # a listing of the whole folder: one read of the index, not a query per file
            waiting: list[tuple[str, str]] = []
            requests, in_flight, given_up = plan(
                zone, index, previous, settings.sensor_batch_size, now, runs, settings.sensor_max_runs_per_tick,
                cause_of=lambda run: failure_cause(context.instance, run.run_id), files=files, deferred=deferred,
                held=bronze_holds(catalog), waiting=waiting,
            )
            if waiting:
                note += f"; {len(waiting)} files wait for an accept ({waiting[0][1]})"
            if deferred:
                # More than a tick's runs: the rest are looked at again next tick (a listing finds them anyway; the
                # watch is told again; the sweep lists this part again; an event's message comes back).
                note += f"; {len(deferred)} files left for the next tick"
                if watch is not None:
                    watch[0].put_back(unquote(urlparse(f.uri).path) for f in deferred)
                if queue is not None and {f.uri for fs in swept.values() for f in fs} & {f.uri for f in deferred}:
                    sweep = before
            if queue is not None:
                # Files whose messages are out of sight this tick stay in flight until their messages come back.
                seen = {f.uri for entity_files in files.values() for f in entity_files}
                in_flight.update({uri: flight for uri, flight in previous.items()
                                  if uri not in seen and uri not in in_flight
                                  and now - flight.requested_at < FORGET_AFTER_SECONDS})
                counts = settle_messages(queue, messages, zone, index, in_flight, runs)
                note += "".join(f", {n} {what}" for what, n in counts.items() if n)
            if index.rebuilt:
                note += f"; settled index rebuilt from the log ({index.rows_read} rows)"
        for key, cause in given_up:  # once: the cursor remembers it was given up on
            context.log.error(f"giving up on {key} after {MAX_ATTEMPTS} attempts ({cause}); land a new version of "
                              "the file or run `lakehouse reprocess` to try again")
        context.log.info(
            f"{len(requests)} run requests for {sum(int(r.tags['lakehouse/files']) for r in requests)} files; "
            f"{len(in_flight)} in flight{note}; tick {time.perf_counter() - started:.2f}s"
        )
        if (requests or in_flight) and engine.wanted(settings):
            # The sensor supervises the warm engine: started (or started again after a crash) when there is work,
            # without waiting; the runs it requests wait for it to answer.
            engine.start(settings, wait=False)
        # The sweep's place always: it also remembers the last `lakehouse sweep` acted on.
        cursor = {"in_flight": {uri: vars(v) for uri, v in in_flight.items()}, "sweep": vars(sweep)}
        return dg.SensorResult(run_requests=requests, cursor=json.dumps(cursor))

    return landing_zone_sensor
