"""Sensor tick time against the number of landed keys (local landing zone), and against the size of the ingestion
log on the S3 event path (issue 15).

    python bench/sensor_ticks.py --sizes 1000 10000 100000
    python bench/sensor_ticks.py --queue --sizes 1000 100000 1000000 [--new 10]

Local: for each size, N small files land, then the tick is timed twice: on first sight (every file new: listed,
hashed, batched into run requests) and in steady state (every file already in the ingestion log). --watch on (the
default): after the first tick the sensor looks only at what the folder's notifications name; off: it lists.

--queue: a moto server on loopback (S3 sends ObjectCreated events to SQS itself). For each size the ingestion log
is grown to N settled files (appended through pyiceberg to the Glue catalog, as Bronze's log writes would), then:
the first tick after a restart (the settled index rebuilt from the whole log: once), a tick with --new files
landed (their events in the queue), and a quiet tick; each with its requests counted: S3 from the server's request
log (every client's, pyiceberg's included; LIST, and GET/HEAD of the log's files or of landed objects), SQS and Glue
in botocore. The bucket holds only the new files: a tick on the event path lists nothing (the sweep lists,
`SWEEP_PAGES_PER_TICK` pages at most).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--queue", action="store_true", help="the S3 event path on a moto server")
    parser.add_argument("--new", type=int, default=10, help="--queue: files landed per measured tick")
    parser.add_argument("--watch", choices=("on", "off"), default="on",
                        help="local: file notifications (on) or a listing every tick (off)")
    args = parser.parse_args()
    if args.queue:
        return queue_ticks(args.sizes, args.new)
    work = Path(tempfile.mkdtemp(prefix="lakehouse-ticks-"))
    os.environ["LAKEHOUSE_HOME"] = str(work)
    os.environ["LAKEHOUSE_LANDING_WATCH"] = args.watch

    import dagster as dg
    import pyarrow as pa

    from lakehouse import tables
    from lakehouse.contracts import INGESTION_LOG, Entity
    from lakehouse.landing import LocalLandingZone, entity_prefix
    from lakehouse.catalog import catalog_for
    from lakehouse.settings import load_settings
    from lakehouse.spark import get_spark
    from resources import LakehouseResource, LocalLandingZoneResource
    from sensors.landing import build_landing_sensor

    settings = load_settings()
    spark = get_spark(settings)
    tables.ensure_tables(spark, (INGESTION_LOG,))
    spark.stop()
    catalog = catalog_for(settings)
    zone = LocalLandingZone(settings.landing_root)
    sensor = build_landing_sensor(settings)
    resources = {"landing": LocalLandingZoneResource(root=str(settings.landing_root)),
                 "lakehouse": LakehouseResource.from_settings(settings)}

    cursor: list[str | None] = [None]  # carried from tick to tick, as the daemon does

    def tick() -> tuple[float, int]:
        with dg.instance_for_test() as instance, dg.build_sensor_context(
                instance=instance, resources=resources, cursor=cursor[0]) as ctx:
            started = time.perf_counter()
            result = sensor(ctx)
            cursor[0] = result.cursor
            return time.perf_counter() - started, len(result.run_requests or [])

    def settle() -> None:
        """Every landed file into the log, as the runs would."""
        log = catalog.load_table(INGESTION_LOG.identifier)
        now = datetime.now(timezone.utc)
        existing = {r["source_uri"] for r in log.scan(selected_fields=("source_uri",)).to_arrow().to_pylist()}
        rows = [
            {"entity": "post", "source_uri": f.uri, "source_etag": zone.with_etag(f).etag, "source_size": f.size,
             "source_modified_at": f.modified_at, "batch_id": "bench", "status": "loaded", "rows": 1,
             "malformed_rows": 0, "message": None, "ingested_at": now}
            for f in zone.list_files(Entity.POST) if f.uri not in existing
        ]
        log.append(pa.Table.from_pylist(rows, schema=log.schema().as_arrow()))

    results, landed = [], 0
    folder = zone.path_for(entity_prefix(Entity.POST))
    folder.mkdir(parents=True, exist_ok=True)
    extra = Path(work) / "extra"
    extra.mkdir()
    for size in args.sizes:
        for i in range(landed, size):
            (folder / f"f{i:07d}.csv").write_bytes(f"type,id\r\npost,{i}\r\n".encode())
        landed = size
        first_s, requests = tick()
        settle()
        time.sleep(2)  # the burst's notifications delivered (watchdog holds them half a second)
        after_s, _ = tick()  # what is left of the burst
        steady_s, steady_requests = tick()  # nothing new
        names = [f"new-{size}-{i}.csv" for i in range(10)]
        for name in names:  # ten files landed the way `lakehouse land` does it (dot-file, then rename)
            (extra / name).write_bytes(b"type,id\r\npost,x\r\n")
            zone.land(extra / name, Entity.POST)
        time.sleep(1)
        ten_s, ten_requests = tick()
        settle()
        results.append({"keys": size, "first_sight_s": round(first_s, 2), "run_requests": requests,
                        "after_burst_s": round(after_s, 2), "steady_state_s": round(steady_s, 2),
                        "steady_requests": steady_requests, "ten_new_s": round(ten_s, 3),
                        "ten_new_requests": ten_requests})
        print(json.dumps(results[-1]), file=sys.stderr)
    print(json.dumps(results))
    shutil.rmtree(work, ignore_errors=True)
    return 0


def queue_ticks(sizes: list[int], new: int) -> int:
    import uuid

    import boto3
    import dagster as dg
    import pyarrow as pa
    from botocore.client import BaseClient
    from moto.server import ThreadedMotoServer

    from lakehouse.catalog import catalog_for, create_tables
    from lakehouse.contracts import INGESTION_LOG
    from lakehouse.settings import load_settings
    from lakehouse.standalone import free_port
    from lakehouse.tables import TABLE_PROPERTIES
    from resources import LakehouseResource, resources_for
    from sensors import landing as landing_sensor

    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    import logging

    # S3 requests counted where they arrive, the server's request log: boto3's and pyiceberg's (pyarrow's S3
    # client, which botocore does not see) alike. SQS and Glue requests are counted in botocore, by service.
    served: list[str] = []

    class Served(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            served.append(record.getMessage())

    server_log = logging.getLogger("werkzeug")
    server_log.setLevel(logging.INFO)
    server_log.propagate = False
    server_log.addHandler(Served())
    work = Path(tempfile.mkdtemp(prefix="lakehouse-queue-ticks-"))
    bucket = "lake-bench"
    s3, sqs = boto3.client("s3", endpoint_url=endpoint), boto3.client("sqs", endpoint_url=endpoint)
    s3.create_bucket(Bucket=bucket)
    url = sqs.create_queue(QueueName="landed")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={"QueueConfigurations": [
        {"QueueArn": arn, "Events": ["s3:ObjectCreated:*"],
         "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "landing/input/"}]}}}]})
    settings = load_settings({
        "LAKEHOUSE_ENV": "aws", "LAKEHOUSE_S3_BUCKET": bucket, "LAKEHOUSE_S3_PREFIX": "landing",
        "LAKEHOUSE_AWS_ENDPOINT": endpoint, "AWS_REGION": "us-east-1", "LAKEHOUSE_HOME": str(work),
        "LAKEHOUSE_SQS_QUEUE_URL": url, "LAKEHOUSE_ENGINE": "off"})
    catalog = catalog_for(settings)
    create_tables(catalog, TABLE_PROPERTIES)
    log = catalog.load_table(INGESTION_LOG.identifier)
    sensor = landing_sensor.build_landing_sensor(settings)
    resources = {"landing": resources_for(settings)["landing"], "lakehouse": LakehouseResource.from_settings(settings)}

    calls: list[str] = []
    real = BaseClient._make_api_call

    def counted(self, operation, params):
        if self.meta.service_model.service_name in ("sqs", "glue"):
            calls.append(f"{self.meta.service_model.service_name}:{operation}")
        return real(self, operation, params)

    BaseClient._make_api_call = counted
    cursor: list[str | None] = [None]

    def tick(instance) -> dict:
        calls.clear()
        served.clear()
        with dg.build_sensor_context(instance=instance, cursor=cursor[0], resources=resources) as ctx:
            started = time.perf_counter()
            result = sensor(ctx)
            seconds = time.perf_counter() - started
        cursor[0] = result.cursor
        time.sleep(0.2)  # the server logs a request as it answers it
        counts: dict[str, int] = {}
        for c in calls:
            counts[c] = counts.get(c, 0) + 1
        for line in served:
            method, _, path = re.sub(r"\x1b\[[0-9;]*m", "", line).partition('"')[2].partition(" ")  # no colours
            if path.startswith(f"/{bucket}"):
                kind = ("s3:LIST" if "list-type" in path else
                        f"s3:{method}:{'log' if '/warehouse/' in path else 'landing'}")
                counts[kind] = counts.get(kind, 0) + 1
        return {"s": round(seconds, 3), "run_requests": len(result.run_requests or []),
                "files": sum(int(r.tags["lakehouse/files"]) for r in result.run_requests or []),
                "s3_requests": sum(v for k, v in counts.items() if k.startswith("s3:")),
                "s3_list_requests": counts.get("s3:LIST", 0),
                "sqs_requests": sum(v for k, v in counts.items() if k.startswith("sqs:")), "requests": counts}

    results, logged, landed = [], 0, 0
    now = datetime.now(timezone.utc)
    with dg.instance_for_test() as instance:
        tick(instance)  # the first full sweep of the (empty) bucket
        for size in sizes:
            while logged < size:  # the log grows as Bronze's writes would grow it, in appends
                n = min(250_000, size - logged)
                log.append(pa.Table.from_pylist([
                    {"entity": "post", "source_uri": f"s3://{bucket}/landing/input/post/2025/01/01/f{i:07d}.csv",
                     "source_etag": uuid.uuid4().hex, "source_size": 100, "source_modified_at": now,
                     "batch_id": f"bench-{i // 200}", "status": "loaded", "rows": 1, "malformed_rows": 0,
                     "message": None, "ingested_at": now} for i in range(logged, logged + n)],
                    schema=log.schema().as_arrow()))
                logged += n
            (work / "state" / "settled.sqlite").unlink(missing_ok=True)  # a restart: the index is rebuilt
            restart = tick(instance)
            keys = [f"landing/input/post/2026/12/04/new-{landed + i:05d}.csv" for i in range(new)]
            for key in keys:
                s3.put_object(Bucket=bucket, Key=key, Body=b"type,id\r\npost,1\r\n")
            landed += new
            with_new = tick(instance)
            quiet = tick(instance)
            results.append({"settled_files": size, "new_files": new, "restart_tick": restart, "tick_with_new": with_new,
                            "quiet_tick": quiet})
            print(json.dumps(results[-1]), file=sys.stderr)
    print(json.dumps(results))
    server.stop()
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
