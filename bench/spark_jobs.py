"""Where a run's Spark work comes from: every Py4J call of a whole-graph run (40 posts, 120 comments, the way the
tests and bench/small_runs.py run it) attributed to the innermost lakehouse function that made it, with its wall
time and the Spark jobs it started (each call site is its own job group).

    python bench/spark_jobs.py [--runs 3] [--top 40]
    python bench/spark_jobs.py --landing DIR      # one full load of DIR's files instead (issue 14's profile)

Runs --runs whole-graph runs on one session in a fresh lakehouse and reports the last one (the first ones warm
the JIT). Prints the call sites by wall seconds and the run's Iceberg commits per table; --json writes them.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OURS = ("/lakehouse/", "/lakehouse_assets/", "/resources/", "/sensors/")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--json")
    parser.add_argument("--landing", help="profile one whole-graph run over this landing zone's files instead "
                                          "(input/post/*.csv, input/comment/*.csv; a full load, issue 14)")
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="lakehouse-jobs-")
    os.environ.update(LAKEHOUSE_HOME=home, LAKEHOUSE_ENV="local", LAKEHOUSE_ENGINE="off",
                      LAKEHOUSE_SPARK_QUICK_JIT="off")
    os.environ.pop("DAGSTER_HOME", None)
    sys.path.insert(0, str(REPO))

    import dagster as dg
    import py4j.java_gateway as gw

    from lakehouse.contracts import Entity
    from lakehouse.generator import generate
    from lakehouse.landing import LocalLandingZone
    from lakehouse.settings import load_settings
    from lakehouse.spark import get_spark

    settings = load_settings()
    spark = get_spark(settings)
    sc = spark.sparkContext
    tracker = sc.statusTracker()
    zone = LocalLandingZone(settings.landing_root)
    zone.ensure_layout()
    settings.dagster_home.mkdir(parents=True, exist_ok=True)
    from lakehouse_assets.definitions import defs

    wall: collections.Counter = collections.Counter()
    calls: collections.Counter = collections.Counter()
    groups: set[str] = set()
    local = threading.local()
    original = gw.JavaMember.__call__

    def site() -> str:
        frame = sys._getframe(2)
        while frame is not None:
            name = frame.f_code.co_filename
            if any(part in name for part in OURS) and "/bench/" not in name:
                return f"{name.split(str(REPO) + '/')[-1]}:{frame.f_code.co_name}:{frame.f_lineno}"
            frame = frame.f_back
        return "(outside)"

    def traced(self, *a):
        if getattr(local, "inside", False):
            return original(self, *a)
        where = site()
        local.inside = True
        try:
            if getattr(local, "group", None) != where:
                sc.setJobGroup(where, where)
                local.group = where
                groups.add(where)
            started = time.perf_counter()
            return original(self, *a)
        finally:
            wall[where] += time.perf_counter() - started
            calls[where] += 1
            local.inside = False

    from lakehouse import tables
    from lakehouse.contracts import ALL_TABLES

    def versions() -> dict[str, int]:
        # A table's metadata file names count its commits (`00012-<uuid>.metadata.json`), property-only ones too.
        return {c.identifier: int(Path(tables.iceberg_table(spark, c.identifier).operations().current()
                                       .metadataFileLocation()).name.split("-")[0]) for c in ALL_TABLES}

    if args.landing:
        args.runs = 1
        tables.ensure_tables(spark)  # the profiled run is the first: its tables' versions are read before it
    job = defs.resolve_implicit_global_asset_job_def()
    walls, commits = [], {}
    with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        for seed in range(1, args.runs + 1):
            files = None if args.landing else generate(Path(home) / f"g{seed}", posts=40, comments=120, files=1, seed=seed, days=3,
                             subreddits=2, repeat_share=0, id_offset=seed * 1000)
            if args.landing:
                for entity in Entity:
                    for path in sorted((Path(args.landing) / "input" / entity.value).glob("*.csv")):
                        zone.land(path, entity)
            else:
                zone.land(files.posts[0], Entity.POST)
                zone.land(files.comments[0], Entity.COMMENT)
            last = seed == args.runs
            before = versions() if last else {}
            if last:
                gw.JavaMember.__call__ = traced
            started = time.perf_counter()
            assert job.execute_in_process(instance=instance, raise_on_error=False).success
            walls.append(round(time.perf_counter() - started, 1))
            gw.JavaMember.__call__ = original
            commits = {t: n - before[t] for t, n in versions().items() if n != before.get(t)} if last else commits
    jobs = {g: len(tracker.getJobIdsForGroup(g)) for g in groups}
    rows = sorted(wall.items(), key=lambda kv: -kv[1])
    print(f"runs: {walls}; last run: {sum(wall.values()):.1f} s in Py4J calls, {sum(calls.values())} calls, "
          f"{sum(jobs.values())} Spark jobs, {sum(commits.values())} Iceberg commits")
    print("commits per table: " + ", ".join(f"{t} {n}" for t, n in sorted(commits.items())))
    by_file: collections.Counter = collections.Counter()
    for where, seconds in rows:
        by_file[where.split(":")[0] + ":" + where.split(":")[1]] += seconds
    print(f"{'s':>6} {'calls':>6} {'jobs':>5}  site")
    for where, seconds in rows[: args.top]:
        print(f"{seconds:6.2f} {calls[where]:6d} {jobs.get(where, 0):5d}  {where}")
    if args.json:
        Path(args.json).write_text(json.dumps({"walls": walls, "commits": commits, "sites": [
            {"site": w, "seconds": round(s, 3), "calls": calls[w], "jobs": jobs.get(w, 0)} for w, s in rows]},
            indent=1))
    spark.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
