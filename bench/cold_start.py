"""What the driver's class-data archive (lakehouse/class_cache.py) saves a run that starts its own Spark driver.

Each round runs, in fresh processes, with the archive and without it (LAKEHOUSE_CLASS_CACHE=on|off), in turn:
  - `session`: a Python process that starts the driver, creates the lakehouse tables and runs one query;
  - `run`: `dagster asset materialize --select '*'` on a tiny landed batch (40 posts, 120 comments) in a new
    lakehouse without the warm engine: the whole graph with its checks, as a run without the engine does it.

    python bench/cold_start.py [--rounds 3] [--out bench/results/....json]

The archive is built first (if missing) in the usual cache folder. Prints and writes the wall seconds, and the
peak memory of each process tree (bench/measure.py's sampling).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.measure import tree_rss_bytes  # noqa: E402
from lakehouse import class_cache  # noqa: E402
from lakehouse.contracts import Entity  # noqa: E402
from lakehouse.generator import generate  # noqa: E402
from lakehouse.landing import LocalLandingZone  # noqa: E402
from lakehouse.settings import load_settings  # noqa: E402

BIN = Path(sys.executable).parent
SESSION = """
from lakehouse import tables
from lakehouse.settings import load_settings
from lakehouse.spark import get_spark
spark = get_spark(load_settings())
tables.ensure_tables(spark)
spark.sql("SELECT count(*) FROM silver.posts").collect()
"""


def timed(cmd: list[str], env: dict) -> tuple[float, float]:
    """Wall seconds and peak resident GiB of the command's process tree."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_rss_bytes(proc.pid))
        time.sleep(0.1)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[:3]} failed: {proc.stderr.read().decode()[-3000:]}")
    return round(wall, 1), round(peak / 2**30, 2)


def one(kind: str, cache: str) -> tuple[float, float]:
    home = Path(tempfile.mkdtemp(prefix="lakehouse-cold-"))
    env = {**os.environ, "LAKEHOUSE_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"), "LAKEHOUSE_ENV": "local",
           "LAKEHOUSE_ENGINE": "off", "LAKEHOUSE_CLASS_CACHE": cache}
    if kind == "session":
        return timed([sys.executable, "-c", SESSION], env)
    (home / "dagster").mkdir(parents=True)
    zone = LocalLandingZone(home / "landing")
    zone.ensure_layout()
    files = generate(home / "gen", posts=40, comments=120, files=1, seed=1, days=3, subreddits=2, repeat_share=0)
    zone.land(files.posts[0], Entity.POST)
    zone.land(files.comments[0], Entity.COMMENT)
    return timed([str(BIN / "dagster"), "asset", "materialize", "-m", "lakehouse_assets.definitions",
                  "--select", "*"], env)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out")
    args = parser.parse_args()
    settings = load_settings({**os.environ, "LAKEHOUSE_ENV": "local"})
    archive = class_cache.build(settings)
    if archive is None:
        raise SystemExit("no archive: LAKEHOUSE_CLASS_CACHE=off, or another process is building it")
    result: dict = {"archive": str(archive), "archive_mb": round(archive.stat().st_size / 2**20),
                    "cpu": next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                                 if line.startswith("model name")), "?"), "walls_s": {}, "peak_gib": {}}
    for _ in range(args.rounds):
        for kind in ("session", "run"):
            for cache in ("off", "on"):
                wall, peak = one(kind, cache)
                result["walls_s"].setdefault(f"{kind}, archive {cache}", []).append(wall)
                result["peak_gib"].setdefault(f"{kind}, archive {cache}", []).append(peak)
                print(kind, cache, wall, "s", peak, "GiB", file=sys.stderr, flush=True)
    result["median_s"] = {k: statistics.median(v) for k, v in result["walls_s"].items()}
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
