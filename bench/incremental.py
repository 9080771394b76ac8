"""A routine sensor batch into a loaded lakehouse, with and without the warm engine, through `dagster asset
materialize` (the sensor's selection, checks included).

    python bench/incremental.py --rows 3000000 --repeat 3 [--home DIR] [--baseline-code WORKTREE] [--no-own-driver]

Builds (or reuses, with --home) a lakehouse of `--rows` generated raw rows (1/3 posts, 2/3 comments, 4 files each),
then alternates: one new 10,000-row posts file and one new 10,000-row comments file, each run once on the warm
engine and once with `LAKEHOUSE_ENGINE=off` (its own driver, as before the engine), `--repeat` times. Reports the
wall time of each run, the median per mode and entity, the step times of the last engine run of each entity, and
the peak memory of the run's process tree plus the engine's (VmHWM of the engine process).

With `--baseline-code` (e.g. `git worktree add /tmp/before <rev>`), each file is followed by one from that
revision's code on the same engine and lakehouse: a before/after from one run, on one machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
sys.path.insert(0, str(REPO))

sys.path.insert(0, str(BENCH))
from lakehouse.generator import generate  # noqa: E402
from measure import measure  # noqa: E402

BIN = Path(sys.executable).parent
STEP = re.compile(r'Finished execution of step "([^"]+)" in ([0-9.]+)(ms|s)')


def env_for(home: Path, engine: str, code: Path = REPO) -> dict:
    return {**os.environ, "LAKEHOUSE_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"),
            "LAKEHOUSE_ENGINE": engine, "PYTHONPATH": str(code)}


def materialize(home: Path, select: str, engine: str, log: Path, code: Path = REPO) -> dict:
    command = [str(BIN / "dagster"), "asset", "materialize", "-m", "lakehouse_assets.definitions", "--select", select]
    with open(log, "w") as out:
        measured = measure(command, env=env_for(home, engine, code), cwd=code, stdout=out, stderr=subprocess.STDOUT)
    if measured["exit"] != 0:
        raise SystemExit(f"run failed: see {log}")
    result = {"wall_seconds": measured["seconds"], "peak_rss_gib": round(measured["peak_rss_mb"] / 1024, 2)}
    steps = {m[1]: float(m[2]) / (1000 if m[3] == "ms" else 1) for m in STEP.finditer(log.read_text())}
    text = log.read_text()
    result["attached"] = "a session on the warm engine" in text
    result["steps"] = steps
    return result


def engine_peak_gib(home: Path) -> float | None:
    try:
        pid = json.loads((home / "engine" / "connection.json").read_text())["pid"]
        status = Path(f"/proc/{pid}/status").read_text()
    except (OSError, ValueError, KeyError):
        return None
    kib = int(re.search(r"VmHWM:\s+(\d+)", status)[1])
    # The engine's JVM is its child: add the child's high-water mark.
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        with open(f"/proc/{child}/status") as f:
            kib += int(re.search(r"VmHWM:\s+(\d+)", f.read())[1])
    return round(kib / 2**20, 2)


def land_new_file(home: Path, scratch: Path, entity: str, n: int, prefix: str, id_base: int, seed: int) -> None:
    """Land the n-th routine file: 10,000 new rows of `entity` with ids no earlier file (or bench run) used."""
    offset = id_base + (int(time.time()) % 10_000) * 1_000_000 + n * 100_000
    new = generate(scratch / str(n), posts=10_000 if entity == "post" else 0,
                   comments=10_000 if entity == "comment" else 0, files=1, seed=seed, id_offset=offset,
                   prefix=f"{prefix}{int(time.time())}-{n}", repeat_share=0)
    source = (new.posts if entity == "post" else new.comments)[0]
    shutil.copy(source, home / "landing" / "input" / entity / source.name)


def build(home: Path, rows: int) -> dict:
    subprocess.run([str(BIN / "lakehouse"), "init"], env=env_for(home, "auto"), check=True, capture_output=True)
    generate(home / "landing", posts=rows // 3, comments=rows - rows // 3, files=4, seed=42)
    started = time.perf_counter()
    full = materialize(home, "*", "auto", home / "full.log")
    full["wall_with_engine_start"] = round(time.perf_counter() - started, 1)
    return full


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=3_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--home", help="reuse this loaded lakehouse (built there when empty)")
    parser.add_argument("--results", default=str(BENCH / "results"))
    parser.add_argument("--baseline-code", help="a checkout of an earlier revision (git worktree): its runs on the "
                        "warm engine alternate with this code's, for a before/after from the same run")
    parser.add_argument("--no-own-driver", action="store_true", help="skip the runs with LAKEHOUSE_ENGINE=off")
    args = parser.parse_args()
    # (label, LAKEHOUSE_ENGINE, code the run imports)
    modes = [("auto", "auto", REPO)] + ([] if args.no_own_driver else [("off", "off", REPO)])
    if args.baseline_code:
        modes.append(("baseline", "auto", Path(args.baseline_code).resolve()))
    home = Path(args.home or f"/tmp/bench-incremental-{args.rows}")
    result: dict = {"machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                                "python": platform.python_version()}, "rows": args.rows, "runs": []}
    if not (home / "catalog.db").exists():
        shutil.rmtree(home, ignore_errors=True)
        subprocess.run([str(BIN / "lakehouse"), "engine", "start"], env=env_for(home, "auto"), capture_output=True)
        result["full_load"] = build(home, args.rows)
    subprocess.run([str(BIN / "lakehouse"), "engine", "start"], env=env_for(home, "auto"), check=True,
                   capture_output=True)
    scratch = home.parent / f"{home.name}-new"
    n = 0
    for rep in range(args.repeat):
        for entity, select in (("post", "bronze/posts*"), ("comment", "bronze/comments*")):
            for label, engine, code in modes:
                n += 1
                land_new_file(home, scratch, entity, n, "increment", id_base=60_000_000, seed=100 + n)
                run = materialize(home, select, engine, home / f"inc-{n}.log", code)
                run |= {"entity": entity, "engine": label, "repeat": rep, "code": str(code)}
                result["runs"].append(run)
                print(json.dumps({k: run[k] for k in ("entity", "engine", "wall_seconds", "attached")}), flush=True)
    result["engine_peak_gib"] = engine_peak_gib(home)
    summary = {}
    for entity in ("post", "comment"):
        for engine in (label for label, _, _ in modes):
            walls = [r["wall_seconds"] for r in result["runs"] if r["entity"] == entity and r["engine"] == engine]
            summary[f"{entity}/{engine}"] = {"median": statistics.median(walls), "all": walls,
                                            "peak_gib": max(r["peak_rss_gib"] for r in result["runs"]
                                                            if r["entity"] == entity and r["engine"] == engine)}
    result["summary"] = summary
    out = Path(args.results) / f"{date.today().isoformat()}-incremental.json"
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
