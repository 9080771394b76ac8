"""Fixed cost of a run: the whole graph materialised in process on a tiny batch (40 posts, 120 comments), --runs
times in a row on one Spark session, the way the tests run it. What it measures is per-run overhead (Spark jobs,
commits, catalog and Py4J round trips, checks), which is also most of a routine sensor run.

    python bench/small_runs.py [--code WORKTREE] [--rounds 2] [--runs 3] [--quick-jit off --quick-jit on]

With `--code` (e.g. `git worktree add /tmp/before <rev>`), each round runs that revision's code, then this
checkout's, each in a fresh process and lakehouse: a before/after from one run on one machine. Each
`--quick-jit` value is a variant of its own (default off: a test worker's long-lived session, tests/conftest.py).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

ONE = """
import os, sys, time, json
sys.path.insert(0, os.environ["CODE"])
import dagster as dg
from lakehouse.settings import load_settings
from lakehouse.spark import get_spark
from lakehouse.generator import generate
from lakehouse.contracts import Entity
from lakehouse.landing import LocalLandingZone

settings = load_settings()
spark = get_spark(settings)
zone = LocalLandingZone(settings.landing_root)
zone.ensure_layout()
settings.dagster_home.mkdir(parents=True, exist_ok=True)
from lakehouse_assets.definitions import defs

job = defs.resolve_implicit_global_asset_job_def()
walls = []
with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
    for seed in range(1, int(os.environ["RUNS"]) + 1):
        files = generate(settings.home_abs / f"g{seed}", posts=40, comments=120, files=1, seed=seed, days=3,
                         subreddits=2, repeat_share=0, id_offset=seed * 1000)
        zone.land(files.posts[0], Entity.POST)
        zone.land(files.comments[0], Entity.COMMENT)
        started = time.perf_counter()
        assert job.execute_in_process(instance=instance, raise_on_error=False).success
        walls.append(round(time.perf_counter() - started, 1))
print(json.dumps(walls))
"""


def runs(code: Path, count: int, quick_jit: str) -> list[float]:
    home = tempfile.mkdtemp(prefix="lakehouse-small-")
    env = {**os.environ, "LAKEHOUSE_HOME": home, "LAKEHOUSE_ENV": "local", "LAKEHOUSE_ENGINE": "off",
           "LAKEHOUSE_SPARK_QUICK_JIT": quick_jit, "CODE": str(code), "RUNS": str(count)}
    env.pop("DAGSTER_HOME", None)
    done = subprocess.run([sys.executable, "-c", ONE], env=env, capture_output=True, text=True, cwd=code)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--code", help="an earlier revision's checkout, run before this one in each round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3, help="runs in a row on one session")
    parser.add_argument("--quick-jit", action="append", choices=("on", "off"),
                        help="the session's JIT (LAKEHOUSE_SPARK_QUICK_JIT); repeat for a variant each")
    args = parser.parse_args()
    jits = args.quick_jit or ["off"]
    codes = ([("before", Path(args.code).resolve())] if args.code else []) + [("this", REPO)]
    variants = [(label if len(jits) == 1 else f"{label}, quick JIT {jit}", code, jit)
                for label, code in codes for jit in jits]
    result: dict = {label: [] for label, _, _ in variants}
    for _ in range(args.rounds):
        for label, code, jit in variants:
            result[label].append(runs(code, args.runs, jit))
            print(label, result[label][-1], file=sys.stderr, flush=True)
    totals = {label: round(sum(sum(r) for r in rounds), 1) for label, rounds in result.items()}
    print(json.dumps({"runs_s": result, "total_s": totals}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
