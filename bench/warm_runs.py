"""Routine files into a loaded lakehouse on a warm engine, code revisions in blocks, with the engine's CPU split.

    python bench/warm_runs.py --home /tmp/bench-incremental-3000000 --code /tmp/before --code . --code /tmp/before

The lakehouse at --home is one bench/incremental.py built. Each --code (a checkout, e.g. `git worktree add`) is a
block: the engine is restarted from that checkout's code (its own engine settings), the tables are compacted
(`lakehouse maintain`, so every block starts from the same file layout), `--warm` runs warm the engine's JIT, then
`--runs` pairs of one 10,000-row posts file and one 10,000-row comments file are measured through
`dagster asset materialize --select 'bronze/<entity>*'` (the sensor's selection, checks included). Per run: wall
seconds, step seconds, the engine JVM's CPU seconds by thread kind (executor tasks, JIT compiler, GC, the rest)
and Spark's Janino compilations. Repeat a revision (A B A) to see the drift between blocks.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
from datetime import date
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))
from incremental import BIN, env_for, land_new_file, materialize  # noqa: E402

KINDS = (("executor_tasks", re.compile(r"^Executor task")), ("jit", re.compile(r"^C\d CompilerThre")),
         ("gc", re.compile(r"^(G1|GC |VM Thread)")))
COMPILATIONS = """
from lakehouse import engine
from lakehouse.settings import load_settings
from lakehouse.spark import spark_conf
s = load_settings()
a = engine.attach(s, spark_conf(s), "bench")
print(a.session._jvm.org.apache.spark.metrics.source.CodegenMetrics.METRIC_COMPILATION_TIME().getCount())
a.release()
"""


def engine_jvm(home: Path) -> int:
    pid = json.loads((home / "engine" / "connection.json").read_text())["pid"]
    return int(Path(f"/proc/{pid}/task/{pid}/children").read_text().split()[0])


def _cpu_seconds(stat: str) -> tuple[str, float]:
    """A /proc stat line's name and CPU seconds (user + system)."""
    fields = stat[stat.rindex(")") + 2:].split()
    return stat[stat.index("(") + 1:stat.rindex(")")], (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int) -> dict[str, tuple[str, float]]:
    """Each live thread of the process by thread id: (name, CPU seconds)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            out[tid] = _cpu_seconds(Path(f"/proc/{pid}/task/{tid}/stat").read_text())
        except OSError:
            continue
    return out


def process_cpu(pid: int) -> float:
    return _cpu_seconds(Path(f"/proc/{pid}/stat").read_text())[1]


def cpu_split(before: dict, after: dict, total: float) -> dict[str, float]:
    """The JVM's CPU over a run by kind of thread; threads that ended meanwhile (Py4J connections) are `other`."""
    split = {kind: 0.0 for kind, _ in KINDS}
    for tid, (name, seconds) in after.items():
        delta = seconds - before.get(tid, (name, 0.0))[1]
        kind = next((k for k, pattern in KINDS if pattern.match(name)), None)
        if kind:
            split[kind] += delta
    split["other"] = total - sum(split.values())
    return {k: round(v, 2) for k, v in split.items()}


def compilations(home: Path, code: Path) -> int:
    done = subprocess.run([sys.executable, "-c", COMPILATIONS], env=env_for(home, "auto", code), cwd=code,
                          capture_output=True, text=True, check=True)
    return int(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--home", required=True, help="a lakehouse bench/incremental.py built")
    parser.add_argument("--code", action="append", required=True, help="a checkout; one block each, in order")
    parser.add_argument("--warm", type=int, default=3, help="runs before the measured ones in each block")
    parser.add_argument("--runs", type=int, default=3, help="measured posts+comments pairs in each block")
    parser.add_argument("--results", default=str(BENCH / "results"))
    args = parser.parse_args()
    home = Path(args.home)
    scratch = home.parent / f"{home.name}-warm"
    result: dict = {"machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                                "python": platform.python_version()}, "blocks": []}
    n = 0
    for code in (Path(c).resolve() for c in args.code):
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=code, capture_output=True,
                             text=True).stdout.strip()
        env = env_for(home, "auto", code)
        subprocess.run([str(BIN / "lakehouse"), "engine", "stop"], env=env, capture_output=True)
        subprocess.run([str(BIN / "lakehouse"), "engine", "start"], env=env, check=True, capture_output=True)
        subprocess.run([str(BIN / "lakehouse"), "maintain"], env=env, cwd=code, check=True, capture_output=True)
        block = {"code": str(code), "revision": rev, "runs": []}
        for i in range(args.warm + 2 * args.runs):
            entity = ("post", "comment")[i % 2]
            n += 1
            land_new_file(home, scratch, entity, n, "warm", id_base=200_000_000, seed=500 + n)
            jvm = engine_jvm(home)
            before, cpu0, compiled0 = thread_cpu(jvm), process_cpu(jvm), compilations(home, code)
            run = materialize(home, f"bronze/{entity}s*", "auto", home / f"warm-{n}.log", code)
            after, cpu1 = thread_cpu(jvm), process_cpu(jvm)
            run |= {"entity": entity, "warm_up": i < args.warm, "jvm_cpu": round(cpu1 - cpu0, 2),
                    "jvm_cpu_by_thread": cpu_split(before, after, cpu1 - cpu0),
                    "compilations": compilations(home, code) - compiled0}
            block["runs"].append(run)
            print(json.dumps({"revision": rev, **{k: run[k] for k in ("entity", "warm_up", "wall_seconds",
                                                                       "jvm_cpu", "compilations")}}), flush=True)
        measured = [r for r in block["runs"] if not r["warm_up"]]
        block["median"] = {e: statistics.median(r["wall_seconds"] for r in measured if r["entity"] == e)
                           for e in ("post", "comment")}
        result["blocks"].append(block)
    subprocess.run([str(BIN / "lakehouse"), "engine", "stop"], env=env_for(home, "auto"), capture_output=True)
    out = Path(args.results) / f"{date.today().isoformat()}-warm-runs.json"
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps([{"revision": b["revision"], **b["median"]} for b in result["blocks"]], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
