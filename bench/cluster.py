"""Silver + Gold wall time in local mode and on a loopback Spark standalone cluster, same data, one run.

    python bench/cluster.py --posts 1000000 --comments 2000000

Generates the data once, copies the landing zone to two data roots, then runs `python -m lakehouse.job --all`
against each: local mode (`local[*]`, the default driver) and a master + worker started from the pyspark
distribution (`lakehouse/standalone.py`). Bronze is timed too but reported apart: the issue asks for the
transformations.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from lakehouse.generator import generate  # noqa: E402
from lakehouse.standalone import standalone_cluster  # noqa: E402


def run(home: Path, master: str, extra_conf: str, driver_memory: str) -> dict:
    # The same shuffle width on both sides (the machine's cores), so only where the work runs differs.
    env = {**os.environ, "LAKEHOUSE_HOME": str(home), "LAKEHOUSE_SPARK_MASTER": master,
           "LAKEHOUSE_SPARK_DRIVER_MEMORY": driver_memory, "LAKEHOUSE_SPARK_CONF": extra_conf,
           "LAKEHOUSE_SPARK_SHUFFLE_PARTITIONS": str(2 * (os.cpu_count() or 2))}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "lakehouse.job", "--all"], env=env, capture_output=True, text=True,
                          cwd=REPO)
    if done.returncode:
        raise SystemExit(done.stderr[-5000:])
    steps = json.loads(done.stdout[done.stdout.index("["):])
    by_layer: dict[str, float] = {}
    for s in steps:
        by_layer[s["step"]] = round(by_layer.get(s["step"], 0) + s["seconds"], 1)
    return {
        "master": master,
        "job_wall_seconds": round(time.perf_counter() - started, 1),
        "seconds_by_layer": by_layer,
        "silver_plus_gold_seconds": round(by_layer.get("silver", 0) + by_layer.get("gold", 0), 1),
        "steps": [{k: s[k] for k in ("step", "entity", "table", "seconds")} for s in steps],
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--posts", type=int, default=1_000_000)
    parser.add_argument("--comments", type=int, default=2_000_000)
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--worker-memory", default="8g")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="lakehouse-cluster-bench-"))
    try:
        local_home, cluster_home = root / "local", root / "cluster"
        files = generate(local_home / "landing", posts=args.posts, comments=args.comments, files=args.files)
        shutil.copytree(local_home / "landing", cluster_home / "landing")
        local = run(local_home, "local[*]", "", "3g")
        with standalone_cluster(root / "spark", cores=os.cpu_count() or 2, memory=args.worker_memory) as master:
            # The driver only plans and commits; the executor gets the memory the local driver had.
            cluster = run(cluster_home, master, "spark.executor.memory=4g", "2g")
        print(json.dumps({
            "raw_rows": files.post_rows + files.comment_rows,
            "cores": os.cpu_count(),
            "local": local,
            "standalone_cluster": cluster,
            "cluster_over_local": round(cluster["silver_plus_gold_seconds"] / local["silver_plus_gold_seconds"], 2),
        }, indent=2))
        return 0
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
