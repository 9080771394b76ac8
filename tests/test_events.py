"""The event path (issue 15): S3 ObjectCreated events through SQS, on a real moto server on loopback (S3 sends the
notifications itself), the sweep that finds what an event never brought, the settled index the sensor asks
instead of reading the whole ingestion log, and the local folder's file notifications (watchdog, inotify).

Not here: a file from S3 reaching Gold. Spark cannot read S3 on this machine (no hadoop-aws, see FACTS.md); the
runs the queue starts are the same runs the listing starts, which test_daemon takes to Gold from a folder.
"""

from __future__ import annotations

import json
import os
import uuid
from datetime import datetime, timezone

import boto3
import dagster as dg
import pyarrow as pa
import pytest

from lakehouse.catalog import catalog_for, create_tables
from lakehouse.contracts import INGESTION_LOG, SOURCE_HEADERS, Entity
from lakehouse.ingestion import SettledIndex
from lakehouse.settings import load_settings
from lakehouse.tables import TABLE_PROPERTIES
from resources import LakehouseResource, resources_for
from sensors import landing as landing_sensor
from sensors.landing import SENSOR_NAME, build_landing_sensor, sweep_start
from tests.test_sensor import post_csv

HEADER_ONLY = post_csv()


class Queue:
    """A bucket whose ObjectCreated events under `landing/input/` go to an SQS queue (and a dead-letter queue)."""

    def __init__(self, endpoint: str, home, **env: str):
        self.endpoint = endpoint
        self.bucket = f"lake-{uuid.uuid4().hex[:8]}"
        self.s3 = boto3.client("s3", endpoint_url=endpoint)
        self.sqs = boto3.client("sqs", endpoint_url=endpoint)
        self.s3.create_bucket(Bucket=self.bucket)
        self.url = self.sqs.create_queue(QueueName=f"{self.bucket}-events")["QueueUrl"]
        self.dead = self.sqs.create_queue(QueueName=f"{self.bucket}-dead")["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=self.url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        self.s3.put_bucket_notification_configuration(Bucket=self.bucket, NotificationConfiguration={
            "QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*"], "Filter": {
                "Key": {"FilterRules": [{"Name": "prefix", "Value": "landing/input/"}]}}}]})
        self.settings = load_settings({
            "LAKEHOUSE_ENV": "aws", "LAKEHOUSE_S3_BUCKET": self.bucket, "LAKEHOUSE_S3_PREFIX": "landing",
            "LAKEHOUSE_AWS_ENDPOINT": endpoint, "AWS_REGION": "us-east-1", "LAKEHOUSE_HOME": str(home),
            "LAKEHOUSE_SQS_QUEUE_URL": self.url, "LAKEHOUSE_SQS_DEAD_LETTER_URL": self.dead, **env})
        self.catalog = catalog_for(self.settings)
        create_tables(self.catalog, TABLE_PROPERTIES)
        self.sensor = build_landing_sensor(self.settings)
        self.landing = resources_for(self.settings)["landing"]
        self.cursor: str | None = None
    def land(self, key: str, body: str = HEADER_ONLY) -> str:
        self.s3.put_object(Bucket=self.bucket, Key=f"landing/{key}", Body=body.encode())
        return self.s3.head_object(Bucket=self.bucket, Key=f"landing/{key}")["ETag"].strip('"')

    def tick(self, instance) -> list[dg.RunRequest]:
        with dg.build_sensor_context(instance=instance, cursor=self.cursor, resources={
                "landing": self.landing, "lakehouse": LakehouseResource.from_settings(self.settings)}) as ctx:
            result = self.sensor(ctx)
        self.cursor = result.cursor
        return list(result.run_requests or [])

    def settle(self, key: str, etag: str, status: str = "loaded") -> None:
        """What Bronze's log write does for a file version (through pyiceberg: Spark cannot write to S3 here)."""
        log = self.catalog.load_table(INGESTION_LOG.identifier)
        size = self.s3.head_object(Bucket=self.bucket, Key=f"landing/{key}")["ContentLength"]
        row = {"entity": "post", "source_uri": f"s3://{self.bucket}/landing/{key}", "source_etag": etag,
               "source_size": size, "source_modified_at": datetime.now(timezone.utc), "batch_id": uuid.uuid4().hex,
               "status": status, "rows": 0, "malformed_rows": 0, "message": None,
               "ingested_at": datetime.now(timezone.utc)}
        log.append(pa.Table.from_pylist([row], schema=log.schema().as_arrow()))

    def lose_events(self) -> None:
        """Events that never arrive (SQS allows one purge a minute: receive and delete instead)."""
        while batch := self.sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=10).get("Messages"):
            self.sqs.delete_message_batch(QueueUrl=self.url, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)])

    def waiting(self, url: str | None = None) -> int:
        """Messages in the queue, visible or not."""
        attrs = self.sqs.get_queue_attributes(QueueUrl=url or self.url, AttributeNames=[
            "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


@pytest.fixture
def queue(moto_endpoint, tmp_path, monkeypatch):
    # Messages not settled yet come back at once instead of a minute later.
    monkeypatch.setattr(landing_sensor, "RECHECK_SECONDS", 0)
    return Queue(moto_endpoint, tmp_path)


@pytest.fixture
def aws_calls(monkeypatch):
    """Every S3 and SQS request any boto3 client makes (the sensor's own clients included), passed through."""
    from botocore.client import BaseClient

    calls: list[tuple[str, str, dict]] = []
    real = BaseClient._make_api_call

    def spy(self, operation, params):
        if self.meta.service_model.service_name in ("s3", "sqs"):
            calls.append((self.meta.service_model.service_name, operation, dict(params)))
        return real(self, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", spy)
    return calls


def keys_of(requests) -> list[str]:
    return sorted(k for r in requests for k in next(iter(r.run_config["ops"].values()))["config"]["keys"])


def test_an_event_starts_a_run_and_its_message_goes_once_the_log_settles_the_file(queue, aws_calls):
    with dg.instance_for_test() as instance:
        assert keys_of(queue.tick(instance)) == []  # the first tick: a full sweep of an empty bucket
        etag = queue.land("input/post/2026/12/04/a b.csv")  # a space: keys arrive URL-encoded
        queue.land("input/comment/.a.csv.part")  # a dot-file: not landed yet
        requests = queue.tick(instance)
        assert keys_of(requests) == ["input/post/2026/12/04/a b.csv"]
        assert requests[0].asset_selection[0] == dg.AssetKey(["bronze", "posts"])
        assert queue.waiting() == 1  # kept until the log settles the file
        assert queue.tick(instance) == []  # its run is on its way: not asked for twice
        assert queue.waiting() == 1
        queue.settle("input/post/2026/12/04/a b.csv", etag)
        assert queue.tick(instance) == []
        assert queue.waiting() == 0
        aws_calls.clear()
        queue.tick(instance)  # a quiet tick: one receive, no listing, no reading of objects
        assert [(service, op) for service, op, _ in aws_calls] == [("sqs", "ReceiveMessage")]


def test_duplicate_and_late_events_start_nothing_twice(queue):
    with dg.instance_for_test() as instance:
        queue.tick(instance)
        etag = queue.land("input/post/a.csv")
        [event] = queue.sqs.receive_message(QueueUrl=queue.url, VisibilityTimeout=0)["Messages"]
        queue.sqs.send_message(QueueUrl=queue.url, MessageBody=event["Body"])  # delivered twice (at-least-once)
        assert keys_of(queue.tick(instance)) == ["input/post/a.csv"]  # one request for both
        assert queue.tick(instance) == []
        queue.settle("input/post/a.csv", etag)
        # A late event: the file was settled (found by a sweep, say) before its event came.
        queue.settle("input/post/b.csv", queue.land("input/post/b.csv"))
        assert queue.tick(instance) == []
        assert queue.waiting() == 0


def test_a_lost_cursor_costs_a_request_that_bronze_turns_away_never_a_lost_file(queue):
    with dg.instance_for_test() as instance:
        queue.tick(instance)
        queue.land("input/post/a.csv")
        assert keys_of(queue.tick(instance)) == ["input/post/a.csv"]
        queue.cursor = None  # lost: the next tick asks again (and sweeps in full), the message still waits
        assert keys_of(queue.tick(instance)) == ["input/post/a.csv"]
        assert queue.waiting() == 1


def test_a_replaced_or_deleted_version_lets_its_message_go(queue):
    with dg.instance_for_test() as instance:
        queue.tick(instance)
        queue.land("input/post/a.csv", post_csv("p1"))
        queue.land("input/post/gone.csv")
        assert keys_of(queue.tick(instance)) == ["input/post/a.csv", "input/post/gone.csv"]
        for run_key in {r for r in json.loads(queue.cursor)["in_flight"].values() for r in [r["run_key"]]}:
            _finish(instance, run_key)
        # The runs found a newer a.csv (its own event follows) and no gone.csv: the old messages can go.
        etag2 = queue.land("input/post/a.csv", post_csv("p1", "p2"))
        queue.s3.delete_object(Bucket=queue.bucket, Key="landing/input/post/gone.csv")
        requests = queue.tick(instance)
        assert keys_of(requests) == ["input/post/a.csv"]  # the new version, asked for
        queue.settle("input/post/a.csv", etag2)
        queue.tick(instance)
        assert queue.waiting() == 0


def test_a_failing_run_is_retried_then_set_aside_with_its_cause(queue):
    with dg.instance_for_test() as instance:
        queue.tick(instance)
        queue.land("input/post/bad.csv")
        attempts = []
        for _ in range(landing_sensor.MAX_ATTEMPTS):
            [request] = queue.tick(instance)
            attempts.append(request.run_key)
            _finish(instance, request.run_key, "the object's bytes are not CSV")
        assert len(set(attempts)) == landing_sensor.MAX_ATTEMPTS
        assert queue.tick(instance) == []  # given up: out of the queue, into the dead-letter queue
        assert queue.waiting() == 0
        [aside] = queue.sqs.receive_message(QueueUrl=queue.dead, MessageAttributeNames=["All"])["Messages"]
        cause = aside["MessageAttributes"]["lakehouse_cause"]["StringValue"]
        assert "input/post/bad.csv" in cause and "the object's bytes are not CSV" in cause
        assert "input%2Fpost%2Fbad.csv" in aside["Body"]  # the original event, for a redrive
        assert queue.tick(instance) == []  # and it is not asked for again


def test_the_sweep_finds_a_file_whose_event_was_lost_listing_only_recent_days(queue, aws_calls, monkeypatch):
    with dg.instance_for_test() as instance:
        for day in ("2026/11/01", "2026/12/02", "2026/12/03"):
            queue.settle(f"input/post/{day}/old.csv", queue.land(f"input/post/{day}/old.csv"))
        queue.lose_events()
        assert queue.tick(instance) == []  # the first sweep (full) finds them settled
        queue.land("input/post/2026/12/04/lost.csv")
        queue.lose_events()  # its event is lost
        assert queue.tick(instance) == []  # the next sweep is not due yet: no listing
        sweep = json.loads(queue.cursor)["sweep"]
        assert sweep["newest"]["post"] == "input/post/2026/12/03/old.csv"
        queue.cursor = json.dumps({**json.loads(queue.cursor), "sweep": {**sweep, "due_at": 0}})
        aws_calls.clear()
        assert keys_of(queue.tick(instance)) == ["input/post/2026/12/04/lost.csv"]
        # Posts listed from the day before the newest key it knew, not from the start; comments (none) in full.
        listed = [(p["Prefix"], p.get("StartAfter")) for _, op, p in aws_calls if op == "ListObjectsV2"]
        assert listed == [("landing/input/post/", "landing/input/post/2026/12/02"), ("landing/input/comment/", None)]
        # On demand: `lakehouse sweep` has the next tick list everything, once.
        from lakehouse.cli import main as lakehouse_cli

        monkeypatch.setenv("LAKEHOUSE_HOME", str(queue.settings.home))
        assert lakehouse_cli(["sweep"]) == 0
        aws_calls.clear()
        assert queue.tick(instance) == []
        listed = [(p["Prefix"], p.get("StartAfter")) for _, op, p in aws_calls if op == "ListObjectsV2"]
        assert listed == [("landing/input/post/", None), ("landing/input/comment/", None)]
        aws_calls.clear()
        queue.tick(instance)
        assert not [op for _, op, _ in aws_calls if op == "ListObjectsV2"]


def test_only_created_objects_of_the_bucket_under_its_input_prefixes_are_files():
    from lakehouse.events import files_in_event

    def record(key, name="ObjectCreated:Put", bucket="lake"):
        return {"eventName": name, "eventTime": "2026-12-04T10:00:00.123Z",
                "s3": {"bucket": {"name": bucket}, "object": {"key": key, "size": 5, "eTag": "abc"}}}

    body = json.dumps({"Records": [
        record("landing/input/post/a+b%2B.csv"), record("landing/input/comment/2026/c.csv",
                                                         "ObjectCreated:CompleteMultipartUpload"),
        record("landing/input/post/gone.csv", "ObjectRemoved:Delete"), record("landing/input/post/x.csv", bucket="other"),
        record("landing/output/y.csv"), record("landing/input/post/"), record("landing/input/post/.tmp.csv")]})
    files = files_in_event(body, "lake", "landing")
    assert [(f.key, f.uri, f.etag, f.size) for f in files] == [
        ("input/post/a b+.csv", "s3://lake/landing/input/post/a b+.csv", "abc", 5),
        ("input/comment/2026/c.csv", "s3://lake/landing/input/comment/2026/c.csv", "abc", 5)]
    assert files[0].modified_at == datetime(2026, 12, 4, 10, 0, 0, 123000, tzinfo=timezone.utc)
    assert files_in_event(json.dumps({"Event": "s3:TestEvent", "Bucket": "lake"}), "lake", "landing") == []
    for bad in ("[]", '{"Message": "hi"}', "not json"):
        with pytest.raises(ValueError):
            files_in_event(bad, "lake", "landing")


def test_a_sweep_finding_more_files_than_a_tick_runs_lists_that_part_again(moto_endpoint, tmp_path, monkeypatch):
    monkeypatch.setattr(landing_sensor, "RECHECK_SECONDS", 0)
    queue = Queue(moto_endpoint, tmp_path, LAKEHOUSE_SENSOR_BATCH_SIZE="1", LAKEHOUSE_SENSOR_MAX_RUNS_PER_TICK="2")
    with dg.instance_for_test() as instance:
        for name in ("a", "b", "c", "d", "e"):
            queue.land(f"input/post/{name}.csv")
        queue.lose_events()
        asked = []
        for _ in range(3):  # the first tick sweeps in full; two runs a tick
            asked += keys_of(queue.tick(instance))
        assert asked == [f"input/post/{n}.csv" for n in "abcde"]


def test_a_run_that_failed_after_bronze_gets_its_catch_up_through_the_queue(queue):
    """Bronze settled the file, then the run failed in Silver: the message was kept, and its return asks for a
    catch-up run of Silver and Gold (no Bronze work); once that succeeds the message goes."""
    with dg.instance_for_test() as instance:
        queue.tick(instance)
        etag = queue.land("input/post/a.csv")
        [request] = queue.tick(instance)
        from dagster._core.storage.dagster_run import DagsterRun

        instance.add_run(DagsterRun(job_name="__ASSET_JOB", run_id=uuid.uuid4().hex, status=dg.DagsterRunStatus.STARTED,
                                    tags={"dagster/sensor_name": SENSOR_NAME, "dagster/run_key": request.run_key}))
        queue.settle("input/post/a.csv", etag)  # Bronze's log write
        assert queue.tick(instance) == [] and queue.waiting() == 1  # its run is still going: kept
        _finish(instance, request.run_key, "silver failed")
        [catch_up] = queue.tick(instance)
        assert catch_up.tags["lakehouse/catch_up"] == "true"
        assert dg.AssetKey(["bronze", "posts"]) not in catch_up.asset_selection
        assert queue.waiting() == 1
        _finish(instance, catch_up.run_key)
        assert queue.tick(instance) == []
        assert queue.waiting() == 0


def test_sweep_start_follows_dated_layouts():
    assert sweep_start(Entity.POST, "input/post/2026/03/01/a.csv") == "input/post/2026/02/28"
    assert sweep_start(Entity.POST, "input/post/2026-01-01.csv") == "input/post/2025-12-31"
    assert sweep_start(Entity.POST, "input/post/2026-01-01_x/a.csv") == "input/post/2025-12-31"
    assert sweep_start(Entity.POST, "input/post/export-7.csv") == ""  # not dated: a full sweep
    assert sweep_start(Entity.POST, "input/post/2026/13/01/a.csv") == ""
    assert sweep_start(Entity.POST, None) == ""


def test_an_unreadable_message_is_set_aside_not_retried_forever(queue):
    with dg.instance_for_test() as instance:
        queue.tick(instance)
        queue.sqs.send_message(QueueUrl=queue.url, MessageBody="hello")
        assert queue.tick(instance) == []
        assert queue.waiting() == 0 and queue.waiting(queue.dead) == 1


def test_the_deployment_files_wire_a_bucket_to_its_queue(moto_endpoint):
    """deploy/: the queue policy and the bucket notification, as docs/aws.md applies them, deliver real events."""
    from pathlib import Path

    from lakehouse.events import files_in_event

    deploy = Path(__file__).resolve().parents[1] / "deploy"
    bucket, name = f"lake-{uuid.uuid4().hex[:8]}", f"landed-{uuid.uuid4().hex[:6]}"
    s3, sqs = boto3.client("s3", endpoint_url=moto_endpoint), boto3.client("sqs", endpoint_url=moto_endpoint)
    s3.create_bucket(Bucket=bucket)
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    region, account = arn.split(":")[3], arn.split(":")[4]

    def filled(file: str) -> str:
        text = (deploy / file).read_text()
        for placeholder, value in (("LAKEHOUSE_BUCKET", bucket), ("LANDING_PREFIX", "landing"), ("AWS_REGION", region),
                                   ("AWS_ACCOUNT_ID", account), ("LANDING_QUEUE", name)):
            text = text.replace(placeholder, value)
        return text

    sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": filled("sqs-queue-policy.json")})
    s3.put_bucket_notification_configuration(Bucket=bucket,
                                             NotificationConfiguration=json.loads(filled("bucket-notification.json")))
    s3.put_object(Bucket=bucket, Key="landing/input/comment/2026/12/04/c.csv", Body=b"x")
    s3.put_object(Bucket=bucket, Key="elsewhere/x.csv", Body=b"x")  # outside the prefix: no event
    found = []
    while batch := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages"):
        for m in batch:
            found += [f.key for f in files_in_event(m["Body"], bucket, "landing")]
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    assert found == ["input/comment/2026/12/04/c.csv"]


def _finish(instance, run_key: str, error: str | None = None) -> None:
    """A run of the sensor's with this run key, ended in the instance: failed with `error`, or succeeded."""
    @dg.op
    def step():
        if error:
            raise ValueError(error)

    @dg.job
    def run():
        step()

    run.execute_in_process(instance=instance, raise_on_error=False,
                           tags={"dagster/sensor_name": SENSOR_NAME, "dagster/run_key": run_key})


# --- the settled index ---------------------------------------------------------------------------------------


def _log_rows(uris_status: list[tuple[str, str]], batch: str = "b1", at: datetime | None = None) -> list[dict]:
    at = at or datetime.now(timezone.utc)
    return [{"entity": "post", "source_uri": uri, "source_etag": "e", "source_size": 1, "source_modified_at": at,
             "batch_id": batch, "status": status, "rows": 0, "malformed_rows": 0, "message": None, "ingested_at": at}
            for uri, status in uris_status]


def test_the_settled_index_reads_only_new_appends_and_rebuilds_when_history_breaks(lakehouse, spark, settings,
                                                                                   tmp_path):
    from lakehouse import tables

    tables.ensure_tables(spark, (INGESTION_LOG,))
    catalog = catalog_for(settings)
    log = catalog.load_table(INGESTION_LOG.identifier)

    def append(rows):
        log.append(pa.Table.from_pylist(rows, schema=log.schema().as_arrow()))

    path = tmp_path / "settled.sqlite"
    append(_log_rows([(f"file:///f{i}", "loaded") for i in range(100)]))
    with SettledIndex(path) as index:
        assert index.refresh(catalog).rebuilt and index.rows_read == 100
        assert index.has_version("file:///f7", "e") and not index.has_version("file:///new", "e")
    append(_log_rows([("file:///new", "loaded"), ("file:///f7", "rolled_back")], batch="b2"))
    later = datetime.now(timezone.utc)
    append(_log_rows([("file:///f8", "retracted")], at=later))  # an operator's later row for (b1, f8)
    with SettledIndex(path) as index:
        index.refresh(catalog)
        assert not index.rebuilt and index.rows_read == 3  # the new rows only
        assert index.has_version("file:///new", "e") and index.has_version("file:///f7", "e")  # b1 still loaded it
        assert index.has_version("file:///f8", "e")  # retracted is settled too
        assert index.refresh(catalog).rows_read == 0  # nothing new: nothing read
    # A compaction rewrites the same rows: still incremental.
    spark.sql(f"CALL lakehouse.system.rewrite_data_files(table => '{INGESTION_LOG.identifier}', "
              "options => map('min-input-files', '2'))")
    append(_log_rows([("file:///after", "rejected")], batch="b3"))
    with SettledIndex(path) as index:
        index.refresh(catalog)
        assert not index.rebuilt and index.rows_read == 1 and index.has_version("file:///after", "e")
    # A rollback takes rows back: the index no longer leads there, and is rebuilt from what the log holds now.
    first = min(log.refresh().snapshots(), key=lambda s: s.sequence_number).snapshot_id
    spark.sql(f"CALL lakehouse.system.rollback_to_snapshot('{INGESTION_LOG.identifier}', {first})")
    with SettledIndex(path) as index:
        index.refresh(catalog)
        assert index.rebuilt and index.count() == 100 and not index.has_version("file:///new", "e")
    # The file lost: rebuilt.
    path.unlink()
    with SettledIndex(path) as index:
        assert index.refresh(catalog).rebuilt and index.count() == 100


# --- a local folder: file notifications instead of a listing each tick ---------------------------------------


class Watched:
    """The local sensor with the folder's watch on, its cursor carried from tick to tick."""

    def __init__(self, **env: str):
        from resources import LocalLandingZoneResource

        self.settings = load_settings({**os.environ, "LAKEHOUSE_LANDING_WATCH": "on", **env})
        self.sensor = build_landing_sensor(self.settings)
        self.landing = LocalLandingZoneResource(root=str(self.settings.landing_root))
        self.zone = self.landing.zone()
        self.cursor: str | None = None

    def tick(self) -> list[str]:
        with dg.instance_for_test() as instance, dg.build_sensor_context(instance=instance, cursor=self.cursor, resources={
                "landing": self.landing, "lakehouse": LakehouseResource.from_settings(self.settings)}) as ctx:
            result = self.sensor(ctx)
        self.cursor = result.cursor
        return keys_of(result.run_requests or [])

    def stop(self) -> None:
        from lakehouse.landing import FolderWatch

        FolderWatch._watches.pop(self.zone.root).observer.stop()


def test_a_local_tick_looks_at_what_changed_not_at_every_file(lakehouse, monkeypatch):
    """With the watch on, the first tick in a process lists the folder; later ticks see only the notified paths
    and the files in flight, so their cost does not grow with the folder; the sweep lists it again when due."""
    from lakehouse.landing import FolderWatch, LocalLandingZone
    from tests.test_sensor import write

    watched = Watched()
    zone = watched.zone
    for i in range(50):
        write(zone, f"input/post/old/{i:03d}.csv", post_csv(f"o{i}"))
    listed: list[Entity | None] = []
    real = LocalLandingZone.list_files

    def counted(self, entity=None):
        listed.append(entity)
        return real(self, entity)

    monkeypatch.setattr(LocalLandingZone, "list_files", counted)
    assert zone.root not in FolderWatch._watches  # no watch in this process yet
    try:
        assert len(watched.tick()) == 50 and listed  # the watch started: one listing
        _watched_ticks(watched, listed)
        # The folder's watch stopped (the folder was replaced, say): the next tick starts one and lists again.
        listed.clear()
        for emitter in list(FolderWatch._watches[zone.root].observer.emitters):
            emitter.stop()
            emitter.join(5)
        watched.tick()
        assert listed and FolderWatch._watches[zone.root].alive()
    finally:
        watched.stop()


def test_a_burst_over_a_ticks_runs_is_worked_off_by_the_watch(lakehouse):
    import time as clock

    watched = Watched(LAKEHOUSE_SENSOR_BATCH_SIZE="1", LAKEHOUSE_SENSOR_MAX_RUNS_PER_TICK="2")
    asked: list[str] = []
    try:
        watched.tick()  # the watch starts on an empty folder
        for name in "abcde":
            watched.zone.land(_file(watched.zone.root.parent / f"{name}.csv", post_csv(name)), Entity.POST)
        deadline = clock.monotonic() + 15
        while len(asked) < 5 and clock.monotonic() < deadline:
            got = watched.tick()
            assert len(got) <= 2
            asked += got
            clock.sleep(0.3)
        assert sorted(asked) == [f"input/post/{n}.csv" for n in "abcde"]  # no listing needed, nothing waits a sweep
    finally:
        watched.stop()


def _watched_ticks(watched, listed):
    import time as clock

    from tests.test_sensor import write

    zone = watched.zone
    listed.clear()
    zone.land(_file(zone.root.parent / "new.csv", post_csv("n1")), Entity.POST)  # atomic: dot-file, then rename
    write(zone, "input/comment/c.csv", ",".join(SOURCE_HEADERS[Entity.COMMENT]) + "\r\n")
    deadline, found = clock.monotonic() + 10, []
    while clock.monotonic() < deadline and len(found) < 2:
        found += watched.tick()
        clock.sleep(0.2)
    assert sorted(found) == ["input/comment/c.csv", "input/post/new.csv"]
    assert watched.tick() == []  # in flight: looked at again (its run may need asking again), not asked for twice
    assert not listed  # no listing: the notifications named them
    state = json.loads(watched.cursor)
    watched.cursor = json.dumps({**state, "sweep": {**state["sweep"], "due_at": 0}})
    watched.tick()
    assert listed  # the sweep lists the folder


def test_only_regular_files_are_landed_files(tmp_path):
    """A FIFO named by a notification would hang the hashing for ever: not a landed file, as in a listing."""
    from lakehouse.landing import LocalLandingZone

    zone = LocalLandingZone(tmp_path)
    zone.ensure_layout()
    folder = zone.path_for("input/post/")
    os.mkfifo(folder / "pipe.csv")
    (folder / "sub").mkdir()
    os.mkfifo(folder / "sub" / "pipe2.csv")
    _file(folder / "a.csv", post_csv("p1"))
    found = [f.key for f in zone.files_at({str(folder / "pipe.csv"), str(folder / "sub"), str(folder / "a.csv")})]
    assert found == ["input/post/a.csv"] == [f.key for f in zone.list_files(Entity.POST)]


def _file(path, text):
    path.write_text(text, encoding="utf-8", newline="")
    return path
