"""Latency from a file landing to its rows being queryable in Gold, with the real daemon and sensor running.

    python bench/latency.py --files 10 --rows 10000

Lands one posts file at a time (10,000 rows each by default) into a fresh lakehouse, and for each measures
the seconds until `gold.posts` holds its rows, read through the embedded query engine as a user would.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lakehouse.contracts import Entity  # noqa: E402
from lakehouse.generator import generate  # noqa: E402
from lakehouse.landing import LocalLandingZone  # noqa: E402
from lakehouse.catalog import catalog_for  # noqa: E402
from lakehouse.query import QueryEngine  # noqa: E402
from lakehouse.settings import load_settings  # noqa: E402
from tests.daemon import DagsterServices  # noqa: E402


def gold_posts(home: Path) -> int:
    try:
        engine = QueryEngine(catalog_for(load_settings({"LAKEHOUSE_HOME": str(home)})))
        return engine.sql("SELECT count(*) FROM gold.posts").fetchall()[0][0]
    except Exception:  # noqa: BLE001 - the table appears with the first run
        return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=10)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--interval", type=int, default=2, help="sensor interval, seconds")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="lakehouse-latency-"))
    home = work / "lh"
    files = []
    for i in range(args.files):
        # Distinct ids per file: a new seed and a distinct file name prefix.
        out = generate(work / "gen", posts=args.rows, comments=0, files=1, seed=1000 + i, repeat_share=0,
                       prefix=f"latency{i:03d}", id_offset=i * args.rows)
        files.append(out.posts[0])
    zone = LocalLandingZone(home / "landing")
    latencies = []
    with DagsterServices(home, sensor_interval=args.interval, webserver=False) as dagster:
        zone.ensure_layout()
        expected = 0
        for path in files:
            landed = time.perf_counter()
            zone.land(path, Entity.POST)
            before = expected
            # Poll once a second: a tighter loop competes with the run for the two cores.
            dagster.wait(lambda: gold_posts(home) > before, timeout=600, what=f"{path.name} in Gold", interval=1.0)
            latencies.append(time.perf_counter() - landed)
            expected = gold_posts(home)
            print(f"{path.name}: {latencies[-1]:.1f}s (gold.posts = {expected:,})", file=sys.stderr)
    latencies.sort()
    p95 = latencies[min(len(latencies) - 1, round(0.95 * (len(latencies) - 1)))]
    print(json.dumps({"files": len(latencies), "rows_per_file": args.rows, "sensor_interval_s": args.interval,
                      "median_s": round(statistics.median(latencies), 1), "p95_s": round(p95, 1),
                      "min_s": round(latencies[0], 1), "max_s": round(latencies[-1], 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
