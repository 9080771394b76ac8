"""Run `dagster` with the lakehouse stopping dead at one point, so a test can SIGKILL the run exactly there.

    python -m tests.killable <point> <marker-file> dagster asset materialize ...

Points: `bronze` (Bronze's append committed, the ingestion log not written), `silver` (Silver's MERGE committed
with its watermark, the step not ended), `gold` (a Gold table's rows committed with its watermarks, the step not
ended; subreddit_daily's parts are committed before). At the point the
process creates the marker file and sleeps; the test kills it with SIGKILL, as the kernel's OOM killer would.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path


def main() -> int:
    point, marker, *command = sys.argv[1:]
    from lakehouse import bronze_layer, tables

    def stop_here() -> None:
        Path(marker).write_text("stopped")
        time.sleep(3600)

    if point == "bronze":
        real_log = bronze_layer.write_log

        def write_log(spark, rows):
            if rows and rows[0]["status"] != "rolled_back":
                stop_here()
            return real_log(spark, rows)

        bronze_layer.write_log = write_log
    else:
        real_marked = tables.ensure_marked

        def ensure_marked(spark, table, *args, **kwargs):
            real_marked(spark, table, *args, **kwargs)
            if table.startswith(f"{point}."):
                stop_here()

        tables.ensure_marked = ensure_marked
    assert command[0] == "dagster", command
    from dagster._cli import main as dagster

    sys.argv = command
    return dagster()


if __name__ == "__main__":
    sys.exit(main())
