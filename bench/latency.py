"""Latency from a file landing to its rows being queryable in Gold, with the real daemon and sensor running.

    python bench/latency.py --files 10 --rows 10000

Lands one posts file at a time (10,000 rows each by default) into a fresh lakehouse, and for each measures
the seconds until `gold.posts` holds its rows, read through the embedded query engine as a user would.

By default the next file lands once the previous file's run has ended (the rest of its graph included), so each
figure is one file's latency; `--back-to-back` lands it as soon as Gold holds the previous one, and its latency
then includes waiting for the previous run to end (a backlog, not one file's latency). Either way, the bench
lets the last run end before it stops the daemon and the engine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import subprocess
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lakehouse.contracts import Entity  # noqa: E402
from lakehouse.generator import generate  # noqa: E402
from lakehouse.landing import LocalLandingZone  # noqa: E402
from lakehouse.maintenance import data_file_counts  # noqa: E402
from lakehouse.catalog import catalog_for  # noqa: E402
from lakehouse.query import QueryEngine  # noqa: E402
from lakehouse.settings import load_settings  # noqa: E402
from tests.daemon import BIN, DagsterServices  # noqa: E402

sys.path.insert(0, str(REPO / "bench"))
from measure import _children  # noqa: E402


def tree_pids(roots: list[int]) -> set[int]:
    """The roots and all their descendants, each once (the engine is the code server's child: not twice)."""
    tree, seen, stack = _children(), set(), list(roots)
    while stack:
        pid = stack.pop()
        if pid not in seen:
            seen.add(pid)
            stack.extend(tree.get(pid, []))
    return seen


def memory_of(pids: set[int]) -> list[dict]:
    """Each process's resident set and proportional set size (PSS: a page shared by n processes counts 1/n, so
    the PSS of a tree sums to the memory it really holds; forked pyspark workers share most of their pages)."""
    out = []
    for pid in pids:
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
            fields = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in rollup.splitlines()[1:]}
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, IndexError, ValueError):
            continue
        out.append({"pid": pid, "rss": fields.get("Rss", 0), "pss": fields.get("Pss", 0), "cmd": _short(cmd)})
    return out


def _short(cmd: str) -> str:
    """What a process is, in a few words (the JVM's command line is pages of class path)."""
    for marker, name in (("java", "engine or run JVM"), ("pyspark.daemon", "pyspark worker"),
                         ("dagster api grpc", "code server (dagster api grpc)"), ("dagster-daemon", "dagster daemon"),
                         ("dagster_daemon", "dagster daemon"), ("lakehouse.engine", "engine (Python side)"),
                         ("execute_run", "run process"), ("multiprocessing.spawn", "run process"),
                         ("multiprocessing.resource_tracker", "run's resource tracker")):
        if marker in cmd:
            return name
    return cmd[:60]


def gold_posts(home: Path) -> int:
    try:
        engine = QueryEngine(catalog_for(load_settings({"LAKEHOUSE_HOME": str(home)})))
        return engine.sql("SELECT count(*) FROM gold.posts").fetchall()[0][0]
    except Exception:  # noqa: BLE001 - the table appears with the first run
        return 0


def _engine_pid(home: Path) -> int | None:
    try:
        return json.loads((home / "engine" / "connection.json").read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return None


def data_files(home: Path) -> dict[str, int]:
    """Data files of each table's current snapshot (what readers open), from the catalog's metadata."""
    return data_file_counts(catalog_for(load_settings({"LAKEHOUSE_HOME": str(home)})))


def runs_in_progress(home: Path) -> bool:
    """Whether the lakehouse's Dagster instance has a run queued or going."""
    import dagster as dg
    from dagster._core.instance.ref import InstanceRef

    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home / "dagster"))) as instance:
        return bool(instance.get_run_records(dg.RunsFilter(statuses=[
            dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
            dg.DagsterRunStatus.STARTED]), limit=1))


def maintenance_runs(home: Path) -> list[dict]:
    """The table_maintenance runs the table_growth sensor (or a schedule) started: tables, seconds, status."""
    import dagster as dg
    from dagster._core.instance.ref import InstanceRef

    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home / "dagster"))) as instance:
        records = instance.get_run_records(dg.RunsFilter(job_name="table_maintenance"))
    return [{"tables": r.dagster_run.tags.get("lakehouse/tables", "all"), "status": r.dagster_run.status.value,
             "seconds": round((r.end_time or 0) - (r.start_time or 0), 1)} for r in reversed(records)]


def engine_recycles(home: Path) -> list[str]:
    """The engine's log lines of each driver recycle (its old JVM must end: the peak's breakdown shows if not)."""
    log = home / "engine" / "engine.log"
    return [line.strip() for line in log.read_text().splitlines() if "recycling" in line] if log.exists() else []


def summary(args, latencies: list[float], peak: dict, files_per_table: dict, files_over_time: list,
            maintenance: list, recycles: list) -> dict:
    """The figures so far (written at every checkpoint too: a soak cut short still leaves its numbers)."""
    in_order = [round(x, 1) for x in latencies]
    latencies = sorted(latencies)
    p95 = latencies[min(len(latencies) - 1, round(0.95 * (len(latencies) - 1)))]
    window = min(20, len(in_order) // 2) or 1
    result = {"files": len(latencies), "rows_per_file": args.rows, "sensor_interval_s": args.interval,
              "landing": "back to back" if args.back_to_back else "after the previous run ended",
              "median_s": round(statistics.median(latencies), 1), "p95_s": round(p95, 1),
              "min_s": round(latencies[0], 1), "max_s": round(latencies[-1], 1),
              f"median_first_{window}_s": round(statistics.median(in_order[:window]), 1),
              f"median_last_{window}_s": round(statistics.median(in_order[-window:]), 1),
              "peak_rss_gib_daemon_runs_engine": round(peak["rss"] / 2**30, 2),
              "peak_pss_gib_daemon_runs_engine": round(peak["pss"] / 2**30, 2),
              "at_pss_peak_gib": sorted(([p["cmd"], round(p["pss"] / 2**30, 3), round(p["rss"] / 2**30, 3)]
                                         for p in peak["at_pss_peak"]), key=lambda p: -p[1]),
              "data_files_per_table": files_per_table, "data_files_over_time": files_over_time,
              "maintenance_runs": maintenance, "engine_recycles": recycles,
              "latencies_in_order_s": in_order}
    return result


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=10)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--interval", type=int, default=2, help="sensor interval, seconds")
    parser.add_argument("--maintain-every", type=int, default=0,
                        help="also run all-table maintenance by hand after every N files (the table_growth sensor runs anyway)")
    parser.add_argument("--files-every", type=int, default=20,
                        help="record each table's data files after every N files (the soak: bounded or not)")
    parser.add_argument("--out", help="write the result (with every latency in landing order) here as JSON")
    parser.add_argument("--back-to-back", action="store_true",
                        help="land each file as soon as Gold holds the previous one, while its run still ends")
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
    latencies, files_over_time = [], []
    peak = {"rss": 0, "pss": 0, "at_pss_peak": []}
    sampling = threading.Event()

    def sample(roots: list[int]) -> None:  # the daemon's whole tree (code server, runs) and the engine
        while not sampling.wait(0.5):
            engine_pid = _engine_pid(home)
            procs = memory_of(tree_pids(roots + ([engine_pid] if engine_pid else [])))
            peak["rss"] = max(peak["rss"], sum(p["rss"] for p in procs))
            if sum(p["pss"] for p in procs) > peak["pss"]:
                peak["pss"], peak["at_pss_peak"] = sum(p["pss"] for p in procs), procs

    with DagsterServices(home, sensor_interval=args.interval, webserver=False) as dagster:
        sampler = threading.Thread(target=sample, args=([p.pid for p in dagster.procs],), daemon=True)
        sampler.start()
        zone.ensure_layout()
        expected = 0
        for n, path in enumerate(files, start=1):
            if not args.back_to_back:
                dagster.wait(lambda: not runs_in_progress(home), timeout=600, what="the previous run's end",
                             interval=1.0)
            landed = time.perf_counter()
            zone.land(path, Entity.POST)
            before = expected
            # Poll once a second: a tighter loop competes with the run for the two cores.
            dagster.wait(lambda: gold_posts(home) > before, timeout=600, what=f"{path.name} in Gold", interval=1.0)
            latencies.append(time.perf_counter() - landed)
            expected = gold_posts(home)
            print(f"{path.name}: {latencies[-1]:.1f}s (gold.posts = {expected:,})", file=sys.stderr)
            if n % args.files_every == 0:
                files_over_time.append({"after_files": n, **data_files(home)})
                if args.out:
                    Path(args.out).write_text(json.dumps({"partial": True, **summary(
                        args, latencies, peak, {}, files_over_time, maintenance_runs(home), engine_recycles(home))}, indent=1))
            if args.maintain_every and n % args.maintain_every == 0:
                done = subprocess.run([str(BIN / "lakehouse"), "maintain", "--no-orphans"], env=dagster.env,
                                      capture_output=True, text=True)
                print(done.stdout if done.returncode == 0 else done.stderr[-2000:], file=sys.stderr)
        dagster.wait(lambda: not runs_in_progress(home), timeout=600, what="the last run's end", interval=1.0)
        files_per_table = data_files(home)
        sampling.set()
    result = summary(args, latencies, peak, files_per_table, files_over_time, maintenance_runs(home),
                     engine_recycles(home))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
