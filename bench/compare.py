"""The benchmark: the lakehouse against plain PySpark and DuckDB on the same data, at several sizes, in one run.

    python bench/compare.py                        # 100k, 1M and 3M raw rows; writes bench/results/<date>.md + .png
    python bench/compare.py --sizes 30000 --no-latency --results /tmp/out   # a quick try

For each size it generates SocialGrep-format data once (posts : comments = 1 : 2, 1.5% repeated ids) and runs,
one after the other on the same files:
- lakehouse: `dagster asset materialize --select '*'` (Bronze, Silver, Gold, the 27 checks, MERGE) in a fresh
  data root, as a user runs it;
- handwritten: `bench/baseline_handwritten.py` (the job as a user would write it by hand in one PySpark script,
  sharing no code with the project: the baseline that keeps us honest, issue 14);
- spark: `bench/baseline_spark.py` (the project's own transforms in one plain PySpark session, same Iceberg
  tables: what the orchestration, the checks and the exactly-once machinery add around them);
- duckdb: `bench/baseline_duckdb.py` (the same transformations in DuckDB SQL, Parquet files).
Each is timed with the peak memory of its whole process tree (`bench/measure.py`). Then, on the largest
lakehouse, one new 10,000-row posts file is landed and the graph materialised again (incremental cost; again into
the smallest lakehouse, for what the loaded size adds), `bench/incremental_warm.py` repeats it in a process whose
Spark session is already warm (what per-run start-up costs), and `bench/latency.py` measures land-to-Gold with the
sensor running (skip with --no-latency).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BENCH))
from measure import measure  # noqa: E402
from throughput import step_seconds  # noqa: E402

from lakehouse.generator import generate  # noqa: E402

PY = sys.executable
ENGINES = ("lakehouse", "lakehouse_no_checks", "handwritten", "spark", "duckdb")
LAYERS = ("bronze", "silver", "gold")
BIN = Path(PY).parent


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem_kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
    java = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.splitlines()[0]
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem_kb / 2**20, 1), "java": java,
            "python": platform.python_version(), "os": platform.platform()}


def _env(home: Path) -> dict:
    return {**os.environ, "LAKEHOUSE_HOME": str(home), "DAGSTER_HOME": str(home / "dagster")}


def run_lakehouse(home: Path, select: str = "*", log_name: str = "materialize.log", checks: bool = True) -> dict:
    env = _env(home)
    subprocess.run([str(BIN / "lakehouse"), "init"], env=env, check=True, capture_output=True)
    log_path = home / log_name
    command = ([str(BIN / "dagster"), "asset", "materialize", "-m", "lakehouse_assets.definitions", "--select", select]
               if checks else [PY, str(BENCH / "materialize_without_checks.py")])
    with log_path.open("w") as log:
        result = measure(command, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    if result["exit"]:
        raise SystemExit(f"lakehouse run failed; see {log_path}")
    result["steps"] = step_seconds(log_path.read_text())
    return result


def run_script(script: str, *args: str) -> dict:
    out = Path(tempfile.mkstemp(suffix=".json")[1])
    with out.open("w") as fh:
        result = measure([PY, str(BENCH / script), *args], stdout=fh, stderr=subprocess.DEVNULL, cwd=REPO)
    if result["exit"]:
        raise SystemExit(f"{script} failed")
    result["report"] = json.loads(out.read_text().strip().splitlines()[-1])
    return result


def one_size(rows: int, root: Path) -> dict:
    posts, comments = rows // 3, rows - rows // 3
    data = root / f"data-{rows}"
    files = generate(data, posts=posts, comments=comments, files=4, seed=42, repeat_share=0.015)
    raw = files.post_rows + files.comment_rows
    home = root / f"lakehouse-{rows}"
    shutil.copytree(data, home / "landing")
    out = {"raw_rows": raw, "lakehouse": run_lakehouse(home)}
    bare = root / f"lakehouse-no-checks-{rows}"
    shutil.copytree(data, bare / "landing")
    out["lakehouse_no_checks"] = run_lakehouse(bare, checks=False)
    shutil.rmtree(bare, ignore_errors=True)
    out["handwritten"] = run_script("baseline_handwritten.py", "--landing", str(data), "--home",
                                    str(root / f"handwritten-{rows}"))
    out["spark"] = run_script("baseline_spark.py", "--landing", str(data), "--home", str(root / f"spark-{rows}"))
    out["duckdb"] = run_script("baseline_duckdb.py", "--landing", str(data), "--out", str(root / f"duckdb-{rows}"))
    for name in ENGINES:
        out[name]["rows_per_second"] = round(raw / out[name]["seconds"])
    shutil.rmtree(root / f"handwritten-{rows}", ignore_errors=True)
    shutil.rmtree(root / f"spark-{rows}", ignore_errors=True)
    shutil.rmtree(root / f"duckdb-{rows}", ignore_errors=True)
    shutil.rmtree(data, ignore_errors=True)
    out["home"] = str(home)
    return out


def incremental(home: Path, root: Path) -> dict:
    """One new 10,000-row posts file into a loaded lakehouse: the cost of a routine sensor batch.

    Materialises what the sensor's run for a posts file selects: bronze/posts and everything downstream of it.
    """
    new = generate(root / f"increment-{home.name}", posts=10_000, comments=0, files=1, seed=7, id_offset=50_000_000,
                   prefix="increment", repeat_share=0)
    target = home / "landing" / "input" / "post" / new.posts[0].name
    shutil.copy(new.posts[0], target)
    return run_lakehouse(home, select="bronze/posts*", log_name="incremental.log")


def latency() -> dict:
    done = subprocess.run([PY, str(BENCH / "latency.py"), "--files", "5"], capture_output=True, text=True, cwd=REPO)
    return json.loads(done.stdout[done.stdout.index("{"):]) if done.returncode == 0 else {"error": done.stderr[-2000:]}


def plot(sizes: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    x = [s["raw_rows"] for s in sizes]
    for name, style in (("lakehouse", "o-"), ("lakehouse_no_checks", "o:"), ("handwritten", "D-."), ("spark", "s--"),
                        ("duckdb", "^:")):
        ax1.plot(x, [s[name]["seconds"] for s in sizes], style, label=name)
        ax2.plot(x, [s[name]["peak_rss_mb"] / 1024 for s in sizes], style, label=name)
    for ax, title, unit in ((ax1, "Wall time", "seconds"), (ax2, "Peak memory (process tree)", "GiB")):
        ax.set_xscale("log")
        ax.set_xlabel("raw rows (posts + comments)")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def report(result: dict, png: Path) -> str:
    m = result["machine"]
    lines = [f"# Benchmark {result['date']}", "",
             f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; {m['java']}; Python {m['python']}.",
             "Command: `python bench/compare.py " + " ".join(result["argv"]) + "`", "",
             "`lakehouse_no_checks` is the same graph with the asset checks left out "
             "(`bench/materialize_without_checks.py`); `handwritten` the job written by hand in plain PySpark, "
             "sharing no code with us (`bench/baseline_handwritten.py`); `spark` our own transforms in one plain "
             "session (`bench/baseline_spark.py`).", "",
             "| raw rows | engine | seconds | rows/s | peak memory | engine / handwritten |",
             "|---:|---|---:|---:|---:|---:|"]
    for s in result["sizes"]:
        for name in ENGINES:
            r = s[name]
            ratio = r["seconds"] / s["handwritten"]["seconds"]
            lines.append(f"| {s['raw_rows']:,} | {name} | {r['seconds']:.1f} | {r['rows_per_second']:,} | "
                         f"{r['peak_rss_mb'] / 1024:.2f} GiB | {ratio:.2f}x |")
    lines += ["", "Per layer (seconds; the lakehouse's Dagster step durations, checks inside their step, against the "
                  "hand-written script's own step timings; the rest of each wall time is process and Spark start-up):",
              "", "| raw rows | engine | " + " | ".join(LAYERS) + " | wall |", "|---:|---|" + "---:|" * (len(LAYERS) + 1)]
    for s in result["sizes"]:
        for name in ("lakehouse", "lakehouse_no_checks", "handwritten"):
            steps = s[name].get("steps") or s[name].get("report", {}).get("steps", {})
            per = [sum(v for k, v in steps.items() if k.startswith(layer)) for layer in LAYERS]
            lines.append(f"| {s['raw_rows']:,} | {name} | " + " | ".join(f"{v:.1f}" for v in per)
                         + f" | {s[name]['seconds']:.1f} |")
    first, last = result["sizes"][0], result["sizes"][-1]
    growth = last["raw_rows"] / first["raw_rows"]
    lines += ["", f"Growth from {first['raw_rows']:,} to {last['raw_rows']:,} rows ({growth:.0f}x data):", ""]
    for name in ENGINES:
        t = last[name]["seconds"] / first[name]["seconds"]
        mem = last[name]["peak_rss_mb"] / first[name]["peak_rss_mb"]
        lines.append(f"- {name}: wall time x{t:.1f}, peak memory x{mem:.1f}")
    if "incremental" in result:
        inc = result["incremental"]
        lines += ["", f"Incremental: one new 10,000-row posts file into the loaded {last['raw_rows']:,}-row lakehouse: "
                      f"{inc['seconds']:.1f} s, peak {inc['peak_rss_mb'] / 1024:.2f} GiB (`dagster asset materialize --select "
                      "'bronze/posts*'`, the sensor's selection, checks included).", "",
                  *([f"The same file into the {first['raw_rows']:,}-row lakehouse: "
                     f"{result['incremental_smallest']['seconds']:.1f} s, peak "
                     f"{result['incremental_smallest']['peak_rss_mb'] / 1024:.2f} GiB (what the loaded size adds).", ""]
                    if "incremental_smallest" in result else []),
                  "Where the incremental run's time goes (Dagster step durations; the rest is process start-up):", "",
                  "| step | seconds |", "|---|---:|"]
        lines += [f"| {k} | {v:.1f} |" for k, v in sorted(inc.get("steps", {}).items(), key=lambda kv: -kv[1])]
    if "incremental_warm" in result:
        warm = result["incremental_warm"]["report"]
        lines += ["", "The same selection run twice in one process (`bench/incremental_warm.py`, two more 10,000-row "
                      f"files into the largest lakehouse): first run {warm['cold']['seconds']:.1f} s (imports, JVM "
                      f"start, cold JIT), second run {warm['warm']['seconds']:.1f} s on the already warm Spark session: "
                      "what a long-lived session would save each sensor run, and what is left of the work itself.", "",
                  "| step | first run (s) | warm session (s) |", "|---|---:|---:|"]
        lines += [f"| {k} | {warm['cold']['steps'].get(k, 0):.1f} | {v:.1f} |"
                  for k, v in sorted(warm["warm"]["steps"].items(), key=lambda kv: -kv[1])]
    if "latency" in result and "median_s" in json.dumps(result["latency"]):
        lat = result["latency"]
        lines += ["", f"Land-to-Gold latency with the sensor running: {json.dumps(lat)}"]
    lines += ["", f"![wall time and memory]({png.name})", ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="100000,1000000,3000000", help="raw rows per size, comma-separated")
    parser.add_argument("--results", default=str(BENCH / "results"))
    parser.add_argument("--no-latency", action="store_true")
    parser.add_argument("--no-incremental", action="store_true")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="lakehouse-compare-"))
    date = dt.date.today().isoformat()
    result = {"date": date, "argv": sys.argv[1:], "machine": machine(), "sizes": []}
    try:
        for rows in (int(s) for s in args.sizes.split(",")):
            result["sizes"].append(one_size(rows, root))
            print(json.dumps({k: v for k, v in result["sizes"][-1].items() if k != "home"}, default=str), flush=True)
        if not args.no_incremental:
            result["incremental"] = incremental(Path(result["sizes"][-1]["home"]), root)
            if len(result["sizes"]) > 1:  # the same file into the smallest lakehouse: what the loaded size costs
                result["incremental_smallest"] = incremental(Path(result["sizes"][0]["home"]), root)
            result["incremental_warm"] = run_script(
                "incremental_warm.py", "--home", result["sizes"][-1]["home"], "--files", str(root / "warm"))
        if not args.no_latency:
            result["latency"] = latency()
        out = Path(args.results)
        out.mkdir(parents=True, exist_ok=True)
        png = out / f"{date}.png"
        plot(result["sizes"], png)
        (out / f"{date}.md").write_text(report(result, png))
        (out / f"{date}.json").write_text(json.dumps(result, indent=2, default=str))
        print(f"wrote {out / (date + '.md')}")
        return 0
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
