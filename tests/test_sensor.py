"""The landing-zone sensor on both storage implementations: a local folder, and S3 through a moto server."""

from __future__ import annotations

import json
import os
import time

import dagster as dg
import pytest

from lakehouse import bronze_layer, silver_layer
from lakehouse.contracts import SOURCE_HEADERS, Entity
from lakehouse.settings import load_settings
from resources import LakehouseResource, LocalLandingZoneResource, S3LandingZoneResource
from sensors.landing import build_landing_sensor
from tests.conftest import dead_writer

POSTS = ",".join(SOURCE_HEADERS[Entity.POST]) + "\r\n"
COMMENTS = ",".join(SOURCE_HEADERS[Entity.COMMENT]) + "\r\n"


def post_csv(*ids: str, score: int = 1) -> str:
    return POSTS + "".join(
        f"post,{i},2s5ti,meirl,false,1648771149,https://old.reddit.com/r/meirl/comments/{i}/x/,i.redd.it,"
        f"https://i.redd.it/{i}.jpg,,title {i},{score}\r\n"
        for i in ids
    )


def sensor_for(batch_size: int = 200, max_runs: int = 25):
    settings = load_settings({**os.environ, "LAKEHOUSE_SENSOR_BATCH_SIZE": str(batch_size),
                              "LAKEHOUSE_SENSOR_MAX_RUNS_PER_TICK": str(max_runs)})
    return build_landing_sensor(settings)


def tick(sensor, landing, cursor=None):
    lakehouse = LakehouseResource.from_settings(load_settings())
    with dg.instance_for_test() as instance, dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"landing": landing, "lakehouse": lakehouse}
    ) as ctx:
        result = sensor(ctx)
    return result.run_requests or [], result.cursor


def keys_of(request) -> list[str]:
    return next(iter(request.run_config["ops"].values()))["config"]["keys"]


@pytest.fixture
def local(lakehouse, settings):
    return lakehouse, LocalLandingZoneResource(root=str(settings.landing_root))


def write(zone, key: str, text: str, mtime: float | None = None):
    path = zone.path_for(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8", newline="")
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def test_local_routes_by_prefix_batches_and_remembers_in_flight(local):
    zone, landing = local
    write(zone, "input/post/a.csv", post_csv("p1"))
    write(zone, "input/post/sub/b.csv", post_csv("p2"))
    write(zone, "input/comment/c.csv", COMMENTS)
    write(zone, "input/post/.d.csv.part", post_csv("p3"))  # an upload in progress
    write(zone, "elsewhere/e.csv", post_csv("p4"))  # outside the input prefixes

    requests, cursor = tick(sensor_for(), landing)
    by_entity = {r.tags["lakehouse/entity"]: r for r in requests}
    assert set(by_entity) == {"post", "comment"}
    assert keys_of(by_entity["post"]) == ["input/post/a.csv", "input/post/sub/b.csv"]
    assert keys_of(by_entity["comment"]) == ["input/comment/c.csv"]
    assert dg.AssetKey(["gold", "subreddit_daily"]) in by_entity["post"].asset_selection
    assert dg.AssetKey(["bronze", "comments"]) not in by_entity["post"].asset_selection
    assert int(by_entity["post"].tags["lakehouse/bytes"]) == sum(zone.path_for(k).stat().st_size for k in keys_of(by_entity["post"]))
    assert len(json.loads(cursor)["in_flight"]) == 3

    # Next tick: nothing new, nothing asked twice.
    assert tick(sensor_for(), landing, cursor)[0] == []
    # Cursor lost: the same files are asked for with the same run keys, which Dagster will not start twice.
    again, _ = tick(sensor_for(), landing, None)
    assert sorted(r.run_key for r in again) == sorted(r.run_key for r in requests)


def test_local_batches_bound_the_number_of_runs(local):
    zone, landing = local
    for i in range(7):
        write(zone, f"input/post/f{i}.csv", post_csv(f"p{i}"))
    requests, _ = tick(sensor_for(batch_size=3), landing)
    assert [len(keys_of(r)) for r in requests] == [3, 3, 1]
    assert len({r.run_key for r in requests}) == 3
    # A flood is worked off over several ticks: at most `max_runs` requests per tick.
    first, cursor = tick(sensor_for(batch_size=3, max_runs=2), landing)
    second, _ = tick(sensor_for(batch_size=3, max_runs=2), landing, cursor)
    assert [len(keys_of(r)) for r in first] == [3, 3] and [len(keys_of(r)) for r in second] == [1]


def test_local_exactly_once_against_the_ingestion_log(local, spark):
    zone, landing = local
    write(zone, "input/post/b.csv", post_csv("p1", "p2"))
    requests, cursor = tick(sensor_for(), landing)
    assert len(requests) == 1

    bronze_layer.ingest_bronze(spark, zone, Entity.POST, keys=keys_of(requests[0]))
    requests, cursor = tick(sensor_for(), landing, cursor)
    assert requests == [] and json.loads(cursor)["in_flight"] == {}

    # Touched, same bytes: not a new version. A key sorting before the last one, landed later: not missed.
    path = zone.path_for("input/post/b.csv")
    os.utime(path, (time.time() + 5, time.time() + 5))
    write(zone, "input/post/a.csv", post_csv("p3"))
    requests, cursor = tick(sensor_for(), landing, cursor)
    assert [keys_of(r) for r in requests] == [["input/post/a.csv"]]

    # New content under the same key: a new version, asked for under a new run key.
    old_key = requests[0].run_key
    bronze_layer.ingest_bronze(spark, zone, Entity.POST, keys=["input/post/a.csv"])
    write(zone, "input/post/a.csv", post_csv("p3", score=99))
    requests, cursor = tick(sensor_for(), landing, cursor)
    assert [keys_of(r) for r in requests] == [["input/post/a.csv"]] and requests[0].run_key != old_key

    # Bronze itself refuses a version the log has settled, whatever the sensor asks.
    bronze_layer.ingest_bronze(spark, zone, Entity.POST, keys=["input/post/a.csv"])
    result = bronze_layer.ingest_bronze(spark, zone, Entity.POST, keys=["input/post/a.csv", "input/post/b.csv"])
    assert result.files == [] and result.already_ingested == 2


def test_a_rewrite_that_keeps_size_and_modification_time_is_a_new_version(local, spark):
    """`cp -p` and `rsync -t` set the modification time back: a version is known by its change time (ctime, which
    no one sets), so other bytes of the same size under the old time are a new version, asked for and ingested."""
    zone, landing = local
    path = write(zone, "input/post/a.csv", post_csv("p1", score=1))
    requests, cursor = tick(sensor_for(), landing)
    bronze_layer.ingest_bronze(spark, zone, Entity.POST, keys=keys_of(requests[0]))
    assert tick(sensor_for(), landing, cursor)[0] == []
    first = zone.describe("input/post/a.csv")

    before = path.stat()
    path.write_text(post_csv("p1", score=2), encoding="utf-8", newline="")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert not zone.unchanged(first)  # what Bronze asks after its read: a rewrite meanwhile is noticed too
    requests, cursor = tick(sensor_for(), landing, cursor)
    assert [keys_of(r) for r in requests] == [["input/post/a.csv"]]
    result = bronze_layer.ingest_bronze(spark, zone, Entity.POST, keys=keys_of(requests[0]))
    assert [(f.status, f.rows) for f in result.files] == [("loaded", 1)]
    assert sorted(r.score for r in spark.sql("SELECT score FROM bronze.posts").collect()) == ["1", "2"]
    assert tick(sensor_for(), landing, cursor)[0] == []
    # The time set back once more over the same bytes (`touch -d`): hashed, the same version, nothing asked.
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns - 10**9))
    assert tick(sensor_for(), landing, cursor)[0] == []


def test_symbolic_links_out_of_the_landing_zone_are_refused_alone_and_loops_stop_nothing(local, spark, tmp_path):
    """A link out of the landing zone (to a file or a folder) is never read: Bronze logs it as rejected, with its
    reason, beside the files that load. A link into the zone is the file it points to, ingested once under that
    file's own name. Links that go round (a -> b -> a, a folder linked to its parent, to the landing root) stop
    neither the listing nor the run."""
    zone, landing = local
    folder = zone.path_for("input/post")
    write(zone, "input/post/a.csv", post_csv("p1"))
    secret = tmp_path / "secret.csv"
    secret.write_text(post_csv("s1"), encoding="utf-8", newline="")
    (tmp_path / "exports").mkdir()
    (tmp_path / "exports" / "e.csv").write_text(post_csv("e1"), encoding="utf-8", newline="")
    os.symlink(secret, folder / "secret.csv")
    os.symlink(tmp_path / "exports", folder / "exports")
    os.symlink("a.csv", folder / "latest.csv")
    os.symlink("loop-b.csv", folder / "loop-a.csv")
    os.symlink("loop-a.csv", folder / "loop-b.csv")
    (folder / "sub").mkdir()
    os.symlink("..", folder / "sub" / "parent")
    os.symlink(zone.root, folder / "root")

    [request], cursor = tick(sensor_for(), landing)
    refused = {"input/post/secret.csv": "symlink_outside_landing_zone",
               "input/post/exports": "symlink_outside_landing_zone",
               "input/post/loop-a.csv": "symlink_loop", "input/post/loop-b.csv": "symlink_loop"}
    assert sorted(keys_of(request)) == sorted(["input/post/a.csv", *refused])
    result = bronze_layer.ingest_bronze(spark, zone, Entity.POST, keys=keys_of(request))
    assert {f.key: (f.status, f.reason) for f in result.files} == {
        "input/post/a.csv": ("loaded", None), **{key: ("rejected", reason) for key, reason in refused.items()}}
    [message] = [f.message for f in result.files if f.key == "input/post/secret.csv"]
    assert str(secret) in message and "outside the landing zone" in message
    assert [r.id for r in spark.sql("SELECT trim(id) AS id FROM bronze.posts").collect()] == ["p1"]
    logged = {r.source_uri: r.reason for r in spark.sql("SELECT source_uri, reason FROM bronze.ingestion_log").collect()}
    assert logged == {zone.path_for(key).as_uri(): reason for key, reason in {**refused, "input/post/a.csv": None}.items()}
    assert tick(sensor_for(), landing, cursor)[0] == []  # each refusal is settled, once

    # The link replaced by a copy of its file: a new version, ingested.
    zone.land(secret, Entity.POST)
    [request], cursor = tick(sensor_for(), landing, cursor)
    assert keys_of(request) == ["input/post/secret.csv"]
    assert [f.status for f in bronze_layer.ingest_bronze(spark, zone, Entity.POST, keys=keys_of(request)).files] == [
        "loaded"]
    # A full listing by Bronze itself (no keys) finds nothing new, the links still there.
    assert bronze_layer.ingest_bronze(spark, zone, Entity.POST).files == []


def test_the_folder_watch_survives_folders_linked_to_their_parents(lakehouse, tmp_path):
    """A folder link to its parent, made while the watch runs, left watchdog naming the parent's events through the
    link (`sub/up/new.csv`, then `sub/up/sub2/up/new.csv`, ...): files landed there were missed, or taken under
    names that go through links. The watch still names them where they are, and the tick asks for them."""
    import time as clock

    from lakehouse.landing import FolderWatch
    from tests.test_events import Watched

    watched = Watched()
    zone = watched.zone
    folder = zone.path_for("input/post")
    try:
        assert watched.tick() == []  # the watch starts on an empty folder
        for i in range(5):
            (folder / f"sub{i}").mkdir()
            for j in range(5):
                os.symlink("..", folder / f"sub{i}" / f"up{j}")
        os.symlink("y.csv", folder / "x.csv")
        os.symlink("x.csv", folder / "y.csv")
        clock.sleep(1)  # watchdog has watched the new folders and their links
        write(zone, "input/post/new.csv", post_csv("n1"))
        write(zone, "input/post/sub3/deep.csv", post_csv("d1"))
        asked: list[str] = []
        deadline = clock.monotonic() + 10
        while len(asked) < 4 and clock.monotonic() < deadline:
            asked += watched.tick()
            clock.sleep(0.2)
        assert sorted(asked) == ["input/post/new.csv", "input/post/sub3/deep.csv", "input/post/x.csv",
                                 "input/post/y.csv"]
        assert FolderWatch._watches[zone.root].alive()
    finally:
        watched.stop()


# --- S3 through a moto server on loopback -------------------------------------------------------------------


@pytest.fixture
def s3(moto_endpoint, lakehouse):
    import uuid

    from dagster_aws.s3 import S3Resource

    client = S3Resource(endpoint_url=moto_endpoint, region_name="us-east-1").get_client()
    bucket = f"landing-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=bucket)
    landing = S3LandingZoneResource(bucket=bucket, prefix="raw", endpoint_url=moto_endpoint, region_name="us-east-1")
    return client, bucket, landing


def test_s3_lists_routes_and_tracks_etags(s3):
    client, bucket, landing = s3
    client.put_object(Bucket=bucket, Key="raw/input/post/a.csv", Body=post_csv("p1").encode())
    client.put_object(Bucket=bucket, Key="raw/input/comment/c.csv", Body=COMMENTS.encode())
    client.put_object(Bucket=bucket, Key="raw/input/other/x.csv", Body=b"x")
    client.put_object(Bucket=bucket, Key="input/post/outside-prefix.csv", Body=b"x")
    requests, cursor = tick(sensor_for(), landing)
    assert sorted(keys_of(r)[0] for r in requests) == ["input/comment/c.csv", "input/post/a.csv"]
    assert tick(sensor_for(), landing, cursor)[0] == []

    # Re-uploaded with the same bytes: same ETag, still the same in-flight version. New bytes: a new version.
    client.put_object(Bucket=bucket, Key="raw/input/post/a.csv", Body=post_csv("p1").encode())
    assert tick(sensor_for(), landing, cursor)[0] == []
    client.put_object(Bucket=bucket, Key="raw/input/post/a.csv", Body=post_csv("p1", score=5).encode())
    requests, _ = tick(sensor_for(), landing, cursor)
    assert [keys_of(r) for r in requests] == [["input/post/a.csv"]]


def test_s3_files_are_scanned_at_the_version_listed(s3):
    """Bronze's independent record count streams the object, pinned to the ETag the sensor saw."""
    from lakehouse.transforms.bronze import scan_records

    client, bucket, landing = s3
    client.put_object(Bucket=bucket, Key="raw/input/post/a.csv", Body=post_csv("p1", "p2", "p3").encode())
    zone = landing.zone()
    [listed] = list(zone.list_files())
    with zone.open(listed) as body:
        assert scan_records(body).records == 3
    client.put_object(Bucket=bucket, Key="raw/input/post/a.csv", Body=post_csv("p1").encode())
    with pytest.raises(client.exceptions.ClientError, match="PreconditionFailed"):
        zone.open(listed)  # replaced since it was listed: never count one version's records for another


def test_s3_more_than_one_page_of_keys(s3):
    client, bucket, landing = s3
    for i in range(1005):
        client.put_object(Bucket=bucket, Key=f"raw/input/post/{i:05d}.csv", Body=post_csv(f"p{i}").encode())
    requests, cursor = tick(sensor_for(batch_size=200), landing)
    keys = [k for r in requests for k in keys_of(r)]
    assert len(requests) == 6 and len(keys) == len(set(keys)) == 1005
    assert tick(sensor_for(batch_size=200), landing, cursor)[0] == []


def test_a_run_dying_between_bronze_and_the_log_duplicates_nothing(local, spark, monkeypatch):
    """Restart safety: Bronze committed, the log did not (the process died); the next run rolls it back."""
    from lakehouse.catalog import catalog_for
    from lakehouse.query import QueryEngine

    zone, landing = local
    write(zone, "input/post/a.csv", post_csv("p1", "p2", "p3"))

    def die(*_args, **_kwargs):
        raise RuntimeError("killed between the Bronze commit and the log write")

    monkeypatch.setattr(bronze_layer, "write_log", die)
    with pytest.raises(RuntimeError):
        bronze_layer.ingest_bronze(spark, zone, Entity.POST, writer=dead_writer())
    monkeypatch.undo()
    q = QueryEngine(catalog_for(load_settings()))
    assert q.sql("SELECT count(*) FROM bronze.posts").fetchall()[0] == (3,)

    # Silver must not take the unrecorded batch meanwhile; the sensor still sees the file as pending.
    assert silver_layer.update_silver(spark, Entity.POST).bronze_rows == 0
    requests, _ = tick(sensor_for(), landing)
    assert [keys_of(r) for r in requests] == [["input/post/a.csv"]]

    result = bronze_layer.ingest_bronze(spark, zone, Entity.POST, keys=["input/post/a.csv"])
    assert len(result.rolled_back_batches) == 1 and result.rows == 3
    assert q.sql("SELECT count(*), count(DISTINCT _batch_id) FROM bronze.posts").fetchall()[0] == (3, 1)
    assert silver_layer.update_silver(spark, Entity.POST).inserted == 3
    statuses = sorted(r[0] for r in q.sql("SELECT status FROM bronze.ingestion_log").fetchall())
    assert statuses == ["loaded", "rolled_back"]


# --- asking again: only when the run failed or vanished -------------------------------------------------------


def _plan(zone, landing, in_flight, runs, now, causes=None):
    from lakehouse.ingestion import IngestionIndex
    from sensors.landing import plan

    return plan(landing.zone(), IngestionIndex([]), in_flight, 200, now, runs,
                cause_of=lambda run: (causes or {}).get(run.run_id, ""))


def test_a_queued_run_is_waited_for_however_long_and_a_failed_one_asked_again(local):
    from sensors.landing import MAX_ATTEMPTS, VANISHED_AFTER_SECONDS, RunState

    zone, landing = local
    write(zone, "input/post/a.csv", post_csv("p1"))
    requests, in_flight, _ = _plan(zone, landing, {}, {}, now=1000.0)
    [flight] = in_flight.values()
    key = requests[0].run_key

    # Queued for a day: no second request.
    for status in (dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.STARTED):
        again, kept, given_up = _plan(zone, landing, in_flight, {key: RunState("r1", status)}, now=1000.0 + 86400)
        assert again == [] and kept == in_flight and given_up == []
    # The run failed: asked again at once, under a new run key.
    failed = {key: RunState("r1", dg.DagsterRunStatus.FAILURE)}
    again, in_flight2, _ = _plan(zone, landing, in_flight, failed, now=1001.0)
    assert len(again) == 1 and again[0].run_key == f"{key}-attempt2"
    # The run succeeded without settling the file (Bronze left it to another live run, which then died): asked
    # again once the grace period is over, not kept in flight for ever.
    done = {key: RunState("r1", dg.DagsterRunStatus.SUCCESS)}
    assert _plan(zone, landing, in_flight, done, now=1000.0 + VANISHED_AFTER_SECONDS - 1)[0] == []
    [again_done] = _plan(zone, landing, in_flight, done, now=1000.0 + VANISHED_AFTER_SECONDS)[0]
    assert again_done.run_key == f"{key}-attempt2"
    # No run ever showed up for the key: asked again once the grace period is over, not before.
    assert _plan(zone, landing, in_flight, {}, now=1000.0 + VANISHED_AFTER_SECONDS - 1)[0] == []
    assert len(_plan(zone, landing, in_flight, {}, now=1000.0 + VANISHED_AFTER_SECONDS)[0]) == 1

    # After the last attempt fails: given up once, with the run's own error, and not asked for again.
    last = {**vars(flight), "attempt": MAX_ATTEMPTS, "run_key": "k3"}
    from sensors.landing import InFlight

    in_flight3 = {flight_uri: InFlight(**last) for flight_uri in in_flight}
    runs = {"k3": RunState("r3", dg.DagsterRunStatus.FAILURE)}
    again, kept, given_up = _plan(zone, landing, in_flight3, runs, 2000.0, {"r3": "bronze__posts: disk full"})
    assert again == [] and given_up == [("input/post/a.csv", "run r3 failure: bronze__posts: disk full")]
    again, kept, given_up = _plan(zone, landing, kept, runs, 3000.0)
    assert again == [] and given_up == []  # reported once
    # A new version of the file starts over.
    write(zone, "input/post/a.csv", post_csv("p1", score=7))
    assert len(_plan(zone, landing, kept, runs, 4000.0)[0]) == 1


def test_run_states_and_the_real_cause_come_from_the_instance():
    from resources.runs import failure_cause
    from sensors.landing import SENSOR_NAME, run_states

    @dg.op
    def ingest():
        raise ValueError("the landing zone is unreadable")

    @dg.job
    def failing():
        ingest()

    with dg.instance_for_test() as instance:
        tags = {"dagster/sensor_name": SENSOR_NAME, "dagster/run_key": "post-abc"}
        result = failing.execute_in_process(instance=instance, tags=tags, raise_on_error=False)
        states = run_states(instance, {"post-abc", "post-unknown"})
        assert set(states) == {"post-abc"} and states["post-abc"].status == dg.DagsterRunStatus.FAILURE
        assert states["post-abc"].run_id == result.run_id
        cause = failure_cause(instance, result.run_id)
        assert cause.startswith("ingest: ") and "the landing zone is unreadable" in cause


def test_a_run_that_died_after_bronze_gets_silver_and_gold_caught_up(local):
    """The file is settled in the log but its run failed (killed in Silver): no new Bronze work, a catch-up run of
    the layers below, and the file stays in flight until that succeeds."""
    from lakehouse.ingestion import IngestionIndex, LogEntry
    from sensors.landing import RunState, plan

    zone, landing = local
    write(zone, "input/post/a.csv", post_csv("p1"))
    requests, in_flight, _ = plan(landing.zone(), IngestionIndex([]), {}, 200, 1000.0)
    [flight] = in_flight.values()
    uri = next(iter(in_flight))
    settled = IngestionIndex([LogEntry("post", uri, flight.etag, flight.size, None, "b1", "loaded")])
    running = {requests[0].run_key: RunState("r1", dg.DagsterRunStatus.STARTED)}
    assert plan(landing.zone(), settled, in_flight, 200, 1001.0, running)[:2] == ([], in_flight)
    failed = {requests[0].run_key: RunState("r1", dg.DagsterRunStatus.FAILURE)}
    [catch_up], in_flight2, _ = plan(landing.zone(), settled, in_flight, 200, 1002.0, failed)
    assert catch_up.tags["lakehouse/catch_up"] == "true" and catch_up.run_config == {}
    assert dg.AssetKey(["bronze", "posts"]) not in catch_up.asset_selection
    assert dg.AssetKey(["gold", "subreddit_daily"]) in catch_up.asset_selection
    done = {catch_up.run_key: RunState("r2", dg.DagsterRunStatus.SUCCESS)}
    assert plan(landing.zone(), settled, in_flight2, 200, 1003.0, done)[:2] == ([], {})


def _execute(request: dg.RunRequest, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    """A run as the daemon launches it for the request: its assets and its checks (None: the assets' own)."""
    from lakehouse_assets.definitions import defs

    checks = set(request.asset_check_keys) if request.asset_check_keys is not None else None
    job = defs.resolve_implicit_global_asset_job_def().get_subset(
        asset_selection=set(request.asset_selection), asset_check_selection=checks)
    return job.execute_in_process(run_config=request.run_config or None, instance=instance, raise_on_error=False,
                                  tags={**request.tags, "dagster/run_key": request.run_key})


@pytest.mark.slow
def test_a_catch_up_run_never_carries_bronze_past_a_failed_gate_until_it_is_accepted(local, spark, monkeypatch):
    """Bronze's rows_match_file fails after the ingestion log recorded the file (a row lost behind the log's back):
    the run fails before Silver. Its catch-up run must not move that batch into Silver: it evaluates Bronze's gates
    again, Silver's step reads no further while the failure stands, and the sensor waits for an operator's accept
    instead of spending its attempts; once accepted, the catch-up run takes the batch through."""
    from lakehouse import checks, operations
    from lakehouse.catalog import catalog_for
    from lakehouse.ingestion import IngestionIndex
    from lakehouse_assets.metadata import check_named
    from sensors.landing import RunState, bronze_holds, plan

    zone, landing = local
    write(zone, "input/post/z.csv", post_csv("z1", "z2"))
    bronze_layer.ingest_bronze(spark, zone, Entity.POST)  # an earlier batch, in Bronze only
    write(zone, "input/post/a.csv", post_csv("a1", "a2", "a3"))
    [first], in_flight, _ = plan(landing.zone(), IngestionIndex(bronze_layer.log_entries(spark, Entity.POST)), {},
                                 200, 1000.0)
    assert keys_of(first) == ["input/post/a.csv"]
    real_write_log = bronze_layer.write_log

    def lose_a_row_once_logged(spark_, rows):
        real_write_log(spark_, rows)
        if rows and rows[0]["status"] == "loaded":
            spark_.sql("DELETE FROM bronze.posts WHERE id = 'z2'")

    def silver_ids() -> list[str]:
        return sorted(r.id for r in spark.table("silver.posts").collect())

    instance = dg.DagsterInstance.ephemeral()
    with monkeypatch.context() as m:
        m.setattr(bronze_layer, "write_log", lose_a_row_once_logged)
        run = _execute(first, instance)
    assert not run.success and silver_ids() == []
    [hold] = checks.holds_on(spark, "bronze.posts")
    assert hold["check"] == "rows_match_file" and "Bronze holds 4 rows but the ingestion log accounts for 5" in hold[
        "summary"]

    def sensor_plan(runs, flights, waiting=None, held=True):
        index = IngestionIndex(bronze_layer.log_entries(spark, Entity.POST))  # the log settled a.csv
        return plan(landing.zone(), index, flights, 200, 2000.0, runs, waiting=waiting,
                    held=bronze_holds(catalog_for(load_settings())) if held else None)

    failed = {first.run_key: RunState(run.run_id, dg.DagsterRunStatus.FAILURE)}
    # The catch-up run, as the sensor asked for it before: Bronze's gates are evaluated again (without the Bronze
    # step) and still fail, so Silver is skipped in the run.
    [catch_up], _, _ = sensor_plan(failed, in_flight, held=False)
    assert dg.AssetKey(["bronze", "posts"]) not in catch_up.asset_selection
    caught = _execute(catch_up, instance)
    assert not caught.success and silver_ids() == []
    gates = {(e.check_name, e.passed) for e in caught.get_asset_check_evaluations()
             if e.asset_key == dg.AssetKey(["bronze", "posts"])}
    assert gates == {("rows_match_file", False), ("ingestion_metadata_complete", True)}
    # Silver alone, as by hand (no gate in the run): its step reads no further, and says why.
    by_hand = _execute(dg.RunRequest(asset_selection=[dg.AssetKey(["silver", "posts"])], asset_check_keys=[]),
                       instance)
    assert not by_hand.success and silver_ids() == []
    [failure] = [e for e in by_hand.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "lakehouse accept bronze/posts rows_match_file" in failure.event_specific_data.error.message
    result = silver_layer.update_silver(spark, Entity.POST)  # the step as a job outside Dagster runs it
    assert result.bronze_rows == 0 and [h["check"] for h in result.held] == ["rows_match_file"]

    # The sensor waits for an accept: no run that would fail on the same gate, no attempt spent.
    waiting: list = []
    requests, kept, given_up = sensor_plan(failed, in_flight, waiting)
    assert requests == [] and given_up == [] and [k for k, _ in waiting] == ["input/post/a.csv"]
    [flight] = kept.values()
    assert flight.attempt == 1 and "rows_match_file" in flight.held
    assert sensor_plan(failed, kept)[:2] == ([], kept)  # and goes on waiting

    outcome = check_named("bronze/posts", "rows_match_file").outcome(spark, False, lambda w: True)
    operations.accept(spark, "bronze.posts", "rows_match_file", outcome, actor="ops", reason="z2 was PII")
    [catch_up], kept, _ = sensor_plan(failed, kept)
    assert catch_up.tags["lakehouse/catch_up"] == "true" and not next(iter(kept.values())).held
    assert _execute(catch_up, instance).success
    assert silver_ids() == ["a1", "a2", "a3", "z1"] and checks.holds_on(spark, "bronze.posts") == []
    assert not [k for k in tables_props(spark, "bronze.posts") if k.startswith(checks.HELD_PREFIX)]
    done = {catch_up.run_key: RunState("r3", dg.DagsterRunStatus.SUCCESS)}
    assert sensor_plan(done, kept)[:2] == ([], {})


def tables_props(spark, table: str) -> dict[str, str]:
    from lakehouse import tables

    return tables.table_properties(spark, table)
