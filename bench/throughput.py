"""Rows per second through the whole graph (land -> Bronze -> Silver -> Gold) on generated data.

    python bench/throughput.py --posts 1000000 --comments 2000000

Generates the data into a fresh data root, then times `dagster asset materialize --select '*'` as a user runs
it (one run process, one Spark session), with the peak memory of the whole process tree.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import measure  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ASSET_STEPS = {"bronze__posts", "bronze__comments", "silver_posts", "silver_comments", "gold__posts",
               "gold__comments", "gold__subreddit_daily", "gold__post_engagement"}


def _seconds(text: str) -> float:
    """Dagster's durations: `850ms`, `12.3s`, `1m 2s`, `1h 2m`."""
    total = 0.0
    for value, unit in re.findall(r"([0-9.]+)(ms|s|m|h)", text):
        total += float(value) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    return total


def step_seconds(log: str) -> dict[str, float]:
    """Each finished step's duration from a `dagster asset materialize` log."""
    out = {}
    for line in log.splitlines():  # ... STEP_SUCCESS - Finished execution of step "silver_posts" in 1m 2s.
        match = re.search(r'STEP_SUCCESS - Finished execution of step "([^"]+)" in (.+)\.$', line)
        if match:
            out[match.group(1)] = _seconds(match.group(2))
    return out


BIN = Path(sys.executable).parent


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--posts", type=int, default=1_000_000)
    parser.add_argument("--comments", type=int, default=2_000_000)
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--home", help="data root (default: a fresh temporary folder, removed afterwards)")
    args = parser.parse_args()

    home = Path(args.home) if args.home else Path(tempfile.mkdtemp(prefix="lakehouse-bench-"))
    env = {**os.environ, "LAKEHOUSE_HOME": str(home), "DAGSTER_HOME": str(home / "dagster")}
    try:
        subprocess.run([str(BIN / "lakehouse"), "init"], env=env, check=True, capture_output=True)
        started = time.perf_counter()
        gen = subprocess.run(
            [str(BIN / "lakehouse"), "generate", "--posts", str(args.posts), "--comments", str(args.comments),
             "--files", str(args.files)], env=env, check=True, capture_output=True, text=True)
        generate_s = time.perf_counter() - started
        print(gen.stdout.strip(), file=sys.stderr)
        log = home / "materialize.log"
        with log.open("w") as fh:
            run = measure([str(BIN / "dagster"), "asset", "materialize", "-m", "lakehouse_assets.definitions",
                           "--select", "*"], env=env, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT)
        steps = [line.split(" - ")[-1].strip() for line in log.read_text().splitlines() if "STEP_SUCCESS" in line]
        step_seconds_ = step_seconds(log.read_text())
        checks_s = sum(v for k, v in step_seconds_.items() if k not in ASSET_STEPS)
        counts = subprocess.run([str(BIN / "lakehouse"), "tables"], env=env, check=True, capture_output=True,
                                text=True).stdout
        rows = sum(int(line.split()[1]) for line in counts.splitlines() if line.startswith("bronze.posts")
                   or line.startswith("bronze.comments"))
        result = {
            **run,
            "generate_seconds": round(generate_s, 1),
            "raw_rows": rows,
            "rows_per_second": round(rows / run["seconds"]),
            "steps": steps,
            "asset_step_seconds": round(sum(step_seconds_.values()) - checks_s, 1),
            "check_step_seconds": round(checks_s, 1),
            # Checks as a share of the run's wall time (process start, Spark start and commits included).
            "check_share_of_run": round(checks_s / run["seconds"], 3),
            "tables": counts.strip().splitlines(),
        }
        print(json.dumps(result, indent=2))
        return run["exit"]
    finally:
        if not args.home:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
