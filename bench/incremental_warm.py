"""What per-run start-up costs a small batch: the sensor's selection run twice in one process, one Spark session.

    python bench/incremental_warm.py --home /path/to/loaded/lakehouse --files /tmp/increments

Lands a 10,000-row posts file and runs `bronze/posts*` (checks included) with `execute_in_process`; then lands a
second file and runs it again in the same process, so the second run pays no Python/Dagster import, no JVM start,
and runs on JIT-compiled Spark code. The difference between the two is what a long-lived Spark session (Spark
Connect, a warm cluster driver) would save each sensor run; what is left is the work itself. Prints one JSON line.
It changes the lakehouse it is given (two more files ingested).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--home", required=True, help="a loaded data root")
    parser.add_argument("--files", required=True, help="where to generate the increments")
    args = parser.parse_args()
    home = Path(args.home).resolve()
    # The environment must be set before the definitions load their settings.
    os.environ.update(LAKEHOUSE_HOME=str(home), DAGSTER_HOME=str(home / "dagster"))
    started = time.monotonic()
    import dagster as dg

    from lakehouse.generator import generate
    from lakehouse_assets.definitions import defs

    job = dg.Definitions.merge(
        defs, dg.Definitions(jobs=[dg.define_asset_job("incremental", selection="bronze/posts*")])
    ).get_job_def("incremental")
    instance = dg.DagsterInstance.get()
    runs = []
    for i in range(2):
        new = generate(Path(args.files) / f"warm-{i}", posts=10_000, comments=0, files=1, seed=70 + i,
                       id_offset=60_000_000 + i * 100_000, prefix=f"warm{i}", repeat_share=0)
        shutil.copy(new.posts[0], home / "landing" / "input" / "post" / new.posts[0].name)
        t = time.monotonic()
        result = job.execute_in_process(instance=instance, raise_on_error=False)
        if not result.success:
            raise SystemExit(f"run {i} failed")
        steps = {e.step_key: e.event_specific_data.duration_ms / 1000
                 for e in result.all_events if e.event_type_value == "STEP_SUCCESS"}
        # The first run also pays the imports and the definitions' load, as a run process does.
        runs.append({"seconds": round(time.monotonic() - (started if i == 0 else t), 1),
                     "steps": {k: round(v, 2) for k, v in steps.items()}})
    print(json.dumps({"cold": runs[0], "warm": runs[1]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
