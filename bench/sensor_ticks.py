"""Sensor tick time against the number of landed keys (local landing zone).

    python bench/sensor_ticks.py --sizes 1000 10000 100000

For each size: N small files land, then the tick is timed twice: on first sight (every file new: listed,
hashed, batched into run requests) and in steady state (every file already in the ingestion log).
"""

from __future__ import annotations

import argparse
import json
import os
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
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lakehouse-ticks-"))
    os.environ["LAKEHOUSE_HOME"] = str(work)

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

    def tick() -> tuple[float, int]:
        with dg.instance_for_test() as instance, dg.build_sensor_context(instance=instance, resources=resources) as ctx:
            started = time.perf_counter()
            result = sensor(ctx)
            return time.perf_counter() - started, len(result.run_requests or [])

    results, landed = [], 0
    folder = zone.path_for(entity_prefix(Entity.POST))
    folder.mkdir(parents=True, exist_ok=True)
    for size in args.sizes:
        for i in range(landed, size):
            (folder / f"f{i:07d}.csv").write_bytes(f"type,id\r\npost,{i}\r\n".encode())
        landed = size
        first_s, requests = tick()
        # Settle every file in the log, as the runs would.
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
        steady_s, steady_requests = tick()
        results.append({"keys": size, "first_sight_s": round(first_s, 2), "run_requests": requests,
                        "steady_state_s": round(steady_s, 2), "steady_requests": steady_requests})
        print(json.dumps(results[-1]), file=sys.stderr)
    print(json.dumps(results))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
